"""Benchmarks (run with `pytest --benchmark`; plain `pytest` skips them).

Training-step throughput of the paper's model (kernel 4, stride 2, fc heads; latent 128 at
32x32 and 1024 at 96x96) with the paper's loss (KL + SSIM + colour). Images/s is reported in
the benchmark's extra_info and printed.
"""
from __future__ import annotations

import pytest
import torch
from conftest import BENCH_DEVICES, sync

from losses import Objective
from models import MODELS

pytestmark = pytest.mark.benchmark

PAPER_LOSS = [{"name": "kl", "weight": 1.0}, {"name": "ssim", "weight": 1.0}, {"name": "colour", "weight": 1.0}]


@pytest.mark.parametrize("device", BENCH_DEVICES)
@pytest.mark.parametrize("image_size,batch", [(32, 128), (96, 32)])
def test_train_step_throughput(benchmark, image_size, batch, device):
    torch.manual_seed(0)
    model = MODELS.build("paper", {"image_size": image_size}).to(device)
    objective = Objective.from_config(PAPER_LOSS)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, image_size, image_size).to(device)
    gen = torch.Generator(device=device).manual_seed(0)

    def step():
        out = model(x, generator=gen)
        total, _ = objective(x, out, model, 0)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sync(device)

    for _ in range(2):  # warm-up
        step()
    benchmark.pedantic(step, rounds=5, iterations=1)
    ips = batch / benchmark.stats.stats.median
    benchmark.extra_info["images_per_s"] = round(ips, 1)
    benchmark.extra_info["params"] = sum(p.numel() for p in model.parameters())
    benchmark.extra_info["device"] = device
    print(f"\n{device}: paper model {image_size}x{image_size}, batch {batch}: {ips:.1f} train images/s (median of 5)")
    assert ips > 0
