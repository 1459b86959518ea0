"""SSIM and MS-SSIM terms (pytorch-msssim, Gaussian window sigma 1.5, ``data_range=1.0`` always).

Per-image value: ``(1 - s) * C*H*W`` where ``s`` is the image's (MS-)SSIM (mean over channels
and positions), i.e. a mean-type term scaled to per-image sum units (losses/__init__.py).

Window rule (both terms): the Gaussian window is ``min(win_size, side)`` rounded down to an odd
number (at least 3), ``side = min(H, W)``, so a too-large window never silently skips smoothing.

MS-SSIM scale rule: ``pytorch_msssim.ms_ssim`` asserts ``side > (win_size - 1) * 2**4`` whatever
the number of weights, so with it a 32x32 image only admits ``win_size=1`` (no local statistics:
meaningless) and 96x96 at most 5.  The term therefore evaluates the same MS-SSIM formula with the
library's own per-scale ``_ssim`` (identical maths: relu'd contrast-structure terms at the finer
scales, SSIM at the coarsest, product of powers) but with only as many scales as fit: the largest
``L <= 5`` such that the image halved ``L - 1`` times (ceil, as the library's padded pooling does)
is still ``>= win``.  The weights are the first ``L`` of Wang et al.'s (0.0448, 0.2856, 0.3001,
0.2363, 0.1333), renormalised to sum to 1.  With the default window 11: 32 px -> 2 scales
(32, 16), 96 px -> 4 scales (96, 48, 24, 12); set ``win_size: 7`` for 3 scales at 32 px.
Where the library's assertion holds and the weights agree, the value equals
``pytorch_msssim.ms_ssim`` (tested).
"""
import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field
from pytorch_msssim import ssim as _library_ssim
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim
from torch import nn

from losses.objective import Term
from losses.registry import LOSSES
from models.registry import VAEOutput

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)   # Wang, Simoncelli & Bovik (2003)
WIN_SIGMA = 1.5


def _odd(v: int) -> int:
    if v % 2 == 0:
        raise ValueError(f"win_size must be odd (got {v})")
    return v


WinSize = Annotated[int, Field(ge=3), AfterValidator(_odd)]


def window_for(side: int, win_size: int) -> int:
    """The largest odd window <= ``win_size`` that fits ``side`` (at least 3)."""
    return max(3, min(win_size, side if side % 2 else side - 1))


def ms_ssim_plan(side: int, win_size: int) -> tuple[int, tuple[float, ...]]:
    """(window, per-scale weights) used by the ``ms_ssim`` term at this image side."""
    win = window_for(side, win_size)
    levels, s = 1, side
    while levels < len(MS_SSIM_WEIGHTS) and math.ceil(s / 2) >= win:
        s, levels = math.ceil(s / 2), levels + 1
    if levels == len(MS_SSIM_WEIGHTS):
        return win, MS_SSIM_WEIGHTS                    # the library's weights, untouched
    w = MS_SSIM_WEIGHTS[:levels]
    return win, tuple(v / sum(w) for v in w)


def ms_ssim_per_image(x: torch.Tensor, y: torch.Tensor, win_size: int,
                      weights: tuple[float, ...]) -> torch.Tensor:
    """(B,) MS-SSIM with ``len(weights)`` scales; pytorch-msssim's formula, data_range=1.0."""
    win = _fspecial_gauss_1d(win_size, WIN_SIGMA).repeat(x.shape[1], 1, 1, 1)
    w = x.new_tensor(weights).view(-1, 1, 1)
    mcs = []
    for i in range(len(weights)):
        ssim_pc, cs = _ssim(x, y, data_range=1.0, win=win, size_average=False)   # (B, C) each
        if i < len(weights) - 1:
            mcs.append(torch.relu(cs))
            pad = [s % 2 for s in x.shape[2:]]
            x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)
    vals = torch.stack(mcs + [torch.relu(ssim_pc)], dim=0)                      # (L, B, C)
    return torch.prod(vals ** w, dim=0).mean(1)


@LOSSES.register("ssim")
class SSIM(Term):
    """(1 - SSIM) * C*H*W per image; Gaussian window min(win_size, side) (odd), data_range=1."""

    def __init__(self, win_size: WinSize = 11):
        super().__init__()
        self.win_size = win_size

    def forward(self, x: torch.Tensor, out: VAEOutput, model: nn.Module | None = None,
                step: int = 0) -> torch.Tensor:
        x, r = x.float(), out.recon.float()
        win = window_for(min(x.shape[-2:]), self.win_size)
        s = _library_ssim(r, x, data_range=1.0, size_average=False, win_size=win)   # (B,)
        return (1 - s) * x[0].numel()


@LOSSES.register("ms_ssim")
class MSSSIM(Term):
    """(1 - MS-SSIM) * C*H*W per image; as many scales (<= 5) as fit the image, data_range=1."""

    def __init__(self, win_size: WinSize = 11):
        super().__init__()
        self.win_size = win_size

    def forward(self, x: torch.Tensor, out: VAEOutput, model: nn.Module | None = None,
                step: int = 0) -> torch.Tensor:
        x, r = x.float(), out.recon.float()
        win, weights = ms_ssim_plan(min(x.shape[-2:]), self.win_size)
        return (1 - ms_ssim_per_image(r, x, win, weights)) * x[0].numel()
