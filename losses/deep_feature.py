"""Deep-feature (perceptual) reconstruction term.

``network: self`` compares the VAE's own encoder features of the input and of the
reconstruction (``model.features``), layer by layer: per layer the squared error is averaged over
its elements, the layers are summed, and the result is scaled by C*H*W (per-image sum units,
losses/__init__.py).

Design choices:

* **The encoder is frozen for this term.**  Gradients flow through the features into ``recon``
  (hence the decoder and, via z, the encoder's *main* path), but this term never updates the
  encoder's weights directly: otherwise the cheapest way to lower it is to make the features
  insensitive (e.g. collapse them), which also ruins the encoder.  The target features of ``x``
  are computed without gradient.  Implemented by switching ``requires_grad`` off for the
  model's parameters during the two feature passes (restored afterwards).
* **BatchNorm in eval mode for this term.**  Both images go through the same fixed affine map
  (running statistics) instead of their own batch statistics, so x and recon are compared under
  one function, and the feature passes do not touch the running statistics (training-mode
  BN would fold reconstruction statistics into them).  The model's modes are restored after.

``network: vgg19`` is the DFC-VAE of Hou et al. (2016), "VAE-123": ImageNet-normalised images
through torchvision's pretrained VGG19, compared at relu1_1, relu2_1 and relu3_1.  The weights
come from ``bench.weights.files.locate("vgg19")`` (explicit dir / $PEGASUS_WEIGHTS, then the torch hub
cache) with their checksum verified; when absent, building the term raises ``WeightsError`` —
so ``bench plan`` stops with one line before anything trains.  VGG19 is frozen (eval mode, no
grad) and is not part of the optimiser.
"""
import contextlib
from typing import Literal

import torch
from torch import nn

from bench.weights.networks import VGG19Features, build_lpips
from losses.objective import Term
from losses.registry import LOSSES
from models.registry import VAEOutput


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Temporarily: parameters don't require grad, every submodule in eval mode."""
    grads = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p, _ in grads:
            p.requires_grad_(False)
        model.eval()
        yield model
    finally:
        for p, g in grads:
            p.requires_grad_(g)
        for m, t in modes:
            m.training = t


@LOSSES.register("deep_feature")
class DeepFeature(Term):
    """Feature-space MSE (summed over layers) x C*H*W; network 'self' = the VAE's frozen encoder."""

    def __init__(self, network: Literal["self", "vgg19"] = "self"):
        super().__init__()
        self.network = network
        self.vgg = VGG19Features() if network == "vgg19" else None

    def forward(self, x: torch.Tensor, out: VAEOutput, model: nn.Module | None = None,
                step: int = 0) -> torch.Tensor:
        if self.vgg is not None:
            with torch.no_grad():
                target = self.vgg(x)
            feats = self.vgg(out.recon)
            per_layer = [(f.float() - t.float()).square().flatten(1).mean(1) for f, t in zip(feats, target)]
            return torch.stack(per_layer).sum(0) * x[0].numel()
        if model is None or not hasattr(model, "features"):
            raise ValueError("deep_feature network 'self' needs the model (with a features() "
                             "method): call objective(x, out, model)")
        with frozen(model):
            with torch.no_grad():
                target = model.features(x)
            feats = model.features(out.recon)
        per_layer = [(f.float() - t.float()).square().flatten(1).mean(1) for f, t in zip(feats, target)]
        return torch.stack(per_layer).sum(0) * x[0].numel()


@LOSSES.register("lpips")
class LPIPSLoss(Term):
    """LPIPS(x, x̂) x C*H*W as a training loss (lpips package; frozen trunk from the weights store)."""

    def __init__(self, net: Literal["alex", "vgg"] = "alex"):
        super().__init__()
        self.net_name = net
        self.lpips = build_lpips(net)[0].requires_grad_(False)   # WeightsError if the trunk is missing

    def train(self, mode: bool = True) -> "LPIPSLoss":
        return super().train(False)

    def forward(self, x: torch.Tensor, out: VAEOutput, model: nn.Module | None = None,
                step: int = 0) -> torch.Tensor:
        d = self.lpips(out.recon.float() * 2 - 1, x.float() * 2 - 1)   # (B, 1, 1, 1), inputs in [-1, 1]
        return d.flatten() * x[0].numel()
