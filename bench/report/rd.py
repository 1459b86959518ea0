"""Rate–distortion view of an ablation whose grid sweeps a loss weight (issue: compare losses fairly).

With every term summed per image, the KL weight (or the reconstruction weight) sets an effective
beta, and two reconstruction losses at "weight 1" sit at very different rates.  Following Alemi et
al. (2018, "Fixing a Broken ELBO"), losses are compared along their rate–distortion curves instead:

* **rate** = test KL per image (nats, metric ``kl``); **distortion** = a quality metric of the same run
  (test MSE, SSIM, ST-LPIPS/LPIPS, sample KID, per-image chroma error: colour counts at matched rate too);
* a **family** is a named arm (the loss), its points are the grid values of one swept
  ``loss.<term>.weight`` key, one curve per seed;
* **matched rate**: rates inside the range every (family, seed) curve covers (no extrapolation),
  log-spaced; each seed's distortion there is interpolated linearly in log(rate) between its two
  neighbouring grid points; families are compared with the baseline family by a paired t-interval
  over seeds (the same seed's curves).

``write(spec, records, out_dir)`` writes ``rd.md`` and ``figures/rd.png`` when the file sweeps a
loss weight and returns the figure for the README; otherwise it writes nothing.
``matched_from_summary(summary)`` gives the same matched-rate block from a results folder's summary.json
(its per-seed values), so the claims report needs no runs to compare at matched rate.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench import stats, store
from bench.config.grid import SEP
from bench.config.schema import AblationSpec
from bench.metrics import CATALOGUE, M
from bench.report.figures import plt, save_figure
from bench.report.tables import RunRecord, value_of

RATE = M.KL
DISTORTIONS = (M.RECON_MSE, M.RECON_SSIM, M.ST_LPIPS, M.LPIPS, M.KID_SAMPLES, M.RECON_CHROMA_ERROR)
N_MATCHED = 4

Curves = dict[str, dict[int, list[tuple[float, float]]]]     # family -> seed -> [(rate, value)] sorted


def swept_weight(records: list[RunRecord]) -> str | None:
    """The swept ``loss.<term>.weight`` key of these runs, if there is one."""
    keys = {k for r in records for k in r.run.swept if k.startswith("loss.") and k.endswith(".weight")}
    return sorted(keys)[0] if keys else None


def family(arm: str) -> str:
    return arm.split(SEP)[0]


def _curves(points) -> Curves:
    """Curves from (arm, seed, rate, value) points; points missing either number are left out."""
    out: Curves = defaultdict(lambda: defaultdict(list))
    for arm, seed, rate, value in points:
        if rate is not None and value is not None:
            out[family(arm)][seed].append((max(rate, 1e-6), value))
    return {f: {s: sorted(p) for s, p in seeds.items() if len(p) >= 2} for f, seeds in out.items()}


def curves(records: list[RunRecord], key: str) -> Curves:
    return _curves((r.run.arm, r.run.seed, value_of(r, RATE), value_of(r, key)) for r in records)


def summary_curves(summary: dict, key: str) -> Curves:
    """The same curves from summary.json's groups (per-seed values of finished runs, as ``value_of`` reads)."""
    def by_seed(group, k):
        m = group["metrics"].get(k) or {}
        return dict(zip(m.get("seeds", []), m.get("values", [])))
    points = []
    for g in summary.get("groups", []):
        rates, values = by_seed(g, RATE), by_seed(g, key)
        points += [(g["arm"], seed, rates[seed], values[seed]) for seed in rates.keys() & values.keys()]
    return _curves(points)


def matched_rates(c: Curves, n: int = N_MATCHED) -> list[float]:
    """Log-spaced rates inside every curve's range ([] when the ranges do not overlap)."""
    spans = [(p[0][0], p[-1][0]) for seeds in c.values() for p in seeds.values()]
    if not spans:
        return []
    lo, hi = max(s[0] for s in spans), min(s[1] for s in spans)
    if not lo < hi:
        return []
    return [float(r) for r in np.exp(np.linspace(math.log(lo), math.log(hi), n + 2)[1:-1])]


def at_rate(points: list[tuple[float, float]], rate: float) -> float:
    """Distortion of one seed's curve at ``rate``, linear in log(rate) between grid points."""
    r, v = np.log([p[0] for p in points]), np.array([p[1] for p in points])
    order = np.argsort(r)
    return float(np.interp(math.log(rate), r[order], v[order]))


def compare(c: Curves, baseline: str, rate: float) -> dict[str, dict]:
    """Per family at ``rate``: mean and CI over seeds, and the paired difference with the baseline."""
    out = {}
    base = {s: at_rate(p, rate) for s, p in c.get(baseline, {}).items()}
    for fam, seeds in c.items():
        vals = {s: at_rate(p, rate) for s, p in seeds.items()}
        row = {"summary": stats.summarise(list(vals.values()))}
        common = sorted(set(vals) & set(base))
        if fam != baseline and common:
            row["vs_base"] = stats.paired([vals[s] - base[s] for s in common])
        out[fam] = row
    return out


def _fmt_number(x: float, fmt: str) -> str:
    return "—" if x is None or not math.isfinite(x) else format(x, fmt)


def render(spec: AblationSpec, records: list[RunRecord], weight_key: str, baseline: str) -> str:
    lines = [f"# {spec.name}: rate–distortion", "",
             f"Families (named arms) swept over `{weight_key}`; rate = test KL per image (nats). "
             "Matched rates lie inside every (family, seed) curve (no extrapolation); each seed's value is "
             "interpolated linearly in log(rate); Δ = family − "
             f"`{baseline}` paired by seed, mean [95% t-interval] (p). A metric a family was trained on is "
             "shown but is not independent evidence (recon SSIM for the SSIM losses).", ""]
    for key in DISTORTIONS:
        c = curves(records, key)
        if not c:
            continue
        info = CATALOGUE.get(key)
        name, fmt = (info.title, info.fmt) if info else (key, ".4g")
        rates = matched_rates(c)
        lines += [f"## {name} at matched rate", ""]
        if not rates:
            lines += ["The families' rate ranges do not overlap: no matched-rate comparison.", ""]
            continue
        fams = sorted(c, key=lambda f: (f != baseline, f))
        lines += ["| rate (nats) | " + " | ".join(fams) + " |", "|---:|" + "---|" * len(fams)]
        for rate in rates:
            row = compare(c, baseline, rate)
            cells = []
            for f in fams:
                s = row[f]["summary"]
                cell = f"{_fmt_number(s.mean, fmt)} ± {_fmt_number(s.half, fmt)}"
                if "vs_base" in row[f]:
                    d = row[f]["vs_base"]
                    cell += (f"<br>Δ {_fmt_number(d.diff, '+' + fmt)} "
                             f"[{_fmt_number(d.lo, fmt)}, {_fmt_number(d.hi, fmt)}] ") + \
                            f"(p={_fmt_number(d.p, '.3f')})"
                cells.append(cell)
            lines.append(f"| {rate:.1f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def figure(records: list[RunRecord], path: Path) -> bool:
    keys = [k for k in DISTORTIONS if curves(records, k)]
    if not keys:
        return False
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        c = curves(records, key)
        for i, (fam, seeds) in enumerate(sorted(c.items())):
            colour = f"C{i}"
            for points in seeds.values():
                ax.plot(*zip(*points, strict=True), "o", color=colour, alpha=0.35, ms=3)
            lo = max(p[0][0] for p in seeds.values())
            hi = min(p[-1][0] for p in seeds.values())
            if lo < hi:
                grid = np.exp(np.linspace(math.log(lo), math.log(hi), 30))
                vals = np.array([[at_rate(p, r) for r in grid] for p in seeds.values()])
                ax.plot(grid, vals.mean(0), color=colour, label=fam)
                ax.fill_between(grid, vals.min(0), vals.max(0), color=colour, alpha=0.15)
        info = CATALOGUE.get(key)
        ax.set(xscale="log", xlabel="rate: test KL (nats)", ylabel=info.title if info else key)
        ax.legend(fontsize=8)
    fig.suptitle("Rate–distortion: one curve per loss (mean over seeds; band = seed range)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return True


def matched_block(spec: AblationSpec, records: list[RunRecord]) -> dict | None:
    """For summary.json (and the claims read from it): per metric, the matched rates and every
    (family, seed)'s interpolated value at each of them; None when the file sweeps no loss weight."""
    weight_key = swept_weight(records)
    if weight_key is None:
        return None
    return {"weight_key": weight_key, "baseline": family(spec.baseline or records[0].run.arm),
            "metrics": _matched_metrics(lambda key: curves(records, key))}


def matched_from_summary(summary: dict) -> dict:
    """``matched_block``'s per-metric part ({metric: {rates, families}}) from a summary.json's groups."""
    return _matched_metrics(lambda key: summary_curves(summary, key))


def _matched_metrics(curves_of) -> dict:
    out = {}
    for key in DISTORTIONS:
        c = curves_of(key)
        rates = matched_rates(c)
        if rates:
            out[key] = {"rates": rates, "families": {
                fam: {str(seed): [at_rate(p, r) for r in rates] for seed, p in sorted(seeds.items())}
                for fam, seeds in sorted(c.items())}}
    return out


def write(spec: AblationSpec, records: list[RunRecord], out_dir: Path) -> list[tuple[str, str]]:
    """rd.md + figures/rd.png when the file sweeps a loss weight; returns the README figure entry."""
    weight_key = swept_weight(records)
    if weight_key is None:
        return []
    baseline = family(spec.baseline or records[0].run.arm)
    store.write_text(out_dir / "rd.md", render(spec, records, weight_key, baseline))
    if figure(records, out_dir / "figures" / "rd.png"):
        return [("figures/rd.png", "Rate–distortion curves (matched-rate table: [rd.md](rd.md))")]
    return []
