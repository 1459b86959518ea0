"""Pixel reconstruction terms, summed over the C*H*W elements of each image (see losses/__init__.py)."""
import math
from typing import Annotated

import torch
from pydantic import Field
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


@LOSSES.register("gaussian_optimal_sigma")
class GaussianOptimalSigma(Term):
    """Gaussian NLL with one shared decoder variance set to its optimum on the batch: the "optimal
    sigma-VAE" of Rybkin, Daniilidis & Levine (2021).  sigma^2 = mean squared error over the batch
    (floored at ``min_sigma``^2, detached: the NLL is stationary in sigma there, so the gradient is the
    same either way).  Per image, in nats summed over C*H*W elements::

        SE_i / (2 sigma^2) + D/2 * log(2 pi sigma^2)

    Its gradient is that of ``mse`` times 1 / (2 sigma^2): a reconstruction weight (an effective
    beta = 2 sigma^2 on the KL) that the model picks for itself and that grows as it fits better.
    The value can be negative (a density of continuous pixels)."""

    def __init__(self, min_sigma: Annotated[float, Field(gt=0)] = 1e-3):
        super().__init__()
        self.min_sigma = float(min_sigma)

    def forward(self, x: torch.Tensor, out: VAEOutput, model: nn.Module | None = None,
                step: int = 0) -> torch.Tensor:
        se = (out.recon.float() - x.float()).square().flatten(1)            # (B, D)
        var = se.detach().mean().clamp_min(self.min_sigma ** 2)
        return se.sum(1) / (2 * var) + 0.5 * se.shape[1] * torch.log(2 * math.pi * var)
