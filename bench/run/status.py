"""``python -m bench status FILE``: where every run of an ablation stands, while a sweep runs or after.

Reads only what runs write anyway (metrics.json, error.json, ckpt.pt, log.jsonl and the lock file)
and never creates or locks anything a runner could trip over; for runs submitted with ``--runner
slurm`` it also asks the scheduler about their jobs (runs/<ablation>/.slurm/jobs.json).  States:

    done · diverged        finished (metrics.json)
    queued                 a submitted SLURM job (--runner slurm) waits in the queue (job id shown)
    running                a live process holds the run's lock (pid and host shown), or its job runs
    failed                 error.json from the last attempt; the next `bench run` retries it
    interrupted            a checkpoint but nobody running it; the next `bench run` resumes it
    pending                nothing yet

Each run also shows its key metric (``bench.metrics.KEY_METRIC`` of a finished run, the last logged training
loss of one under way).  ``--json`` gives the same as a list of objects for scripts (:func:`as_json`: run, arm,
dataset, seed, state, step, total_steps, metric, holder, job, images_per_s, eta_s, detail; absent values are
null), and ``--watch`` redraws either every ``--interval`` seconds until Ctrl-C (:func:`watch`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bench import store
from bench.config.schema import RunSpec
from bench.metrics import CATALOGUE, KEY_METRIC
from bench.run import slurm


@dataclass(frozen=True)
class RunState:
    rel_dir: str
    state: str
    step: int
    total: int
    images_per_s: float | None = None
    eta_s: float | None = None          # training still to go at the run's own pace (running runs)
    detail: str = ""
    wall_s: float | None = None         # training + scoring seconds of a finished run
    metric: tuple[str, float] | None = None    # (KEY_METRIC, value) when finished, ("loss", last logged) before
    holder: dict[str, Any] | None = None       # who holds the run's lock: {"pid", "host", "since"}
    job: tuple[str, str] | None = None         # a recorded SLURM/submitit job: (id, scheduler state)


def last_log_entry(path: Path) -> dict:
    """The last complete JSON line of a run's log ({} when there is none)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue                     # a line being written right now
    return {}


def run_state(run: RunSpec, runs_root: Path) -> RunState:
    d, rel, total = Path(runs_root) / run.rel_dir, str(run.rel_dir), run.train.steps
    if store.is_finished(d):
        try:
            doc = store.read_json(d / store.METRICS)
        except (OSError, ValueError):
            return RunState(rel, "done", total, total, detail="metrics.json unreadable")
        train, metrics = doc.get("train", {}), doc.get("metrics") or {}
        wall = (train.get("wall_s") or 0) + ((metrics.get("scoring_s") or {}).get("value") or 0)
        value = (metrics.get(KEY_METRIC) or {}).get("value")
        return RunState(rel, doc.get("status", "done"), train.get("steps", total), total,
                        train.get("train_images_per_s"), detail=train.get("reason") or "", wall_s=wall,
                        metric=(KEY_METRIC, value) if value is not None else None)
    entry = last_log_entry(d / store.LOG)
    step, ips = int(entry.get("step", 0)), entry.get("images_per_s")
    loss = ("loss", entry["loss"]) if isinstance(entry.get("loss"), (int, float)) else None
    holder = store.lock_holder(d)
    if holder is not None:
        eta = (total - step) * run.train.batch_size / ips if ips else None
        who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder.get("pid") else "lock held"
        return RunState(rel, "running", step, total, ips, eta, who + ("" if step < total else ", scoring"),
                        metric=loss, holder=holder)
    if (d / store.ERROR).exists():
        try:
            err = store.read_json(d / store.ERROR).get("error", "")
        except (OSError, ValueError):
            err = "error.json unreadable"
        return RunState(rel, "failed", step, total, ips, detail=err, metric=loss)
    if (d / store.CKPT).exists():
        return RunState(rel, "interrupted", step, total, ips, detail="resumes from its checkpoint", metric=loss)
    return RunState(rel, "pending", 0, total)


def with_job(s: RunState, job_id: str, job_state: str) -> RunState:
    """A run's state with what the scheduler says about its job: a queued job makes an unfinished run
    ``queued``, a running one makes it ``running`` (before the job takes the run's lock, too); a job
    that ended leaves the run's own state (failed, interrupted, pending) and is named in the detail."""
    if s.state in ("done", "diverged"):
        return s
    s = dataclasses.replace(s, job=(job_id, job_state))
    phase = slurm.phase(job_state)
    if phase == "queued":
        return dataclasses.replace(s, state="queued", eta_s=None, detail=f"job {job_id} {job_state}")
    if phase == "running":
        detail = f"job {job_id}, " + (s.detail if s.state == "running" else "starting")
        return dataclasses.replace(s, state="running", detail=detail)
    return dataclasses.replace(s, detail="; ".join(d for d in (s.detail, f"job {job_id} {job_state}") if d))


def _fmt_s(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    return f"{s / 3600:.1f} h" if s >= 5400 else f"{s / 60:.0f} min" if s >= 90 else f"{s:.0f} s"


def run_states(runs: list[RunSpec], runs_root: Path) -> list[RunState]:
    """Every run's state, with what the scheduler says about its job where one was submitted."""
    out = [run_state(r, runs_root) for r in runs]
    jobs = slurm.job_states(slurm.recorded_jobs(runs_root, {r.ablation for r in runs}))
    return [with_job(s, *jobs[s.rel_dir]) if s.rel_dir in jobs else s for s in out]


def _fmt_metric(metric: tuple[str, float] | None) -> str:
    if metric is None:
        return "-"
    name, value = metric
    return f"{name} {format(value, CATALOGUE[name].fmt) if name in CATALOGUE else f'{value:.4g}'}"


def report(name: str, runs: list[RunSpec], runs_root: Path) -> str:
    """A line per run and a summary line with an ETA for the rest of the sweep."""
    states = run_states(runs, runs_root)
    width = max(len(s.rel_dir) for s in states)
    lines = [f"{'run':<{width}}  {'state':<11} {'step':>13}  {'img/s':>7}  {'eta':>7}  {'metric':<17} detail"]
    for s in states:
        ips = f"{s.images_per_s:.1f}" if s.images_per_s else "-"
        lines.append(f"{s.rel_dir:<{width}}  {s.state:<11} {f'{s.step}/{s.total}':>13}  {ips:>7}  "
                     f"{_fmt_s(s.eta_s):>7}  {_fmt_metric(s.metric):<17} {s.detail}".rstrip())
    counts = {k: sum(s.state == k for s in states) for k in
              ("done", "diverged", "queued", "running", "failed", "interrupted", "pending")}
    lines.append(f"{name}: {len(states)} runs — " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
                 + f"; {_eta(states)}")
    return "\n".join(lines)


def _eta(states: list[RunState]) -> str:
    """Rest of the sweep, one run at a time, at the mean wall time (training + scoring) of its finished runs."""
    walls = [s.wall_s for s in states if s.wall_s]
    left = [s for s in states if s.state in ("pending", "interrupted", "failed", "queued", "running")]
    if not left:
        return "nothing left to run"
    if not walls:
        return "ETA unknown until a run finishes"
    per = sum(walls) / len(walls)
    secs = sum(per * (1 - s.step / s.total) for s in left)
    return f"~{_fmt_s(secs)} left at {_fmt_s(per)} per run (one at a time; less with --jobs)"


def as_json(runs: list[RunSpec], runs_root: Path) -> list[dict[str, Any]]:
    """What ``report`` shows, for scripts: one object per run, always the same keys (null when absent)."""
    out = []
    for run, s in zip(runs, run_states(runs, runs_root)):
        holder = {k: s.holder.get(k) for k in ("pid", "host", "since")} if s.holder else None
        out.append({"run": s.rel_dir, "arm": run.arm, "dataset": run.dataset, "seed": run.seed, "state": s.state,
                    "step": s.step, "total_steps": s.total,
                    "metric": {"name": s.metric[0], "value": s.metric[1]} if s.metric else None,
                    "holder": holder, "job": {"id": s.job[0], "state": s.job[1]} if s.job else None,
                    "images_per_s": s.images_per_s, "eta_s": s.eta_s, "detail": s.detail})
    return out


CLEAR = "\033[H\033[2J"        # cursor home, clear the screen
_sleep = time.sleep             # module-level so tests can count the refreshes


def watch(render: Callable[[], str], interval: float, *, out: TextIO | None = None, clear: bool | None = None) -> int:
    """Write ``render()`` every ``interval`` seconds until Ctrl-C, then return 0.  On a terminal each refresh
    clears the screen and redraws (``clear``, default: when ``out`` is one); elsewhere refreshes follow each
    other (a JSON document per line, say)."""
    out = out or sys.stdout
    clear = out.isatty() if clear is None else clear
    try:
        while True:
            text = render()
            out.write((CLEAR if clear else "") + text + "\n")
            out.flush()
            _sleep(interval)
    except KeyboardInterrupt:
        return 0
