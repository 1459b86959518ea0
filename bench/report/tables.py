"""Aggregate finished runs into results/<ablation>/: table.md, table.csv, table.tex, summary.json,
README.md, and the results index results/README.md (``bench.report.results`` runs the whole report stage).

    v = view(spec, runs, runs_root)                 # records, groups, cells, provenance
    write_tables(v, runs_root, out_dir, figures)    # -> results/<ablation>/table.md

Only the runs of the *current* configuration count (matched by their hash), so a stale run of an
edited arm never leaks into a table.  Diverged, failed and pending runs are counted, never dropped.
Cells are mean ± half-width of the 95% t-interval over seeds (bench.stats); every non-baseline cell
shows its difference to the baseline arm of the same dataset and a † when Welch's t-test gives
p < 0.05.  Everything written here is a pure function of the run directories (no clock, sorted
iteration), so regenerating unchanged runs gives byte-identical files.
"""
from __future__ import annotations

import csv
import io
import math
import os
import shlex
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import stats, store
from bench.config.schema import AblationSpec, RunSpec
from bench.metrics import CATALOGUE, MetricInfo
from bench.speed.report import FOLDER as SPEED_FOLDER
from losses import LossEntry

STATUSES = ("done", "degenerate", "diverged", "failed", "pending")
SIG = "†"          # significance mark: Welch p < 0.05 vs the baseline arm
SUMMARY = "summary.json"


@dataclass
class RunRecord:
    run: RunSpec
    status: str                     # done | diverged | failed | pending
    doc: dict[str, Any] | None


def collect(runs: list[RunSpec], runs_root: Path) -> list[RunRecord]:
    out = []
    for run in runs:
        d = Path(runs_root) / run.rel_dir
        if (d / store.METRICS).exists():
            doc = store.read_json(d / store.METRICS)
            status = doc["status"]
            if status == "done" and ((doc.get("metrics") or {}).get("degenerate") or {}).get("value"):
                status = "degenerate"       # flat/identical outputs or collapse: shown, never compared
            out.append(RunRecord(run, status, doc))
        elif (d / store.ERROR).exists():
            out.append(RunRecord(run, "failed", store.read_json(d / store.ERROR)))
        else:
            out.append(RunRecord(run, "pending", None))
    return out


# --------------------------------------------------------------------------- aggregation

def info(key: str) -> MetricInfo:
    return CATALOGUE.get(key) or MetricInfo(key, ".4g", None, "other", "")


TIMED = ("train_images_per_s", "sample_images_per_s", "mfu")   # isolated timings: void on a busy machine


def busy_reason(key: str, m: dict[str, Any]) -> str | None:
    """Why a timing does not count: other work shared the CPU while it was measured."""
    if key in TIMED and m.get("shared"):
        return f"measured while {m['shared']}; re-measure alone with `python -m bench score`"
    if key in TIMED and m.get("machine_busy"):
        return f"measured while other work shared the machine (load {m.get('load_1min')}); re-measure quiet"
    return None


def value_of(rec: RunRecord, key: str) -> float | None:
    """The finite value of a metric in a finished (done) run, else None (also for a cost number
    measured on a busy machine: it is listed with its reason, never compared)."""
    if rec.status != "done":
        return None
    m = (rec.doc.get("metrics") or {}).get(key, {})
    if busy_reason(key, m):
        return None
    v = m.get("value")
    if v is None or isinstance(v, bool) or not math.isfinite(float(v)):
        return None
    return float(v)


@dataclass
class Group:
    """All runs of one arm x dataset."""
    arm: str
    dataset: str
    records: list[RunRecord]
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.counts = {s: sum(r.status == s for r in self.records) for s in STATUSES}

    def values(self, key: str) -> list[float]:
        return [v for v in (value_of(r, key) for r in self.records) if v is not None]

    def seeds(self, key: str) -> list[int]:
        """The seed of each entry of ``values(key)`` (pairs two metrics of the same runs)."""
        return [r.run.seed for r in self.records if value_of(r, key) is not None]

    def status_text(self) -> str:
        n = len(self.records)
        return f"{self.counts['done']}/{n} done" + "".join(
            f", {self.counts[s]}/{n} {s}" + (" ⚠" if s == "degenerate" else "")
            for s in ("degenerate", "diverged", "failed", "pending") if self.counts[s])


def groups_of(spec: AblationSpec, records: list[RunRecord]) -> list[Group]:
    """Dataset-major, baseline arm first, then the arms in YAML order."""
    base = spec.baseline_arm()
    arms = [base] + [a for a in spec.arms if a != base]
    by_key: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        by_key.setdefault((r.run.arm, r.run.dataset), []).append(r)
    out = []
    for ds in spec.datasets:
        for arm in arms:
            if (arm, ds) in by_key:
                out.append(Group(arm, ds, sorted(by_key[(arm, ds)], key=lambda r: r.run.seed)))
    return out


def metric_keys(records: list[RunRecord]) -> tuple[list[str], dict[str, list[str]]]:
    """(keys with a value in at least one done run, catalogue order; {key: reasons} for missing values)."""
    present: set[str] = set()
    shown: set[str] = set()
    reasons: dict[str, set[str]] = {}
    for r in records:
        if r.status != "done":
            continue
        for key, rec in (r.doc.get("metrics") or {}).items():
            present.add(key)
            if value_of(r, key) is not None:
                shown.add(key)
            else:
                why = rec.get("unavailable") or busy_reason(key, rec) or "no value"
                reasons.setdefault(key, set()).add(str(why).split(" (load")[0])
    order = [k for k in CATALOGUE if k in present] + sorted(present - set(CATALOGUE))
    return [k for k in order if k in shown], {k: sorted(reasons[k]) for k in order if k in reasons}


def _fmt_number(x: float, fmt: str, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:{'+' if sign else ''}{fmt}}"


def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "p n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


@dataclass
class Cell:
    summary: stats.Summary
    cmp: stats.Comparison | None      # vs the baseline arm of the same dataset (None for the baseline)
    bold: bool = False


def cells_of(spec: AblationSpec, groups: list[Group], keys: list[str]) -> dict[tuple[str, str, str], Cell]:
    base = spec.baseline_arm()
    out: dict[tuple[str, str, str], Cell] = {}
    for g in groups:
        ref = next((h for h in groups if h.dataset == g.dataset and h.arm == base), None)
        for key in keys:
            vals = g.values(key)
            cmp = None if g.arm == base or ref is None else stats.welch(vals, ref.values(key))
            out[(g.arm, g.dataset, key)] = Cell(stats.summarise(vals), cmp)
    # bold: best mean of its column and dataset, significantly better than the runner-up
    for key in keys:
        hib = info(key).higher_is_better
        if hib is None:
            continue
        for ds in spec.datasets:
            cand = [g for g in groups if g.dataset == ds and g.values(key)]
            if len(cand) < 2:
                continue
            cand.sort(key=lambda g: stats.summarise(g.values(key)).mean, reverse=hib)
            first, second = cand[0], cand[1]
            if min(len(first.values(key)), len(second.values(key))) < 2:
                continue            # an arm with one value cannot be tested, so nothing is shown as best
            t = stats.welch(first.values(key), second.values(key))
            if t.significant and (t.diff > 0) == hib:
                out[(first.arm, ds, key)].bold = True
    return out


# --------------------------------------------------------------------------- header / footer facts

def _distinct(values) -> list[str]:
    return sorted({str(v) for v in values if v not in (None, "")})


def run_commits(records: list[RunRecord]) -> list[str]:
    """Every commit that trained (env.json) or scored a finished run."""
    finished = [r for r in records if r.status in ("done", "degenerate", "diverged")]
    envs = [r.doc.get("env") or {} for r in finished]
    scored = [(r.doc.get("scored") or {}).get("git_commit") for r in finished if r.status != "diverged"]
    return _distinct([e.get("git_commit") for e in envs] + scored)


def header_facts(spec: AblationSpec, records: list[RunRecord]) -> dict[str, Any]:
    finished = [r for r in records if r.status in ("done", "degenerate", "diverged")]
    envs = [r.doc.get("env") or {} for r in finished]
    commits = run_commits(records)
    return {
        "compute": compute_time(finished),
        "commits": commits,
        "provenance": provenance(commits),
        "devices": _distinct(e.get("device_name") or e.get("device") for e in envs),
        # runs trained before env.json recorded it ran in fp32 on a CPU (bench/train/loop.py check_precision)
        "precision": _distinct(e.get("precision", "fp32") for e in envs),
        "steps": sorted({int(r.run.train.steps) for r in records}),
        "seeds": list(spec.seeds),
        "source": _rel_source(spec.source),
    }


def compute_time(records: list[RunRecord]) -> dict[str, float]:
    """Seconds spent training and scoring the finished runs (sums over runs, from their records)."""
    train = sum(float((r.doc.get("train") or {}).get("wall_s") or 0) for r in records)
    score = sum(float(((r.doc.get("metrics") or {}).get("scoring_s") or {}).get("value") or 0) for r in records)
    return {"runs": len(records), "train_s": round(train, 1), "scoring_s": round(score, 1)}


def provenance(commits: list[str]) -> str | None:
    """None when every run was trained and scored by one clean commit; else the warning to print."""
    dirty = [c for c in commits if c.endswith("+dirty") or c == "unknown"]
    if len(commits) <= 1 and not dirty:
        return None
    parts = []
    if len(commits) > 1:
        parts.append(f"{len(commits)} commits ({', '.join(commits)})")
    if dirty:
        parts.append("uncommitted changes or no git (" + ", ".join(dirty) + ")")
    return ("MIXED PROVENANCE: these runs were trained/scored by " + " and ".join(parts)
            + "; regenerate from one clean commit before citing them")


def _rel_source(source: str) -> str:
    if not source:
        return "<ablation.yaml>"
    p = Path(source).resolve()
    try:
        return str(p.relative_to(store.PROJECT_ROOT))
    except ValueError:
        return os.path.relpath(p) if not os.path.isabs(source) else source


def sweep_span(records: list[RunRecord], runs_root: Path) -> dict[str, Any] | None:
    """Wall clock of the sweep: from the first finished run's start (its metrics.json mtime minus its
    training and scoring seconds) to the last one's finish.  Includes any time the sweep was stopped."""
    starts, ends = [], []
    for r in records:
        if r.status not in ("done", "degenerate", "diverged"):
            continue
        p = Path(runs_root) / r.run.rel_dir / store.METRICS
        if not p.exists():
            continue
        end = p.stat().st_mtime
        c = compute_time([r])
        starts.append(end - c["train_s"] - c["scoring_s"])
        ends.append(end)
    if not ends:
        return None
    fmt = "%Y-%m-%d %H:%M UTC"
    return {"start": datetime.fromtimestamp(min(starts), tz=UTC).strftime(fmt),
            "end": datetime.fromtimestamp(max(ends), tz=UTC).strftime(fmt),
            "wall_h": round((max(ends) - min(starts)) / 3600, 2)}


def last_update(records: list[RunRecord], runs_root: Path) -> str | None:
    """Finish time of the newest run (mtime of its metrics.json / error.json), not the clock."""
    times = []
    for r in records:
        for name in (store.METRICS, store.ERROR):
            p = Path(runs_root) / r.run.rel_dir / name
            if p.exists():
                times.append(p.stat().st_mtime)
    if not times:
        return None
    return datetime.fromtimestamp(max(times), tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _protocol(records: list[RunRecord], key: str) -> str:
    fields: dict[str, set[str]] = {}
    for r in records:
        if r.status != "done":
            continue
        rec = (r.doc.get("metrics") or {}).get(key) or {}
        for k, v in rec.items():
            if k not in ("value", "unavailable"):
                fields.setdefault(k, set()).add(v if isinstance(v, str) else repr(v))
    return "; ".join(f"{k}={'/'.join(sorted(v))}" for k, v in sorted(fields.items()))


# --------------------------------------------------------------------------- markdown / csv / latex

def _md_cell(cell: Cell, key: str, n_done: int) -> str:
    s, fmt = cell.summary, info(key).fmt
    if s.n == 0:
        return "—"
    mean = _fmt_number(s.mean, fmt)
    text = f"**{mean}**" if cell.bold else mean
    text += f" ± {_fmt_number(s.half, fmt)}" if s.n >= 2 else ""
    if s.n != n_done or s.n < 2:
        text += f" (n={s.n})"
    if cell.cmp is not None and not math.isnan(cell.cmp.diff):
        mark = SIG if cell.cmp.significant else ""
        text += f"<br>Δ {_fmt_number(cell.cmp.diff, fmt, sign=True)}{mark} ({_fmt_p(cell.cmp.p)})"
    return text


GROUP_TITLES = {"runs": "Runs", "quality": "Reconstruction quality",
                "fidelity": "Pretrained-network metrics (FID, KID, LPIPS)",
                "colour": "Colour (C3)", "artifact": "Artifacts and sharpness (C4)", "latent": "Latent space (C9)",
                "pegasus": "Pegasus: latent interpolation (C11)", "cost": "Cost (C5-C7)"}


def render_markdown(spec: AblationSpec, records: list[RunRecord], groups: list[Group], keys: list[str],
                    cells: dict, unavailable: dict[str, list[str]], facts: dict[str, Any]) -> str:
    base = spec.baseline_arm()
    md = io.StringIO()
    md.write(f"# {spec.name}\n\n**Question.** {spec.question}\n\n")
    md.write(f"**Claims tested.** {', '.join(spec.claims) if spec.claims else 'none'}"
             " (verdicts: [CLAIMS.md](../CLAIMS.md))\n\n")
    args = facts["source"] + "".join(f" --set {shlex.quote(o)}" for o in spec.overrides)
    md.write(f"**Reproduce.** `python -m bench run {args}` "
             f"(tables only: `python -m bench table {args}`)\n\n")
    md.write(f"**Git commit.** {', '.join(facts['commits']) or 'n/a'} · "
             f"**Device.** {', '.join(facts['devices']) or 'n/a'} · "
             f"**Precision.** {', '.join(facts['precision']) or 'n/a'} · "
             f"**Steps.** {', '.join(map(str, facts['steps']))} · "
             f"**Seeds.** {', '.join(map(str, facts['seeds']))} · **Baseline arm.** `{base}`\n\n")
    c = facts["compute"]
    if c["runs"]:
        md.write(f"**Compute.** {c['runs']} finished runs: {c['train_s'] / 60:.1f} min training + "
                 f"{c['scoring_s'] / 60:.1f} min scoring in all, run one after another on the device above.")
        if span := facts.get("span"):
            md.write(f" Wall clock: {span['start']} (first run started) to {span['end']} (last finished), "
                     f"{span['wall_h']:.1f} h, including any time the sweep was stopped or shared the machine.")
        md.write("\n\n")
    if facts.get("provenance"):
        md.write(f"> **⚠ {facts['provenance']}.**\n\n")
    if not facts.get("as_written", True):
        md.write("> **⚠ Trial results**: written under --set overrides that change the experiment "
                 f"({', '.join(spec.overrides)}); CLAIMS.md does not count them.\n\n")
    md.write(arms_table(spec, records))
    # one table per metric group, so that no table is wider than a screen; with no metric at all
    # (every run diverged, failed or pending) one table still counts the runs
    by_group = {g: [k for k in keys if info(k).group == g] for g in dict.fromkeys(info(k).group for k in keys)}
    for group, gkeys in (by_group or {"runs": []}).items():
        md.write(f"### {GROUP_TITLES.get(group, group)}\n\n")
        head = ["arm", "dataset", "runs"] + [info(k).title + (" ↑" if info(k).higher_is_better else
                                                              " ↓" if info(k).higher_is_better is False else "")
                                             for k in gkeys]
        md.write("| " + " | ".join(head) + " |\n|" + "|".join(["---"] * 3 + ["--:"] * len(gkeys)) + "|\n")
        for g in groups:
            row = [g.arm, g.dataset, g.status_text()]
            row += [_md_cell(cells[(g.arm, g.dataset, k)], k, g.counts["done"]) for k in gkeys]
            md.write("| " + " | ".join(row) + " |\n")
        md.write("\n")
    md.write(
        "\nCells: mean ± half-width of the 95% t-interval over seeds (Student t, n−1 df); n = done runs "
        "unless shown. Δ: difference to the baseline arm "
        f"`{base}` on the same dataset; {SIG} = two-sided Welch t-test p < {stats.ALPHA} (no bootstrap). "
        "**Bold**: best mean of its column and dataset *and* significantly better (Welch p < "
        f"{stats.ALPHA}) than the runner-up; columns without a direction (no ↑/↓) are never bold. "
        "Diverged, failed and pending runs are counted under *runs* and excluded from every mean.\n")
    md.write(_protocol_section(records, keys, unavailable))
    return md.getvalue()


def _protocol_section(records: list[RunRecord], keys: list[str], unavailable: dict[str, list[str]]) -> str:
    """How each metric was measured, why some are missing, and which runs are excluded."""
    out = ["\n## Metric protocol\n\n"]
    for k in keys:
        i = info(k)
        out.append(f"- **{i.title}** (`{k}`): {i.doc or 'see bench/metrics'}. {_protocol(records, k)}\n")
    if unavailable:
        out.append("\n**Unavailable metrics** (value missing in some or all done runs):\n\n")
        out += [f"- `{k}`: {'; '.join(reasons)}\n" for k, reasons in unavailable.items()]
    bad = [r for r in records if r.status in ("degenerate", "diverged", "failed")]
    if bad:
        out.append("\n**Degenerate / diverged / failed runs** (excluded from every mean and comparison):\n\n")
        for r in bad:
            why = ((r.doc.get("train") or {}).get("reason") if r.status == "diverged"
                   else "; ".join(r.doc["metrics"]["degenerate"].get("reasons") or []) if r.status == "degenerate"
                   else r.doc.get("error")) or "no reason recorded"
            out.append(f"- `{r.run.rel_dir.as_posix()}` {r.status}: {str(why).splitlines()[0]}\n")
    return "".join(out)


def _loss_text(loss: tuple[LossEntry, ...]) -> str:
    terms = []
    for t in loss:
        extra = f" ({t.args['estimator']})" if t.name == "kl" and "estimator" in t.args else ""
        terms.append(f"{t.weight:g}·{t.name}{extra}")
    return " + ".join(terms)


def arms_table(spec: AblationSpec, records: list[RunRecord]) -> str:
    """What each arm is: model, bottleneck, parameters, loss (with the KL estimator), lr — so whatever
    changes together with the arm's variable is shown beside the result."""
    rows, seen = [], set()
    for r in sorted(records, key=lambda r: (r.run.dataset, list(spec.arms).index(r.run.arm), r.run.seed)):
        key = (r.run.arm, r.run.dataset)
        if key in seen:
            continue
        seen.add(key)
        ms = (r.doc or {}).get("metrics") or {}
        shape = (ms.get("bottleneck") or {}).get("shape", "—")
        params = (ms.get("params") or {}).get("value")
        model = ", ".join(f"{k}={v}" for k, v in r.run.model.items() if k not in ("image_size",))
        rows.append(f"| {r.run.arm} | {r.run.dataset} | {model} | {shape} | "
                    f"{'—' if params is None else f'{params:,}'} | {_loss_text(r.run.loss)} | "
                    f"{r.run.train.lr:g} | {r.run.train.steps} × {r.run.train.batch_size} |")
    return ("### Arms\n\n| arm | dataset | model | bottleneck C×h×w | params | loss | lr | steps × batch |\n"
            "|---|---|---|---|--:|---|--:|---|\n" + "\n".join(rows) + "\n\n")


CSV_FIELDS = ["ablation", "arm", "dataset", "seed", "hash8", "status", "metric", "value", "n", "split",
              "unavailable"]


def render_csv(records: list[RunRecord], all_keys: list[str]) -> str:
    """Tidy: one row per run x metric (runs without a value keep their row with an empty value)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in sorted(records, key=lambda r: (r.run.dataset, r.run.arm, r.run.seed)):
        metrics = (r.doc.get("metrics") or {}) if r.status == "done" else {}
        for key in all_keys:
            rec = metrics.get(key) or {}
            v = value_of(r, key)
            w.writerow({"ablation": r.run.ablation, "arm": r.run.arm, "dataset": r.run.dataset,
                        "seed": r.run.seed, "hash8": r.run.hash8, "status": r.status, "metric": key,
                        "value": "" if v is None else repr(v), "n": rec.get("n", ""),
                        "split": rec.get("split", ""),
                        "unavailable": (rec.get("unavailable") or busy_reason(key, rec) or "")
                        if r.status == "done" and v is None else ""})
    return buf.getvalue()


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s: str) -> str:
    return "".join(_TEX.get(c, c) for c in s).replace("−", "-").replace("↑", r"$\uparrow$") \
        .replace("↓", r"$\downarrow$")


def _tex_cell(cell: Cell, key: str) -> str:
    s, fmt = cell.summary, info(key).fmt
    if s.n == 0:
        return "--"
    mean = tex_escape(_fmt_number(s.mean, fmt))
    text = (rf"\textbf{{{mean}}}" if cell.bold else mean)
    text += rf" $\pm$ {tex_escape(_fmt_number(s.half, fmt))}" if s.n >= 2 else f" (n={s.n})"
    if cell.cmp is not None and not math.isnan(cell.cmp.diff):
        mark = r"^{\dagger}" if cell.cmp.significant else ""
        text += rf" (${tex_escape(_fmt_number(cell.cmp.diff, fmt, sign=True))}{mark}$)"
    return text


def render_latex(spec: AblationSpec, groups: list[Group], keys: list[str], cells: dict) -> str:
    base = spec.baseline_arm()
    head = ["arm", "dataset", "runs"] + [info(k).title for k in keys]
    out = [r"% generated by bench/report/tables.py; needs \usepackage{booktabs}",
           r"\begin{table}[t]", r"\centering", r"\small",
           rf"\caption{{{tex_escape(spec.question)} Ablation \texttt{{{tex_escape(spec.name)}}}"
           + (f", claims {', '.join(spec.claims)}" if spec.claims else "")
           + r". Mean $\pm$ 95\% t-interval over seeds; in brackets the difference to the baseline arm "
           + rf"\texttt{{{tex_escape(base)}}}; $^{{\dagger}}$ Welch $p<{stats.ALPHA}$; bold: best and "
           + r"significantly better than the runner-up.}",
           rf"\label{{tab:{tex_escape(spec.name)}}}",
           r"\begin{tabular}{lll" + "r" * len(keys) + "}", r"\toprule",
           " & ".join(tex_escape(h) for h in head) + r" \\", r"\midrule"]
    prev = None
    for g in groups:
        if prev is not None and g.dataset != prev:
            out.append(r"\midrule")
        prev = g.dataset
        row = [tex_escape(g.arm), tex_escape(g.dataset), tex_escape(g.status_text())]
        row += [_tex_cell(cells[(g.arm, g.dataset, k)], k) for k in keys]
        out.append(" & ".join(row) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- summary for index/claims

def _f(x: float) -> float | None:
    return None if x is None or math.isnan(x) else x


def build_summary(spec: AblationSpec, records: list[RunRecord], groups: list[Group], keys: list[str],
                  cells: dict, facts: dict[str, Any], updated: str | None, figures: list[tuple[str, str]]) -> dict:
    arms = {}
    for r in records:
        arms.setdefault(r.run.arm, {"losses": [t.name for t in r.run.loss], "lr": r.run.train.lr,
                                    "model": r.run.model.get("name"), "swept": dict(r.run.swept)})
    out_groups = []
    for g in groups:
        ms = {}
        for k in keys:
            c = cells[(g.arm, g.dataset, k)]
            ms[k] = {"values": g.values(k), "seeds": g.seeds(k), "n": c.summary.n, "mean": _f(c.summary.mean),
                     "lo": _f(c.summary.lo), "hi": _f(c.summary.hi)}
            if c.cmp is not None:
                ms[k].update(diff=_f(c.cmp.diff), diff_lo=_f(c.cmp.lo), diff_hi=_f(c.cmp.hi), p=_f(c.cmp.p))
        out_groups.append({"arm": g.arm, "dataset": g.dataset, "counts": g.counts, "metrics": ms})
    counts = {s: sum(r.status == s for r in records) for s in STATUSES}
    return {"ablation": spec.name, "question": spec.question, "claims": list(spec.claims),
            "baseline": spec.baseline_arm(), "datasets": list(spec.datasets), "arms": arms,
            "planned": len(records), "counts": counts, "last_update": updated, "metrics": keys,
            "figures": [{"file": f, "caption": c} for f, c in figures], **facts, "groups": out_groups}


# --------------------------------------------------------------------------- entry point

@dataclass
class View:
    """Everything the tables and figures of one ablation are computed from."""
    spec: AblationSpec
    records: list[RunRecord]
    groups: list[Group]
    keys: list[str]                          # metrics with a value in at least one done run
    unavailable: dict[str, list[str]]        # metric -> reasons it is missing somewhere
    cells: dict
    facts: dict[str, Any]


def view(spec: AblationSpec, runs: list[RunSpec], runs_root: Path, as_written: bool = True) -> View:
    records = collect(runs, Path(runs_root))
    groups = groups_of(spec, records)
    keys, unavailable = metric_keys(records)
    facts = {**header_facts(spec, records), "as_written": as_written, "overrides": list(spec.overrides),
             "span": sweep_span(records, Path(runs_root))}
    return View(spec, records, groups, keys, unavailable, cells_of(spec, groups, keys), facts)


def write_tables(v: View, runs_root: Path, out_dir: Path, figures: list[tuple[str, str]],
                 extra: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir``: table.md/.csv/.tex, the sheets, README.md (tables + ``figures``) and summary.json.
    Called by ``bench.report.results.write``, which also draws the figures and refreshes the index and CLAIMS.md."""
    spec, records = v.spec, v.records
    if v.facts["provenance"]:
        print(f"warning: {spec.name}: {v.facts['provenance']}", file=sys.stderr)
    all_keys = [k for k in list(CATALOGUE) + sorted(set(v.unavailable) - set(CATALOGUE))
                if k in v.keys or k in v.unavailable]
    md = render_markdown(spec, records, v.groups, v.keys, v.cells, v.unavailable, v.facts)
    store.write_text(out_dir / "table.md", md)
    store.write_text(out_dir / "table.csv", render_csv(records, all_keys))
    store.write_text(out_dir / "table.tex", render_latex(spec, v.groups, v.keys, v.cells))
    sheets = _copy_sheets(records, Path(runs_root), out_dir)
    readme = md + "\nFiles: [table.md](table.md) · [table.csv](table.csv) (one row per run × metric) · " \
                  "[table.tex](table.tex) (booktabs) · [summary.json](summary.json)\n"
    if figures:
        readme += "\n## Figures\n\n" + "".join(f"**{cap}**\n\n![{cap}]({f})\n\n" for f, cap in figures)
    store.write_text(out_dir / "README.md", readme + sheets)
    summary = build_summary(spec, records, v.groups, v.keys, v.cells, v.facts, last_update(records, Path(runs_root)),
                            figures)
    store.write_json(out_dir / SUMMARY, {**summary, **(extra or {})})     # extra: e.g. the matched-rate block
    return out_dir / "table.md"


def _copy_sheets(records: list[RunRecord], runs_root: Path, out_dir: Path) -> str:
    """Copy the sample and reconstruction sheets of the first finished seed of each arm x dataset."""
    seen = set()
    lines = []
    for r in sorted(records, key=lambda r: (r.run.dataset, r.run.arm, r.run.seed)):
        key = (r.run.arm, r.run.dataset)
        if r.status not in ("done", "degenerate") or key in seen:
            continue
        seen.add(key)
        for kind in ("recon", "samples"):
            src = runs_root / r.run.rel_dir / f"{kind}.png"
            if src.exists():
                store.write_bytes(out_dir / "sheets" / f"{r.run.arm}-{r.run.dataset}-{kind}.png", src.read_bytes())
        flag = " ⚠ degenerate" if r.status == "degenerate" else ""
        lines.append(f"| {r.run.arm} | {r.run.dataset} (seed {r.run.seed}){flag} | "
                     f"![recon](sheets/{r.run.arm}-{r.run.dataset}-recon.png) | "
                     f"![samples](sheets/{r.run.arm}-{r.run.dataset}-samples.png) |")
    if not lines:
        return ""
    return ("\n## Sheets (one seed per arm)\n\nReconstructions: test images (odd rows) above their "
            "reconstructions (even rows). Samples: decoded z ~ N(0, I).\n\n"
            "| arm | dataset | reconstructions | samples |\n|---|---|---|---|\n" + "\n".join(lines) + "\n")


def write_index(results_root: Path) -> Path:
    """results/README.md: every ablation that has a summary.json, with status and links."""
    results_root = Path(results_root)
    rows = []
    for p in sorted(results_root.glob(f"*/{SUMMARY}")):
        s = store.read_json(p)
        c = s["counts"]
        status = f"{c['done']}/{s['planned']} done" + "".join(
            f", {c[k]} {k}" for k in ("diverged", "failed", "pending") if c.get(k))
        name = p.parent.name
        figs = " · ".join(f"[{Path(f['file']).stem}]({name}/{f['file']})" for f in s.get("figures", []))
        rows.append(f"| [{name}]({name}/README.md) | {s['question']} | {', '.join(s['claims']) or '—'} | "
                    f"{status} | {s.get('last_update') or '—'} | [md]({name}/table.md) · [csv]({name}/table.csv)"
                    f" · [tex]({name}/table.tex) | {figs or '—'} |")
    text = ("# Results\n\nGenerated by `python -m bench table <ablation.yaml>` (also at the end of "
            "`bench run`); do not edit. Verdicts per paper claim: [CLAIMS.md](CLAIMS.md).\n\n"
            "| ablation | question | claims | status (runs done / planned) | last run finished | tables | figures |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + ("\n" if rows else ""))
    if (results_root / SPEED_FOLDER / "README.md").exists():
        text += (f"\nTraining speed, the trainer beside a plain loop and pythae (`python -m bench speed`): "
                 f"[{SPEED_FOLDER}/README.md]({SPEED_FOLDER}/README.md)\n")
    store.write_text(results_root / "README.md", text)
    return results_root / "README.md"
