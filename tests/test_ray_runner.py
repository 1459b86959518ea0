"""The Ray runner on a real local Ray cluster (one node; 1 CPU, so a task trains with 1 thread and
does not oversubscribe a 2-core CI machine): same metrics as the local
runner, a task whose worker is killed is retried and resumes from its checkpoint."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch
from test_runners import _file, _values

from bench import store
from bench.config import schema as config
from bench.run import local as runners
from bench.run import status

pytestmark = pytest.mark.slow   # a Ray cluster: the slow tier

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    # the workers use the tests' cache (tests/conftest.py), as bench.run.ray_cluster.connect passes PEGASUS_*
    cache = str(tmp_path_factory.getbasetemp() / "cache")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PEGASUS_CACHE": cache}})
    yield
    ray.shutdown()


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)          # the local reference: as a Ray task on a 1-CPU node
    yield
    torch.set_num_threads(before)


def test_ray_gives_the_local_metrics(tmp_path, local_ray, one_thread):
    runs = config.expand(config.load(_file(tmp_path)))
    local = runners.run_sweep(runs, tmp_path / "local", progress=False)
    remote = runners.run_sweep(runs, tmp_path / "ray", runner="ray", progress=False)
    assert len(local.trained) == len(remote.trained) == 2 and not remote.failed
    assert _values(tmp_path / "local", runs) == _values(tmp_path / "ray", runs)
    env = store.read_json(tmp_path / "ray" / runs[0].rel_dir / "env.json")
    assert env["placement"]["threads"] == 1 and env["placement"]["pid"] != os.getpid()
    again = runners.run_sweep(runs, tmp_path / "ray", runner="ray", progress=False)
    assert len(again.skipped) == 2 and not again.trained


def test_ray_retries_a_killed_worker_and_resumes(tmp_path, local_ray, one_thread):
    runs = config.expand(config.load(_file(tmp_path, steps=300, ckpt=20)))[:1]
    victim = tmp_path / "ray" / runs[0].rel_dir
    killed = []

    def kill_when_checkpointed():
        deadline = time.time() + 120
        while time.time() < deadline:
            holder = store.lock_holder(victim)
            if holder and holder.get("pid") and (victim / store.CKPT).exists() and \
                    status.last_log_entry(victim / store.LOG).get("step", 0) >= 60:
                os.kill(holder["pid"], signal.SIGKILL)
                killed.append(holder["pid"])
                return
            time.sleep(0.02)

    t = threading.Thread(target=kill_when_checkpointed)
    t.start()
    s = runners.run_sweep(runs, tmp_path / "ray", runner="ray", progress=False)
    t.join()
    assert killed and s.trained == [str(runs[0].rel_dir)]
    assert 0 < store.read_json(victim / store.METRICS)["train"]["resumed_from"] < 300
    runners.run_sweep(runs, tmp_path / "local", progress=False)
    assert _values(tmp_path / "ray", runs) == _values(tmp_path / "local", runs)
