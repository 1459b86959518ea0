"""Pixel reconstruction terms, summed over the C*H*W elements of each image (see losses/__init__.py)."""
import torch
from torch import nn

from losses.objective import Term
from losses.registry import LOSSES
from models.registry import VAEOutput


@LOSSES.register("mse")
class MSE(Term):
    """Squared error summed per image (= Gaussian NLL with unit variance, up to constants)."""

    def forward(self, x: torch.Tensor, out: VAEOutput, model: nn.Module | None = None,
                step: int = 0) -> torch.Tensor:
        return (out.recon.float() - x.float()).square().flatten(1).sum(1)


@LOSSES.register("l1")
class L1(Term):
    """Absolute error summed per image (= Laplace NLL with unit scale, up to constants)."""

    def forward(self, x: torch.Tensor, out: VAEOutput, model: nn.Module | None = None,
                step: int = 0) -> torch.Tensor:
        return (out.recon.float() - x.float()).abs().flatten(1).sum(1)
