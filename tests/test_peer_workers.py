"""The peers benchmark's worker processes (tests/test_peer_benchmarks.py) answer as the benchmark
expects, in plain `pytest`: a variant measures and steps in its own process, a missing peer is a skip
with its reason, and a variant's own printing never reaches the answers; MFU's peak is the highest
measured in the rounds or at the session's start; ``--peers-rounds`` sets the rounds."""
import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import _rounds
from test_peer_benchmarks import _interleaved_with_peak, _Worker

from bench.metrics import cost
from bench.speed.report import ratio_info

pytestmark = pytest.mark.slow   # worker processes: the slow tier


def test_a_worker_measures_and_steps_in_its_own_process(tmp_path):
    w = _Worker("plain_cl_kept", 32, 2, tmp_path)
    try:
        assert w.skipped is None
        assert w.measure() > 0 and w.measure() > 0
        w.step()
    finally:
        w.close()
    assert w.proc.returncode == 0


def test_pythae_worker_skips_with_the_reason_when_pythae_is_absent(tmp_path):
    if importlib.util.find_spec("pythae") is not None:
        pytest.skip("pythae is installed here; its worker runs in the benchmark")
    w = _Worker("pythae", 32, 2, tmp_path)
    w.close()
    assert w.skipped and "pythae not installed" in w.skipped


def test_the_peak_is_measured_in_every_round_and_the_highest_counts(monkeypatch):
    measured = iter([1.0e11, 1.6e11, 1.2e11])
    monkeypatch.setattr(cost, "measure_matmul_peak", lambda device: next(measured))
    monkeypatch.setattr(cost, "device_matmul_peak", lambda device: 1.4e11)
    order = []
    got, peak, peaks = _interleaved_with_peak({"a": lambda: order.append("a") or 5.0,
                                               "b": lambda: order.append("b") or 7.0}, 3)
    assert got == {"a": [5.0] * 3, "b": [7.0] * 3}
    assert peaks == [1.0e11, 1.6e11, 1.2e11] and peak == 1.6e11
    assert sorted(order) == ["a"] * 3 + ["b"] * 3
    monkeypatch.setattr(cost, "device_matmul_peak", lambda device: 2.0e11)
    measured = iter([1.0e11])
    assert _interleaved_with_peak({"a": lambda: 1.0}, 1)[1] == 2.0e11


def test_a_ratio_target_is_decided_only_when_its_interval_is_on_one_side():
    base = [100.0] * 7
    met = ratio_info("r", [110.0, 105.0, 120.0, 108.0, 112.0, 109.0, 111.0], base, 1.0)
    assert met == {"r": 1.1, "r_interval": [1.05, 1.2], "r_interval_confidence": 0.984,
                   "r_target_met": True, "r_decided_by_this_run": True}
    noisy = ratio_info("r", [110.0, 95.0, 120.0, 108.0, 112.0, 109.0, 111.0], base, 1.0)
    assert noisy["r_target_met"] and not noisy["r_decided_by_this_run"]
    missed = ratio_info("r", [90.0, 95.0, 99.0, 97.0, 92.0, 96.0, 94.0], base, 1.0)
    assert not missed["r_target_met"] and missed["r_decided_by_this_run"]
    few = ratio_info("r", [110.0, 105.0, 120.0], base[:3], 1.0)     # too few rounds for an interval
    assert few["r_target_met"] and not few["r_decided_by_this_run"]


def test_peers_rounds_takes_six_or_more_and_narrows_the_ratio_interval():
    assert _rounds("15") == 15 and _rounds("6") == 6
    for bad in ("5", "0", "-3", "seven", "7.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="rounds >= 6"):
            _rounds(bad)
    # with 15 rounds a run's interval drops the 3 lowest and 3 highest rounds' ratios
    ratios = [0.90, 0.93, 0.96, 1.01, 1.02, 1.03, 1.04, 1.05, 1.05, 1.06, 1.07, 1.08, 1.15, 1.20, 1.30]
    r = ratio_info("r", [100.0 * x for x in ratios], [100.0] * 15, 1.0)
    assert r["r_interval"] == [1.01, 1.08] and r["r_interval_confidence"] == 0.965
    assert r["r_target_met"] and r["r_decided_by_this_run"]
    assert not ratio_info("r", [100.0 * x for x in ratios[:7]], [100.0] * 7, 1.0)["r_decided_by_this_run"]


def test_pytest_refuses_too_few_peers_rounds_in_one_line():
    out = subprocess.run([sys.executable, "-m", "pytest", "--peers-rounds", "3", "--collect-only", "-q",
                          "-p", "no:cacheprovider", __file__],
                         capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert out.returncode == 4            # pytest's usage error
    assert "--peers-rounds: '3': need a whole number of rounds >= 6" in out.stderr
