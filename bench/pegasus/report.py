"""results/pegasus/: the pegasus (claim C11) of the registered model, then every arm ranked, from finished runs.

    python -m bench pegasus ablations/pegasus_cifar10_cpu.yaml ablations/loss_stl10_cpu.yaml \\
        --from horse --to bird --set data.cifar10.root=... --set data.stl10.root=...

Reads the pegasus metrics every run of those files recorded in scoring (``eval.pegasus``), re-walks the
*registered* model's run -- the arm C11's rule is about (``claims.PAPER_ARM``: the paper's final loss, all
classes), seed 0 of the first file that has it, whatever its score -- with the same held-out pairs, probe
and protocol as scoring (``bench.pegasus.evaluate.evaluate``), and writes:

    results/pegasus/README.md      its sheet, its pixel cross-fade, its ranked midpoints, every arm's table
    results/pegasus/sheet_lerp.png, crossfade.png, gallery.png, metrics.json (the registered run's walk)

The verdict on C11 is not made here: results/CLAIMS.md applies the rule registered in bench/report/claims.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from bench import stats, store
from bench.config import schema as config
from bench.config.schema import AblationSpec
from bench.errors import BenchError
from bench.pegasus import evaluate as peg
from bench.pegasus import outputs
from bench.report import tables
from bench.report.claims import PAPER_ARM
from bench.report.sheets import save_grid
from bench.train.runtime import resolve_device

OUT = "pegasus"
ROWS_SHOWN = 8          # pairs drawn in the README sheets (the metrics use every pair)
RANK_KEY = peg.key("hybrid", "lerp")
# (column title, latent-path key, cross-fade key or None)
COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("hybrid t=.5", peg.key("hybrid", "lerp"), peg.key("hybrid", peg.BASELINE)),
    ("P(from)+P(to) t=.5", peg.key("joint_mass", "lerp"), peg.key("joint_mass", peg.BASELINE)),
    ("midpoint KID", peg.kid_key("lerp"), peg.kid_key(peg.BASELINE)),
    ("sharpness mid/real ends", peg.key("sharpness", "lerp"), peg.key("sharpness", peg.BASELINE)),
    ("ends read as own class", peg.key("ends_correct", "lerp"), peg.key("ends_correct", peg.BASELINE)),
    ("PPL", peg.key("ppl", "lerp"), None),
    ("max/mean step", peg.key("max_step", "lerp"), None),
)


@dataclass
class ArmRow:
    ablation: str
    arm: str
    records: list[tables.RunRecord]

    def values(self, key: str) -> list[float]:
        return [v for v in (tables.value_of(r, key) for r in self.records) if v is not None]

    def cell(self, key: str | None, fmt: str) -> str:
        if key is None:
            return "—"
        s = stats.summarise(self.values(key))
        if s.n == 0:
            return "n/a"
        return f"{s.mean:{fmt}}" + ("" if math.isnan(s.half) else f" ± {s.half:{fmt}}")

    @property
    def rank_value(self) -> float:
        v = self.values(RANK_KEY)
        return sum(v) / len(v) if v else -math.inf


def collect_arms(specs: list[AblationSpec], runs_root: Path) -> list[ArmRow]:
    """One row per (ablation, arm) with its finished runs, in the order the files and their arms are listed."""
    rows = []
    for spec in specs:
        records = tables.collect(config.expand(spec), runs_root)
        for arm in spec.arms:
            rows.append(ArmRow(spec.name, arm, [r for r in records if r.run.arm == arm]))
    return rows


def ranked(rows: list[ArmRow]) -> list[ArmRow]:
    """Best hybrid score of the linear latent midpoints first."""
    return sorted(rows, key=lambda r: -r.rank_value)


def lead_run(rows: list[ArmRow], arm: str = PAPER_ARM) -> tables.RunRecord:
    """The registered model's run: arm ``arm``, lowest seed, of the first file that has a finished one with
    pegasus metrics -- chosen by the rule, not by its score."""
    for row in rows:
        if row.arm != arm:
            continue
        done = sorted((r for r in row.records if tables.value_of(r, RANK_KEY) is not None), key=lambda r: r.run.seed)
        if done:
            return done[0]
    raise BenchError(f"no finished run of arm {arm!r} (the model C11 is about) has pegasus metrics "
                     f"({peg.PREFIX}) yet: train a file with that arm and eval.pegasus first")


def arm_table(rows: list[ArmRow]) -> str:
    head = ["ablation", "arm", "runs"]
    for title, _, ref in COLUMNS:
        head += [f"{title} (latent)", f"{title} (cross-fade)"] if ref else [title]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["--:"] * (len(head) - 3)) + "|"]
    for row in ranked(rows):
        done = sum(r.status == "done" for r in row.records)
        cells = [row.ablation, row.arm, f"{done}/{len(row.records)}"]
        for _, lat, ref in COLUMNS:
            fmt = tables.info(lat).fmt                 # the cross-fade column shares the latent one's format
            cells += [row.cell(lat, fmt), row.cell(ref, fmt)] if ref else [row.cell(lat, fmt)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _provenance(rows: list[ArmRow]) -> str:
    """The one clean commit that trained and scored every finished run, or the MIXED PROVENANCE warning."""
    records = [r for row in rows for r in row.records]
    commits = tables.run_commits(records)
    return tables.provenance(commits) or (commits[0] if commits else "none")


def write_report(specs: list[AblationSpec], runs_root: Path, results_root: Path, from_cls: str, to_cls: str, *,
                 device: str = "auto", progress: bool = True) -> Path:
    runs_root, out = Path(runs_root), Path(results_root) / OUT
    rows = collect_arms(specs, runs_root)
    best = lead_run(rows)
    dev = resolve_device(device)
    run, model = peg.load_finished(runs_root / best.run.rel_dir, dev)
    ev = peg.evaluate(model, run, dev, from_cls, to_cls, progress=progress)
    n = min(ROWS_SHOWN, len(ev.real_from))
    ncol = len(ev.ts) + 2
    save_grid(out / "sheet_lerp.png", outputs.rows(ev.real_from[:n], ev.walks["lerp"].frames[:n], ev.real_to[:n]), ncol)
    save_grid(out / "crossfade.png",
              outputs.rows(ev.real_from[:n], ev.walks[peg.BASELINE].frames[:n], ev.real_to[:n]), ncol)
    outputs.save_gallery(out / "gallery.png", ev)
    store.write_json(out / "metrics.json", {"run": str(best.run.rel_dir), "protocol": ev.protocol,
                                            "metrics": ev.records, "gallery": ev.gallery,
                                            "drawn_by_commit": store.git_commit()})
    store.write_text(out / "README.md", render(rows, best, ev, n, from_cls, to_cls))
    return out / "README.md"


def render(rows: list[ArmRow], lead: tables.RunRecord, ev: peg.Evaluation, n: int, a: str, b: str) -> str:
    p, ref = ev.protocol, ev.protocol["reference"]
    prov = _provenance(rows)
    g = ev.gallery[0] if ev.gallery else None
    top = (f"The most hybrid midpoint: pair {g['pair']}, {g['kind']} path, hybrid {g['hybrid']:.2f}, "
           f"P({a}) {g['p_from']:.2f}, P({b}) {g['p_to']:.2f}.\n\n") if g else ""
    pr = p["probe"]
    probe = (f"{pr['kind']}, fitted on {pr['n_train']} train images ({pr['n_excluded']} excluded: the KID "
             f"reference), held-out accuracy {pr['accuracy']:.3f} on {pr['n_test']} images over "
             f"{len(pr['classes'])} classes (fingerprint `{pr['fingerprint'][:12]}`)" if "accuracy" in pr
             else f"unavailable: {pr['unavailable']}")
    return f"""# Pegasus: {a} → {b} latent interpolation (C11)

The registered model: `{lead.run.rel_dir}` (arm `{lead.run.arm}`: the paper's final loss, all classes; the
run C11's rule is about, shown whatever its score). Rows = the first {n} of its {p['pairs']} held-out
pairs: real {a} | linear latent path from its reconstruction (t = 0) to the {b}'s (t = 1), {len(ev.ts)}
frames | real {b}.

![registered model's sheet](sheet_lerp.png)

The same pairs as a pixel cross-fade (the "double exposure" baseline):

![cross-fade](crossfade.png)

## Its most hybrid midpoints

The latent midpoints (t = 0.5) of every (pair, path) of this run, ranked by the leak-proof hybrid score
max(0, 2·min(P({a}), P({b})) − off-class mass):

![gallery](gallery.png)

{top}## Every arm

Mean ± 95% t half-width over seeds of each run's mean over the {p['pairs']} pairs; latent = linear
path, cross-fade = the same pairs in pixel space. Sorted by the latent hybrid score. The verdict on
C11 and its rule (written before the runs) are in [CLAIMS.md](../CLAIMS.md#c11).

{arm_table(rows)}

## Protocol (version {p['pegasus_protocol']})

- Pairs: {p['pairs']} {a}/{b} pairs from `{p['split']}` (pair seed {p['pair_seed']}, index sha256
  `{p['pair_index_sha256'][:16]}`), identical for every run of a dataset; {p['steps']} frames per path.
- Class probe: {probe}.
- KID reference: {ref['n_real']} real {a} + {b} images, none of them a pair endpoint: {ref['reference_split']}
  ({ref['real_selection']}, index sha256 `{ref['real_index_sha256']}`).
- Sharpness: Laplacian variance of the midpoint over the mean of the two *real* endpoints', for every path.
- Path length: {p['distance'].get('distance') or 'unavailable: ' + str(p['distance'].get('unavailable'))},
  eps {p['eps']:g}.
- Runs trained and scored by commit {prov}; this page drawn by commit {store.git_commit()} in
  {p['wall_s']:.0f} s. Re-draw: `python -m bench pegasus FILE ... --from {a} --to {b}`.
- The first yardstick (protocol version 1) and its verdict, and why it was replaced:
  [HISTORY.md](HISTORY.md).
"""
