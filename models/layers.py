"""``Conv2d`` and ``ConvTranspose2d`` whose weight gradient on the CPU is one matrix product.

On this project's reference CPU (AVX2, no AVX-512), oneDNN computes the weight gradient of the
paper's 4x4 stride-2 convs with its older ``jit:avx2`` kernels at 55-90 GFLOP/s, against 90-150 for
the forward pass and the input gradient (``ONEDNN_VERBOSE=1`` names the kernels).  The same gradient
is one GEMM: for a conv with output gradient ``g`` (B, Co, h, w) and input ``x``,

    dW[co, ci, i, j] = sum over b, y, x of g[b, co, y, x] * x[b, ci, s*y + i - p, s*x + j - p],

i.e. ``g`` as an (N, Co) matrix (N = B*h*w) times the (N, k*k*Ci) matrix of the input patches each
output pixel saw (im2col).  In channels_last both are views of memory laid out that way (the patches
need one copy), and the product comes out in the weight's channels_last order.  For a transposed
conv the roles swap: its input ``x`` is the (N, Ci) matrix and the patches come from the output
gradient.  On the 96 px paper model at batch 32 this takes the weight gradients of a step from
258 ms to 191 ms (32 px, batch 128: 62 to 42 ms).

The GEMM pays for its im2col copy only when both channel counts are large enough: a layer with fewer
than ``GEMM_MIN_CHANNELS`` input or output channels keeps oneDNN's weight gradient.  Measured per
layer on the reference CPU (the paper model and the CPU files' narrow one, widths 32-64-128(-256), at
32 and 96 px), the GEMM was faster on all 15 layers with 64 or more channels on both sides (e.g.
256 -> 512 channels at 10 px: 18.7 vs 32.6 ms), and slower in sum on the 12 with 3 or 32 on a side
(73 vs 66 ms; slower on 9 of them, e.g. the 3 -> 32 input conv at 96 px: 5.8 vs 3.5 ms).

Only the weight gradient changes; the forward pass and the input gradient are torch's own
(``aten.convolution`` and ``aten.convolution_backward``).  The sum is the same, taken in another
order, so results agree to float rounding (tests/test_layers.py compares them in float64).  The fast
path is used on the CPU for groups = 1, dilation = 1, zero padding and at least
``GEMM_MIN_CHANNELS`` channels on both sides; elsewhere (CUDA: cuDNN) the
layers are exactly torch's.  Parameters and state dicts are torch's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# Switch for comparisons (tests/test_layers.py); the suite always leaves it on.
GEMM_WEIGHT_GRAD = True
GEMM_MIN_CHANNELS = 64       # fewer input or output channels: oneDNN's weight gradient (see above)


def _patches(t: torch.Tensor, h: int, w: int, k: tuple[int, int], s: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B*h*w, kh*kw*C): the k-window at stride s of every one of the h x w
    positions, in (kh, kw, C) order (im2col).  A strided view of ``t`` in any memory format, copied once."""
    b, c = t.shape[:2]
    sb, sc, sy, sx = t.stride()
    view = t.as_strided((b, h, w, k[0], k[1], c), (sb, s[0] * sy, s[1] * sx, sy, sx, sc))
    return view.reshape(b * h * w, k[0] * k[1] * c)


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B*h*w, C); a view when ``t`` is channels_last."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def conv_weight_grad(x: torch.Tensor, g: torch.Tensor, k: tuple[int, int], stride: tuple[int, int],
                     padding: tuple[int, int]) -> torch.Tensor:
    """dL/dW (Co, Ci, kh, kw) of ``conv2d(x, W, stride, padding)`` given its output gradient ``g``."""
    if any(padding):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    h, w = g.shape[2:]
    grad = _as_rows(g).t() @ _patches(x, h, w, k, stride)             # (Co, kh*kw*Ci)
    return grad.view(g.shape[1], k[0], k[1], x.shape[1]).permute(0, 3, 1, 2)


def conv_transpose_weight_grad(x: torch.Tensor, g: torch.Tensor, k: tuple[int, int], stride: tuple[int, int],
                               padding: tuple[int, int], output_padding: tuple[int, int]) -> torch.Tensor:
    """dL/dW (Ci, Co, kh, kw) of ``conv_transpose2d(x, W, stride, padding, output_padding)`` given its
    output gradient ``g``.  The uncropped output is (h-1)*s + k per side; the layer keeps rows
    p .. p + H of it, so ``g`` is padded back by p before and p - output_padding after (negative: cropped)."""
    if any(padding) or any(output_padding):
        g = F.pad(g, (padding[1], padding[1] - output_padding[1], padding[0], padding[0] - output_padding[0]))
    h, w = x.shape[2:]
    grad = _as_rows(x).t() @ _patches(g, h, w, k, stride)             # (Ci, kh*kw*Co)
    return grad.view(x.shape[1], k[0], k[1], g.shape[1]).permute(0, 3, 1, 2)


class _Conv(torch.autograd.Function):
    """torch's convolution forward and input gradient; the weight gradient from the functions above."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, transposed, output_padding):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, transposed, output_padding, weight.shape[2:])
        ctx.has_bias = bias is not None
        return torch.ops.aten.convolution(x, weight, bias, stride, padding, (1, 1), transposed, output_padding, 1)

    @staticmethod
    @once_differentiable          # no double backward through the GEMM (the suite never needs one)
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        stride, padding, transposed, output_padding, k = ctx.conf
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(g, x, weight, None, stride, padding, (1, 1), transposed,
                                                     output_padding, 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            gw = (conv_transpose_weight_grad(x, g, k, stride, padding, output_padding) if transposed
                  else conv_weight_grad(x, g, k, stride, padding))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum((0, 2, 3))
        return gx, gw, gb, None, None, None, None


def _fast(layer: nn.modules.conv._ConvNd, x: torch.Tensor) -> bool:
    return (GEMM_WEIGHT_GRAD and x.device.type == "cpu" and x.dim() == 4 and layer.groups == 1
            and min(layer.in_channels, layer.out_channels) >= GEMM_MIN_CHANNELS
            and layer.dilation == (1, 1) and layer.padding_mode == "zeros" and isinstance(layer.padding, tuple)
            and torch.is_grad_enabled() and layer.weight.requires_grad)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same arguments, parameters and state dict); weight gradient as above on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _fast(self, x):
            return super().forward(x)
        return _Conv.apply(x, self.weight, self.bias, self.stride, self.padding, False, (0, 0))


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (same arguments, parameters and state dict); weight gradient as above on
    the CPU.  Called without ``output_size`` (the layer's own ``output_padding`` is used)."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None or not _fast(self, x):
            return super().forward(x, output_size)
        return _Conv.apply(x, self.weight, self.bias, self.stride, self.padding, True, self.output_padding)
