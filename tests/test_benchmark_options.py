"""`pytest --benchmark-only` runs exactly the benchmarks; plain `pytest` runs none of them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # pytest in subprocesses: the slow tier

ROOT = Path(__file__).resolve().parent.parent
ONE = ["tests/test_metric_benchmarks.py", "-k", "saturation and cpu", "-q", "-p", "no:cacheprovider"]


def _pytest(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, check=False)
    return out.stdout + out.stderr


def test_benchmark_only_runs_the_benchmarks():
    assert "1 passed" in _pytest(*ONE, "--benchmark-only", "--benchmark-disable-gc")


def test_plain_pytest_skips_the_benchmarks():
    out = _pytest(*ONE)
    assert "1 skipped" in out and "passed" not in out
