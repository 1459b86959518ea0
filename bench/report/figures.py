"""Figures of one ablation (matplotlib Agg, white grid, colour-blind palette, PNG at 110 dpi, no timestamps).

    write_figures(spec, records, groups, keys, runs_root, fig_dir) -> [(relative path, caption), ...]

    metrics.png   key metrics per arm x dataset, mean with 95% t-interval error bars
    curves.png    training loss terms vs step, mean ± 95% t-band over done seeds
    pareto.png    quality vs training throughput, Pareto front per dataset
    sheets-<dataset>.png   real test images, then per arm its reconstructions and samples (one seed)
    lr_sweep.png  final quality and divergence rate vs learning rate per loss (C2), when lr varies
    budget.png    each key metric against images seen, one line per arm (mean ± 95% t-band over seeds), when the
                  runs kept train.snapshots
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from bench import stats, store
from bench.report.tables import info

DPI = 110
KEY_METRICS = ["fid_samples", "recon_ssim", "recon_psnr", "lpips", "sample_colour_dist", "recon_colour_dist",
               "checkerboard", "spectral_dist", "recon_gap", "active_units"]
COST = "train_images_per_s"
LOG_SKIP = {"step", "images_per_s", "elapsed_s"}
# the colour-blind-safe palette the figures have always used (seaborn's "colorblind"), cycled past ten
COLOURS = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133", "#56b4e9")
STYLE = "seaborn-v0_8-whitegrid"     # matplotlib's own copy of the white-grid style


def colours(n: int) -> list[str]:
    return [COLOURS[i % len(COLOURS)] for i in range(n)]



def _label(key: str) -> str:
    i = info(key)
    arrow = " (↑ better)" if i.higher_is_better else " (↓ better)" if i.higher_is_better is False else ""
    return i.title + arrow


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    store.write_bytes(path, buf.getvalue())


def write_figures(spec, records, groups, keys, runs_root: Path, fig_dir: Path) -> list[tuple[str, str]]:
    plt.style.use(STYLE)
    out = []
    for fn in (_metrics_fig, _curves_fig, _pareto_fig, _lr_fig, _budget_fig):
        res = fn(spec, records, groups, keys, Path(runs_root), Path(fig_dir))
        if res:
            out.append(res)
    out += _sheet_figs(spec, records, groups, Path(runs_root), Path(fig_dir))
    return out


def _palette(datasets):
    return dict(zip(datasets, colours(len(datasets))))


def _metrics_fig(spec, records, groups, keys, runs_root, fig_dir):
    chosen = [k for k in KEY_METRICS if k in keys][:6]
    if not chosen:
        return None
    arms = list(dict.fromkeys(g.arm for g in groups))
    datasets = list(dict.fromkeys(g.dataset for g in groups))
    pal = _palette(datasets)
    ncol = min(3, len(chosen))
    nrow = math.ceil(len(chosen) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
    width = 0.7 / max(1, len(datasets))
    for ax, key in zip(axes.flat, chosen):
        for j, ds in enumerate(datasets):
            xs, ys, errs, ns = [], [], [], []
            for i, arm in enumerate(arms):
                g = next((g for g in groups if g.arm == arm and g.dataset == ds), None)
                vals = g.values(key) if g else []
                if not vals:
                    continue
                s = stats.summarise(vals)
                xs.append(i + (j - (len(datasets) - 1) / 2) * width)
                ys.append(s.mean)
                errs.append(0 if math.isnan(s.half) else s.half)
                ns.append(s.n)
                ax.scatter([xs[-1]] * len(vals), vals, s=10, color=pal[ds], alpha=0.35, zorder=2)
            ax.errorbar(xs, ys, yerr=errs, fmt="o", color=pal[ds], capsize=4, label=ds, zorder=3)
        ax.set_xticks(range(len(arms)), arms, rotation=20)
        ax.set_title(_label(key), fontsize=10)
        ax.set_xlabel("arm")
    for ax in axes.flat[len(chosen):]:
        ax.axis("off")
    axes.flat[0].legend(title="dataset", fontsize=8)
    fig.suptitle(f"{spec.name}: mean ± 95% t-interval over seeds (dots: single seeds)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, fig_dir / "metrics.png")
    return "figures/metrics.png", "Key metrics per arm (mean ± 95% CI over seeds)"


def _read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _curves_fig(spec, records, groups, keys, runs_root, fig_dir):
    logs: dict[tuple[str, str], list[list[dict]]] = {}
    terms: set[str] = set()
    for g in groups:
        for r in g.records:
            if r.status != "done":
                continue
            log = _read_log(runs_root / r.run.rel_dir / store.LOG)
            if log:
                logs.setdefault((g.arm, g.dataset), []).append(log)
                for e in log:
                    terms.update(k for k, v in e.items() if k not in LOG_SKIP and isinstance(v, (int, float)))
    if not logs:
        return None
    cols = (["loss"] if "loss" in terms else []) + sorted(terms - {"loss"})
    cols = cols[:5]
    datasets = list(dict.fromkeys(ds for _, ds in logs))
    arms = list(dict.fromkeys(a for a, _ in logs))
    pal = dict(zip(arms, colours(len(arms))))
    fig, axes = plt.subplots(len(datasets), len(cols), figsize=(3.6 * len(cols), 3.0 * len(datasets)), squeeze=False)
    for i, ds in enumerate(datasets):
        for j, term in enumerate(cols):
            ax = axes[i, j]
            for arm in arms:
                by_step: dict[int, list[float]] = {}
                for log in logs.get((arm, ds), []):
                    for e in log:
                        v = e.get(term)
                        if isinstance(v, (int, float)) and math.isfinite(v):
                            by_step.setdefault(int(e["step"]), []).append(float(v))
                if not by_step:
                    continue
                steps = sorted(by_step)
                summ = [stats.summarise(by_step[s]) for s in steps]
                mean = np.array([s.mean for s in summ])
                ax.plot(steps, mean, color=pal[arm], label=arm, lw=1.5)
                lo = np.array([s.lo if s.n > 1 else s.mean for s in summ])
                hi = np.array([s.hi if s.n > 1 else s.mean for s in summ])
                ax.fill_between(steps, lo, hi, color=pal[arm], alpha=0.2, lw=0)
            ax.set_title(f"{term} — {ds}", fontsize=10)
            ax.set_xlabel("step")
            ax.set_ylabel(f"{term} (per-batch value)" if j == 0 else "")
    axes[0, 0].legend(title="arm", fontsize=8)
    fig.suptitle(f"{spec.name}: training curves, mean ± 95% t-band over done seeds", fontsize=11)
    fig.tight_layout()
    save_figure(fig, fig_dir / "curves.png")
    return "figures/curves.png", "Training loss terms vs step (mean ± 95% band over seeds)"


def _pareto(points: list[tuple[float, float]], hib: bool) -> list[tuple[float, float]]:
    """Points not dominated in (higher throughput, better quality), sorted by throughput."""
    front = []
    for x, y in points:
        better = lambda a, b: a > b if hib else a < b  # noqa: E731
        dominated = any(x2 >= x and (y2 == y or better(y2, y)) and (x2, y2) != (x, y) and
                        (x2 > x or better(y2, y)) for x2, y2 in points)
        if not dominated:
            front.append((x, y))
    return sorted(front)


def _pareto_fig(spec, records, groups, keys, runs_root, fig_dir):
    quality = next((k for k in ("fid_samples", "recon_ssim", "recon_psnr") if k in keys), None)
    if quality is None or COST not in keys:
        return None
    hib = bool(info(quality).higher_is_better)
    arms = list(dict.fromkeys(g.arm for g in groups))
    datasets = list(dict.fromkeys(g.dataset for g in groups))
    markers = dict(zip(arms, "osD^vP*Xh<>p"))
    pal = _palette(datasets)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for ds in datasets:
        pts = []
        for g in (g for g in groups if g.dataset == ds):
            x, y = stats.summarise(g.values(COST)), stats.summarise(g.values(quality))
            if x.n == 0 or y.n == 0:
                continue
            ax.errorbar(x.mean, y.mean, xerr=0 if math.isnan(x.half) else x.half,
                        yerr=0 if math.isnan(y.half) else y.half, fmt=markers.get(g.arm, "o"),
                        color=pal[ds], capsize=3, ms=7)
            pts.append((x.mean, y.mean))
        front = _pareto(pts, hib)
        if len(front) > 1:
            ax.plot(*zip(*front), "--", color=pal[ds], lw=1, alpha=0.8)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], marker=markers[a], ls="", color="0.3", label=a) for a in arms]
    handles += [Line2D([], [], ls="--", color=pal[d], label=f"Pareto front — {d}") for d in datasets]
    ax.legend(handles=handles, fontsize=8)
    ax.set_xlabel("training throughput (images/s, ↑ cheaper)")
    ax.set_ylabel(_label(quality))
    ax.set_title(f"{spec.name}: quality vs cost (mean ± 95% CI)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, fig_dir / "pareto.png")
    return "figures/pareto.png", f"{info(quality).title} vs training images/s, with the Pareto front"


BUDGET_KEYS = ["kid_samples", "fid_samples", "st_lpips", "recon_ssim", "recon_mse", "recon_chroma_error", "kl",
               "pegasus_v2_hybrid_lerp", "pegasus_v2_kid_mid_lerp"]


def budget_points(record) -> dict[int, dict[str, float]]:
    """{images seen: {metric: value}} of one done run: its snapshots, then its final step."""
    doc, bs = record.doc or {}, record.run.train.batch_size
    out = {}
    for step, m in sorted(((int(k), v) for k, v in (doc.get("snapshots") or {}).items()), key=lambda kv: kv[0]):
        out[step * bs] = {k: v["value"] for k, v in m.items() if isinstance(v, dict) and _finite(v.get("value"))}
    final = doc.get("metrics") or {}
    out[record.run.train.steps * bs] = {k: v["value"] for k, v in final.items()
                                        if isinstance(v, dict) and _finite(v.get("value"))}
    return out


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _budget_fig(spec, records, groups, keys, runs_root, fig_dir):
    done = [r for r in records if r.status == "done" and (r.doc or {}).get("snapshots")]
    if not done:
        return None
    curves = {(g.arm, g.dataset): [budget_points(r) for r in g.records if r in done] for g in groups}
    shown = [k for k in BUDGET_KEYS if any(k in pt for runs in curves.values() for c in runs for pt in c.values())]
    if not shown:
        return None
    ncol = min(3, len(shown))
    nrow = math.ceil(len(shown) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    pal = dict(zip(curves, colours(len(curves))))
    for ax, key in zip(axes.flat, shown):
        for series, runs in curves.items():
            seen = sorted({n for c in runs for n, pt in c.items() if key in pt})
            if not seen:
                continue
            summ = [stats.summarise([c[n][key] for c in runs if key in c.get(n, {})]) for n in seen]
            mean = np.array([s.mean for s in summ])
            half = np.array([0.0 if math.isnan(s.half) else s.half for s in summ])
            ax.plot(seen, mean, "o-", color=pal[series], ms=3, lw=1.2, label=" / ".join(series))
            ax.fill_between(seen, mean - half, mean + half, color=pal[series], alpha=0.2, lw=0)
        ax.set_xscale("log")
        ax.set_title(_label(key), fontsize=9)
        ax.set_xlabel("images seen", fontsize=8)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{spec.name}: metrics against training budget (mean ± 95% t-band over seeds)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, fig_dir / "budget.png")
    return "figures/budget.png", "each key metric against images seen (snapshots of one run per seed)"


def _lr_fig(spec, records, groups, keys, runs_root, fig_dir):
    lrs = {float(r.run.train.lr) for r in records}
    if len(lrs) < 2:
        return None
    quality = next((k for k in ("recon_ssim", "fid_samples", "recon_psnr") if k in keys), None)
    rows = []
    for r in records:
        if r.status not in ("done", "diverged"):
            continue
        loss = "+".join(t.name for t in r.run.loss if t.name != "kl") or "kl"
        q = None
        if r.status == "done" and quality:
            q = (r.doc.get("metrics") or {}).get(quality, {}).get("value")
        rows.append((f"{loss} ({r.run.dataset})", float(r.run.train.lr), r.status == "diverged", q))
    if not rows:
        return None
    series = sorted({s for s, *_ in rows})
    pal = dict(zip(series, colours(len(series))))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for s in series:
        xs = sorted({lr for t, lr, *_ in rows if t == s})
        div = [np.mean([d for t, lr, d, _ in rows if t == s and lr == x]) for x in xs]
        a2.plot(xs, div, "o-", color=pal[s], label=s)
        qs = [[q for t, lr, d, q in rows if t == s and lr == x and q is not None] for x in xs]
        pts = [(x, stats.summarise(v)) for x, v in zip(xs, qs) if v]
        if pts:
            a1.errorbar([x for x, _ in pts], [m.mean for _, m in pts],
                        yerr=[0 if math.isnan(m.half) else m.half for _, m in pts], fmt="o-", color=pal[s],
                        capsize=3, label=s)
    for ax in (a1, a2):
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
    a1.set_ylabel(_label(quality) if quality else "quality")
    a1.set_title("final quality of non-diverged runs (mean ± 95% CI)", fontsize=10)
    a2.set_ylabel("fraction of runs diverged")
    a2.set_ylim(-0.05, 1.05)
    a2.set_title("divergence rate", fontsize=10)
    a2.legend(title="loss (dataset)", fontsize=8)
    fig.suptitle(f"{spec.name}: learning-rate sweep per loss", fontsize=11)
    fig.tight_layout()
    save_figure(fig, fig_dir / "lr_sweep.png")
    return "figures/lr_sweep.png", "Final quality and divergence rate vs learning rate, per loss"


def _rows(path: Path, res: int, first: int, count: int) -> np.ndarray | None:
    """Rows first..first+count-1 of a torchvision grid (padding 2) as an (H, W, 3) array."""
    if not path.exists():
        return None
    img = plt.imread(path)[..., :3]
    step = res + 2
    return img[first * step: (first + count) * step + 2]


def _sheet_figs(spec, records, groups, runs_root, fig_dir):
    out = []
    for ds in dict.fromkeys(g.dataset for g in groups):
        picks = []
        for g in (g for g in groups if g.dataset == ds):
            r = next((r for r in g.records if r.status == "done"), None)
            if r is not None:
                picks.append(r)
        if not picks:
            continue
        res = int(picks[0].run.model.get("image_size") or picks[0].run.data.resolution or 32)
        d0 = runs_root / picks[0].run.rel_dir
        real = _rows(d0 / "recon.png", res, 0, 1)    # odd (first) row of the recon sheet: test images
        if real is None:
            continue
        panels = [("real test images", real)]
        for r in picks:
            d = runs_root / r.run.rel_dir
            rec = _rows(d / "recon.png", res, 1, 1)
            smp = _rows(d / "samples.png", res, 0, 1)
            if rec is not None:
                panels.append((f"{r.run.arm}: reconstruction (seed {r.run.seed})", rec))
            if smp is not None:
                panels.append((f"{r.run.arm}: samples z ~ N(0, I) (seed {r.run.seed})", smp))
        width = max(p.shape[1] for _, p in panels)
        fig, axes = plt.subplots(len(panels), 1, figsize=(min(12, 2 + width / 40), 0.45 + 0.9 * len(panels) *
                                                          max(1.0, res / 48)), squeeze=False)
        for ax, (title, im) in zip(axes[:, 0], panels):
            ax.imshow(np.clip(im, 0, 1), interpolation="nearest")
            ax.set_title(title, fontsize=9, loc="left")
            ax.axis("off")
        fig.suptitle(f"{spec.name} — {ds}: real test images, then per arm its reconstructions and samples",
                     fontsize=10)
        fig.tight_layout()
        name = f"sheets-{ds}.png"
        save_figure(fig, fig_dir / name)
        out.append((f"figures/{name}", f"Real images, reconstructions and samples per arm ({ds})"))
    return out
