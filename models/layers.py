"""``Conv2d`` and ``ConvTranspose2d`` whose passes on the CPU are matrix products where that is faster.

A conv's weight gradient is one GEMM: for output gradient ``g`` (B, Co, h, w) and input ``x``,

    dW[co, ci, i, j] = sum over b, y, x of g[b, co, y, x] * x[b, ci, s*y + i - p, s*x + j - p],

i.e. ``g`` as an (N, Co) matrix (N = B*h*w) times the (N, k*k*Ci) matrix of input patches (im2col); in
channels_last both are views of memory laid out that way.  For a transposed conv the roles swap.  The
forward pass and the input gradient are GEMMs too (``conv_gemm``; ``conv_transpose_gemm`` adds back into
each k-window by output phase, a col2im).  On the project's reference CPU (AVX2) oneDNN's weight-gradient
kernels for the paper's 4x4 stride-2 convs are slow, so the weight gradient is a GEMM whenever both channel
counts are at least ``GEMM_MIN_CHANNELS``; the forward pass and input gradient are GEMMs only on the
smallest maps of strided layers (a side of at most ``GEMM_MAX_MAP``), where oneDNN is slow too.  The
decoder's RGB output layer keeps oneDNN (inside a train step the GEMM's gain did not hold).  The
per-layer timings behind these thresholds are in results/speed/HISTORY.md.

The sums are the same, taken in another order, so results agree to float rounding
(tests/test_layers.py compares every pass in float64).  The GEMM passes are used on the CPU for
groups = 1, dilation = 1 and zero padding, when a gradient is being recorded; elsewhere (CUDA:
cuDNN; evaluation under ``no_grad``) the layers are exactly torch's.  Parameters and state dicts
are torch's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# Switch for comparisons (tests/test_layers.py); the suite always leaves it on.
GEMM_CONVS = True
GEMM_MIN_CHANNELS = 64       # fewer input or output channels: oneDNN's kernels for every pass (see above)
GEMM_MAX_MAP = 4             # forward and input gradient as GEMM when a map side is at most this (see above)


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """A conv's output side: floor((in + 2p - k) / s) + 1  (<= 0 means the input is too small)."""
    return (size + 2 * padding - kernel) // stride + 1


def conv_transpose_out(size: int, kernel: int, stride: int, padding: int, output_padding: int) -> int:
    """A transposed conv's output side: (in - 1) * s - 2p + k + output_padding."""
    return (size - 1) * stride - 2 * padding + kernel + output_padding


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


def _weight_rows(w: torch.Tensor) -> torch.Tensor:
    """(A, B, kh, kw) -> (A, kh*kw*B), the patches' (kh, kw, C) order; a view when ``w`` is channels_last."""
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)


def _like_torch(out: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``out`` (channels_last) in the memory format torch's CPU convolution returns: channels_last
    when the input or the weight is, else contiguous."""
    cl = torch.channels_last
    if any(t.is_contiguous(memory_format=cl) and not t.is_contiguous() for t in (x, w)):
        return out.contiguous(memory_format=cl)
    return out.contiguous()


def conv_gemm(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
              padding: tuple[int, int]) -> torch.Tensor:
    """``conv2d(x, w, bias, stride, padding)`` as one GEMM: the (N, kh*kw*Ci) patches times the
    (Co, kh*kw*Ci) weight, transposed; the (N, Co) product is the output in channels_last."""
    k = w.shape[2:]
    if any(padding):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    h, wd = (conv_out(n, kk, st, 0) for n, kk, st in zip(x.shape[2:], k, stride))
    cols, wm = _patches(x, h, wd, k, stride), _weight_rows(w).t()
    out = cols @ wm if bias is None else torch.addmm(bias, cols, wm)
    return out.view(x.shape[0], h, wd, w.shape[0]).permute(0, 3, 1, 2)


def conv_transpose_gemm(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                        padding: tuple[int, int], output_padding: tuple[int, int]) -> torch.Tensor:
    """``conv_transpose2d(x, w, bias, stride, padding, output_padding)`` as one GEMM and a col2im:
    each input pixel's row (Ci) times the (Ci, kh*kw*Co) weight is the k-window it adds to the
    output at stride s.  The col2im goes by output phase: tap i = t*s + a of input pixel n lands on
    output row (n + t)*s + a, so the taps with the same t are one block of s rows (a = 0 .. s-1)
    added at block n + t, and ceil(k/s)^2 block adds (4 for k4/s2, against k^2 = 16 single-tap ones)
    build the uncropped output, of which rows p .. p + H are kept (H = (h-1)*s - 2p + k +
    output_padding, per side)."""
    b, _, h, wd = x.shape
    k, co, s = w.shape[2:], w.shape[1], stride
    cols = (_as_rows(x) @ _weight_rows(w)).view(b, h, wd, k[0], k[1], co)
    size = [conv_transpose_out(*a) for a in zip((h, wd), k, s, padding, output_padding)]
    taps = [-(-kk // ss) for kk, ss in zip(k, s)]                          # ceil(k / s) blocks of taps
    blocks = [max(n + t - 1, -(-(p + o) // ss)) for n, t, p, o, ss in zip((h, wd), taps, padding, size, s)]
    buf = x.new_zeros(b, blocks[0], s[0], blocks[1], s[1], co)
    for ty in range(taps[0]):
        ay = min(s[0], k[0] - ty * s[0])
        for tx in range(taps[1]):
            ax = min(s[1], k[1] - tx * s[1])
            tap = cols[:, :, :, ty * s[0]:ty * s[0] + ay, tx * s[1]:tx * s[1] + ax]
            buf[:, ty:ty + h, :ay, tx:tx + wd, :ax] += tap.permute(0, 1, 3, 2, 4, 5)
    full = buf.view(b, blocks[0] * s[0], blocks[1] * s[1], co)
    out = full[:, padding[0]:padding[0] + size[0], padding[1]:padding[1] + size[1]]
    if bias is not None:
        out = out + bias
    return out.permute(0, 3, 1, 2)


class _Conv(torch.autograd.Function):
    """A conv or transposed conv whose weight gradient is the GEMM, and whose forward pass and input
    gradient are too when ``small`` (else torch's kernels)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, transposed, output_padding, small):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, transposed, output_padding, weight.shape[2:], small)
        ctx.has_bias = bias is not None
        if not small:
            return torch.ops.aten.convolution(x, weight, bias, stride, padding, (1, 1), transposed, output_padding, 1)
        out = (conv_transpose_gemm(x, weight, bias, stride, padding, output_padding) if transposed
               else conv_gemm(x, weight, bias, stride, padding))
        return _like_torch(out, x, weight)

    @staticmethod
    @once_differentiable          # no double backward through the GEMM (the suite never needs one)
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        stride, padding, transposed, output_padding, k, small = ctx.conf
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            if not small:
                gx = torch.ops.aten.convolution_backward(g, x, weight, None, stride, padding, (1, 1), transposed,
                                                         output_padding, 1, [True, False, False])[0]
            elif transposed:        # the input gradient of a transposed conv is a conv of g
                gx = _like_torch(conv_gemm(g, weight, None, stride, padding), x, weight)
            else:                   # ... and of a conv, a transposed conv of g back to x's size
                op = [n - conv_transpose_out(m, kk, s, p, 0)
                      for n, m, kk, s, p in zip(x.shape[2:], g.shape[2:], k, stride, padding)]
                gx = _like_torch(conv_transpose_gemm(g, weight, None, stride, padding, op), x, weight)
        if ctx.needs_input_grad[1]:
            gw = (conv_transpose_weight_grad(x, g, k, stride, padding, output_padding) if transposed
                  else conv_weight_grad(x, g, k, stride, padding))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum((0, 2, 3))
        return gx, gw, gb, None, None, None, None, None


def _route(layer: nn.modules.conv._ConvNd, x: torch.Tensor, transposed: bool) -> bool | None:
    """None: torch's layer unchanged; else the weight gradient is the GEMM, and the forward pass and
    the input gradient are too when this is True.  The rules and their measurements are in the
    module docstring."""
    if not (GEMM_CONVS and x.device.type == "cpu" and x.dim() == 4 and layer.groups == 1
            and min(layer.in_channels, layer.out_channels) >= GEMM_MIN_CHANNELS
            and layer.dilation == (1, 1) and layer.padding_mode == "zeros" and isinstance(layer.padding, tuple)
            and torch.is_grad_enabled() and layer.weight.requires_grad):
        return None
    return min(layer.stride) > 1 and min(*x.shape[2:], *_out_hw(layer, x, transposed)) <= GEMM_MAX_MAP


def _out_hw(layer: nn.modules.conv._ConvNd, x: torch.Tensor, transposed: bool) -> tuple[int, int]:
    """The output's (H, W) for a 4-d input."""
    sides = zip(x.shape[2:], layer.kernel_size, layer.stride, layer.padding)
    if transposed:
        return tuple(conv_transpose_out(*a, op) for a, op in zip(sides, layer.output_padding))
    return tuple(conv_out(*a) for a in sides)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same arguments, parameters and state dict); GEMM passes as above on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = _route(self, x, False)
        if small is None:
            return super().forward(x)
        return _Conv.apply(x, self.weight, self.bias, self.stride, self.padding, False, (0, 0), small)


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (same arguments, parameters and state dict); GEMM passes as above on
    the CPU.  Called without ``output_size`` (the layer's own ``output_padding`` is used)."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        small = _route(self, x, True) if output_size is None else None
        if small is None:
            return super().forward(x, output_size)
        return _Conv.apply(x, self.weight, self.bias, self.stride, self.padding, True, self.output_padding, small)
