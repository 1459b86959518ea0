"""The peers benchmark's worker processes (tests/test_peer_benchmarks.py) answer as the benchmark
expects, in plain `pytest`: a variant measures and steps in its own process, a missing peer is a skip
with its reason, and a variant's own printing never reaches the answers."""
import importlib.util

import pytest
from test_peer_benchmarks import _Worker


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
