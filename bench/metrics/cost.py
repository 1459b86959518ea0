"""Cost metrics: throughput, FLOPs, peak memory, the device's matmul peak and MFU.

* :func:`throughput` — images/s of ``fn(batch)``: warm-up calls, then the **median** of timed
  repeats, each bracketed by a device sync (``torch.cuda.synchronize`` on CUDA; CPU ops are
  synchronous), so asynchronous CUDA launches are not mistaken for finished work.
* :func:`interleaved` / :func:`paired_ratio` — variants timed in turn, in rounds whose order turns,
  and two of them compared round by round (median ratio and its distribution-free interval).
* :func:`module_passes` — where a training step's time goes: each call of chosen modules (the convs
  and linears, say) during one real step, replayed alone (its forward and backward pass on copies
  of the tensors the step gave it), so the sum of their times is the part of a step those modules
  take, and the rest is everything else (normalisation, activations, loss, optimiser, glue).
  :func:`matmul_passes` — the same calls' arithmetic as plain matrix products of their shapes
  (:func:`matmul_shapes`), each in its fastest operand layout: what the device's BLAS gives a step's
  own matmul shapes, with no im2col or col2im.
* :func:`forward_flops_per_image` — FLOPs of one forward pass of one image
  (``models.conv.flops_per_image``: ``FlopCounterMode``, matmuls and convolutions, 2 FLOPs per
  multiply-add); :func:`training_flops_per_image` — of one training step's forward and backward pass
  per image, counted the same way (``models.conv.train_flops_per_image``).
* :func:`peak_memory_mb` — CUDA only: ``torch.cuda.max_memory_allocated`` around a callable.
  On the CPU the suite reports *unavailable* rather than process RSS: RSS includes the dataset,
  Python and allocator caches and is not comparable with a device-memory number.
* :func:`device_matmul_peak` — the device's measured dense-matmul FLOP/s (fp32 on the CPU, bf16
  on CUDA, which is what the trainer's autocast uses there); median of a few large matmuls,
  measured once and cached in ``$PEGASUS_CACHE/device_peak.json`` keyed by device name, torch
  version, thread count and dtype (written atomically).
* :func:`mfu` — model-FLOPs utilisation = ``training FLOPs/image * train images/s / peak``, the
  training FLOPs counted on the model (forward, then gradients w.r.t. activations and weights).
  The usual convention, 3 x forward (Kaplan et al. 2020; PaLM's MFU), also counts the first
  layer's input gradient, which no step computes (the batch needs no gradient): for the paper
  model it overstates a step's FLOPs, and so MFU, by 1.5% at 32 px and 0.7% at 96 px.  Optimiser,
  loss and element-wise work are not counted.
"""
from __future__ import annotations

import functools
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import torch

from bench.paths import cache_root
from bench.stats import median_interval
from bench.store import device_name, write_json
from models.conv import flops_per_image, train_flops_per_image

TRAIN_FLOPS_METHOD = "models.conv.train_flops_per_image (FlopCounterMode: forward + parameter gradients)"
K = TypeVar("K")
_now = time.perf_counter        # module-level so tests can substitute a fake clock


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def throughput(fn: Callable[[Any], Any], batch: Any, *, device: torch.device | str, warmup: int = 3,
               repeats: int = 7, batch_size: int | None = None) -> float:
    """Images per second of ``fn(batch)``: median over ``repeats`` synced, timed calls."""
    n = batch_size if batch_size is not None else len(batch)
    if repeats < 1 or n < 1:
        raise ValueError("throughput needs repeats >= 1 and a non-empty batch")
    for _ in range(warmup):
        fn(batch)
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = _now()
        fn(batch)
        sync(device)
        times.append(_now() - t0)
    return n / max(statistics.median(times), 1e-12)


def interleaved_rounds(measures: Mapping[K, Callable[[], float]], rounds: int) -> dict[K, list[float]]:
    """Every measurement of each measure, taken in interleaved rounds: every measure once per round,
    so a slow spell of a shared machine hits every variant alike rather than the one that happened to
    be timed then.  The order turns by one each round (round r starts with the r-th measure), so no
    variant always runs first, last, or right after the same neighbour."""
    if rounds < 1:
        raise ValueError("interleaved needs rounds >= 1")
    keys = list(measures)
    got: dict[K, list[float]] = {k: [] for k in keys}
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            got[k].append(measures[k]())
    return got


def interleaved(measures: Mapping[K, Callable[[], float]], rounds: int) -> dict[K, float]:
    """The median over ``rounds`` of each measurement (see :func:`interleaved_rounds`)."""
    return {k: statistics.median(v) for k, v in interleaved_rounds(measures, rounds).items()}


class Ratio(NamedTuple):
    median: float       # the median over rounds of a[r] / b[r]
    lo: float           # its distribution-free interval (bench.stats.median_interval); NaN under 6 rounds
    hi: float
    coverage: float     # that interval's confidence (0.984 for 7 rounds)


def paired_ratio(a: list[float], b: list[float]) -> Ratio:
    """Two variants measured in the same interleaved rounds, compared round by round: the median of
    ``a[r] / b[r]`` and its 95% distribution-free interval.  A drift of the machine between rounds
    cancels in a round's ratio (the ratio of the two medians would keep it).  The interval says
    whether one run decides a target: only when it lies on one side of it."""
    if len(a) != len(b) or not a:
        raise ValueError("paired_ratio needs two equally long, non-empty lists of rounds")
    ratios = [x / y for x, y in zip(a, b)]
    return Ratio(statistics.median(ratios), *median_interval(ratios))


class Pass(NamedTuple):
    name: str                       # the module's name in the model (its class for the model itself)
    run: Callable[[], None]         # its forward and backward pass, alone


def _step_calls(model: torch.nn.Module, run_step: Callable[[], Any],
                kinds: tuple[type[torch.nn.Module], ...]) -> list[tuple]:
    """(name, module, a copy of its input, whether the input needed a gradient, a copy of its output
    gradient) of each call of a module of ``kinds`` during one ``run_step()`` whose output took part
    in the backward pass."""
    names = {m: n or type(m).__name__ for n, m in model.named_modules()}
    calls: list[list] = []

    def record(mod, args, out):
        if not (isinstance(out, torch.Tensor) and out.requires_grad):
            return
        call = [names[mod], mod, args[0].detach().clone(), args[0].requires_grad, None]
        calls.append(call)
        out.register_hook(lambda g: call.__setitem__(4, g.detach().clone()))

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, kinds)]
    try:
        run_step()
    finally:
        for h in handles:
            h.remove()
    return [tuple(c) for c in calls if c[4] is not None]


def module_passes(model: torch.nn.Module, run_step: Callable[[], Any],
                  kinds: tuple[type[torch.nn.Module], ...]) -> list[Pass]:
    """One :class:`Pass` per call of a module of ``kinds`` during one ``run_step()`` whose output
    took part in the backward pass: it repeats that call alone, the module's forward pass on a copy
    of the input the step gave it, then the backward pass from a copy of the output gradient the
    step computed (same shapes, memory formats and values; with an input gradient only where the
    step needed one; the module's parameter gradients are reset first, as the optimiser's
    ``zero_grad(set_to_none=True)`` does).  So the layers take the same code path as in the step."""
    def replay(mod: torch.nn.Module, x: torch.Tensor, needs_grad: bool, g: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            mod.zero_grad(set_to_none=True)
            mod(x.detach().requires_grad_(needs_grad)).backward(g)
        return run
    return [Pass(name, replay(*rest)) for name, *rest in _step_calls(model, run_step, kinds)]


MATMUL_KINDS = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)


def matmul_shapes(mod: torch.nn.Module, x_shape: tuple[int, ...], out_shape: tuple[int, ...],
                  input_grad: bool) -> list[tuple[int, int, int]]:
    """(M, K, N) of the matrix products that carry a conv's or linear layer's FLOPs in one training
    step, as ``FlopCounterMode`` counts them (2 M K N each): the forward pass, the weight gradient,
    and the input gradient where the step needs one.  A conv's forward pass is its im2col rows
    (one per output position) times its weight; a transposed conv's, its input positions times its
    weight, whose columns col2im then adds into the output.  Only groups = 1 and dilation = 1."""
    if isinstance(mod, torch.nn.Linear):
        m, k, n = math.prod(x_shape[:-1]), x_shape[-1], out_shape[-1]
        fwd, wgrad, igrad = (m, k, n), (n, m, k), (m, n, k)
    elif isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
        if mod.groups != 1 or any(d != 1 for d in mod.dilation):
            raise ValueError(f"matmul_shapes: {type(mod).__name__} with groups={mod.groups}, "
                             f"dilation={mod.dilation}; only groups=1, dilation=1")
        taps = math.prod(mod.kernel_size)
        if isinstance(mod, torch.nn.ConvTranspose2d):    # input positions x C_in -> C_out x taps columns
            m, k, n = x_shape[0] * math.prod(x_shape[2:]), x_shape[1], out_shape[1] * taps
            wgrad = (k, m, n)                             # input^T @ output columns' gradient
        else:                                             # output positions x (C_in x taps) -> C_out
            m, k, n = out_shape[0] * math.prod(out_shape[2:]), x_shape[1] * taps, out_shape[1]
            wgrad = (n, m, k)                             # output gradient^T @ im2col rows
        fwd, igrad = (m, k, n), (m, n, k)
    else:
        raise ValueError(f"matmul_shapes: no matrix products known for {type(mod).__name__}")
    return [fwd, wgrad, *([igrad] if input_grad else [])]


class Matmuls(NamedTuple):
    name: str                               # the module's name in the model
    shapes: list[tuple[int, int, int]]      # (M, K, N) of each product (:func:`matmul_shapes`)
    layouts: list[str]                      # each product's operand layout: "NT" = A row-major, B transposed
    run: Callable[[], None]                 # those products as plain matmuls, alone


LAYOUTS = ("NN", "NT", "TN", "TT")


def _operand(rows: int, cols: int, layout: str, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random (rows x cols) matrix of ``like``'s dtype and device: row-major ("N"), or the
    transposed view of a row-major (cols x rows) one ("T")."""
    shape = (rows, cols) if layout == "N" else (cols, rows)
    t = torch.randn(*shape, generator=gen, dtype=like.dtype).to(like.device)
    return t if layout == "N" else t.t()


def _fastest_matmul(m: int, k: int, n: int, like: torch.Tensor, gen: torch.Generator) -> tuple[str, Callable[[], None]]:
    """(layout, run) of an (m x k) @ (k x n) matmul into a kept output, in the fastest of
    :data:`LAYOUTS` (median of 3 calls each): BLAS speed depends on the operands' layout."""
    c = torch.empty(m, n, dtype=like.dtype, device=like.device)
    best = None
    for layout in LAYOUTS:
        a, b = _operand(m, k, layout[0], like, gen), _operand(k, n, layout[1], like, gen)
        run = functools.partial(torch.mm, a, b, out=c)
        t = seconds_per_call(run, device=like.device, warmup=1, repeats=3)
        if best is None or t < best[0]:
            best = (t, layout, run)
    return best[1], best[2]


def _run_all(fns: Sequence[Callable[[], Any]]) -> None:
    for fn in fns:
        fn()


def matmul_passes(model: torch.nn.Module, run_step: Callable[[], Any]) -> list[Matmuls]:
    """For each conv and linear call of one ``run_step()`` that took part in the backward pass, the
    same arithmetic as plain matrix products: each of :func:`matmul_shapes` one matmul of random
    operands of the input's dtype and device, in the fastest operand layout, into a kept output.  No
    im2col, no col2im, no copies: what the device's BLAS gives the step's own matmul shapes, to set
    beside the time the layers' passes take (:func:`module_passes`).  It is not a bound: a direct
    convolution kernel that is not a GEMM (oneDNN's) can beat the GEMM of its im2col shape."""
    out = []
    gen = torch.Generator().manual_seed(0)
    for name, mod, x, needs_grad, g in _step_calls(model, run_step, MATMUL_KINDS):
        shapes = matmul_shapes(mod, tuple(x.shape), tuple(g.shape), needs_grad)
        layouts, runs = zip(*(_fastest_matmul(m, k, n, x, gen) for m, k, n in shapes))
        out.append(Matmuls(name, shapes, list(layouts), functools.partial(_run_all, runs)))
    return out


def seconds_per_call(fn: Callable[[], Any], *, device: torch.device | str, warmup: int = 1, repeats: int = 5) -> float:
    """Median seconds of ``fn()`` (:func:`throughput` of one call)."""
    return 1.0 / throughput(lambda _: fn(), None, device=device, warmup=warmup, repeats=repeats, batch_size=1)


def forward_flops_per_image(model: torch.nn.Module, image_size: int) -> tuple[int, str]:
    """(FLOPs, method) of one forward pass (encode + decode) of one image."""
    return int(flops_per_image(model, image_size)), "models.conv.flops_per_image (FlopCounterMode)"


def training_flops_per_image(model: torch.nn.Module, image_size: int) -> tuple[int, str]:
    """(FLOPs, method) of one training step's forward and backward pass, per image: what MFU counts."""
    return int(train_flops_per_image(model, image_size)), TRAIN_FLOPS_METHOD


def peak_memory_mb(fn: Callable[[], Any], device: torch.device | str) -> float | None:
    """Peak CUDA memory allocated (MiB) while running ``fn``; None on non-CUDA devices."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2 ** 20


# --------------------------------------------------------------------------- device peak + MFU

def _cache_file() -> Path:
    root = cache_root()
    return root / "device_peak.json"


def _device_label(device: torch.device) -> str:
    return device_name(device)


def peak_dtype(device: torch.device | str) -> torch.dtype:
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def device_key(device: torch.device | str) -> str:
    device = torch.device(device)
    return (f"{_device_label(device)} | torch {torch.__version__} | threads {torch.get_num_threads()} "
            f"| {str(peak_dtype(device)).replace('torch.', '')} | best-of-repeats v2")


def measure_matmul_peak(device: torch.device, n: int | None = None, repeats: int = 7) -> float:
    """Best FLOP/s of an (n x n) @ (n x n) matmul on ``device``.

    A *peak*, so the fastest repeat counts (the median would fold in interference from other
    processes, understate the peak and inflate MFU)."""
    dtype = peak_dtype(device)
    n = n or (8192 if device.type == "cuda" else 2048)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    best = math.inf
    for i in range(repeats + 2):                      # the first two are warm-up
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        if i >= 2:
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def device_matmul_peak(device: torch.device | str) -> float:
    """Measured dense-matmul FLOP/s of ``device`` (cached on disk; see module docstring)."""
    device = torch.device(device)
    path, key = _cache_file(), device_key(device)
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    if isinstance(entry, dict) and entry.get("flops_per_s", 0) > 0 and not entry.get("busy", True):
        return float(entry["flops_per_s"])
    load = os.getloadavg()[0]
    peak = measure_matmul_peak(device)
    load = max(load, os.getloadavg()[0])
    # A peak measured while other processes share a CPU is too low (every MFU against it too high):
    # it is used for this call but never cached, so the next quiet measurement replaces it.
    busy = device.type == "cpu" and load > (os.cpu_count() or 1) + 0.5
    if not busy:
        cache[key] = {"flops_per_s": peak, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "load_1min": round(load, 2), "busy": False}
        write_json(path, cache)            # temp file + rename
    return peak


def mfu(train_flops: float, train_images_per_s: float, peak_flops_per_s: float) -> float:
    """Model-FLOPs utilisation: training FLOPs per image (:func:`training_flops_per_image`) *
    images/s / peak."""
    return train_flops * train_images_per_s / peak_flops_per_s
