"""The scoring pass end to end on a tiny trained CPU checkpoint."""
from __future__ import annotations

import math
import sys

import pytest
import torch

from bench.config import schema as config
from bench.data import evalsets
from bench.metrics import CATALOGUE
from bench.train.loop import result_dict, train

TINY = """\
name: tiny
question: does scoring run?
claims: [C1]
datasets: [shapes]
seeds: [0]
data:
  shapes: {n_train: 64, n_test: 32}
defaults:
  model: {name: conv, widths: [8, 16], latent_dim: 8}
  loss: [{name: kl}, {name: mse}]
  train: {steps: 6, batch_size: 16, lr: 1e-3, log_every: 2, ckpt_every: 6, device: cpu}
  eval: {n_test: 32, n_samples: 16, batch_size: 16, sheet: 16}
arms:
  mse: {}
"""

WEIGHT_FREE = ["recon_ssim", "recon_ms_ssim", "recon_psnr", "recon_mse", "train_recon_mse", "recon_gap",
               "sample_colour_dist", "recon_colour_dist", "sample_saturation", "recon_saturation",
               "real_saturation", "spectral_dist", "checkerboard", "sample_sharpness", "recon_sharpness",
               "kl", "active_units", "params", "flops_per_image", "train_images_per_s",
               "sample_images_per_s", "mfu", "wall_s"]
FIDELITY = ["fid_samples", "kid_samples", "fid_recon", "kid_recon", "lpips", "st_lpips"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    (d / "tiny.yaml").write_text(TINY)
    run = config.expand(config.load(d / "tiny.yaml"))[0]
    result = result_dict(train(run, d / "run", progress=False))
    assert result["status"] == "done"
    return run, d / "run", result


class FakeFidelity:
    """A stand-in fidelity module: records its inputs and returns plain records (fast)."""

    def __init__(self):
        self.seen: dict[str, list] = {}

    def fid_kid(self, fake, real, *, real_key, device, kid_subset_size=None):
        from bench.metrics.scoring import metric
        self.seen.setdefault("fid", []).append((fake.shape, real.shape, real_key))
        self.seen.setdefault("kid_subset", []).append(kid_subset_size)
        return metric(1.0, n=len(fake), split=real_key["split"]), metric(0.1, n=len(fake), split=real_key["split"])

    def lpips_metric(self, x, r, *, net="alex", device="cpu", split="test"):
        from bench.metrics.scoring import metric
        self.seen.setdefault("lpips", []).append((x.dtype, r.dtype, x.shape == r.shape))
        return metric(0.3, n=len(x), split=split)

    st_lpips_metric = lpips_metric


def _install(monkeypatch, mod):
    """Make the scoring pass use ``mod`` as its fidelity module (a fast stand-in)."""
    from bench.metrics import scoring
    monkeypatch.setattr(scoring, "fid_mod", mod)


@pytest.fixture(scope="module")
def scored(trained):
    from bench.metrics.scoring import score
    run, run_dir, result = trained
    fake = FakeFidelity()
    with pytest.MonkeyPatch.context() as mp:
        _install(mp, fake)
        m = score(run, run_dir, result)
    return m, fake.seen


def test_score_produces_every_weight_free_key_with_protocol(trained, scored):
    run, run_dir, result = trained
    m, seen = scored

    assert set(m) <= set(CATALOGUE), set(m) - set(CATALOGUE)
    for k in WEIGHT_FREE:
        rec = m[k]
        assert isinstance(rec["value"], (int, float)) and math.isfinite(rec["value"]), (k, rec)
        assert "n" in rec and "split" in rec, k
    for k in ["recon_ms_ssim", "sample_colour_dist", "checkerboard", "recon_sharpness", "spectral_dist"]:
        for field in ("resolution", "resize", "device", "seed"):
            assert field in m[k], (k, field)
    assert m["recon_ssim"]["n"] == 32 and m["recon_ssim"]["split"] == "test"
    assert m["train_recon_mse"]["split"] == "train" and m["train_recon_mse"]["n"] == 32
    # every record of an image set names it: rule, size and a hash of the indices
    for k in ("recon_ssim", "train_recon_mse", "sample_colour_dist", "checkerboard"):
        assert m[k]["index_sha256"] and m[k]["n_selected"] and "selection" in m[k], k
    assert m["train_recon_mse"]["index_sha256"] != m["recon_ssim"]["index_sha256"]
    assert m["recon_gap"]["value"] == pytest.approx(m["recon_mse"]["value"] - m["train_recon_mse"]["value"])
    assert m["sample_colour_dist"]["n"] == 16 and m["sample_colour_dist"]["n_real"] == 16
    assert 0 < m["recon_ms_ssim"]["value"] <= 1 and m["recon_ms_ssim"]["scales"] == 2
    assert m["recon_ssim"]["versions"]["pytorch-msssim"]
    per_dim = m["kl"]["per_dim"]
    assert len(per_dim) == 8 and sum(per_dim) == pytest.approx(m["kl"]["value"], rel=1e-4)
    assert 0 < m["mfu"]["value"] < 1
    assert m["flops_per_image"]["value"] < m["mfu"]["train_flops_per_image"] < 3 * m["flops_per_image"]["value"]
    assert m["peak_memory_mb"]["value"] is None and "CUDA" in m["peak_memory_mb"]["unavailable"]
    assert (run_dir / "recon.png").exists() and (run_dir / "samples.png").exists()

    # fidelity: n_fid defaults to max(n_samples, n_test) capped at n_test = 32 stratified test images;
    # samples: the first 16 (i.i.d.); recon pairs: the same 32 images
    for k in FIDELITY:
        assert m[k]["value"] is not None and "seed" in m[k] and "index_sha256" in m[k], k
    (s_fake, s_real, s_key), (r_fake, r_real, r_key) = seen["fid"]
    assert s_fake[0] == 16 and s_real[0] == 32 and s_key["n"] == 32 and s_key["index_sha256"]
    assert r_fake[0] == 32 and r_real[0] == 32 and r_key["split"] == "test"
    assert seen["kid_subset"] == [16, 16]                       # KID subsets smaller than the set
    assert all(a == b == torch.uint8 and same for a, b, same in seen["lpips"])


def _fidelity(trained):
    from bench.metrics import scoring
    run, _, _ = trained
    sets = evalsets.eval_sets(run)
    u8 = torch.zeros(32, 3, 32, 32, dtype=torch.uint8)
    return scoring._fidelity_metrics(u8, u8, sets, run, torch.device("cpu"),
                                     {"seed": 0, "device": "cpu", "resolution": 32}, True)


def test_missing_optional_packages_give_unavailable_records(trained, monkeypatch):
    """Without torch-fidelity, lpips and stlpips-pytorch the real fidelity module still imports, and
    every fidelity metric is `unavailable` with the reason instead of a crash."""
    for pkg in ("torch_fidelity", "torch_fidelity.registry", "lpips", "stlpips_pytorch"):
        monkeypatch.setitem(sys.modules, pkg, None)             # `import pkg` raises ImportError
    from bench.weights import networks as pretrained
    monkeypatch.setattr(pretrained, "_EXTRACTORS", {})
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name, *a: None)
    out = _fidelity(trained)
    assert set(out) == set(FIDELITY)
    for k in FIDELITY:
        assert out[k]["value"] is None and out[k]["unavailable"], k


def test_failing_fidelity_call_is_recorded_not_raised(trained, monkeypatch):
    fake = FakeFidelity()
    fake.fid_kid = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("inception exploded"))
    _install(monkeypatch, fake)
    out = _fidelity(trained)
    assert "inception exploded" in out["fid_samples"]["unavailable"] and out["lpips"]["value"] == 0.3


def test_real_fidelity_module_gives_values_or_reasons_and_scoring_is_deterministic(trained, scored, monkeypatch):
    """The real bench.metrics.fidelity through score(); Inception is made unavailable because
    FID on the CPU takes minutes (tests/test_fidelity.py covers its values)."""
    pytest.importorskip("bench.metrics.fidelity")
    from bench.errors import WeightsError
    from bench.metrics.scoring import score
    from bench.weights import files as weights

    def no_inception(*a, **k):
        raise WeightsError("Inception weights hidden by the test")

    monkeypatch.setattr(weights, "fid_source", no_inception)
    run, run_dir, result = trained
    m = score(run, run_dir, result)
    for k in FIDELITY:
        rec = m[k]
        assert (rec["value"] is not None and math.isfinite(rec["value"])) or rec.get("unavailable"), (k, rec)
    assert "hidden by the test" in m["fid_samples"]["unavailable"]
    first = scored[0]
    for k in ("recon_mse", "recon_ms_ssim", "kl", "sample_colour_dist", "checkerboard", "spectral_dist",
              "train_recon_mse"):
        assert m[k]["value"] == first[k]["value"], k
