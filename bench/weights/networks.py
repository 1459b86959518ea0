"""Frozen pretrained networks, one home for the losses and the metrics that use them.

    build_inception(src, device)     torch-fidelity's Inception feature extractor (FID / KID)
    build_lpips(net) / build_st_lpips(net)   LPIPS (torchvision trunk + lpips heads) / shift-tolerant LPIPS
    VGG19Features()                  relu1_1, relu2_1, relu3_1 of VGG19 (the deep-feature loss of Hou et al.)

Weights come from ``bench.weights.files`` (located, sha256-checked, never downloaded here); a missing or
corrupt file raises ``WeightsError`` with the reason.  ``losses`` and ``bench.metrics`` both import
this module and neither imports the other.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from bench.errors import WeightsError
from bench.weights import files as weights

FEATURE_LAYER = "2048"
# Inception runs in channels_last: on this CPU 1.5-1.7x the images/s of NCHW (``pytest --benchmark -k
# inception_layout -s``); features differ from NCHW by float summation order only (~1e-6 of their scale).
INCEPTION_LAYOUT = "channels_last"      # a torch.memory_format name, recorded in the FID/KID protocol
LPIPS_TRUNK = {"alex": "alexnet", "vgg": "vgg16"}
STLPIPS_MISSING = "stlpips-pytorch not installed: pip install -e '.[offline-metrics]'"


# --------------------------------------------------------------------------- Inception (FID / KID)
_EXTRACTORS: dict[tuple, Any] = {}   # one Inception per (extractor, weights file, sha256, device) per process


def build_inception(src: dict[str, Any], device: torch.device):
    """The Inception feature extractor for ``src``; built once per process (a run calls FID for samples
    and reconstructions, a sweep for every run), keyed by the weights' sha256 so a changed file rebuilds."""
    key = (src["extractor"], str(src["weights_path"]), src["sha256"], str(device))
    if key not in _EXTRACTORS:
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
        cls = FEATURE_EXTRACTORS_REGISTRY[src["extractor"]]
        ext = cls(src["extractor"], [FEATURE_LAYER], feature_extractor_weights_path=src["weights_path"])
        _EXTRACTORS.clear()                          # keep at most one (~100 MB) alive
        _EXTRACTORS[key] = ext.to(device).eval().to(memory_format=getattr(torch, INCEPTION_LAYOUT))
    return _EXTRACTORS[key]


# --------------------------------------------------------------------------- LPIPS
def load_checked(model: torch.nn.Module, state: dict, path, allow_missing: tuple[str, ...] = ()) -> None:
    """``load_state_dict(strict=False)`` that fails on anything genuinely left out.

    (ST-)LPIPS keep their heads twice, as ``linN`` and as ``lins[N]`` (the same modules), so
    a file holding ``linN.*`` reports ``lins.N.*`` "missing"; such keys are fine when they
    alias a loaded tensor.  Keys starting with ``allow_missing`` are filled by the caller or are
    constants set in ``__init__`` (``scaling_layer.shift/scale``: fixed ImageNet statistics).
    """
    missing, unexpected = model.load_state_dict(state, strict=False)
    own = model.state_dict(keep_vars=True)
    loaded = {own[k].data_ptr() for k in state if k in own}
    left = [k for k in missing if own[k].data_ptr() not in loaded
            and not k.startswith(allow_missing)]
    if unexpected or left:
        raise WeightsError(f"weights {path}: unexpected keys {list(unexpected)[:3]}, missing {left[:3]}")


def build_lpips(net: str = "alex", weights_dir: str | os.PathLike | None = None):
    """lpips.LPIPS whose trunk comes from the located torchvision file (no download).

    Built with ``pretrained=False, pnet_rand=True`` (nothing loaded, nothing fetched), then
    the linear heads from lpips' own verified file and the trunk mapped by name:
    ``net.slice{k}.{i}.* <- features.{i}.*`` (lpips slices torchvision's ``features``), both
    with checks that nothing is left randomly initialised.
    """
    import lpips
    import torchvision

    if net not in LPIPS_TRUNK:
        raise WeightsError(f"LPIPS net {net!r} not provisioned; use one of {', '.join(LPIPS_TRUNK)}")
    trunk_path = weights.locate(LPIPS_TRUNK[net], weights_dir)
    heads_path = weights.locate(f"lpips-{net}", weights_dir)
    tv = getattr(torchvision.models, LPIPS_TRUNK[net])(weights=None)
    tv.load_state_dict(torch.load(trunk_path, map_location="cpu", weights_only=True))  # strict
    features = tv.features.state_dict()

    model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    load_checked(model, torch.load(heads_path, map_location="cpu", weights_only=True), heads_path,
                  allow_missing=("net.", "scaling_layer."))   # trunk: filled below
    trunk = {}
    for name in model.net.state_dict():       # "slice2.3.weight" -> "features.3.weight"
        _, idx, param = name.split(".", 2)
        trunk[name] = features[f"{idx}.{param}"]
    model.net.load_state_dict(trunk)          # strict: every trunk tensor filled
    return model.eval(), trunk_path, heads_path


# --------------------------------------------------------------------------- ST-LPIPS
@contextlib.contextmanager
def _unused_import_shim():
    """stlpips-pytorch 0.0.2 imports ``IPython.embed`` and ``torchsummary.summary`` at module
    level but never calls them.  If (and only if) those modules are missing, put stub modules
    in ``sys.modules`` for the duration of the import, then remove them again."""
    added = []
    for mod, attr in (("IPython", "embed"), ("torchsummary", "summary")):
        if mod not in sys.modules and importlib.util.find_spec(mod) is None:
            stub = types.ModuleType(mod)
            setattr(stub, attr, lambda *a, **k: None)
            sys.modules[mod] = stub
            added.append((mod, stub))
    try:
        yield
    finally:
        for mod, stub in added:
            if sys.modules.get(mod) is stub:
                del sys.modules[mod]


def import_stlpips():
    if importlib.util.find_spec("stlpips_pytorch") is None:
        return None
    with _unused_import_shim():
        from stlpips_pytorch import stlpips
    return stlpips


def build_st_lpips(net: str = "alex"):
    """stlpips.LPIPS(variant='shift_tolerant') from its bundled weights, checking that its
    ``strict=False`` load left nothing genuinely missing: the only keys it reports missing
    (``lins.N.*``) must alias tensors that were loaded (``lins[N] is linN``)."""
    stlpips = import_stlpips()
    if stlpips is None:
        raise WeightsError(STLPIPS_MISSING)
    model = stlpips.LPIPS(net=net, variant="shift_tolerant", verbose=False)
    # the file stlpips itself loads for variant='shift_tolerant' (it forces version "ST0.0")
    path = Path(stlpips.__file__).parent / "weights" / "vST0.0" / f"{net}_shift_tolerant.pth"
    if not path.is_file():
        raise WeightsError(f"stlpips-pytorch has no bundled {path.name}")
    # stlpips already loaded it with strict=False; re-load (idempotent) to inspect what it hid
    load_checked(model, torch.load(path, map_location="cpu", weights_only=True), path)
    return model.eval(), path


# --------------------------------------------------------------------------- VGG19
class VGG19Features(nn.Module):
    """Frozen torchvision VGG19 trunk returning relu1_1, relu2_1, relu3_1 (Hou et al., VAE-123)."""

    TAPS = (1, 6, 11)   # indices of relu1_1, relu2_1, relu3_1 in vgg19.features

    def __init__(self, weights_dir: str | None = None):
        super().__init__()
        path = weights.locate("vgg19", weights_dir)          # WeightsError if missing / corrupt
        vgg = torchvision.models.vgg19(weights=None)
        vgg.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))   # strict
        self.trunk = vgg.features[: self.TAPS[-1] + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)                           # always eval: a fixed feature map

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x.float() - self.mean) / self.std                 # (B, 3, H, W) ImageNet-normalised
        feats = []
        for i, layer in enumerate(self.trunk):
            h = layer(h)
            if i in self.TAPS:
                feats.append(h)
        return feats
