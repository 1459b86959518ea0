"""The runner seam: train and score one run, whatever executes it.

    execute(run, runs_root, placement) -> Outcome      # lock, re-check, train, score, record

``execute`` is the only code that touches a run directory: it takes the run's lock, checks under
the lock that the run is still unfinished (another sweep may have finished it meanwhile: a
finished run is never touched again), writes config.yaml + env.json, trains (resuming from
ckpt.pt), scores, and writes metrics.json last.  A diverged run is finished (metrics.json says
so); a crash writes error.json and the next invocation retries it.

Placement (device, threads) is chosen by the executor (bench/run/local.py, bench/run/ray_cluster.py) and
is not part of a run's identity: a run trained on cuda:1 or with 1 thread has the same directory and
hash; env.json records where it ran.  Timings measured while other jobs shared the device are
recorded as such (``shared``) and the tables list them without comparing them.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import precision, store
from bench.config.schema import RunSpec
from bench.metrics.scoring import score
from bench.train.live import write_hparams
from bench.train.loop import result_dict, train
from bench.train.runtime import keep_freed_memory, pin, resolve_device


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Placement:
    """Where a run executes: a device ("cuda:1", "cpu"; None = the run's own setting), the number
    of CPU threads (None = leave torch's default), what else shares the device (None = nothing), and
    the cluster node that ran it (a Ray node id; None = this machine)."""
    device: str | None = None
    threads: int | None = None
    shared: str | None = None
    node: str | None = None

    def describe(self) -> str:
        parts = [self.device or "default device"]
        if self.threads:
            parts.append(f"{self.threads} thread{'s' if self.threads > 1 else ''}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Outcome:
    rel_dir: str
    state: str                  # trained | diverged | failed | skipped (finished elsewhere) | busy (locked)
    message: str = ""
    seconds: float = 0.0


# --------------------------------------------------------------------------- the seam

def run_one(run: RunSpec, run_dir: Path, *, progress: bool = True, placement: Placement = Placement()) -> dict:
    """Train + score one run; write metrics.json last. Returns the metrics document."""

    device = resolve_device(placement.device or run.train.device)
    pin(device)
    store.write_yaml(run_dir / "config.yaml", run.resolved())
    env = store.environment(device)
    env["placement"] = {"device": str(device), "threads": torch.get_num_threads(), "pid": os.getpid(),
                        "shared": placement.shared, "node": placement.node}
    env["precision"] = precision.effective(device, run.train.amp)
    env["allocator"] = keep_freed_memory()       # process-wide; see bench/train/runtime.py
    store.write_json(run_dir / "env.json", env)
    result = result_dict(train(run, run_dir, progress=progress, device=device))
    doc = {"status": result["status"], "run": run.resolved(), "train": result, "env": env}
    if result["status"] == "done":
        doc["metrics"] = score(run, run_dir, result, progress=say if progress else None, device=device,
                               shared=placement.shared)
        doc["scored"] = {"git_commit": env["git_commit"], "eval": run.eval.model_dump()}
        write_hparams(run_dir, run, doc["metrics"], result["steps"])
        if run.train.snapshots:
            doc["snapshots"] = score_snapshots(run, run_dir, result, device=device, progress=progress)
    else:
        doc["metrics"] = {}
    (run_dir / store.ERROR).unlink(missing_ok=True)
    store.write_json(run_dir / store.METRICS, doc)
    return doc


def score_snapshots(run: RunSpec, run_dir: Path, train_result: dict, *, device: torch.device,
                    progress: bool = False) -> dict[str, dict]:
    """{step: metrics} of every ``train.snapshots`` step, the final step's under its own key in metrics.json.
    With a constant learning rate the weights at step k are those of a k-step run (tests/test_snapshots.py), so
    these are the points of a budget curve.  A snapshot whose file is missing (added to the file after the run
    trained past it) is recorded with the reason, never skipped silently."""
    out = {}
    for step in run.train.snapshots:
        if not store.snapshot_path(run_dir, step).exists():
            out[str(step)] = {"unavailable": f"no snapshot at step {step}: the run trained past it before "
                                             "train.snapshots named it (retrain to have it)"}
            continue
        if progress:
            say(f"scoring the snapshot at step {step}")
        out[str(step)] = score(run, run_dir, train_result, device=device, snapshot=step,
                               progress=say if progress else None)
    return out


def execute(run: RunSpec, runs_root: Path, placement: Placement = Placement(), *, progress: bool = False,
            wait: bool = False) -> Outcome:
    """Train and score one run unless it is finished or locked (``wait``: block for the lock)."""
    run_dir, rel = Path(runs_root) / run.rel_dir, str(run.rel_dir)
    if placement.threads:
        torch.set_num_threads(placement.threads)
    with store.run_lock(run_dir, wait=wait) as ok:
        if not ok:
            return Outcome(rel, "busy", "locked by another process")
        if store.is_finished(run_dir):       # finished by another process since the to-do list was made
            return Outcome(rel, "skipped", "finished by another process")
        t0 = time.perf_counter()
        try:
            doc = run_one(run, run_dir, progress=progress, placement=placement)
        except Exception as exc:  # the sweep goes on; the error is recorded and retried next time
            store.write_json(run_dir / store.ERROR, {"error": f"{type(exc).__name__}: {exc}",
                                                     "traceback": traceback.format_exc()})
            return Outcome(rel, "failed", f"FAILED ({type(exc).__name__}: {exc}); details in "
                                          f"{run_dir / store.ERROR}", time.perf_counter() - t0)
    dt = time.perf_counter() - t0
    if doc["status"] == "diverged":
        return Outcome(rel, "diverged", f"diverged ({doc['train']['reason']}) after {dt:.0f}s", dt)
    m = doc["metrics"]
    return Outcome(rel, "trained", f"done in {dt:.0f}s — test SSIM {m['recon_ssim']['value']:.3f}, "
                                   f"PSNR {m['recon_psnr']['value']:.2f} dB", dt)


# --------------------------------------------------------------------------- what a driver sees

def visible(run_dir: Path, wait_s: float) -> bool:
    """Is the run finished on this filesystem?  A file a node wrote a moment ago can take a while to show
    on a network filesystem (cached directory entries), so an absent metrics.json is looked for again,
    re-reading the directory, for up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while not store.is_finished(run_dir):
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)
        with contextlib.suppress(OSError):
            os.listdir(run_dir)
    return True


def failed(run_dir: Path, rel: str, msg: str) -> Outcome:
    """A run that did not finish where the driver can see it: error.json with the reason (unless it is
    finished after all), and a failed Outcome."""
    if not store.is_finished(run_dir):
        store.write_json(run_dir / store.ERROR, {"error": msg, "traceback": None})
    return Outcome(rel, "failed", f"FAILED ({msg})")
