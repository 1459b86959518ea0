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
