"""Throughput of each weight-free metric on 1000 32x32 images, and of FID's Inception by memory
format (run with `pytest --benchmark`).

Benchmarks measure; they never assert on timing."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import BENCH_DEVICES, sync

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


@pytest.mark.parametrize("device", BENCH_DEVICES)
@pytest.mark.parametrize("name", list(CASES))
def test_metric_throughput(benchmark, sets, name, device):
    a, b = (t.to(device) for t in sets)
    benchmark.extra_info.update(images=N, side=SIDE, device=device)

    def timed(a, b):
        out = CASES[name](a, b)
        sync(device)
        return out

    result = benchmark.pedantic(timed, args=(a, b), rounds=3, warmup_rounds=1)
    assert result is not None


@pytest.mark.parametrize("device", BENCH_DEVICES)
def test_inception_layout(benchmark, device):
    """FID's Inception in NCHW vs channels_last (the layout ``build_inception`` uses), in interleaved
    rounds on the same 32 px uint8 batch; the two layouts must give the same features (float
    rounding only).  Skipped where no Inception weights are available."""
    from bench.errors import WeightsError
    from bench.metrics import cost
    from bench.weights import files as weights
    from bench.weights.networks import build_inception

    try:
        src = weights.fid_source()
    except WeightsError as e:
        pytest.skip(str(e))
    cl = build_inception(src, torch.device(device))
    nchw = copy.deepcopy(cl).to(memory_format=torch.contiguous_format)
    x = torch.randint(0, 256, (10, 3, SIDE, SIDE), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        a, b = nchw(x)[0], cl(x)[0]
        assert (a - b).abs().max() <= 1e-4 * a.abs().max()
        ips = cost.interleaved({name: (lambda e=ext: cost.throughput(e, x, device=device, warmup=1, repeats=2))
                                for name, ext in (("nchw", nchw), ("channels_last", cl))}, 3)
    benchmark.extra_info.update(images_per_s={k: round(v, 2) for k, v in ips.items()},
                                speedup=round(ips["channels_last"] / ips["nchw"], 3))
    print(f"\nInception 299 px features, images/s: {ips} -> channels_last / nchw "
          f"{ips['channels_last'] / ips['nchw']:.2f}")
    with torch.no_grad():
        benchmark.pedantic(lambda: cl(x), rounds=1, iterations=1)
