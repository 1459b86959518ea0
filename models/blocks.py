"""Building blocks of ``ConvVAE``: one down-sampling stage, one up-sampling stage, a residual block.

Every stage is ``conv -> [BatchNorm] -> LeakyReLU`` (the paper's recipe), except the decoder's
output conv, which is bare (the model applies the sigmoid).  Padding is 0 for every kernel (the
paper: k4, s2, "no padding"), so the kernel arm (3 vs 4) changes only the kernel.

A max-pool stage pads the input by 1 pixel on the right and bottom, then applies a stride-1 conv
and a 2x2 max-pool: its output side is floor((n + 1 - k + 1) / 2) = floor((n - k) / 2) + 1, the
strided conv's, for every n and k.  So ``down='maxpool'`` changes only how a stage down-samples,
never the spatial chain, the bottleneck or the size of the heads.

Spatial sizes are bookkept exactly, never hard-coded: :func:`down_size` gives a stage's output
size, and an ``Up`` stage is told the size it must produce, so the decoder mirrors the encoder
exactly (e.g. 32 -> 15 -> 6 -> 2 and back 2 -> 6 -> 15 -> 32 for the paper's k4/s2/p0).
"""
from typing import Literal

import torch
from torch import nn

from models.layers import Conv2d, ConvTranspose2d, conv_out

Down = Literal["stride", "maxpool"]
Up = Literal["deconv", "upsample"]


PADDING = 0              # conv padding for every kernel: the paper's "no padding"
POOL_PAD = (0, 1, 0, 1)  # extra (left, right, top, bottom) zeros before a max-pool stage's conv


def down_size(size: int, kernel: int, mode: Down) -> int:
    """Output side of one encoder stage (may be <= 0 when the input is too small).

    Both modes give the same side (see the module docstring); each is computed from its own layers
    so that a test can check the two stay equal.
    """
    if mode == "stride":
        return conv_out(size, kernel, 2, PADDING)
    padded = size + POOL_PAD[0] + POOL_PAD[1]
    return conv_out(padded, kernel, 1, PADDING) // 2   # stride-1 conv, then 2x2 max-pool (floor)


def _norm_act(ch: int, norm: bool, slope: float) -> list[nn.Module]:
    return ([nn.BatchNorm2d(ch)] if norm else []) + [nn.LeakyReLU(slope)]


class DownStage(nn.Sequential):
    """Encoder stage: stride-2 conv, or 1-pixel right/bottom pad + stride-1 conv + 2x2 max-pool;
    then BN + LeakyReLU.  Both produce :func:`down_size` x :func:`down_size`."""

    def __init__(self, c_in: int, c_out: int, *, kernel: int, mode: Down, norm: bool, slope: float):
        if mode == "stride":
            layers: list[nn.Module] = [Conv2d(c_in, c_out, kernel, 2, PADDING, bias=not norm)]
        else:
            layers = [nn.ZeroPad2d(POOL_PAD), Conv2d(c_in, c_out, kernel, 1, PADDING, bias=not norm)]
        layers += _norm_act(c_out, norm, slope)
        if mode == "maxpool":
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


class UpStage(nn.Sequential):
    """Decoder stage producing exactly ``out_size`` x ``out_size`` from ``in_size`` x ``in_size``.

    * ``deconv``: stride-2 transposed conv with ``output_padding = (out + 2p - k) mod 2``, which
      exactly inverts the encoder's ``floor`` (out = (in - 1) * 2 - 2p + k + output_padding).
    * ``upsample``: nearest upsampling to ``out + k - 1 - 2p`` (given with ``size=``, not a
      factor, so odd sizes come out right), then a stride-1 conv that trims back to ``out``.

    ``final=True`` is the output conv: no BN, no activation (the model applies the sigmoid).
    """

    def __init__(self, c_in: int, c_out: int, *, kernel: int, mode: Up, in_size: int, out_size: int,
                 norm: bool, slope: float, final: bool = False):
        p = PADDING
        bias = final or not norm
        if mode == "deconv":
            op = (out_size + 2 * p - kernel) % 2
            layers: list[nn.Module] = [ConvTranspose2d(c_in, c_out, kernel, 2, p, output_padding=op,
                                                          bias=bias)]
        else:
            target = out_size + kernel - 1 - 2 * p
            layers = [nn.Upsample(size=(target, target), mode="nearest"),
                      Conv2d(c_in, c_out, kernel, 1, p, bias=bias)]
        if not final:
            layers += _norm_act(c_out, norm, slope)
        super().__init__(*layers)
        self.in_size, self.out_size = in_size, out_size


class ResBlock(nn.Module):
    """Two 3x3 convs (BN, LeakyReLU) with an identity skip: ``act(x + bn(conv(act(bn(conv(x))))))``."""

    def __init__(self, ch: int, *, norm: bool, slope: float):
        super().__init__()
        self.body = nn.Sequential(
            Conv2d(ch, ch, 3, 1, 1, bias=not norm), *_norm_act(ch, norm, slope),
            Conv2d(ch, ch, 3, 1, 1, bias=not norm), *([nn.BatchNorm2d(ch)] if norm else []))
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))
