"""Compute on paper: training FLOPs of an ablation and its wall time on a stated device.

    python -m bench plan ablations/loss.yaml --peak-tflops 312 --mfu 0.3 --devices-count 8

Training FLOPs of a run = training FLOPs per image (forward + backward, counted on the CPU with
FlopCounterMode: convolutions and matmuls, 2 FLOPs per multiply-add; bench.metrics.cost, the FLOPs
MFU counts) x steps x batch size.  Not counted: the loss terms' own work (SSIM windows, a
deep-feature loss's extra encoder pass), the optimiser, data movement and scoring.  Wall time =
FLOPs / (peak x MFU); runs are indivisible, so N devices finish when the busiest one does (runs
assigned longest first).  The MFU is an assumption you state; ``python -m bench run`` measures the
real one of every run (metrics.json: ``mfu``).
"""
from __future__ import annotations

import heapq

import torch

from bench.config.schema import RunSpec
from bench.metrics.cost import training_flops_per_image
from bench.train.runtime import build_model


def run_flops(runs: list[RunSpec]) -> list[float]:
    """Training FLOPs of each run (models built once per distinct config, on the CPU)."""
    per_model: dict[str, float] = {}
    out = []
    for run in runs:
        key = str(run.model)
        if key not in per_model:
            model = build_model(run, torch.device("cpu"))
            per_model[key] = training_flops_per_image(model, run.model["image_size"])[0]
        out.append(per_model[key] * run.train.steps * run.train.batch_size)
    return out


def makespan(seconds: list[float], devices: int) -> float:
    """Longest-first assignment of indivisible runs to ``devices``: when the last one finishes."""
    loads = [0.0] * max(1, devices)
    for s in sorted(seconds, reverse=True):
        heapq.heapreplace(loads, loads[0] + s)
    return max(loads)


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def describe(runs: list[RunSpec], peak_tflops: float | None, mfu: float, devices: int) -> str:
    flops = run_flops(runs)
    lines = [f"training compute: {sum(flops) / 1e15:.2f} PFLOP over {len(runs)} runs "
             f"(forward + backward FLOPs/image x steps x batch; losses' own work, optimiser and scoring "
             f"not counted)"]
    if peak_tflops:
        secs = [f / (peak_tflops * 1e12 * mfu) for f in flops]
        lines.append(f"at {peak_tflops:g} TFLOP/s peak x MFU {mfu:g}: {_h(sum(secs))} on 1 device, "
                     f"{_h(makespan(secs, devices))} on {devices} (longest run {_h(max(secs))})")
    return "\n".join(lines)
