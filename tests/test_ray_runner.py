"""--runner ray: each run asks for what its device needs, the probe names every node that misses the runs
directory, the datasets or the code, and a run not finished where the driver can see it fails with the reason
(fast, no Ray started); on Ray's own multi-node test cluster (ray.cluster_utils.Cluster: a head without CPUs
and two 1-CPU nodes, each its own raylet and workers on this machine), runs spread over the nodes with the
sequential metrics, a node lost mid-run has its run retried on the other node and resumed from its checkpoint,
a busy run is waited for by its task, and a node that does not share the runs directory is refused (slow)."""
from __future__ import annotations

import os
import shutil
import threading
import time
import types
from pathlib import Path

import pytest
import torch
from test_runners import _file, _values

import bench
import losses
import models
from bench import __main__ as cli
from bench import store
from bench.config import schema as config
from bench.errors import BenchError
from bench.run import local as runners
from bench.run import ray_cluster, status
from bench.run.execute import Outcome, Placement
from bench.run.ray_cluster import RaySettings

DEVICES = """\
name: devices
question: does each arm ask for what its device needs?
claims: [C1]
datasets: [shapes]
seeds: [0]
data:
  shapes: {n_train: 96, n_test: 40}
defaults:
  model: {name: conv, widths: [8, 16], latent_dim: 8}
  train: {steps: 4, batch_size: 16}
  eval: {n_test: 40, n_samples: 32, batch_size: 16, sheet: 16, fidelity: false}
arms:
  on_cpu: {train: {device: cpu}}
  on_cuda: {train: {device: cuda}}
  on_auto: {train: {device: auto}}
"""


def _by_device(tmp_path: Path) -> dict[str, config.RunSpec]:
    p = tmp_path / "devices.yaml"
    p.write_text(DEVICES)
    return {r.train.device: r for r in config.expand(config.load(p))}


def _node(node_id: str, ip: str = "10.0.0.1", cpus: float = 1, gpus: float = 0, alive: bool = True) -> dict:
    """A node as ray.nodes() describes it."""
    return {"NodeID": node_id, "NodeManagerAddress": ip, "Alive": alive,
            "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


# --------------------------------------------------------------------------- fast: no Ray started

def test_each_run_asks_for_what_its_device_needs(tmp_path):
    runs = _by_device(tmp_path)
    ask = RaySettings()
    gpu_cluster = {"cluster_gpus": 4, "node_cpus": 1}
    assert ray_cluster.request(runs["cpu"], ask, **gpu_cluster) == ({"num_cpus": 1, "num_gpus": 0},
                                                                   Placement("cpu", 1, None))
    assert ray_cluster.request(runs["cuda"], ask, **gpu_cluster) == ({"num_cpus": 1, "num_gpus": 1},
                                                                    Placement("cuda", 1, None))
    assert ray_cluster.request(runs["auto"], ask, **gpu_cluster)[0]["num_gpus"] == 1
    assert ray_cluster.request(runs["auto"], ask, cluster_gpus=0, node_cpus=1) == (
        {"num_cpus": 1, "num_gpus": 0}, Placement("cpu", 1, None))               # auto on a CPU cluster
    packed = RaySettings(gpus_per_run=0.25, cpus_per_run=2)
    assert ray_cluster.request(runs["cuda"], packed, cluster_gpus=1, node_cpus=8) == (
        {"num_cpus": 2, "num_gpus": 0.25}, Placement("cuda", 2, "up to 4 Ray tasks shared a GPU (0.25 GPU each)"))
    assert ray_cluster.request(runs["cpu"], packed, cluster_gpus=1, node_cpus=8) == (
        {"num_cpus": 2, "num_gpus": 0}, Placement("cpu", 2, "Ray tasks shared a node (2 of its 8 CPUs each)"))
    assert ray_cluster.request(runs["auto"], RaySettings(gpus_per_run=0), **gpu_cluster)[0]["num_gpus"] == 0


def test_what_no_node_could_run_or_no_setting_allows_is_one_line(tmp_path):
    runs = list(_by_device(tmp_path).values())
    cpu_nodes = [_node("a" * 56), _node("b" * 56, cpus=4)]
    assert ray_cluster.infeasible([{"num_cpus": 4, "num_gpus": 0}], cpu_nodes) is None
    why = ray_cluster.infeasible([{"num_cpus": 1, "num_gpus": 1}], cpu_nodes)
    assert why.startswith("--runner ray: a run asks for 1 CPU and 1 GPU and no node of the cluster has that "
                          "(1 CPU, 0 GPUs; 4 CPUs, 0 GPUs)")
    assert "no node" in ray_cluster.infeasible([{"num_cpus": 8, "num_gpus": 0}], cpu_nodes)
    assert ray_cluster.infeasible([{"num_cpus": 1, "num_gpus": 0.25}], [_node("c" * 56, gpus=1)]) is None
    assert [n["NodeID"][0] for n in ray_cluster.task_nodes(
        [_node("h" * 56, cpus=0), _node("a" * 56), _node("d" * 56, alive=False)])] == ["a"]    # no head, no dead
    ray_cluster.check(RaySettings(), runs)
    with pytest.raises(BenchError, match=r"runs ask for cuda but --gpus-per-run is 0"):
        ray_cluster.check(RaySettings(gpus_per_run=0), runs)
    with pytest.raises(BenchError, match=r"--gpus-per-run between 0 and 1"):
        ray_cluster.check(RaySettings(gpus_per_run=2), runs)
    with pytest.raises(BenchError, match=r"--ray-code must be one of ship, installed"):
        ray_cluster.check(RaySettings(code="copy"), runs)


def test_cli_ray_options_and_local_only_options_refused_in_one_line(tmp_path, capsys, monkeypatch):
    f = _file(tmp_path)
    base = ["run", str(f), "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--runner", "ray"]
    args = cli.build_parser().parse_args(base + ["--gpus-per-run", "0.25", "--cpus-per-run", "2",
                                                 "--ray-code", "installed", "--address", "head:6379"])
    runs = config.expand(config.load(f))
    assert cli._ray_settings(args, runs) == RaySettings(address="head:6379", cpus_per_run=2, gpus_per_run=0.25,
                                                         code="installed")
    assert cli._ray_settings(cli.build_parser().parse_args(base), runs) == RaySettings()
    assert cli.main(base + ["--jobs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("--jobs and --devices are the local runner's")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()
    with pytest.raises(SystemExit):
        cli.main(base + ["--gpus-per-run", "1.5"])
    assert "must be between 0 and 1" in capsys.readouterr().err


def test_a_run_not_finished_here_is_failed_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(ray_cluster, "VISIBLE_S", 0.0)
    run = config.expand(config.load(_file(tmp_path)))[0]
    root, run_dir = tmp_path / "runs", tmp_path / "runs" / run.rel_dir
    said = Outcome(str(run.rel_dir), "trained", "done in 3s")
    o = ray_cluster.outcome(run, (said, "f" * 56), root)          # the node wrote metrics.json into its own runs/
    assert o.state == "failed" and "the Ray task said 'trained' but" in o.message and "must be shared" in o.message
    assert "is not on this filesystem" in store.read_json(run_dir / store.ERROR)["error"]
    busy = Outcome(str(run.rel_dir), "busy", "locked by another process")
    assert ray_cluster.outcome(run, (busy, "f" * 56), root).state == "failed"      # never trained here instead
    died = RuntimeError("Task failed because the node it was running on is dead or unavailable.\nmore")
    o = ray_cluster.outcome(run, died, root)
    assert o.message == "FAILED (Ray task failed (RuntimeError: Task failed because the node it was running on is " \
                        "dead or unavailable.))"
    store.write_json(run_dir / store.METRICS, {"status": "done"})
    assert ray_cluster.outcome(run, (said, "f" * 56), root) == said


def _module(name: str, where: Path) -> types.ModuleType:
    """A stand-in for package ``name`` as found under ``where`` (what source_hash reads of it)."""
    m = types.ModuleType(name)
    m.__file__ = str(where / name / "__init__.py")
    return m


def _copy_of(pkg: types.ModuleType, where: Path) -> types.ModuleType:
    shutil.copytree(Path(pkg.__file__).parent, where / pkg.__name__, ignore=shutil.ignore_patterns("__pycache__"))
    return _module(pkg.__name__, where)


def test_the_code_hash_and_the_dataset_view_tell_two_machines_apart(tmp_path):
    here = ray_cluster.source_hash()
    assert here == ray_cluster.source_hash((bench, models, losses)) and len(here) == 64
    copy = _copy_of(bench, tmp_path / "same")
    assert ray_cluster.source_hash((copy, models, losses)) == here
    edited = _copy_of(bench, tmp_path / "edited")
    with open(Path(edited.__file__), "a") as f:
        f.write("# another version\n")
    assert ray_cluster.source_hash((edited, models, losses)) != here
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train" / "a.png").write_bytes(b"abc")
    (data / "b.bin").write_bytes(b"12345")
    assert ray_cluster.data_view(str(data)) == [2, 8]
    assert ray_cluster.data_view(str(data / "b.bin")) == [1, 5]
    assert ray_cluster.data_view(str(tmp_path / "elsewhere")) == "nothing"


def test_the_probe_names_each_node_and_what_it_misses(tmp_path):
    runs_root, token = tmp_path / "runs", "t0k3n"
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.bin").write_bytes(b"123")
    ok_data = {str(data): [1, 3]}
    code = ray_cluster.source_hash()
    ids = {k: k * 56 for k in "abcde"}
    nodes = [_node(ids[k], f"10.0.0.{i}") for i, k in enumerate("abcde", 1)]
    good = {"code": code, "code_at": "/x/bench", "data": ok_data}
    reports = {ids["a"]: good, ids["b"]: good,                              # b wrote into its own runs/
               ids["c"]: {**good, "write_error": "PermissionError: [Errno 13] Permission denied"},
               ids["d"]: {"code": "0" * 64, "code_at": "/opt/old/bench", "data": {str(data): "nothing"}},
               ids["e"]: "RuntimeEnvSetupError: Failed to set up runtime environment."}
    for k in "acd":
        store.write_json(ray_cluster.sentinel(runs_root, token, ids[k]), {"node": ids[k]})
    settings = RaySettings(code="installed")
    problems = ray_cluster.probe_problems(nodes, reports, runs_root, token, [str(data)], settings)
    assert problems == [
        f"node 10.0.0.2 (bbbbbbbb) does not share the runs directory (the file it wrote as "
        f"{runs_root}/.ray-probe/{token}/{ids['b']}.json is not here)",
        f"node 10.0.0.3 (cccccccc) cannot write into the runs directory {runs_root} (PermissionError: [Errno 13] "
        f"Permission denied)",
        f"node 10.0.0.4 (dddddddd) sees nothing at the dataset root {data} (here: 1 files, 3 bytes), runs other "
        f"code (/opt/old/bench, source 000000000000; here {Path(bench.__file__).parent}, {code[:12]}): install "
        f"this commit there or ship it (--ray-code ship)",
        "node 10.0.0.5 (eeeeeeee): its probe task failed (RuntimeEnvSetupError: Failed to set up runtime "
        "environment.)"]
    line = str(ray_cluster.refusal(problems))
    assert "\n" not in line and line.startswith("--runner ray: refused before training: node 10.0.0.2 (bbbbbbbb)")
    assert "10.0.0.1" not in line
    assert ray_cluster.probe_problems(nodes[:1], reports, runs_root, token, [str(data)], settings) == []


def test_the_job_ships_the_code_and_its_commit_unless_it_is_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("PEGASUS_WEIGHTS", "/shared/weights")
    ray_cluster.stage(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench", "losses", "models"]
    assert not list(tmp_path.rglob("__pycache__")) and (tmp_path / "bench" / "run" / "ray_cluster.py").is_file()
    staged = tuple(_module(name, tmp_path) for name in ("bench", "models", "losses"))
    assert ray_cluster.source_hash(staged) == ray_cluster.source_hash()
    shipped = ray_cluster.runtime_env(RaySettings(), str(tmp_path))
    assert shipped["working_dir"] == str(tmp_path)
    commit = store.git_commit()
    assert shipped["env_vars"][store.ENV_COMMIT] == commit
    assert shipped["env_vars"]["PEGASUS_WEIGHTS"] == "/shared/weights" and "PEGASUS_CACHE" in shipped["env_vars"]
    installed = ray_cluster.runtime_env(RaySettings(code="installed"), str(tmp_path))
    assert "working_dir" not in installed and store.ENV_COMMIT not in installed["env_vars"]
    monkeypatch.setenv(store.ENV_COMMIT, "0123456789ab")        # as on a worker the code was shipped to
    assert store.git_commit() == "0123456789ab"


# --------------------------------------------------------------------------- slow: a multi-node Ray cluster

@pytest.fixture(scope="module")
def cluster():
    """A head without CPUs (it runs no task and is not probed) and two 1-CPU nodes, each with its own raylet,
    object store and workers.  The head declares a node dead after ~2 s of missed health checks."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 500, "health_check_timeout_ms": 1000,
                           "health_check_failure_threshold": 4}})
    for _ in range(2):
        c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


@pytest.fixture
def driver(cluster):
    """The settings that join ``cluster`` through the runner (bench.run.ray_cluster.connect, with the code
    shipped and the tests' PEGASUS_CACHE), and the driver leaving it after the test (a job's runtime env is
    fixed when it joins)."""
    import ray

    yield RaySettings(address=cluster.address)
    ray.shutdown()


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)          # the local reference: as a Ray task with its 1 CPU
    yield
    torch.set_num_threads(before)


def _nodes(cluster) -> set[str]:
    return {n.node_id for n in cluster.worker_nodes}


@pytest.mark.slow
def test_runs_spread_over_the_nodes_with_the_sequential_metrics(tmp_path, cluster, driver, one_thread, capfd):
    runs = config.expand(config.load(_file(tmp_path)))
    local = runners.run_sweep(runs, tmp_path / "local", progress=False)
    capfd.readouterr()
    remote = runners.run_sweep(runs, tmp_path / "ray", runner="ray", ray=driver, progress=False)
    assert sorted(remote.trained) == sorted(local.trained) == sorted(str(r.rel_dir) for r in runs)
    assert not remote.failed
    assert _values(tmp_path / "ray", runs) == _values(tmp_path / "local", runs)
    envs = [store.read_json(tmp_path / "ray" / r.rel_dir / "env.json") for r in runs]
    assert {e["placement"]["node"] for e in envs} == _nodes(cluster)           # one run on each node
    assert all(e["placement"]["threads"] == 1 and e["placement"]["pid"] != os.getpid() for e in envs)
    assert {e["git_commit"] for e in envs} == {store.git_commit()}              # the shipped code's commit
    import ray

    def imported_bench() -> str:      # a local function: pickled by value, nothing of this file imported there
        import bench
        return bench.__file__

    imported = ray.get(ray.remote(num_cpus=0)(imported_bench).remote())
    assert "/runtime_resources/working_dir_files/" in imported                  # the shipped copy, not ours
    err = capfd.readouterr().err
    assert "2 runs as Ray tasks on 2 nodes (num_cpus=1 each; code shipped" in err
    assert err.count(": done in ") == 2
    assert not (tmp_path / "ray" / ray_cluster.PROBE_DIR).exists()              # the probe cleaned up
    again = runners.run_sweep(runs, tmp_path / "ray", runner="ray", ray=driver, progress=False)
    assert len(again.skipped) == 2 and not again.trained
    assert "runs as Ray tasks" not in capfd.readouterr().err


@pytest.mark.slow
def test_a_node_lost_mid_run_is_retried_on_the_other_and_resumes(tmp_path, cluster, driver, one_thread):
    runs = config.expand(config.load(_file(tmp_path, steps=300, ckpt=20)))[:1]
    victim = tmp_path / "ray" / runs[0].rel_dir
    lost = []

    def remove_its_node_when_checkpointed():
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                node = store.read_json(victim / "env.json")["placement"]["node"]
            except (OSError, ValueError, KeyError):
                node = None
            if node and (victim / store.CKPT).exists() and \
                    status.last_log_entry(victim / store.LOG).get("step", 0) >= 60:
                cluster.remove_node(next(n for n in cluster.worker_nodes if n.node_id == node), allow_graceful=False)
                lost.append(node)
                return
            time.sleep(0.02)

    others = _nodes(cluster)
    t = threading.Thread(target=remove_its_node_when_checkpointed)
    t.start()
    try:
        s = runners.run_sweep(runs, tmp_path / "ray", runner="ray", ray=driver, progress=False)
    finally:
        t.join()
        cluster.add_node(num_cpus=1)          # two nodes again for the next test
        cluster.wait_for_nodes()
    assert lost and s.trained == [str(runs[0].rel_dir)] and not s.failed
    doc = store.read_json(victim / store.METRICS)
    assert doc["env"]["placement"]["node"] in others - set(lost)                # retried on the other node
    assert 0 < doc["train"]["resumed_from"] < 300                               # from its checkpoint
    runners.run_sweep(runs, tmp_path / "local", progress=False)
    assert _values(tmp_path / "ray", runs) == _values(tmp_path / "local", runs)


@pytest.mark.slow
def test_a_busy_run_is_waited_for_by_its_task_never_trained_on_the_driver(tmp_path, cluster, driver):
    runs = config.expand(config.load(_file(tmp_path)))[:1]
    run_dir = tmp_path / "ray" / runs[0].rel_dir
    result = {}
    ray_cluster.connect(driver)                        # joined here: the sweep's thread finds Ray started
    sweep = threading.Thread(target=lambda: result.update(s=runners.run_sweep(
        runs, tmp_path / "ray", runner="ray", ray=driver, progress=False)))
    with store.run_lock(run_dir) as held:              # another process's sweep, as far as the task can tell
        assert held
        sweep.start()
        time.sleep(15)                                 # the probe, then the task waiting for the lock
        assert not (run_dir / "env.json").exists()
        released = time.time()
    sweep.join()
    assert result["s"].trained == [str(runs[0].rel_dir)] and not result["s"].failed
    env = store.read_json(run_dir / "env.json")
    assert env["placement"]["pid"] != os.getpid() and env["placement"]["node"] in _nodes(cluster)
    assert (run_dir / "env.json").stat().st_mtime >= released - 1


def _probe_file_elsewhere(node_id: str, elsewhere: str):
    """A worker setup hook (pickled by value, run in every worker of the job): on ``node_id`` only, the probe's
    path resolver is patched to put the probe file under ``elsewhere``, as a node whose runs/ is a local
    directory would."""
    def hook():
        import ray

        from bench.run import ray_cluster as on_the_node
        if ray.get_runtime_context().get_node_id() == node_id:
            real = on_the_node.sentinel
            on_the_node.sentinel = lambda runs_root, token, node: real(elsewhere, token, node)
    return hook


@pytest.mark.slow
def test_a_node_not_sharing_the_runs_directory_or_the_code_is_refused_before_training(tmp_path, cluster, driver,
                                                                                     monkeypatch, capsys):
    """Emulated, as one machine has one filesystem: on one node the probe writes its file under another
    directory (a worker setup hook patches the path on that node only), and for the code, the workers are
    shipped an edited copy of bench in place of an installation of another version.  The probe tasks pinned to
    each node, the driver looking for their files on its own filesystem, the refusal and the exit code are the
    runner's own."""
    import ray

    far = sorted(cluster.worker_nodes, key=lambda n: n.node_id)[0]
    near = next(n for n in cluster.worker_nodes if n is not far)
    real_env = ray_cluster.runtime_env
    monkeypatch.setattr(ray_cluster, "runtime_env", lambda *a: {
        **real_env(*a), "worker_process_setup_hook": _probe_file_elsewhere(far.node_id, str(tmp_path / "far"))})
    monkeypatch.setattr(ray_cluster, "PROBE_VISIBLE_S", 1.0)
    argv = ["run", str(_file(tmp_path)), "--runs-dir", str(tmp_path / "runs"), "--results-dir",
            str(tmp_path / "results"), "--runner", "ray", "--address", cluster.address, "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"--runner ray: refused before training: node {far.node_ip_address} ({far.node_id[:8]}) "
                          f"does not share the runs directory (the file it wrote as {tmp_path / 'runs'}/.ray-probe/")
    assert near.node_id[:8] not in err
    assert list((tmp_path / "far" / ray_cluster.PROBE_DIR).glob(f"*/{far.node_id}.json"))   # where it went
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()        # nothing trained
    ray.shutdown()

    other = tmp_path / "other"                        # another version of the project, where the workers look
    for pkg in (bench, models, losses):
        _copy_of(pkg, other)
    with open(other / "bench" / "__init__.py", "a") as f:
        f.write("# another version, installed on the nodes\n")
    monkeypatch.setattr(ray_cluster, "runtime_env", lambda *a: {**real_env(*a), "working_dir": str(other)})
    assert cli.main(argv + ["--ray-code", "installed"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.count("runs other code") == 2, err
    assert "install this commit there or ship it (--ray-code ship)" in err
    assert not (tmp_path / "runs").exists()
