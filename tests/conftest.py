"""Test options: plain `pytest` is fast and offline; `pytest --benchmark` adds the benchmarks."""
from __future__ import annotations

import argparse
import math
import os

import pytest
import torch

from bench.stats import CONFIDENCE, median_interval


def pytest_addoption(parser):
    parser.addoption("--benchmark", action="store_true", default=False,
                     help="also run the benchmarks (tests marked `benchmark`)")
    parser.addoption("--peers-rounds", type=_rounds, default=7, metavar="N",
                     help="interleaved rounds of the peers benchmarks (default 7: each ratio's interval is "
                          "the lowest to the highest round, 98.4%%; 15 narrows it to the 4th to 12th, 96.5%%)")


# Benchmarks run on every available device: the CPU, and CUDA where present (skipped with the reason otherwise).
BENCH_DEVICES = [pytest.param("cpu", id="cpu"),
                 pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason="no CUDA device on this machine"))]


def sync(device: str) -> None:
    """Wait for the device's queued work, so a timed call measures it (CUDA runs asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _has_interval(n: int) -> bool:
    return not math.isnan(median_interval(range(n))[0])


# the fewest rounds whose median ratio has an interval at bench.stats' confidence (6 at 95%)
MIN_ROUNDS = next(n for n in range(1, 100) if _has_interval(n))


def _rounds(text: str) -> int:
    """``--peers-rounds``: a whole number of rounds, at least :data:`MIN_ROUNDS`."""
    n = int(text) if text.isdigit() else 0
    if not _has_interval(n):
        raise argparse.ArgumentTypeError(f"{text!r}: need a whole number of rounds >= {MIN_ROUNDS} "
                                         f"(fewer give no {CONFIDENCE:.0%} interval for a ratio)")
    return n


# pytest-benchmark's own switches mean "I want the benchmarks" too (`pytest --benchmark-only`,
# `--benchmark-autosave`, `--benchmark-compare`, ...); plain `pytest` still runs none of them.
BENCHMARK_SWITCHES = ("benchmark_only", "benchmark_autosave", "benchmark_save", "benchmark_compare",
                      "benchmark_json", "benchmark_histogram")


def wants_benchmarks(config) -> bool:
    return bool(config.getoption("--benchmark")) or any(
        config.getoption(opt, default=None) for opt in BENCHMARK_SWITCHES)


def pytest_collection_modifyitems(config, items):
    run_bench = wants_benchmarks(config)
    has_real = bool(os.environ.get("PEGASUS_DATASETS"))
    skip_bench = pytest.mark.skip(reason="benchmark: run with `pytest --benchmark`")
    skip_real = pytest.mark.skip(reason="real data: set PEGASUS_DATASETS to a folder with cifar10-jpeg/, stl10-png/")
    for item in items:
        is_bench = "benchmark" in item.keywords or "benchmark" in getattr(item, "fixturenames", ())
        if is_bench and not run_bench:
            item.add_marker(skip_bench)
        if "realdata" in item.keywords and not has_real:
            item.add_marker(skip_real)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep dataset caches and weights lookups of tests out of the user's home."""
    monkeypatch.setenv("PEGASUS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.manual_seed(0)
