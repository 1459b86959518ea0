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

``network: vgg19`` (perceptual loss on pretrained VGG19 features) needs weights provisioning,
which is not implemented yet: building it raises ``WeightsError``.
"""
import contextlib
from typing import Literal

import torch
from torch import nn

from bench.errors import WeightsError
from losses import LOSSES
from losses.objective import Term
from models import VAEOutput


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
        if network == "vgg19":
            raise WeightsError("deep_feature network 'vgg19' needs pretrained VGG19 weights: "
                               "not implemented yet")
        self.network = network

    def forward(self, x: torch.Tensor, out: VAEOutput, model: nn.Module | None = None,
                step: int = 0) -> torch.Tensor:
        if model is None or not hasattr(model, "features"):
            raise ValueError("deep_feature network 'self' needs the model (with a features() "
                             "method): call objective(x, out, model)")
        with frozen(model):
            with torch.no_grad():
                target = model.features(x)
            feats = model.features(out.recon)
        per_layer = [(f.float() - t.float()).square().flatten(1).mean(1) for f, t in zip(feats, target)]
        return torch.stack(per_layer).sum(0) * x[0].numel()
