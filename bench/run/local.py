"""Runners: execute the unfinished runs of an ablation, one after another or in parallel.

    run_sweep(runs, runs_root, runner="local", jobs=1)      # one after another, in this process
    run_sweep(runs, runs_root, runner="local", jobs=N)      # N worker processes at once
    run_sweep(runs, runs_root, runner="ray", ray=RaySettings(...))        # a Ray task per run (ray_cluster.py)
    run_sweep(runs, runs_root, runner="slurm", slurm=SlurmSettings(...))  # a job per run (bench/run/slurm.py)

Every executor calls the same seam, ``bench.run.execute.execute``, for each run.  A run that another
process holds is waited for at the end of the sweep, then skipped if that process finished it or
trained here if it died (the lock dies with its process), so two sweeps of the same file started
together train every run once and both end with the complete table.  (The Ray and SLURM tasks wait for
such a run themselves, on their node: the driver of a cluster sweep trains nothing.)
"""
from __future__ import annotations

import multiprocessing as mp
import signal
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_any
from pathlib import Path

import torch

from bench import store
from bench.config.schema import RunSpec
from bench.errors import BenchError
from bench.metrics.scoring import score
from bench.run.execute import Outcome, Placement, execute, say
from bench.run.ray_cluster import RaySettings, run_ray
from bench.run.slurm import SlurmSettings, run_slurm
from bench.train.live import write_hparams
from bench.train.runtime import check_devices, resolve_device


@dataclass
class Summary:
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        getattr(self, outcome.state).append(outcome.rel_dir)


# --------------------------------------------------------------------------- executors

def run_sweep(runs: list[RunSpec], runs_root: Path, *, runner: str = "local", jobs: int = 1,
              devices: list[str] | None = None, progress: bool = True, ray: RaySettings | None = None,
              slurm: SlurmSettings | None = None) -> Summary:
    """Train + score every unfinished run of ``runs``; returns what happened to each."""
    if jobs < 1:
        raise BenchError(f"--jobs must be >= 1 (got {jobs})")
    if runner == "local":                # Ray tasks and SLURM jobs get their devices on the nodes
        check_devices(runs, devices)
    if runner == "local" and jobs == 1 and not devices:
        jobs = default_jobs(runs)
    summary = Summary()
    todo = [r for r in runs if not store.is_finished(Path(runs_root) / r.rel_dir)]
    summary.skipped = [str(r.rel_dir) for r in runs if r not in todo]
    if summary.skipped:
        say(f"{len(summary.skipped)}/{len(runs)} runs already finished (skipped)")
    if not todo:
        return summary
    if runner == "ray":
        outcomes = run_ray(todo, runs_root, ray or RaySettings())
    elif runner == "slurm":
        outcomes = run_slurm(todo, runs_root, slurm or SlurmSettings())
    elif runner == "local" and jobs == 1 and not devices:
        outcomes = _sequential(todo, runs_root, progress=progress)
    elif runner == "local":
        outcomes = _parallel(todo, runs_root, _slots(todo, jobs, devices))
    else:
        raise BenchError(f"unknown runner {runner!r} (choose local, ray or slurm)")
    waited = []
    for o in outcomes:
        if o.state == "busy":            # another process holds it: wait for it, take over if it died
            waited.append(next(r for r in todo if str(r.rel_dir) == o.rel_dir))
        else:
            summary.add(o)
    for i, run in enumerate(waited, 1):
        label = f"[waiting {i}/{len(waited)}] {run.rel_dir}"
        say(f"{label}: held by another process ({_holder(Path(runs_root) / run.rel_dir)}); waiting for it")
        o = execute(run, runs_root, progress=progress, wait=True)
        say(f"{label}: {o.message or o.state}")
        summary.add(o)
    return summary


def default_jobs(runs: list[RunSpec]) -> int:
    """Without --jobs / --devices: one run per visible GPU at a time when the runs train on CUDA, else one."""
    wants_cuda = any(r.train.device != "cpu" for r in runs) and torch.cuda.is_available()
    return max(1, torch.cuda.device_count()) if wants_cuda else 1


def _holder(run_dir: Path) -> str:
    h = store.lock_holder(run_dir) or {}
    return f"pid {h.get('pid')} on {h.get('host')}" if h.get("pid") else "unknown holder"


def _sequential(todo: list[RunSpec], runs_root: Path, *, progress: bool) -> list[Outcome]:
    out = []
    for i, run in enumerate(todo, 1):
        label = f"[{i}/{len(todo)}] {run.rel_dir}"
        say(f"{label}: training {run.train.steps} steps")
        try:
            o = execute(run, runs_root, progress=progress)
        except KeyboardInterrupt:
            say(f"{label}: interrupted; rerun the same command to resume from the last checkpoint")
            raise
        say(f"{label}: {o.message}")
        out.append(o)
    return out


def _slots(todo: list[RunSpec], jobs: int, devices: list[str] | None) -> list[Placement]:
    """One placement per job.  CUDA: round-robin over ``devices`` (default: every visible GPU); a
    timing is 'shared' when two jobs share one device.  CPU: the threads are split between jobs."""
    if devices and all(d == "cpu" for d in devices):
        devices = None
    wants_cuda = any(r.train.device != "cpu" for r in todo) and torch.cuda.is_available()
    if devices or wants_cuda:
        devices = devices or [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        for d in devices:
            resolve_device(d.split(":")[0])   # 'cuda' without a GPU: one clear line
        per = {d: sum(1 for j in range(jobs) if devices[j % len(devices)] == d) for d in devices}
        return [Placement(d, None, f"{per[d]} jobs shared {d}" if per[d] > 1 else None)
                for d in (devices[j % len(devices)] for j in range(jobs))]
    threads = max(1, torch.get_num_threads() // jobs)
    shared = f"{jobs} parallel jobs shared the CPU" if jobs > 1 else None
    return [Placement("cpu", threads, shared) for _ in range(jobs)]


def _worker(run: RunSpec, runs_root: Path, placement: Placement, conn) -> None:
    """Entry point of a worker process: one run, its Outcome sent back through ``conn``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the parent's to handle
    conn.send(execute(run, runs_root, placement))
    conn.close()


def _parallel(todo: list[RunSpec], runs_root: Path, slots: list[Placement]) -> list[Outcome]:
    """Run ``todo`` in worker processes, one per free slot.  A worker that crashes or is killed
    fails only its run (error.json says how it died); the others go on."""
    ctx = mp.get_context("spawn")          # no fork of a process that may hold CUDA or thread pools
    pending, free, active, out = list(enumerate(todo, 1)), list(slots), {}, []
    say(f"{len(todo)} runs on {len(slots)} parallel jobs: " + "; ".join(s.describe() for s in slots))
    try:
        while pending or active:
            while pending and free:
                (i, run), slot = pending.pop(0), free.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, args=(run, runs_root, slot, send), daemon=False)
                proc.start()
                send.close()
                active[proc.sentinel] = (proc, recv, slot, run, f"[{i}/{len(todo)}] {run.rel_dir}")
                say(f"{active[proc.sentinel][4]}: training {run.train.steps} steps on {slot.describe()}")
            for sentinel in wait_any(list(active)):
                proc, recv, slot, run, label = active.pop(sentinel)
                proc.join()
                try:
                    o = recv.recv()          # EOF when the worker died before reporting
                except EOFError:
                    o = _died(run, runs_root, proc.exitcode)
                recv.close()
                say(f"{label}: {o.message or o.state}")
                out.append(o)
                free.append(slot)
    except KeyboardInterrupt:
        say("interrupted; stopping the workers (rerun the same command to resume from the checkpoints)")
        for proc, *_ in active.values():
            proc.terminate()
        for proc, *_ in active.values():
            proc.join()
        raise
    return out


def _died(run: RunSpec, runs_root: Path, exitcode: int | None) -> Outcome:
    """A worker that exited without reporting (killed, out of memory, segfault)."""
    how = f"killed by signal {-exitcode}" if exitcode and exitcode < 0 else f"exit code {exitcode}"
    run_dir = Path(runs_root) / run.rel_dir
    msg = f"worker process died ({how}); rerun the same command to resume from the last checkpoint"
    if not store.is_finished(run_dir):
        store.write_json(run_dir / store.ERROR, {"error": msg, "traceback": None})
    return Outcome(str(run.rel_dir), "failed", f"FAILED ({msg})")


# --------------------------------------------------------------------------- re-scoring

def rescore(runs: list[RunSpec], runs_root: Path, *, progress: bool = True) -> Summary:
    """Re-score finished runs from their checkpoints with the evaluation settings of ``runs``
    (evaluation is not part of a run's identity, so nothing retrains).  Each metrics.json is
    replaced atomically; ``scored`` records the commit and eval settings that produced it, and TensorBoard's
    hparams (``bench.train.live.write_hparams``) follow the new metrics."""

    summary = Summary()
    for i, run in enumerate(runs, 1):
        run_dir = runs_root / run.rel_dir
        label = f"[{i}/{len(runs)}] {run.rel_dir}"
        if not store.is_finished(run_dir):
            say(f"{label}: not finished, nothing to score")
            summary.skipped.append(str(run.rel_dir))
            continue
        with store.run_lock(run_dir) as ok:
            doc = store.read_json(run_dir / store.METRICS) if ok else None
            if doc is None or doc.get("status") != "done":
                summary.skipped.append(str(run.rel_dir))
                continue
            say(f"{label}: scoring")
            doc["metrics"] = score(run, run_dir, doc["train"], progress=say if progress else None)
            doc["run"]["eval"] = run.eval.model_dump()
            env = store.environment(resolve_device(run.train.device))
            doc["scored"] = {"git_commit": env["git_commit"], "eval": run.eval.model_dump(), "rescored": True}
            store.write_json(run_dir / store.METRICS, doc)
            write_hparams(run_dir, run, doc["metrics"], doc["train"]["steps"])
            summary.trained.append(str(run.rel_dir))
    return summary
