"""KL(q(z|x) || N(0, I)) summed over latent dimensions, with optional warm-up and free bits."""
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from losses.objective import Term
from losses.registry import LOSSES
from models.registry import VAEOutput


def kl_per_dim(out: VAEOutput, estimator: str) -> torch.Tensor:
    """(B, D) per-dimension KL estimates.

    * ``analytic``: 0.5 * (mu^2 + exp(lv) - 1 - lv)  (exact for Gaussian q and p).
    * ``mc`` (paper eq. 4): the one-sample estimate log q(z|x) - log p(z) at the decoded z,
      = 0.5 * (z^2 - eps^2 - lv) with eps = (z - mu) / sigma.  eps is detached: it *is* the
      sampled noise, and treating it as a constant is the reparameterisation gradient (its
      derivative w.r.t. mu and lv is zero in exact arithmetic anyway).  Unbiased; can be < 0.
    """
    mu, lv = out.mu.float(), out.logvar.float()
    if estimator == "analytic":
        return 0.5 * (mu.square() + lv.exp() - 1 - lv)
    z = out.z.float()
    eps = ((z - mu) * torch.exp(-0.5 * lv)).detach()
    return 0.5 * (z.square() - eps.square() - lv)


@LOSSES.register("kl")
class KL(Term):
    """KL to N(0, I) summed over latent dims (analytic or paper's 1-sample MC); warm-up, free bits.

    * ``warmup_steps``: the term is multiplied by ``min(1, step / warmup_steps)`` (0 = off), so
      it is 0 at step 0 and at full weight from ``warmup_steps`` on.  The logged value is the
      warmed-up one.
    * ``free_bits`` (nats per latent dimension, Kingma et al. 2016): the objective's KL becomes
      ``sum_d max(mean_b KL_bd, free_bits)``: the floor applies to the *batch-mean* KL of each
      dimension, and dimensions under the floor get no gradient.  Per image, a dimension under
      the floor contributes ``free_bits`` instead of its KL, so the batch mean of the returned
      ``(B,)`` values is exactly the free-bits objective.
    """

    def __init__(self, estimator: Literal["analytic", "mc"] = "analytic",
                 warmup_steps: Annotated[int, Field(ge=0)] = 0,
                 free_bits: Annotated[float, Field(ge=0)] = 0.0):
        super().__init__()
        self.estimator, self.warmup_steps, self.free_bits = estimator, warmup_steps, free_bits

    def forward(self, x: torch.Tensor, out: VAEOutput, model: nn.Module | None = None,
                step: int = 0) -> torch.Tensor:
        kl = kl_per_dim(out, self.estimator)                          # (B, D)
        if self.free_bits > 0:
            under = (kl.mean(0) < self.free_bits).detach()             # (D,)
            kl = torch.where(under, torch.full_like(kl, self.free_bits), kl)
        kl = kl.sum(1)
        if self.warmup_steps > 0:
            kl = kl * min(1.0, step / self.warmup_steps)
        return kl
