"""--runner slurm through submitit: the resources of a job reach the sbatch script, the jobs (run here by
submitit's local executor: real processes, pickles and job files) train every run once with the
sequential metrics, a killed job fails only its run with the reason and resumes on the next sweep, a
preempted job is requeued and resumes from its checkpoint, and `bench status` shows queued / running."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import submitit
import torch

from bench import __main__ as cli
from bench import store
from bench.config import schema as config
from bench.errors import BenchError
from bench.run import local as runners
from bench.run import slurm, status
from bench.run.execute import Outcome, Placement

ROOT = Path(__file__).resolve().parent.parent
TINY = """\
name: tiny
question: do the SLURM jobs agree with the sequential runner?
claims: [C1]
datasets: [shapes]
seeds: SEEDS
data:
  shapes: {n_train: 96, n_test: 40}
defaults:
  model: {name: conv, widths: [8, 16], latent_dim: 8}
  loss: [{name: kl}, {name: mse}]
  train: {steps: STEPS, batch_size: 16, lr: 1e-3, log_every: 2, ckpt_every: CKPT, val_every: 1000, device: DEVICE}
  eval: {n_test: 40, n_samples: 32, batch_size: 16, sheet: 16, fidelity: false}
arms:
  mse: {}
"""
CLOCKED = {"train_images_per_s", "sample_images_per_s", "loop_images_per_s", "mfu", "wall_s", "scoring_s",
           "peak_memory_mb"}
LOCAL = slurm.SlurmSettings(cluster="local", cpus_per_run=1, poll_s=0.2)


def _file(tmp_path: Path, steps: int = 8, ckpt: int = 4, seeds: str = "[0, 1]", device: str = "cpu") -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY.replace("STEPS", str(steps)).replace("CKPT", str(ckpt)).replace("SEEDS", seeds)
                 .replace("DEVICE", device))
    return p


def _values(runs_root: Path, runs) -> dict[str, dict[str, float]]:
    out = {}
    for run in runs:
        m = store.read_json(runs_root / run.rel_dir / store.METRICS)["metrics"]
        out[str(run.rel_dir)] = {k: v.get("value") for k, v in m.items() if isinstance(v, dict) and k not in CLOCKED}
    return out


@pytest.fixture
def one_thread():
    """Each job trains with its one CPU's thread; float sums depend on the thread count, so the
    sequential reference runs with one thread too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fake_srun(monkeypatch):
    """submitit's SLURM executor looks for srun before anything else; nothing here runs it."""
    monkeypatch.setattr(submitit.slurm.slurm.shutil, "which", lambda name: f"/usr/bin/{name}")


# --------------------------------------------------------------------------- fast: no process spawned

def test_partition_time_gpus_and_cpus_become_the_job_parameters_and_sbatch_lines(tmp_path, fake_srun):
    settings = slurm.SlurmSettings(partition="gpu", time_min=90, gpus_per_run=1, cpus_per_run=8)
    assert slurm.executor_parameters(settings, "bench-tiny") == {
        "name": "bench-tiny", "timeout_min": 90, "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 8,
        "gpus_per_node": 1, "slurm_partition": "gpu"}
    assert "slurm_partition" not in slurm.executor_parameters(slurm.SlurmSettings(), "x")   # the cluster's default
    executor = slurm.make_executor(tmp_path / ".slurm", settings, "bench-tiny")
    sbatch = executor._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=1", "--cpus-per-task=8", "--nodes=1",
                 "--ntasks-per-node=1", "--job-name=bench-tiny", "--signal=USR2@"):
        assert f"#SBATCH {line}" in sbatch, (line, sbatch)
    assert executor._executor.max_num_timeout == slurm.MAX_TIMEOUTS
    local = slurm.make_executor(tmp_path / ".local", slurm.SlurmSettings(cluster="local", gpus_per_run=2), "x")
    assert local.cluster == "local" and local._executor.parameters["gpus_per_node"] == 2


def test_placement_is_the_jobs_own_gpu_or_its_cpus():
    assert slurm.placement(slurm.SlurmSettings(gpus_per_run=1, cpus_per_run=4), 8) == \
        Placement("cuda", 4, None)                     # SLURM sets CUDA_VISIBLE_DEVICES: its GPU is cuda
    assert slurm.placement(slurm.SlurmSettings(cpus_per_run=2), 8) == Placement("cpu", 2, None)
    assert slurm.placement(LOCAL, 3).shared == "3 local submitit jobs shared this machine"
    assert slurm.placement(LOCAL, 1).shared is None


def test_what_would_fail_the_submission_is_one_line(tmp_path, monkeypatch, fake_srun):
    cpu_runs = config.expand(config.load(_file(tmp_path)))
    cuda_runs = config.expand(config.load(_file(tmp_path, device="cuda")))
    slurm.check(slurm.SlurmSettings(), cpu_runs)
    with pytest.raises(BenchError, match=r"runs ask for cuda but --slurm-gpus-per-run is 0"):
        slurm.check(slurm.SlurmSettings(), cuda_runs)
    slurm.check(slurm.SlurmSettings(gpus_per_run=1), cuda_runs)     # no GPU needed where it is submitted
    with pytest.raises(BenchError, match=r"--slurm-time .* must be >= 1"):
        slurm.check(slurm.SlurmSettings(time_min=0), cpu_runs)
    monkeypatch.setattr(submitit.slurm.slurm.shutil, "which", lambda name: None)
    with pytest.raises(BenchError, match=r"no SLURM on this machine \(srun not found\).*--slurm-cluster local"):
        slurm.check(slurm.SlurmSettings(), cpu_runs)
    slurm.check(LOCAL, cpu_runs)
    monkeypatch.setitem(sys.modules, "submitit", None)               # not installed
    with pytest.raises(BenchError, match=r"needs submitit: pip install -e '\.\[slurm\]'"):
        slurm.check(LOCAL, cpu_runs)


def test_a_refused_submission_is_one_line(tmp_path, monkeypatch, capsys, fake_srun):
    def sbatch(self, *args, **kwargs):      # what submitit does when sbatch exits non-zero
        print("sbatch: error: invalid partition specified: gpu", file=sys.stderr)
        raise submitit.core.utils.FailedJobError("sbatch: error: invalid partition specified: gpu\nmore")

    monkeypatch.setattr(submitit.core.utils.CommandFunction, "__call__", sbatch)
    runs = config.expand(config.load(_file(tmp_path)))
    with pytest.raises(BenchError) as err:
        slurm.run_slurm(runs, tmp_path / "runs", slurm.SlurmSettings(partition="gpu"))
    assert str(err.value) == "--runner slurm: submission failed: sbatch: error: invalid partition specified: gpu"
    assert capsys.readouterr().err == "" and not (tmp_path / "runs" / "tiny" / slurm.FOLDER / slurm.JOBS).exists()


def test_cli_without_submitit_or_slurm_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    f = _file(tmp_path)
    argv = ["run", str(f), "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--runner", "slurm"]
    monkeypatch.setattr(submitit.slurm.slurm.shutil, "which", lambda name: None)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no SLURM on this machine" in err
    monkeypatch.setitem(sys.modules, "submitit", None)
    assert cli.main(argv + ["--slurm-cluster", "local"]) == 2
    err = capsys.readouterr().err
    assert err == "--runner slurm needs submitit: pip install -e '.[slurm]'\n"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()
    with pytest.raises(SystemExit):
        cli.main(argv + ["--slurm-gpus-per-run", "-1"])
    assert "must be >= 0" in capsys.readouterr().err


def test_status_shows_queued_and_running_jobs_from_sacct(tmp_path, monkeypatch):
    spec = config.load(_file(tmp_path, seeds="[0, 1, 2]"))
    runs = config.expand(spec)
    folder = tmp_path / "runs" / "tiny" / slurm.FOLDER
    slurm.record_jobs(folder, "slurm", {str(r.rel_dir): f"9071_{i}" for i, r in enumerate(runs)})
    assert set(store.read_json(folder / slurm.JOBS)) == {str(r.rel_dir) for r in runs}
    sacct = "JobID|State|NodeList\n9071_0|PENDING|None assigned\n9071_1|RUNNING|node3\n9071_2|FAILED|node4\n"
    calls = []
    monkeypatch.setattr(submitit.core.core.subprocess, "check_output",
                        lambda cmd, shell=False: calls.append(cmd) or sacct.encode())
    text = status.report(spec.name, runs, tmp_path / "runs")
    assert len(calls) == 1 and calls[0][:2] == ["sacct", "-o"]              # one call for every job
    lines = [next(ln for ln in text.splitlines() if ln.startswith(str(r.rel_dir))) for r in runs]
    assert " queued " in lines[0] and lines[0].endswith("job 9071_0 PENDING")
    assert " running " in lines[1] and lines[1].endswith("job 9071_1, starting")
    assert " pending " in lines[2] and lines[2].endswith("job 9071_2 FAILED")
    assert "tiny: 3 runs — 1 queued, 1 running, 1 pending;" in text.splitlines()[-1]


def test_a_finished_run_stays_done_whatever_its_job_says(tmp_path):
    done = status.RunState("a", "done", 8, 8)
    assert status.with_job(done, "1", "RUNNING") is done
    failed = status.RunState("a", "failed", 4, 8, detail="RuntimeError: boom")
    assert status.with_job(failed, "1", "CANCELLED by 12").detail == "RuntimeError: boom; job 1 CANCELLED by 12"
    assert status.with_job(failed, "1", "REQUEUED").state == "queued"
    assert [slurm.phase(s) for s in ("PENDING", "RUNNING", "COMPLETED", "OUT_OF_MEMORY", "UNKNOWN", "")] == \
        ["queued", "running", "ended", "ended", "ended", "ended"]


class _EndedJob:
    """A job that has ended: its result, or the exception submitit raises for it."""

    def __init__(self, tmp_path: Path, result=None, error: Exception | None = None, state: str = "FINISHED"):
        self.job_id, self.state, self._result, self._error = "77_3", state, result, error
        self.paths = type("Paths", (), {"stderr": tmp_path / "77_3_0_log.err"})()

    def result(self):
        if self._error:
            raise self._error
        return self._result


def test_a_job_that_ended_badly_fails_its_run_with_the_reason(tmp_path, monkeypatch):
    run = config.expand(config.load(_file(tmp_path)))[0]
    run_dir = tmp_path / "runs" / run.rel_dir
    trace = ("Job (task=0) failed during processing with trace:\n----------------------\nTraceback (most recent "
             "call last):\n  File \"x.py\", line 6, in f\nValueError: boom\n\n----------------------\nYou can "
             "check full logs with 'job.stderr(0)' and 'job.stdout(0)'or at paths:\n  - /x/77_3_0_log.err\n")
    o = slurm._outcome(run, _EndedJob(tmp_path, error=submitit.core.utils.FailedJobError(trace)), tmp_path / "runs")
    assert o.state == "failed" and o.message.startswith("FAILED (job 77_3 raised ValueError: boom; log: ")
    assert store.read_json(run_dir / store.ERROR)["error"].startswith("job 77_3 raised ValueError: boom")
    died = submitit.core.utils.UncompletedJobError("Job 77_3 (task: 0) with path x\nhas not produced any output")
    o = slurm._outcome(run, _EndedJob(tmp_path, error=died, state="OUT_OF_MEMORY"), tmp_path / "runs")
    assert "job 77_3 ended without a result (the process died: killed, out of memory or its node lost; " \
           "state OUT_OF_MEMORY)" in o.message
    monkeypatch.setattr(slurm, "VISIBLE_S", 0.0)
    said_done = Outcome(str(run.rel_dir), "trained", "done in 3s")       # but metrics.json is not here
    o = slurm._outcome(run, _EndedJob(tmp_path, result=said_done), tmp_path / "runs")
    assert o.state == "failed" and "said 'trained' but" in o.message and "must be shared" in o.message
    store.write_json(run_dir / store.METRICS, {"status": "done"})
    assert slurm._outcome(run, _EndedJob(tmp_path, result=said_done), tmp_path / "runs") == said_done


# --------------------------------------------------------------------------- slow: real local jobs

@pytest.mark.slow
def test_local_jobs_train_every_run_once_with_the_sequential_metrics(tmp_path, one_thread, capfd):
    spec = config.load(_file(tmp_path))
    runs = config.expand(spec)
    seq = runners.run_sweep(runs, tmp_path / "seq", progress=False)
    capfd.readouterr()
    s = runners.run_sweep(runs, tmp_path / "runs", runner="slurm", slurm=LOCAL, progress=False)
    assert sorted(s.trained) == sorted(seq.trained) == sorted(str(r.rel_dir) for r in runs) and not s.failed
    assert _values(tmp_path / "runs", runs) == _values(tmp_path / "seq", runs)
    assert all(v["recon_mse"] > 0 for v in _values(tmp_path / "runs", runs).values())
    err = capfd.readouterr().err
    assert "2 runs as local jobs (cpu, 1 thread, 60 min each" in err
    assert err.count(": done in ") == 2 and "[1/2] tiny/" in err and "[2/2] tiny/" in err
    folder = tmp_path / "runs" / "tiny" / slurm.FOLDER
    jobs = store.read_json(folder / slurm.JOBS)
    assert set(jobs) == set(s.trained) and {j["cluster"] for j in jobs.values()} == {"local"}
    for run in runs:
        job_id = jobs[str(run.rel_dir)]["job_id"]
        assert (folder / f"{job_id}_0_log.out").exists() and (folder / f"{job_id}_0_result.pkl").exists()
        env = store.read_json(tmp_path / "runs" / run.rel_dir / "env.json")
        assert env["placement"]["threads"] == 1 and env["placement"]["pid"] != os.getpid()
        assert env["placement"]["shared"] == "2 local submitit jobs shared this machine"
    text = status.report(spec.name, runs, tmp_path / "runs")
    assert "tiny: 2 runs — 2 done;" in text.splitlines()[-1]
    again = runners.run_sweep(runs, tmp_path / "runs", runner="slurm", slurm=LOCAL, progress=False)
    assert not again.trained and len(again.skipped) == 2
    assert "runs as local jobs" not in capfd.readouterr().err                   # nothing submitted


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _until(cond, what: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline and (proc is None or proc.poll() is None), what
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_job_fails_only_its_run_with_the_reason_and_the_next_sweep_resumes_it(tmp_path):
    f = _file(tmp_path, steps=120, ckpt=20)
    spec = config.load(f)
    runs = config.expand(spec)
    args = ["run", str(f), "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
            "--no-progress", "--runner", "slurm", "--slurm-cluster", "local"]
    sweep = _cli(*args)
    victim, other = (tmp_path / "runs" / r.rel_dir for r in runs)
    _until(lambda: all(store.lock_holder(d) for d in (victim, other)), "the jobs never started", sweep)
    text = status.report(spec.name, runs, tmp_path / "runs")
    jobs = store.read_json(tmp_path / "runs" / "tiny" / slurm.FOLDER / slurm.JOBS)
    for run in runs:                             # a running job: its pid, host and job id
        line = next(ln for ln in text.splitlines() if ln.startswith(str(run.rel_dir)))
        assert " running " in line and f"job {jobs[str(run.rel_dir)]['job_id']}, pid " in line, text
    os.kill(store.lock_holder(victim)["pid"], signal.SIGKILL)
    _, err = sweep.communicate(timeout=300)
    victim_job = jobs[str(runs[0].rel_dir)]["job_id"]
    assert sweep.returncode == 1, err
    assert f"{runs[0].rel_dir}: FAILED (job {victim_job} ended without a result (the process died" in err
    assert f"{runs[1].rel_dir}: done in" in err and "1 trained, 0 skipped, 0 diverged, 1 failed" in err
    assert "ended without a result" in store.read_json(victim / store.ERROR)["error"]
    state = status.run_state(runs[0], tmp_path / "runs")
    assert state.state == "failed" and f"job {victim_job}" in state.detail
    text = status.report(spec.name, runs, tmp_path / "runs")
    assert "tiny: 2 runs — 1 done, 1 failed;" in text.splitlines()[-1]

    again = _cli(*args)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0 and "1 trained, 1 skipped, 0 diverged, 0 failed" in err, err
    assert store.is_finished(victim) and not (victim / store.ERROR).exists()


@pytest.mark.slow
def test_a_preempted_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path, one_thread):
    runs = config.expand(config.load(_file(tmp_path, steps=300, ckpt=20, seeds="[0]")))
    run_dir = tmp_path / "runs" / runs[0].rel_dir
    signalled = []

    def preempt() -> None:                  # what SLURM does before a time limit or a preemption
        _until(lambda: (run_dir / store.CKPT).exists() and status.last_log_entry(run_dir / store.LOG).get(
            "step", 0) >= 60 and store.lock_holder(run_dir), "the run never checkpointed")
        signalled.append(store.lock_holder(run_dir)["pid"])
        os.kill(signalled[0], signal.SIGUSR2)

    killer = threading.Thread(target=preempt, daemon=True)
    killer.start()
    outcomes = slurm.run_slurm(runs, tmp_path / "runs", LOCAL)
    killer.join(timeout=1)
    assert signalled and [o.state for o in outcomes] == ["trained"], outcomes
    doc = store.read_json(run_dir / store.METRICS)
    assert 0 < doc["train"]["resumed_from"] < 300 and doc["env"]["placement"]["pid"] != signalled[0]
