"""Device and model construction shared by training, scoring and the CLI.

Device-agnostic by construction: CUDA-only features (bf16 autocast) are switched on only when the
device is CUDA, so the same code path runs (and is tested) on the CPU; fused Adam runs on CUDA and
the CPU (``bench.train.loop.make_optimizer``).  The memory
format is chosen per run (``train.channels_last``, default on): channels_last is the faster
layout for these convs on CUDA (tensor cores) and, measured with ``pytest --benchmark -k peers``,
on this project's reference CPU too (oneDNN); it changes float summation order, not the math.

The process that trains keeps the memory it frees (:func:`keep_freed_memory`).  glibc hands every
block above its mmap threshold back to the kernel on free, so each training step of a CPU run
page-faults its large activations and gradients in again, zeroed by the kernel: allocating and
filling one 32 MiB fc-head gradient took 16.7 ms where refilling a kept one took 1.1 ms, and the
weight gradient of a 96 px fc head (a 32 x 8192 by 1024 matmul) 26 ms instead of 8 on this
project's reference CPU.  A CUDA run gets the same from torch's caching allocator.  Where the
memory lives does not change a result: the parameters after five steps are bitwise the same either
way (tests/test_runtime.py).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys

import torch

from bench.config.schema import RunSpec
from bench.errors import BenchError
from models import MODELS


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when present, else cpu; 'cuda' without a GPU, or 'cuda:i' past the visible GPUs, is a
    user error (one line)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BenchError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:<index>)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchError(f"device {name!r} asked for, but no CUDA device is available (use 'auto' or 'cpu')")
        if device.index is not None and device.index >= (n := torch.cuda.device_count()):
            raise BenchError(f"device {name!r} asked for, but this machine has {n} visible GPU{'s' * (n != 1)} "
                             f"(cuda:0 to cuda:{n - 1})")
    return device


def check_devices(runs: list[RunSpec], devices: list[str] | None = None) -> None:
    """Every device a sweep would use, checked once before anything trains or is written."""
    for name in sorted({r.train.device for r in runs} | set(devices or ())):
        resolve_device(name)


def pin(device: torch.device) -> None:
    """Make ``device`` the process's current CUDA device, so nothing allocates on GPU 0 by accident."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


ENV_ALLOCATOR = "PEGASUS_CPU_ALLOCATOR"    # "system": leave the C allocator as it is
# glibc's mallopt parameters (malloc.h): no block is served by mmap (so none is unmapped on free),
# and the heap is trimmed only when more than TRIM_BYTES are free at its top.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
TRIM_BYTES = 1 << 30
_allocator: str | None = None


def keep_freed_memory() -> str:
    """Make glibc keep freed memory for reuse in this process (once; later calls return the first
    answer).  Returns what the allocator does, for the run's env.json.  The price: the process
    holds on to its peak heap until it exits, as torch's CUDA caching allocator does."""
    global _allocator
    if _allocator is None:
        _allocator = _configure_allocator()
    return _allocator


def _configure_allocator() -> str:
    if os.environ.get(ENV_ALLOCATOR) == "system":
        return f"system ({ENV_ALLOCATOR}=system)"
    if not sys.platform.startswith("linux") or not (name := ctypes.util.find_library("c")):
        return f"system (no glibc on {sys.platform})"
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES) == 1
    except (OSError, AttributeError):     # a libc without mallopt (musl)
        return f"system ({name} has no mallopt)"
    return "glibc, freed memory kept (mmap off, trim above 1 GiB)" if ok else "system (mallopt refused)"


def memory_format(run: RunSpec) -> torch.memory_format:
    """The layout of the run's model weights and image batches (every device)."""
    return torch.channels_last if run.train.channels_last else torch.contiguous_format


def build_model(run: RunSpec, device: torch.device) -> torch.nn.Module:
    """The run's model on ``device`` in the run's memory format."""
    args = {k: v for k, v in run.model.items() if k != "name"}
    return MODELS.build(run.model["name"], args).to(device).to(memory_format=memory_format(run))


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA only: on the CPU it is slower for convs and changes numerics."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_run_model(run: RunSpec, ckpt: dict, device: torch.device) -> torch.nn.Module:
    """The run's model with the checkpoint's weights, in eval mode."""
    model = build_model(run, device)
    model.load_state_dict(ckpt["model"])
    return model.eval()
