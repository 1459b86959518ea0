"""Pooled colour term (paper sec. 3.5): compare the images' coarse colour layout, not their detail."""
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from losses.objective import Term
from losses.registry import LOSSES
from models.registry import VAEOutput


@LOSSES.register("colour")
class Colour(Term):
    """MSE between pool x pool average-pooled images (paper: 3x3), times C*H*W per image.

    Both images are ``adaptive_avg_pool2d``'d to (C, pool, pool); the squared error is averaged
    over those C*pool*pool elements (per-channel MSE, then mean over channels) and scaled by
    C*H*W to per-image sum units (losses/__init__.py).
    """

    def __init__(self, pool: Annotated[int, Field(ge=1)] = 3):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor, out: VAEOutput, model: nn.Module | None = None,
                step: int = 0) -> torch.Tensor:
        x, r = x.float(), out.recon.float()
        px, pr = F.adaptive_avg_pool2d(x, self.pool), F.adaptive_avg_pool2d(r, self.pool)
        return (pr - px).square().flatten(1).mean(1) * x[0].numel()
