"""Device and model construction shared by training, scoring and the CLI.

Device-agnostic by construction: CUDA-only features (bf16 autocast) are switched on only when the
device is CUDA, so the same code path runs (and is tested) on the CPU; fused Adam runs on CUDA and
the CPU (``bench.train.make_optimizer``).  The memory
format is chosen per run (``train.channels_last``, default on): channels_last is the faster
layout for these convs on CUDA (tensor cores) and, measured with ``pytest --benchmark -k peers``,
on this project's reference CPU too (oneDNN); it changes float summation order, not the math.
"""
from __future__ import annotations

import contextlib

import torch

from bench.config import RunSpec
from bench.errors import BenchError
from models import MODELS


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when present, else cpu; 'cuda' without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BenchError("train.device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(name)


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
