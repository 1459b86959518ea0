"""Device and model construction shared by training, scoring and the CLI.

Device-agnostic by construction: CUDA-only features (bf16 autocast, channels_last) are switched on
only when the device is CUDA, so the same code path runs (and is tested) on the CPU.
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


def build_model(run: RunSpec, device: torch.device) -> torch.nn.Module:
    """The run's model on ``device`` (channels_last on CUDA when the run asks for it)."""
    args = {k: v for k, v in run.model.items() if k != "name"}
    model = MODELS.build(run.model["name"], args).to(device)
    if device.type == "cuda" and run.train["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    return model


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
