"""Runners: parallel jobs give the sequential metrics, two sweeps of one file train every run once,
a dead holder's lock is taken over, a killed worker fails only its run and resumes to the same
metrics, `bench status` tells the states apart, TensorBoard files are written."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import store
from bench.config import schema as config
from bench.run import local as runners
from bench.run import status
from bench.run.execute import Placement, execute

ROOT = Path(__file__).resolve().parent.parent
TINY = """\
name: tiny
question: do the runners agree?
claims: [C1]
datasets: [shapes]
seeds: [0, 1]
data:
  shapes: {n_train: 96, n_test: 40}
defaults:
  model: {name: conv, widths: [8, 16], latent_dim: 8}
  loss: [{name: kl}, {name: mse}]
  train: {steps: STEPS, batch_size: 16, lr: 1e-3, log_every: 2, ckpt_every: CKPT, val_every: 4}
  eval: {n_test: 40, n_samples: 32, batch_size: 16, sheet: 16, fidelity: false}
arms:
  mse: {}
"""
# timings and anything measured with a clock differ between any two runs of the same weights
CLOCKED = {"train_images_per_s", "sample_images_per_s", "loop_images_per_s", "mfu", "wall_s", "scoring_s",
           "peak_memory_mb"}


def _file(tmp_path: Path, steps: int = 8, ckpt: int = 4) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY.replace("STEPS", str(steps)).replace("CKPT", str(ckpt)))
    return p


def _values(runs_root: Path, runs) -> dict[str, dict[str, float]]:
    out = {}
    for run in runs:
        m = store.read_json(runs_root / run.rel_dir / store.METRICS)["metrics"]
        out[str(run.rel_dir)] = {k: v.get("value") for k, v in m.items() if isinstance(v, dict) and k not in CLOCKED}
    return out


def _cli(*args: str, env_extra: dict | None = None, **kw) -> subprocess.Popen:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.fixture
def one_thread():
    """The parallel runner gives each of 2 jobs half of the threads; float sums depend on the thread
    count (~1e-7 relative), so the sequential reference runs with the same count (1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_parallel_jobs_give_the_sequential_metrics(tmp_path, one_thread, monkeypatch):
    spec = config.load(_file(tmp_path))
    runs = config.expand(spec)
    seq = runners.run_sweep(runs, tmp_path / "seq", progress=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)        # 2 jobs x 1 thread, as on 2 cores
    par = runners.run_sweep(runs, tmp_path / "par", jobs=2, progress=False)
    assert len(seq.trained) == len(par.trained) == 2 and not par.failed
    assert _values(tmp_path / "seq", runs) == _values(tmp_path / "par", runs)
    for run in runs:          # same directory and hash; env.json says where and how it ran
        env = store.read_json(tmp_path / "par" / run.rel_dir / "env.json")
        assert env["placement"]["threads"] == 1 and env["placement"]["device"] == "cpu"
        assert env["placement"]["shared"] == "2 parallel jobs shared the CPU"
        ips = store.read_json(tmp_path / "par" / run.rel_dir / store.METRICS)["metrics"]["train_images_per_s"]
        assert ips["shared"] and ips["machine_busy"]      # not an isolated timing: never compared


def test_placement_on_cuda_is_round_robin_and_cpu_threads_are_split(monkeypatch):
    spec_runs = [type("R", (), {"train": config.TrainSpec(device="auto")})()]
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    slots = runners._slots(spec_runs, 3, None)
    assert [s.threads for s in slots] == [2, 2, 2] and {s.device for s in slots} == {"cpu"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    slots = runners._slots(spec_runs, 3, None)
    assert [s.device for s in slots] == ["cuda:0", "cuda:1", "cuda:0"]
    assert slots[0].shared == "2 jobs shared cuda:0" and slots[1].shared is None


@pytest.mark.slow
def test_two_sweeps_of_one_file_train_every_run_once(tmp_path):
    f = _file(tmp_path, steps=40, ckpt=10)
    args = [str(f), "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--no-progress"]
    a, b = _cli("run", *args), _cli("run", *args)
    (_, err_a), (_, err_b) = a.communicate(timeout=300), b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, err_a + err_b
    runs = config.expand(config.load(f))
    for run in runs:
        trained = (err_a + err_b).count(f"{run.rel_dir}: done in")
        assert trained == 1, (run.rel_dir, err_a, err_b)
        d = tmp_path / "runs" / run.rel_dir
        steps = [json.loads(line)["step"] for line in (d / store.LOG).read_text().splitlines()]
        assert steps == list(range(2, 41, 2))                    # logged once, never retrained
        assert store.read_json(d / store.METRICS)["train"]["resumed_from"] == 0
    assert "2/2 done" in (tmp_path / "results/tiny/table.md").read_text()


def _hold_lock(run_dir: Path, seconds: float) -> subprocess.Popen:
    code = (f"import time; from pathlib import Path; from bench import store\n"
            f"with store.run_lock(Path({str(run_dir)!r})) as ok:\n"
            f"    print(ok, flush=True); time.sleep({seconds})\n")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "True"
    return p


@pytest.mark.slow
def test_lock_of_a_killed_holder_is_taken_over(tmp_path):
    run = config.expand(config.load(_file(tmp_path)))[0]
    run_dir = tmp_path / "runs" / run.rel_dir
    holder = _hold_lock(run_dir, 600)
    assert store.lock_holder(run_dir)["pid"] == holder.pid
    assert execute(run, tmp_path / "runs").state == "busy"
    assert status.run_state(run, tmp_path / "runs").state == "running"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert store.lock_holder(run_dir) is None              # the lock file remains; the lock does not
    assert status.run_state(run, tmp_path / "runs").state == "pending"
    assert execute(run, tmp_path / "runs").state == "trained"


@pytest.mark.slow
def test_sweep_waits_for_a_held_run_and_trains_it_when_the_holder_dies(tmp_path):
    runs = config.expand(config.load(_file(tmp_path)))
    holder = _hold_lock(tmp_path / "runs" / runs[0].rel_dir, 3)         # exits after 3 s, run unfinished
    s = runners.run_sweep(runs, tmp_path / "runs", progress=False)
    holder.wait()
    assert sorted(s.trained) == sorted(str(r.rel_dir) for r in runs) and not s.busy


@pytest.mark.slow
def test_killed_worker_fails_only_its_run_and_resumes_to_the_same_metrics(tmp_path, one_thread, monkeypatch):
    f = _file(tmp_path, steps=600, ckpt=20)
    runs = config.expand(config.load(f))
    args = ["run", str(f), "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--no-progress", "--jobs", "2"]
    env = {"OMP_NUM_THREADS": "2"}                      # 2 jobs x 1 thread each, whatever the machine
    sweep = _cli(*args, env_extra=env)
    victim = tmp_path / "runs" / runs[0].rel_dir
    deadline = time.time() + 120
    while status.last_log_entry(victim / store.LOG).get("step", 0) < 100 or not (victim / store.CKPT).exists():
        assert time.time() < deadline and sweep.poll() is None, "the run never got going"
        time.sleep(0.02)
    os.kill(store.lock_holder(victim)["pid"], signal.SIGKILL)
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 1 and "killed by signal 9" in err, err
    assert "worker process died" in store.read_json(victim / store.ERROR)["error"]
    assert store.is_finished(tmp_path / "runs" / runs[1].rel_dir)          # the other run went on
    assert status.run_state(runs[0], tmp_path / "runs").state == "failed"

    again = _cli(*args, env_extra=env)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    doc = store.read_json(victim / store.METRICS)
    assert 0 < doc["train"]["resumed_from"] < 600 and not (victim / store.ERROR).exists()

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    runners.run_sweep(runs, tmp_path / "ref", jobs=2, progress=False)    # uninterrupted, same placement
    assert _values(tmp_path / "runs", runs) == _values(tmp_path / "ref", runs)


@pytest.mark.slow
def test_status_lists_states_and_eta(tmp_path):
    spec = config.load(_file(tmp_path))
    runs = config.expand(spec)
    runners.run_sweep(runs[:1], tmp_path / "runs", progress=False)
    (tmp_path / "runs" / runs[1].rel_dir).mkdir(parents=True)
    store.write_json(tmp_path / "runs" / runs[1].rel_dir / store.ERROR, {"error": "RuntimeError: boom"})
    text = status.report(spec.name, runs, tmp_path / "runs")
    assert f"{runs[0].rel_dir}  done" in text and "8/8" in text
    assert "failed" in text and "RuntimeError: boom" in text
    assert "tiny: 2 runs — 1 done, 1 failed; ~" in text.splitlines()[-1]
    out = subprocess.run([sys.executable, "-m", "bench", "status", str(tmp_path / "tiny.yaml"), "--runs-dir",
                          str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == text + "\n"


def test_tensorboard_events_hold_train_terms_validation_sheets_and_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from bench.train import live

    f = _file(tmp_path)
    f.write_text(f.read_text() + "grid:\n  train.lr: [0.001, 0.002]\n  model.widths: [[8, 16]]\n")
    run = next(r for r in config.expand(config.load(f)) if r.seed == 0 and r.swept["train.lr"] == 0.002)
    assert run.swept == {"train.lr": 0.002, "model.widths": [8, 16]}
    assert execute(run, tmp_path / "runs").state == "trained"
    tb = tmp_path / "runs" / run.rel_dir / store.TENSORBOARD
    acc = EventAccumulator(str(tb))
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/kl", "train/mse", "val/loss", "val/mse"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4, 6, 8]
    assert [e.step for e in acc.Scalars("val/loss")] == [4, 8]          # val_every 4
    assert {"val/recon", "samples"} <= set(tags["images"])

    # the HParams view: the swept parameters and the final metrics of the scored run, in tb/hparams/
    metrics = store.read_json(tmp_path / "runs" / run.rel_dir / store.METRICS)["metrics"]
    hp = EventAccumulator(str(tb / live.HPARAMS))
    hp.Reload()
    content = hp.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()} == {
        "arm": run.arm, "dataset": "shapes", "seed": 0.0, "train.lr": 0.002, "model.widths": "8-16"}
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    declared = {m.name.tag for m in experiment.metric_infos}
    assert "final/recon_ssim" in declared and "final/fid_samples" not in declared    # unavailable: left out
    assert declared == set(hp.Tags()["scalars"])
    (ssim,) = hp.Scalars("final/recon_ssim")
    assert ssim.step == 8 and ssim.value == pytest.approx(metrics["recon_ssim"]["value"], rel=1e-6)
    live.write_hparams(tb.parent, run, {"recon_ssim": {"value": 0.5}}, 8)     # a re-score replaces them
    assert len(list((tb / live.HPARAMS).glob("events.out.tfevents.*"))) == 1


def test_validation_does_not_change_the_trained_weights(tmp_path):
    from bench.train.loop import train

    run = config.expand(config.load(_file(tmp_path)))[0]
    rare = run.replace(train={"val_every": 1000})
    train(run, tmp_path / "a", progress=False)
    train(rare, tmp_path / "b", progress=False)
    a = torch.load(tmp_path / "a" / store.CKPT, weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / store.CKPT, weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("argv, needle", [
    (["--jobs", "0"], "must be >= 1"),
    (["--devices", "gpu0"], "expected a list like cuda:0,cuda:1"),
])
@pytest.mark.slow
def test_bad_runner_options_exit_2(tmp_path, argv, needle):
    out = subprocess.run([sys.executable, "-m", "bench", "run", str(_file(tmp_path)), "--runs-dir",
                          str(tmp_path / "runs"), *argv], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and needle in out.stderr and not (tmp_path / "runs").exists()


def test_placement_describes_itself():
    assert Placement("cpu", 2).describe() == "cpu, 2 threads"
    assert Placement().describe() == "default device"
