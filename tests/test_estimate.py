"""Compute on paper (`bench plan --peak-tflops`): FLOPs = a training step's FLOPs per image x steps x
batch; indivisible runs spread longest first over N devices."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.config import schema as config
from bench.metrics.cost import forward_flops_per_image, training_flops_per_image
from bench.run import plan as estimate
from bench.train.runtime import build_model

ROOT = Path(__file__).resolve().parent.parent
TINY = """\
name: est
question: how much compute?
claims: []
datasets: [shapes]
seeds: [0, 1]
defaults:
  model: {name: conv, widths: [8, 16], latent_dim: 8}
  train: {steps: 100, batch_size: 16}
arms:
  a: {}
"""


def test_run_flops_are_a_training_steps_flops_per_image_times_steps_and_batch(tmp_path):
    (tmp_path / "e.yaml").write_text(TINY)
    runs = config.expand(config.load(tmp_path / "e.yaml"))
    model = build_model(runs[0], torch.device("cpu"))
    step, _ = training_flops_per_image(model, 32)
    assert 2 * forward_flops_per_image(model, 32)[0] < step < 3 * forward_flops_per_image(model, 32)[0]
    assert estimate.run_flops(runs) == [step * 100 * 16] * 2
    text = estimate.describe(runs, 1e-6, 0.5, 2)        # 1 MFLOP/s x 0.5: seconds = FLOPs / 5e5
    secs = step * 100 * 16 / 5e5
    assert f"on 1 device, {estimate._h(secs)} on 2" in text


@pytest.mark.parametrize("seconds, devices, expect", [
    ([3, 3, 2, 2, 2], 2, 7), ([5], 4, 5), ([1, 1, 1, 1], 4, 1), ([4, 1, 1], 1, 6)])
def test_makespan_assigns_longest_first(seconds, devices, expect):
    assert estimate.makespan(seconds, devices) == expect


@pytest.mark.slow
def test_plan_prints_the_estimate_and_refuses_a_bad_mfu(tmp_path):
    (tmp_path / "e.yaml").write_text(TINY)
    ok = subprocess.run([sys.executable, "-m", "bench", "plan", str(tmp_path / "e.yaml"), "--peak-tflops", "100"],
                        cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and "training compute:" in ok.stdout and "MFU 0.3" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "bench", "plan", str(tmp_path / "e.yaml"), "--mfu", "1.5"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == ["--peak-tflops must be > 0 and --mfu in (0, 1]"]
