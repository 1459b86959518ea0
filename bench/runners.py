"""Runners: execute the RunSpecs of an ablation that are not finished yet.

``local`` trains in this process, one run after another.  Each run: lock its directory, write
config.yaml + env.json, train (resuming from ckpt.pt), score, write metrics.json last.  A
diverged run is finished (metrics.json says so); a crash writes error.json, the sweep goes on,
and the next invocation retries it.
"""
from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bench import store
from bench.config import AblationSpec, RunSpec
from bench.runtime import resolve_device
from bench.scoring import score
from bench.train import result_dict, train


@dataclass
class Summary:
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_one(run: RunSpec, run_dir: Path, *, progress: bool = True) -> dict:
    """Train + score one run; write metrics.json last. Returns the metrics document."""

    store.write_yaml(run_dir / "config.yaml", run.resolved())
    env = store.environment(resolve_device(run.train["device"]))
    store.write_json(run_dir / "env.json", env)
    result = result_dict(train(run, run_dir, progress=progress))
    doc = {"status": result["status"], "run": run.resolved(), "train": result, "env": env}
    if result["status"] == "done":
        doc["metrics"] = score(run, run_dir, result, progress=say if progress else None)
        doc["scored"] = {"git_commit": env["git_commit"], "eval": run.eval}
    else:
        doc["metrics"] = {}
    (run_dir / store.ERROR).unlink(missing_ok=True)
    store.write_json(run_dir / store.METRICS, doc)
    return doc


def run_local(spec: AblationSpec, runs: list[RunSpec], runs_root: Path, *, progress: bool = True) -> Summary:
    summary = Summary()
    todo = [r for r in runs if not store.is_finished(runs_root / r.rel_dir)]
    summary.skipped = [str(r.rel_dir) for r in runs if r not in todo]
    if summary.skipped:
        say(f"{len(summary.skipped)}/{len(runs)} runs already finished (skipped)")
    for i, run in enumerate(todo, 1):
        run_dir = runs_root / run.rel_dir
        label = f"[{i}/{len(todo)}] {run.rel_dir}"
        with store.run_lock(run_dir) as ok:
            if not ok:
                say(f"{label}: locked by another process, skipped")
                summary.busy.append(str(run.rel_dir))
                continue
            if store.is_finished(run_dir):      # finished by another process since the to-do list
                say(f"{label}: finished by another process, skipped")
                summary.skipped.append(str(run.rel_dir))
                continue
            t0 = time.perf_counter()
            say(f"{label}: training {run.train['steps']} steps")
            try:
                doc = run_one(run, run_dir, progress=progress)
            except KeyboardInterrupt:
                say(f"{label}: interrupted; rerun the same command to resume from the last checkpoint")
                raise
            except Exception as exc:  # the sweep goes on; the error is recorded and retried next time
                store.write_json(run_dir / store.ERROR, {"error": f"{type(exc).__name__}: {exc}",
                                                         "traceback": traceback.format_exc()})
                say(f"{label}: FAILED ({type(exc).__name__}: {exc}); details in {run_dir / store.ERROR}")
                summary.failed.append(str(run.rel_dir))
                continue
            dt = time.perf_counter() - t0
            if doc["status"] == "diverged":
                say(f"{label}: diverged ({doc['train']['reason']}) after {dt:.0f}s")
                summary.diverged.append(str(run.rel_dir))
            else:
                m = doc["metrics"]
                say(f"{label}: done in {dt:.0f}s — test SSIM {m['recon_ssim']['value']:.3f}, "
                    f"PSNR {m['recon_psnr']['value']:.2f} dB")
                summary.trained.append(str(run.rel_dir))
    return summary


def rescore(runs: list[RunSpec], runs_root: Path, *, progress: bool = True) -> Summary:
    """Re-score finished runs from their checkpoints with the evaluation settings of ``runs``
    (evaluation is not part of a run's identity, so nothing retrains).  Each metrics.json is
    replaced atomically; ``scored`` records the commit and eval settings that produced it."""

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
            doc["run"]["eval"] = run.eval
            env = store.environment(resolve_device(run.train["device"]))
            doc["scored"] = {"git_commit": env["git_commit"], "eval": run.eval, "rescored": True}
            store.write_json(run_dir / store.METRICS, doc)
            summary.trained.append(str(run.rel_dir))
    return summary
