"""Paper claims C1-C11: which ablation and which comparisons decide each, and results/CLAIMS.md.

    CLAIMS["C1"].checks   -> (Check(metric, arm, ref, expect), ...)
    write_claims(results_root) -> results/CLAIMS.md      # from results/*/summary.json

A claim is decided only by the comparisons registered here (written before looking at results),
never by whichever metric happens to look good.  Arm names are fnmatch patterns so that, e.g.,
the learning-rate sweep can pool ``ssim_lr*`` arms.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import stats, store
from bench.metrics import CATALOGUE

EQUIV_MARGIN = 0.02     # "no difference" claims: |effect| must fit in ±2% of the reference mean
DIVERGED = "diverged"   # pseudo-metric: fraction of runs that diverged (Fisher exact test)


@dataclass(frozen=True)
class Check:
    metric: str                 # metric key, or DIVERGED
    arm: str                    # arm the claim is about (pattern)
    ref: str                    # arm it is compared with (pattern)
    expect: str                 # "higher" | "lower" | "same": metric of `arm` relative to `ref`
    datasets: tuple[str, ...] = ()   # empty: every dataset the ablation ran


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    ablations: tuple[str, ...]  # preferred first (paper scale before CPU scale before the demo)
    checks: tuple[Check, ...]
    note: str = ""


def _c(metric, arm, ref, expect, *datasets):
    return Check(metric, arm, ref, expect, tuple(datasets))


CLAIMS: dict[str, Claim] = {c.id: c for c in [
    Claim("C1", "SSIM reconstruction loss gives better images than MSE", ("loss", "loss_cpu"),
          (_c("recon_ssim", "ssim", "mse", "higher"), _c("fid_samples", "ssim", "mse", "lower"),
           _c("lpips", "ssim", "mse", "lower")),
          "recon SSIM alone favours the arm trained on SSIM; sample FID and LPIPS are the independent checks "
          "(used whenever the runs measured them)."),
    Claim("C2", "SSIM makes training more stable and allows a higher learning rate", ("lr",),
          (_c(DIVERGED, "ssim*", "mse*", "lower"),),
          "lr ablation arms are named <loss>_lr<value>; divergence pooled over all learning rates."),
    Claim("C3", "The pooled colour loss fixes SSIM's colour accuracy", ("loss", "loss_cpu"),
          (_c("sample_colour_dist", "ssim_colour", "ssim", "lower"),
           _c("recon_colour_dist", "ssim_colour", "ssim", "lower"))),
    Claim("C4", "4x4 kernels prevent the artifacts seen with 3x3", ("architecture", "kernel"),
          (_c("checkerboard", "kernel3", "baseline", "higher"), _c("spectral_dist", "kernel3", "baseline", "higher"))),
    Claim("C5", "Max-pool vs stride: minimal quality difference; stride is cheaper", ("architecture", "sampling"),
          (_c("recon_ssim", "maxpool", "baseline", "same"), _c("train_images_per_s", "maxpool", "baseline", "lower"))),
    Claim("C6", "ResNet blocks: no significant quality gain and slower training", ("architecture",),
          (_c("recon_ssim", "resnet", "baseline", "same"), _c("train_images_per_s", "resnet", "baseline", "lower"))),
    Claim("C7", "Linear (fc) heads beat convolutional heads", ("architecture", "heads"),
          (_c("recon_ssim", "conv_heads", "baseline", "lower"), _c("fid_samples", "conv_heads", "baseline", "higher"))),
    Claim("C8", "A deep-feature loss from the VAE's own encoder brings no significant change", ("loss", "deep_feature"),
          (_c("recon_ssim", "deep_feature*", "ssim_colour", "same"),
           _c("fid_samples", "deep_feature*", "ssim_colour", "same"))),
    Claim("C9", "Latent 1024 is best for STL-10, 128 for CIFAR-10", ("latent",),
          (_c("fid_samples", "z1024", "z128", "lower", "stl10"), _c("fid_samples", "z128", "z1024", "lower", "cifar10")),
          "latent arms are named z<dim>."),
    Claim("C10", "Training on horse+bird only over-fits; the full dataset is better", ("subset",),
          (_c("recon_gap", "subset", "full", "higher"), _c("fid_samples", "subset", "full", "higher"))),
    Claim("C11", "Latent interpolation produces hybrid (winged-horse) images", ("pegasus",), (),
          "qualitative (ranked horse<->bird interpolation sheets); the `pegasus` command is not built yet, so no verdict."),
]}

RULE = f"""\
**Verdict rule.** Each claim is decided only by the comparisons registered for it in
`bench/claims.py` (listed per claim below): a metric of one arm against a reference arm, in every
dataset the ablation ran, over seeds. A directional comparison scores **+** when the claimed
direction is significant (two-sided Welch t-test, p < {stats.ALPHA}), **−** when the opposite
direction is significant, **0** otherwise (including n < 2 runs per arm). A "no difference"
comparison scores **+** when the 95% Welch interval of the difference lies within ±{EQUIV_MARGIN:.0%}
of the reference mean (equivalence), **−** when the difference is significant and larger than that
margin, **0** otherwise. Divergence rates use Fisher's exact test on diverged/total runs.
A claim is **supported** if every available comparison scores +, **contradicted** if at least one
scores − and none scores +, and **inconclusive** otherwise (mixed results, or nothing significant).
Comparisons whose metric was not measured are listed and do not count. When several ablations test
a claim, the verdict comes from the first one listed that has results (paper scale before CPU
scale; the shapes smoke demo never counts). n = finished (done) runs per arm; with 2–3 seeds only large
effects reach significance, so *inconclusive* means "not shown", not "no effect".
"""


@dataclass
class Outcome:
    check: Check
    dataset: str
    arm: str
    ref: str
    effect: str          # human-readable effect with CI
    p: float
    n: str
    score: int | None    # +1 / -1 / 0; None: not measured


def _match(pattern: str, arms: list[str]) -> list[str]:
    return [a for a in arms if fnmatch.fnmatchcase(a, pattern)]


def _fmt(key: str) -> str:
    return CATALOGUE[key].fmt if key in CATALOGUE else ".4g"


def evaluate(claim: Claim, summary: dict[str, Any]) -> list[Outcome]:
    groups = summary["groups"]
    arms = list(summary.get("arms") or dict.fromkeys(g["arm"] for g in groups))
    base = summary.get("baseline")
    out: list[Outcome] = []
    for chk in claim.checks:
        ref_pat = base if chk.ref == "baseline" and base else chk.ref
        a_arms, r_arms = _match(chk.arm, arms), _match(ref_pat, arms)
        if not a_arms or not r_arms:
            continue
        for ds in summary["datasets"]:
            if chk.datasets and ds not in chk.datasets:
                continue
            ga = [g for g in groups if g["dataset"] == ds and g["arm"] in a_arms]
            gr = [g for g in groups if g["dataset"] == ds and g["arm"] in r_arms]
            if not ga or not gr:
                continue
            label_a, label_r = ",".join(g["arm"] for g in ga), ",".join(g["arm"] for g in gr)
            if chk.metric == DIVERGED:
                ka, na = sum(g["counts"]["diverged"] for g in ga), sum(g["counts"]["done"] + g["counts"]["diverged"] for g in ga)
                kr, nr = sum(g["counts"]["diverged"] for g in gr), sum(g["counts"]["done"] + g["counts"]["diverged"] for g in gr)
                if na == 0 or nr == 0:
                    out.append(Outcome(chk, ds, label_a, label_r, "not run", math.nan, "0", None))
                    continue
                p = stats.fisher(ka, na, kr, nr)
                d = ka / na - kr / nr
                sig = stats.is_significant(p)
                score = 0 if not sig else (1 if (d < 0) == (chk.expect == "lower") else -1)
                out.append(Outcome(chk, ds, label_a, label_r, f"{ka}/{na} vs {kr}/{nr} diverged", p,
                                   f"{na} vs {nr}", score))
                continue
            va = [v for g in ga for v in (g["metrics"].get(chk.metric) or {}).get("values", [])]
            vr = [v for g in gr for v in (g["metrics"].get(chk.metric) or {}).get("values", [])]
            if not va or not vr:
                out.append(Outcome(chk, ds, label_a, label_r, "not measured", math.nan, f"{len(va)} vs {len(vr)}", None))
                continue
            t = stats.welch(va, vr)
            f = _fmt(chk.metric)
            ci = "" if math.isnan(t.lo) else f" [{t.lo:+{f}}, {t.hi:+{f}}]"
            effect = f"{t.diff:+{f}}{ci}"
            if chk.expect == "same":
                margin = EQUIV_MARGIN * abs(stats.summarise(vr).mean)
                if not math.isnan(t.lo) and -margin <= t.lo and t.hi <= margin:
                    score = 1
                elif t.significant and abs(t.diff) > margin:
                    score = -1
                else:
                    score = 0
                effect += f" (margin ±{margin:{f}})"
            elif not t.significant:
                score = 0
            else:
                score = 1 if (t.diff > 0) == (chk.expect == "higher") else -1
            out.append(Outcome(chk, ds, label_a, label_r, effect, t.p, f"{len(va)} vs {len(vr)}", score))
    return out


def verdict(outcomes: list[Outcome]) -> str:
    scores = [o.score for o in outcomes if o.score is not None]
    if not scores:
        return "inconclusive (nothing measured)"
    if all(s == 1 for s in scores):
        return "supported"
    if -1 in scores and 1 not in scores:
        return "contradicted"
    return "inconclusive"


def _p(p: float) -> str:
    return "—" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


_MARK = {1: "+", -1: "−", 0: "0", None: "not measured"}


def write_claims(results_root: Path) -> Path:
    results_root = Path(results_root)
    summaries = {p.parent.name: store.read_json(p) for p in sorted(results_root.glob("*/summary.json"))}
    overview, sections = [], []
    for cid, claim in CLAIMS.items():
        names = list(claim.ablations) + sorted(n for n, s in summaries.items()
                                               if cid in s.get("claims", []) and n not in claim.ablations)
        ran = [n for n in names if n in summaries]
        sec = [f'<a id="{cid.lower()}"></a>\n\n## {cid} — {claim.text}\n',
               f"Tested by ablation(s): {', '.join(f'`{n}`' for n in names)}. Decided by: "
               + ("; ".join(f"`{c.arm}` vs `{c.ref}` on `{c.metric}` expected {c.expect}"
                            + (f" ({', '.join(c.datasets)})" if c.datasets else "") for c in claim.checks)
                  or "no statistical comparison") + "."]
        if claim.note:
            sec.append(f"Note: {claim.note}")
        decided, decided_by = None, None
        for n in ran:
            s = summaries[n]
            outs = evaluate(claim, s)
            if not outs:
                sec.append(f"\n`{n}`: the arms this claim needs are not in this ablation.")
                continue
            v = verdict(outs)
            if decided is None:
                decided, decided_by = v, n
            figs = ", ".join(f"[{Path(f['file']).stem}]({n}/{f['file']})" for f in s.get("figures", []))
            sec.append(f"\n**`{n}`** → {v}. Table: [{n}/table.md]({n}/table.md)"
                       + (f"; figures: {figs}" if figs else "") + f". Runs: {s['counts']['done']}/{s['planned']} done.\n")
            sec.append("| dataset | comparison | metric | effect (95% CI) | Welch/Fisher p | n | score |\n"
                       "|---|---|---|---|---|---|---|")
            for o in outs:
                sec.append(f"| {o.dataset} | {o.arm} vs {o.ref} (expect {o.check.expect}) | {o.check.metric} | "
                           f"{o.effect} | {_p(o.p)} | {o.n} | {_MARK[o.score]} |")
        if decided is None:
            decided = "not run"
            sec.append("\nNot run: no results for " + " / ".join(f"`{n}`" for n in names) + " yet.")
        link = f"[{decided_by}]({decided_by}/README.md)" if decided_by else "—"
        overview.append(f"| [{cid}](#{cid.lower()}) | {claim.text} | **{decided}** | {link} |")
        sections.append("\n".join(sec) + "\n")
    text = ("# Paper claims: verdicts\n\nGenerated from `results/*/summary.json` by `bench/claims.py` at the end of "
            "every `bench run` / `bench table`; do not edit.\n\n" + RULE + "\n"
            "| claim | paper says | verdict | decided by |\n|---|---|---|---|\n" + "\n".join(overview) + "\n\n"
            + "\n".join(sections))
    store.write_text(results_root / "CLAIMS.md", text)
    return results_root / "CLAIMS.md"
