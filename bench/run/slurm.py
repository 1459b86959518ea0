"""SLURM runner: one submitit job (a task of one job array) per unfinished run (``--runner slurm``).

    python -m bench run FILE --runner slurm --slurm-partition gpu --slurm-time 120 --slurm-gpus-per-run 1

Each job calls the seam every runner calls, ``bench.run.execute.execute`` (with ``wait=True``: a job
whose run another process holds waits for the lock, then skips the run if that process finished it),
so a run trained by a job has the same directory, hash, files, lock and resume as one trained locally.
The driver submits the jobs, records their ids in ``runs/<ablation>/.slurm/jobs.json`` (``bench
status`` asks the scheduler about them: queued, running), keeps submitit's pickles and the job logs
in ``runs/<ablation>/.slurm/``, prints a line per job as it ends, and then checks on its own
filesystem that every run is finished: a job that died, was cancelled or left no metrics.json fails
its run, with the reason (error.json), and the sweep goes on.

A job that SLURM signals before its time limit, or preempts, is requeued by submitit (at most
``MAX_TIMEOUTS`` time-outs) and resumes from the run's checkpoint, so a run longer than
``--slurm-time`` finishes over several allocations.

What a cluster needs:

* one shared filesystem, mounted at the same path on the submitting node and on every compute node,
  holding the runs directory (with working ``flock``; NFSv4 has it), the datasets and the checkout;
* the same installed code path: a job starts the driver's Python (``sys.executable``) in the
  driver's working directory with the driver's environment (sbatch exports it, so PEGASUS_* settings
  reach the jobs); the environment with the project installed (``pip install -e '.[slurm]'``) must
  therefore exist at the same path on the nodes;
* ``sacct``, for ``bench status`` and to notice a job that died without writing its result.

Resources of each job: ``--slurm-cpus-per-run`` CPUs (the run trains with that many threads),
``--slurm-gpus-per-run`` GPUs (0: the run trains on the CPU; 1 or more: SLURM sets
CUDA_VISIBLE_DEVICES and the run uses ``cuda``, its first GPU), ``--slurm-time`` minutes and
``--slurm-partition``.  ``--slurm-cluster local`` runs the same jobs as processes on this machine
(submitit's local executor: the same pickles, job files and logs), to try a sweep without a cluster.
"""
from __future__ import annotations

import contextlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import store
from bench.config.schema import RunSpec
from bench.errors import BenchError
from bench.run.execute import Outcome, Placement, execute, failed, say, visible

CLUSTERS = ("slurm", "local")
FOLDER = ".slurm"                # runs/<ablation>/.slurm/: submitit's pickles, job logs, jobs.json
JOBS = "jobs.json"
MAX_TIMEOUTS = 3
VISIBLE_S = 60.0                 # how long a job's metrics.json may take to show here (execute.visible)
# scheduler states (sacct; submitit's local executor says RUNNING / FINISHED) by what they mean for a run
QUEUED = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING",
                    "SUSPENDED", "PREEMPTED"})       # a preempted job is requeued (RunJob.checkpoint)
RUNNING = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT"})


@dataclass(frozen=True)
class SlurmSettings:
    """Resources of one job (one run) and where the jobs go (``cluster``: "slurm", or "local" for
    submitit's local executor).  ``poll_s``: how often the driver looks for jobs that ended."""
    partition: str | None = None
    time_min: int = 60
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    cluster: str = "slurm"
    poll_s: float = 2.0


def _submitit():
    try:
        import submitit
    except ImportError:
        raise BenchError("--runner slurm needs submitit: pip install -e '.[slurm]'") from None
    return submitit


def check(settings: SlurmSettings, runs: list[RunSpec]) -> None:
    """What would make the submission fail, one line each, before anything is submitted or written."""
    if settings.cluster not in CLUSTERS:
        raise BenchError(f"--slurm-cluster must be one of {', '.join(CLUSTERS)} (got {settings.cluster!r})")
    if settings.time_min < 1 or settings.cpus_per_run < 1 or settings.gpus_per_run < 0:
        raise BenchError(f"--slurm-time and --slurm-cpus-per-run must be >= 1 and --slurm-gpus-per-run >= 0 "
                         f"(got {settings.time_min}, {settings.cpus_per_run}, {settings.gpus_per_run})")
    submitit = _submitit()
    if settings.cluster == "slurm" and submitit.SlurmExecutor.affinity() <= 0:
        raise BenchError("--runner slurm: no SLURM on this machine (srun not found); submit from a node of the "
                         "cluster, or run the jobs here with --slurm-cluster local")
    wants = sorted({r.train.device for r in runs if r.train.device.startswith("cuda")})
    if wants and not settings.gpus_per_run:
        raise BenchError(f"--runner slurm: runs ask for {', '.join(wants)} but --slurm-gpus-per-run is 0; "
                         f"give each job a GPU (--slurm-gpus-per-run 1) or set train.device to auto or cpu")


def executor_parameters(settings: SlurmSettings, name: str) -> dict[str, Any]:
    """The ``update_parameters`` keywords of an AutoExecutor: one task on one node per job.
    ``slurm_partition`` is SLURM's own; the local executor ignores it."""
    params: dict[str, Any] = {"name": name, "timeout_min": settings.time_min, "nodes": 1, "tasks_per_node": 1,
                              "cpus_per_task": settings.cpus_per_run, "gpus_per_node": settings.gpus_per_run}
    if settings.partition:
        params["slurm_partition"] = settings.partition
    return params


def placement(settings: SlurmSettings, n_jobs: int) -> Placement:
    """Where each job's run trains: its own GPU (SLURM sets CUDA_VISIBLE_DEVICES) or the CPU, with as
    many threads as the job has CPUs.  Local jobs all share this machine, and their timings say so."""
    shared = f"{n_jobs} local submitit jobs shared this machine" if settings.cluster == "local" and n_jobs > 1 \
        else None
    return Placement("cuda" if settings.gpus_per_run else "cpu", settings.cpus_per_run, shared)


def make_executor(folder: Path, settings: SlurmSettings, name: str):
    executor = _submitit().AutoExecutor(folder=folder, cluster=settings.cluster,
                                        slurm_max_num_timeout=MAX_TIMEOUTS, local_max_num_timeout=MAX_TIMEOUTS)
    executor.update_parameters(**executor_parameters(settings, name))
    return executor


class RunJob:
    """What a job runs: one run through the seam, in the driver's working directory (relative data
    roots resolve as there).  ``checkpoint`` is submitit's hook for a job signalled before its time
    limit or preempted: the same call is requeued, and it resumes from the run's checkpoint."""

    def __call__(self, run: RunSpec, runs_root: str, where: Placement, cwd: str) -> Outcome:
        if os.path.isdir(cwd):
            os.chdir(cwd)
        return execute(run, Path(runs_root), where, wait=True)

    def checkpoint(self, *args: Any):
        return _submitit().helpers.DelayedSubmission(self, *args)


# --------------------------------------------------------------------------- the driver

def run_slurm(todo: list[RunSpec], runs_root: Path, settings: SlurmSettings = SlurmSettings()) -> list[Outcome]:
    """Submit a job per run of ``todo``, wait for them all, return an Outcome per run."""
    check(settings, todo)
    runs_root = Path(runs_root).resolve()
    folder = runs_root / todo[0].ablation / FOLDER
    executor = make_executor(folder, settings, f"bench-{todo[0].ablation}")
    where = placement(settings, len(todo))
    try:      # submitit prints sbatch's complaint before raising it: it is said once, in the error below
        with contextlib.redirect_stderr(io.StringIO()), executor.batch():
            jobs = [executor.submit(RunJob(), run, str(runs_root), where, os.getcwd()) for run in todo]
    except (OSError, RuntimeError, ValueError) as exc:   # sbatch refused (a bad partition, too much time)
        raise BenchError(f"--runner slurm: submission failed: {_first_line(exc)}") from None
    record_jobs(folder, settings.cluster, {str(r.rel_dir): j.job_id for r, j in zip(todo, jobs)})
    say(f"{len(todo)} runs as {settings.cluster} jobs ({where.describe()}, {settings.time_min} min each; "
        f"ids in {folder / JOBS}, logs in {folder})")
    try:
        return _wait(list(zip(todo, jobs)), runs_root, settings.poll_s)
    except KeyboardInterrupt:
        if settings.cluster == "local":
            for job in jobs:
                job.cancel(check=False)
            say("interrupted; the local jobs were stopped (rerun the same command to resume them)")
        else:
            say("interrupted; the submitted jobs go on (`bench status FILE` shows them, scancel stops them)")
        raise


def _wait(jobs: list[tuple[RunSpec, Any]], runs_root: Path, poll_s: float) -> list[Outcome]:
    """A line per job as it ends; an Outcome per run, failed unless its metrics.json is here."""
    helpers = _submitit().helpers
    run_of = {id(job): run for run, job in jobs}
    out = []
    for k, job in enumerate(helpers.as_completed([j for _, j in jobs], poll_frequency=poll_s), 1):
        o = _outcome(run_of[id(job)], job, runs_root)
        say(f"[{k}/{len(jobs)}] {o.rel_dir}: {o.message or o.state}")
        out.append(o)
    return out


def _outcome(run: RunSpec, job, runs_root: Path) -> Outcome:
    rel, run_dir = str(run.rel_dir), runs_root / run.rel_dir
    try:
        o = job.result()
    except Exception as exc:  # died, killed, cancelled, timed out too often: this run fails, the rest go on
        o = failed(run_dir, rel, f"job {job.job_id} {_reason(exc, job)}; log: {job.paths.stderr}")
    if o.state != "failed" and not visible(run_dir, VISIBLE_S):
        o = failed(run_dir, rel, f"job {job.job_id} said {o.state!r} but {run_dir / store.METRICS} is not "
                                  f"on this filesystem (runs/ must be shared with the nodes)")
    return o


def _reason(exc: Exception, job) -> str:
    """What went wrong, in a line: the exception a job raised (the last line of its trace), or how a
    job ended without a result (the scheduler's state: FAILED, CANCELLED, OUT_OF_MEMORY, NODE_FAIL...)."""
    if isinstance(exc, _submitit().core.utils.FailedJobError):
        lines = str(exc).splitlines()     # a header, then the trace between two lines of dashes
        seps = [i for i, ln in enumerate(lines) if ln.strip() and not ln.strip("-")]
        trace = [ln for ln in (lines[seps[0] + 1:seps[1]] if len(seps) > 1 else lines)
                 if ln.strip() and not ln.startswith(" ")]
        return f"raised {trace[-1] if trace else type(exc).__name__}"
    try:
        state = job.state
    except Exception:  # the scheduler cannot be asked: say so rather than guess
        state = "UNKNOWN"
    return f"ended without a result (the process died: killed, out of memory or its node lost; state {state})"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- job records (bench status)

def record_jobs(folder: Path, cluster: str, ids: dict[str, str]) -> None:
    """Add ``{run rel_dir: job id}`` to ``folder/jobs.json`` (a later submission of a run replaces its entry)."""
    with store.run_lock(folder, wait=True):
        path = folder / JOBS
        doc = store.read_json(path) if path.exists() else {}
        since = time.strftime("%Y-%m-%dT%H:%M:%S")
        doc.update({rel: {"job_id": jid, "cluster": cluster, "folder": str(folder), "submitted": since}
                    for rel, jid in ids.items()})
        store.write_json(path, doc)


def recorded_jobs(runs_root: Path, ablations: set[str]) -> dict[str, dict]:
    """The job records of these ablations ({} when none were submitted); never creates anything."""
    out: dict[str, dict] = {}
    for name in sorted(ablations):
        path = Path(runs_root) / name / FOLDER / JOBS
        try:
            out.update(store.read_json(path))
        except (OSError, ValueError):
            continue
    return out


def job_states(records: dict[str, dict]) -> dict[str, tuple[str, str]]:
    """``{rel_dir: (job id, scheduler state)}`` for recorded jobs: SLURM's (one sacct call for all of
    them, through submitit's job watcher), or a local job's (submitit's job.state, which knows RUNNING
    only in the process that submitted the job; elsewhere a live job process of that id is RUNNING)."""
    if not records:
        return {}
    try:
        submitit = _submitit()
    except BenchError:
        return {rel: (r["job_id"], "UNKNOWN (submitit not installed)") for rel, r in records.items()}
    out = {}
    for rel, r in records.items():
        if r.get("cluster") == "local":
            state = submitit.LocalJob(r["folder"], r["job_id"]).state    # FINISHED once it left a result
            if state != "FINISHED":
                state = "RUNNING" if _local_job_alive(r["job_id"]) else "ENDED (no result)"
            out[rel] = (r["job_id"], state)
    on_slurm = {rel: submitit.SlurmJob(r["folder"], r["job_id"]) for rel, r in records.items() if rel not in out}
    if on_slurm:
        submitit.SlurmJob.watcher.update()           # one sacct call for all the jobs
    for rel, job in on_slurm.items():
        out[rel] = (job.job_id, job.watcher.get_state(job.job_id, mode="cache"))
    return out


def _local_job_alive(job_id: str) -> bool:
    """Is the local job's controller (its id is the controller's pid) still running?  The command line
    is checked where /proc exists, so a reused pid does not pass for the job."""
    try:
        pid = int(job_id)
        os.kill(pid, 0)
    except (ValueError, OSError):
        return False
    if not Path("/proc").is_dir():
        return True
    try:
        return b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:                          # it exited just now
        return False


def phase(state: str) -> str:
    """A scheduler state as the run sees it: queued, running or ended."""
    word = state.split()[0] if state else ""
    return "queued" if word in QUEUED else "running" if word in RUNNING else "ended"
