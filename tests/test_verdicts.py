"""Verdicts that pool evidence and know their power: per-file and pooled verdicts (mixed), colour at
matched rate, trained-on metrics never counted, underpowered margins and the seeds they need, confounds
beside each comparison, untestable divergence, pending files, and evaluation subsets that depend only on
(dataset, split, n).  Each test fails on the claims report of 61a7dc1."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench import stats
from bench.config import schema as config
from bench.data import evalsets, subsets

ABLATIONS = Path(__file__).resolve().parent.parent / "ablations"

# --------------------------------------------------------------------------- stats.seeds_needed


def test_seeds_needed_solves_the_detectable_effect_for_n():
    a, b = [0.10, 0.30, 0.20], [0.50, 0.20, 0.40]
    spread = (float(np.std(a, ddof=1)), float(np.std(b, ddof=1)))
    mde = stats.detectable_effect(a, b)
    # at the current n the detectable effect is the margin these seeds resolve: no more seeds needed
    assert stats.seeds_needed(spread, mde * 1.0001) == 3
    assert stats.seeds_needed(spread, mde * 0.9999) == 4
    # a tenth of the margin: the smallest n whose detectable effect (Welch df, n seeds per arm) fits it
    n = stats.seeds_needed(spread, mde / 10)

    def effect(k):
        var, quart = sum(x * x for x in spread), sum(x ** 4 for x in spread)
        df = (k - 1) * var * var / quart
        return (stats.sps.t.ppf(0.975, df) + stats.sps.t.ppf(0.8, df)) * (var / k) ** 0.5
    assert effect(n) <= mde / 10 < effect(n - 1) and n > 100
    d = [0.10, 0.12, 0.08]
    assert stats.seeds_needed(float(np.std(d, ddof=1)), stats.detectable_effect_paired(d) * 1.0001, paired=True) == 3
    # one-sided (non-inferiority) margins need fewer seeds than two-sided (equivalence) ones
    assert stats.seeds_needed(0.1, 0.05, sided=1) < stats.seeds_needed(0.1, 0.05, sided=2)
    assert stats.seeds_needed(0.0, 0.01) == 2
    assert stats.seeds_needed(float("nan"), 0.01) is None and stats.seeds_needed(0.1, 0.0) is None


# --------------------------------------------------------------------------- evaluation subsets


CLASSES = ["ant", "bee", "cat", "dog"]

YAML = """\
name: {name}
question: subsets
datasets: [folder]
seeds: [0]
data:
  folder: {{source: imagefolder, root: {root}, resolution: 8}}
defaults:
  model: {{name: conv, widths: [8, 16], latent_dim: 8}}
  loss: [{{name: kl}}, {{name: mse}}]
  train: {{steps: 2, batch_size: 8, device: cpu}}
  eval: {{n_test: {n_test}, n_samples: 16, n_fid: 8, batch_size: 8, sheet: 8, fidelity: false}}
arms:
  a: {{}}
"""


def _folder(root, split: str, per_class: int) -> None:
    for k, name in enumerate(CLASSES):
        d = root / split / name
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8, 3), 40 * k + i, dtype=np.uint8)).save(d / f"{i:03d}.png")


def test_two_files_with_different_n_test_share_the_reference_subsets(tmp_path, monkeypatch):
    """loss_cpu scores all 10000 CIFAR test images, the other CIFAR files 2000: their KID references
    were different images because they were drawn from the test subset instead of the split."""
    monkeypatch.setenv("PEGASUS_CACHE", str(tmp_path / "cache"))
    _folder(tmp_path / "img", "train", per_class=6)
    _folder(tmp_path / "img", "test", per_class=10)
    sets = {}
    for name, n_test in (("small", 16), ("large", "null"), ("mid", 28)):
        p = tmp_path / f"{name}.yaml"
        p.write_text(YAML.format(name=name, root=tmp_path / "img", n_test=n_test))
        (run,) = config.expand(config.load(p))
        sets[name] = evalsets.eval_sets(run)
    assert len(sets["small"].test) == 16 and len(sets["large"].test) == 40
    assert sets["small"].test_sub.index_hash != sets["large"].test_sub.index_hash   # n differs: so does the set
    for which in ("fid", "ref"):
        hashes = {n: s.proto(which)["index_sha256"] for n, s in sets.items()}
        assert len(set(hashes.values())) == 1, (which, hashes)
    # the images themselves, not only the hashes; and the sheets' handful
    small, large = sets["small"], sets["large"]
    assert torch.equal(small.test[small.fid_pos.indices], large.test[large.fid_pos.indices])
    assert torch.equal(small.test[small.sheet_pos.indices], large.test[large.sheet_pos.indices])
    # where the test subset is every image the identifiers are what they were: the split's own sample
    assert large.proto("fid")["index_sha256"] == subsets.stratified(large.test_labels, 8).index_hash


# --------------------------------------------------------------------------- what each arm trained on


def test_every_loss_term_says_which_metrics_it_trains_on():
    from bench.metrics import CATALOGUE, TRAINED_ON, trained_on
    from losses import LOSSES
    assert set(TRAINED_ON) == set(LOSSES.names())
    assert all(set(v) <= set(CATALOGUE) for v in TRAINED_ON.values())
    assert trained_on(["kl", "ssim", "colour"]) == {"kl", "recon_ssim", "recon_ssim_all_classes", "recon_colour_error"}
    assert "recon_mse" in trained_on(["kl", "mse"]) and "recon_psnr" in trained_on(["gaussian_optimal_sigma"])
    assert not trained_on(["deep_feature"]) & {"kid_samples", "st_lpips", "recon_chroma_error"}


def test_kid_of_reconstructions_is_scored_beside_their_fid():
    """C10 compares both arms' reconstructions of the same held-out images against those images."""
    from bench.metrics import CATALOGUE, M, scoring
    assert M.KID_RECON in CATALOGUE and M.KID_RECON in scoring.FIDELITY_KEYS
    (run,) = [r for r in config.expand(config.load(ABLATIONS / "subset_stl10_cpu.yaml")) if r.arm == "full"][:1]
    out = scoring._fidelity_metrics(None, None, None, run, torch.device("cpu"), {"seed": 0}, False)
    assert out[M.KID_RECON]["value"] is None and "disabled" in out[M.KID_RECON]["unavailable"]


# --------------------------------------------------------------------------- colour at matched rate

RESULTS = ABLATIONS.parent / "results"


def test_matched_rate_block_from_summary_reproduces_the_runs_block_and_adds_chroma():
    """results/rd_matched_cpu/summary.json's block was computed from the runs; the summary's per-seed
    values give the same numbers, and the chroma error at matched rate beside them."""
    from bench import store
    from bench.report import rd
    s = store.read_json(RESULTS / "rd_matched_cpu" / "summary.json")
    block = rd.matched_from_summary(s)
    for key, old in s["rd"]["metrics"].items():
        assert block[key]["rates"] == pytest.approx(old["rates"])
        for fam, seeds in old["families"].items():
            for seed, values in seeds.items():
                assert block[key]["families"][fam][seed] == pytest.approx(values, rel=1e-12)
    chroma = block["recon_chroma_error"]
    assert len(chroma["rates"]) == rd.N_MATCHED
    mean = {f: np.mean([v for vals in seeds.values() for v in vals]) for f, seeds in chroma["families"].items()}
    assert mean["ssim"] > 13 > 9 > mean["mse"] > 7          # SSIM's colour error ~13.7 vs MSE's ~8


# --------------------------------------------------------------------------- pooled verdicts

def _group(arm: str, metrics: dict[str, list[float]], dataset: str = "cifar10", diverged: int = 0) -> dict:
    return {"arm": arm, "dataset": dataset, "counts": {"done": 3, "diverged": diverged},
            "metrics": {k: {"values": v, "seeds": list(range(len(v)))} for k, v in metrics.items()}}


def _summary(name: str, groups: list[dict], claims_: list[str], arms: dict | None = None,
             dataset: str = "cifar10", rd_block: dict | None = None) -> dict:
    arms = arms or {g["arm"]: {"losses": ["kl", "mse" if g["arm"].startswith("mse") else "ssim"]} for g in groups}
    return {"ablation": name, "claims": claims_, "datasets": [dataset], "baseline": groups[0]["arm"], "arms": arms,
            "groups": groups, "rd": rd_block, "counts": {"done": 3 * len(groups)}, "planned": 3 * len(groups)}


def _write(tmp_path, *summaries) -> str:
    import json

    from bench.report import claims
    for s in summaries:
        (tmp_path / s["ablation"]).mkdir(parents=True, exist_ok=True)
        (tmp_path / s["ablation"] / "summary.json").write_text(json.dumps(s))
    return claims.write_claims(tmp_path).read_text()


def _row(text: str, cid: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| [{cid}]"))


def test_no_file_decides_alone_and_files_that_disagree_make_the_claim_mixed(tmp_path):
    """C1 used to take the first listed file with results: supported from one file while another said
    contradicted.  Now every file's verdict is shown and the claim's pools them."""
    better = _summary("loss_cpu", [_group("mse", {"kid_samples": [0.45, 0.46, 0.44]}),
                                   _group("ssim", {"kid_samples": [0.21, 0.22, 0.20]})], ["C1"])
    worse = _summary("loss_stl10_cpu", [_group("mse", {"kid_samples": [0.20, 0.21, 0.19]}, "stl10"),
                                        _group("ssim", {"kid_samples": [0.40, 0.41, 0.42]}, "stl10")],
                     ["C1"], dataset="stl10")
    text = _write(tmp_path, better, worse)
    row = _row(text, "C1")
    assert "**mixed**" in row, row
    assert "[loss_cpu](loss_cpu/README.md): supported" in row and "[loss_stl10_cpu](loss_stl10_cpu/README.md): " \
        "contradicted" in row
    assert "**Verdict: mixed.** The files disagree: `loss_cpu` supported; `loss_stl10_cpu` contradicted" in text
    # the rule change is registered, dated, in the rules text above the overview
    rules = text.split("| claim |")[0]
    assert "**Rule changes**" in rules and "2026-12-03: no file decides alone" in rules
    # files that agree keep their verdict; one file alone still shows as one file's verdict
    (tmp_path / "loss_stl10_cpu" / "summary.json").unlink()
    assert "**supported**" in _row(_write(tmp_path), "C1")


def test_pooled_verdict_rules():
    from bench.report import claims

    def f(name, *scores):
        outs = [claims.Outcome(claims.CLAIMS["C1"].checks[0], "x", "a", "r", "", 0.0, "3", s) for s in scores]
        return claims.FileResult(name, {}, outs)
    c1 = claims.CLAIMS["C1"]
    assert claims.pooled(c1, [f("a", 1, 1), f("b", 1)]) == "supported"
    assert claims.pooled(c1, [f("a", 1, 1), f("b", 1, 0)]) == "inconclusive"       # not shown in b
    assert claims.pooled(c1, [f("a", 1), f("b", -1, 0)]) == "mixed"
    assert claims.pooled(c1, [f("a", 0), f("b", -1)]) == "contradicted"
    assert claims.pooled(c1, [f("a", 1), f("b", None)]) == "supported"             # b measured nothing
    assert claims.pooled(c1, []) == "not run"


# --------------------------------------------------------------------------- trained-on metrics

def test_a_registered_comparison_on_a_trained_on_metric_is_shown_not_counted():
    from bench.report import claims
    chk = claims._check("recon_ssim", "b", "a", "same")
    s = _summary("x", [_group("a", {"recon_ssim": [0.5, 0.51, 0.49]}), _group("b", {"recon_ssim": [0.52, 0.5, 0.49]})],
                 [], arms={"a": {"losses": ["kl", "ssim"]}, "b": {"losses": ["kl", "ssim", "deep_feature"]}})
    (o,) = claims.evaluate(claims.Claim("X", "x", ("x",), (chk,)), s)
    assert o.score is None and o.state == claims.TRAINED and o.why == "both arms train on it"
    assert claims._mark(o) == "shown, not counted (both arms train on it)"


# --------------------------------------------------------------------------- power

def test_equivalence_whose_detectable_effect_exceeds_the_margin_is_underpowered(tmp_path):
    """C8's ST-LPIPS margin was ±0.004 against a detectable effect of ±0.024: it scored 0, as if 3 seeds
    could have shown the difference was small."""
    from bench.report import claims
    chk = claims._check("st_lpips", "b", "a", "same")
    noisy = _summary("x", [_group("a", {"st_lpips": [0.20, 0.22, 0.21]}),
                           _group("b", {"st_lpips": [0.21, 0.23, 0.20]})], [])
    (o,) = claims.evaluate(claims.Claim("X", "x", ("x",), (chk,)), noisy)
    assert o.state == claims.UNDERPOWERED and o.score == 0 and o.mde > o.margin
    assert o.needed == stats.seeds_needed((0.01, float(np.std([0.21, 0.23, 0.20], ddof=1))), o.margin) and o.needed > 3
    assert claims._mark(o) == f"underpowered (needs {o.needed} seeds)"
    # a clear, large difference still scores −, power or not
    far = _summary("x", [_group("a", {"st_lpips": [0.20, 0.22, 0.21]}), _group("b", {"st_lpips": [0.40, 0.42, 0.41]})],
                   [])
    (o,) = claims.evaluate(claims.Claim("X", "x", ("x",), (chk,)), far)
    assert o.score == -1
    # the same for non-inferiority; and a tight one is + as before
    tight = _summary("x", [_group("a", {"st_lpips": [0.2000, 0.2001, 0.1999]}),
                           _group("b", {"st_lpips": [0.2000, 0.2002, 0.1999]})], [])
    for expect in ("not_higher", "same"):
        (o,) = claims.evaluate(claims.Claim("X", "x", ("x",), (claims._check("st_lpips", "b", "a", expect),)), tight)
        assert o.score == 1 and not o.state, (expect, o.effect)
    (o,) = claims.evaluate(claims.Claim("X", "x", ("x",), (claims._check("st_lpips", "b", "a", "not_higher"),)),
                           noisy)
    assert o.state == claims.UNDERPOWERED


def test_the_claim_section_says_how_many_seeds_the_spread_would_need(tmp_path):
    dfc = _summary("dfc_cpu", [_group("ssim_colour", {"st_lpips": [0.20, 0.22, 0.21],
                                                      "kid_samples": [0.2, 0.21, 0.19]}),
                               _group("dfc_self", {"st_lpips": [0.21, 0.23, 0.20], "kid_samples": [0.4, 0.5, 0.45]})],
                   ["C8"], arms={"ssim_colour": {"losses": ["kl", "ssim", "colour"]},
                                 "dfc_self": {"losses": ["kl", "ssim", "colour", "deep_feature"]}})
    text = _write(tmp_path, dfc)
    section = text.split('<a id="c8">')[1].split('<a id="c9">')[0]
    assert "**Power.**" in section and "`st_lpips` dfc_self vs ssim_colour — margin ±0.004" in section
    assert "underpowered (needs" in section and "needs" in section.split("**Power.**")[1].split("\n\n")[1]


# --------------------------------------------------------------------------- confounds

def test_confounds_of_both_arms_stand_beside_every_comparison(tmp_path):
    """C9's z1024 has 4.7x the parameters and 2x the test KL of z128 (results/latent_stl10_cpu)."""
    from bench.report import claims
    z = {"z1024": (13970307, 188160000, 16, 690.7), "z128": (2958467, 166139904, 16, 348.6),
         "z512": (7677827, 175577088, 16, 622.3)}
    groups = [_group(a, {"kid_samples": [0.29 + 0.01 * i, 0.30, 0.31] if a == "z1024" else [0.35, 0.36, 0.37],
                         "params": [p] * 3, "flops_per_image": [f] * 3, "bottleneck": [b] * 3, "kl": [k] * 3},
                     "stl10") for i, (a, (p, f, b, k)) in enumerate(z.items())]
    s = _summary("latent_stl10_cpu", groups, ["C9"], dataset="stl10")
    o = next(o for o in claims.evaluate(claims.CLAIMS["C9"], s) if o.ref == "z128")
    assert o.confounds == ("params 14M vs 2.96M (4.7×); FLOPs/img 188M vs 166M (1.1×); bottleneck 16 vs 16; "
                           "KL 691 vs 349 nats (2.0×)")
    text = _write(tmp_path, s)
    assert "| confounds (arm vs ref) |" in text and "params 14M vs 2.96M (4.7×)" in text


# --------------------------------------------------------------------------- untestable divergence

def _lr(name: str, lrs, mse_div: int = 0, ssim_div: int = 0) -> dict:
    groups, arms = [], {}
    for loss, div in (("mse", mse_div), ("ssim", ssim_div)):
        for i, lr in enumerate(lrs):
            arm = f"{loss}--train.lr_{lr:g}"
            arms[arm] = {"losses": ["kl", loss], "swept": {"train.lr": lr}}
            k = min(3, max(0, div - 3 * i))
            g = _group(arm, {"kid_samples": [0.3, 0.31, 0.29][:3 - k]}, diverged=k)
            g["counts"]["done"] = 3 - k
            groups.append(g)
    return _summary(name, groups, ["C2"], arms)


def test_divergence_without_contrast_is_untestable(tmp_path):
    """lr_cpu: 0/12 vs 0/12 diverged scored 0, as if the seeds were too few; there was nothing to compare."""
    import dataclasses

    from bench.report import claims
    low = _lr("lr_cpu", (0.001, 0.003, 0.01, 0.03))
    text = _write(tmp_path, low)
    assert "**`lr_cpu`** → untestable at this budget" in text and "untestable (no contrast)" in text
    c2 = dataclasses.replace(claims.CLAIMS["C2"], awaits=())      # the claim alone, waiting for nothing
    files = [claims.FileResult("lr_cpu", low, claims.evaluate(c2, low))]
    assert claims.pooled(c2, files) == "untestable at this budget"
    diverging = _lr("lr_cpu", (0.001, 0.003, 0.01, 0.03), mse_div=8)
    assert claims.verdict(claims.evaluate(c2, diverging)) == "supported"

