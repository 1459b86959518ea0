"""Loss terms and the weighted objective.

Reduction convention (the one every term follows, tested in tests/test_losses.py):

* A term returns **one value per image**, shape ``(B,)``.
* Values are in **per-image sum units**: pixel terms are summed over the C*H*W elements of the
  image; terms that are naturally a mean over the image (SSIM, MS-SSIM, pooled colour, LPIPS,
  deep features) are that mean times C*H*W; KL is summed over latent dimensions.  This mirrors
  the ELBO (log-likelihood summed over pixels, KL summed over latent dims), so a weight of 1
  gives the same per-pixel emphasis in every term and at every resolution.
* The ``Objective`` multiplies each term by its YAML ``weight``, sums, and averages over the batch.

So ``weight: 1`` means the same thing in every arm and arms stay comparable.
"""
from __future__ import annotations

from losses import colour, deep_feature, kl, pixel, ssim  # register the terms
from losses.objective import LossEntry, Objective, Term, parse_loss
from losses.registry import LOSSES

__all__ = ["LOSSES", "LossEntry", "Objective", "Term", "colour", "deep_feature", "kl", "parse_loss", "pixel", "ssim"]
