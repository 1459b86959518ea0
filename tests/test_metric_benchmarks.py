"""Throughput of each weight-free metric on 1000 32x32 images (run with `pytest --benchmark`).

Benchmarks measure; they never assert on timing."""
from __future__ import annotations

import pytest
import torch

from bench.metrics import quality as q

pytestmark = pytest.mark.benchmark
N, SIDE = 1000, 32


@pytest.fixture(scope="module")
def sets():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(N, 3, SIDE, SIDE, generator=g)
    b = (a + 0.05 * torch.randn(N, 3, SIDE, SIDE, generator=g)).clamp(0, 1)
    return a, b


CASES = {
    "ms_ssim": lambda a, b: q.ms_ssim_per_image(a, b),
    "set_stats_update": lambda a, b: q.SetStats().update(a),
    "colour_distance": lambda a, b: q.colour_distance(a, b),
    "saturation": lambda a, b: q.mean_saturation(a),
    "sharpness_ratio": lambda a, b: q.sharpness_ratio(a, b),
    "spectral_distance": lambda a, b: q.spectral_distance(a, b),
    "checkerboard_score": lambda a, b: q.checkerboard_score(a, b),
}


@pytest.mark.parametrize("name", list(CASES))
def test_metric_throughput(benchmark, sets, name):
    a, b = sets
    benchmark.extra_info.update(images=N, side=SIDE)
    result = benchmark.pedantic(CASES[name], args=(a, b), rounds=3, warmup_rounds=1)
    assert result is not None
