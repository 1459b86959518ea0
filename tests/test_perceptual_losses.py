"""Weight-backed loss terms (deep_feature vgg19, lpips) through the real weights path, with small
randomly initialised networks planted in a temp dir (their numbers are never shown as LPIPS)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision

from bench.errors import WeightsError
from bench.weights import files as weights
from losses import Objective
from models import MODELS, VAEOutput


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.ENV_DIR, str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    return tmp_path


def plant(monkeypatch, weights_dir, key, module):
    path = weights_dir / weights.FILES[key].filename
    torch.save(module.state_dict(), path)
    monkeypatch.setitem(weights.FILES, key, dataclasses.replace(weights.FILES[key],
                                                                sha256=weights.sha256_file(path)))
    return path


def out_of(recon):
    b = recon.shape[0]
    return VAEOutput(recon, torch.zeros(b, 4), torch.zeros(b, 4), torch.zeros(b, 4))


@pytest.mark.slow
def test_vgg19_deep_feature_real_path(weights_dir, monkeypatch):
    torch.manual_seed(0)
    vgg = torchvision.models.vgg19(weights=None)
    plant(monkeypatch, weights_dir, "vgg19", vgg)
    obj = Objective.from_config([{"name": "deep_feature", "network": "vgg19"}])
    x = torch.rand(2, 3, 32, 32)
    total, terms = obj(x, out_of(x.clone()), None, 0)
    assert total.item() == pytest.approx(0.0, abs=1e-6)                 # identical images
    recon = torch.rand(2, 3, 32, 32, requires_grad=True)
    total, _ = obj(x, out_of(recon), None, 0)
    total.backward()
    assert total.item() > 0 and recon.grad.abs().sum() > 0
    # the reference: the same taps computed by hand from the planted network
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    def taps(img):
        h, out = (img - mean) / std, []
        for i, layer in enumerate(vgg.features[:12]):
            h = layer(h)
            if i in (1, 6, 11):
                out.append(h)
        return out
    with torch.no_grad():
        ref = sum((a - b).square().flatten(1).mean(1) for a, b in zip(taps(recon), taps(x))) * 3 * 32 * 32
    assert total.item() == pytest.approx(ref.mean().item(), rel=1e-5)
    assert not any(p.requires_grad for p in obj.parameters())           # frozen, not optimised


def test_vgg19_corrupt_file_is_one_line_error(weights_dir):
    (weights_dir / weights.FILES["vgg19"].filename).write_bytes(b"truncated")
    with pytest.raises(WeightsError, match="corrupt"):
        Objective.from_config([{"name": "deep_feature", "network": "vgg19"}])


@pytest.mark.slow
def test_lpips_loss_matches_lpips_package(weights_dir, monkeypatch):
    lpips = pytest.importorskip("lpips")
    torch.manual_seed(1)
    alex = torchvision.models.alexnet(weights=None)
    plant(monkeypatch, weights_dir, "alexnet", alex)
    obj = Objective.from_config([{"name": "lpips", "net": "alex"}])
    x, r = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    total, _ = obj(x, out_of(r), None, 0)
    ref_model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    feats = alex.features.state_dict()
    ref_model.net.load_state_dict({n: feats[f"{n.split('.')[1]}.{n.split('.', 2)[2]}"]
                                   for n in ref_model.net.state_dict()})
    with torch.no_grad():
        ref = ref_model(r * 2 - 1, x * 2 - 1).flatten() * 3 * 32 * 32
    assert total.item() == pytest.approx(ref.mean().item(), rel=1e-5)
    assert obj(x, out_of(x), None, 0)[0].item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.slow
def test_lpips_loss_trains_a_model(weights_dir, monkeypatch):
    torch.manual_seed(2)
    plant(monkeypatch, weights_dir, "alexnet", torchvision.models.alexnet(weights=None))
    model = MODELS.build("conv", {"image_size": 32, "widths": [8, 16], "latent_dim": 8})
    obj = Objective.from_config([{"name": "kl"}, {"name": "lpips"}])
    x = torch.rand(2, 3, 32, 32)
    total, _ = obj(x, model(x), model, 0)
    total.backward()
    assert torch.isfinite(total) and any(p.grad is not None for p in model.parameters())
