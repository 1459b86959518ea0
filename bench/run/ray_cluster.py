"""Ray runner: one Ray task per unfinished run (``python -m bench run FILE --runner ray``).

Each task calls the same seam as the local runner (``bench.run.local.execute``), so a run trained
on a Ray worker has the same directory, hash and files as one trained locally.  Resources:

* a cluster with GPUs: each task asks for one GPU (Ray sets CUDA_VISIBLE_DEVICES, so the task sees
  its GPU as ``cuda``) and one CPU; as many runs train at once as there are GPUs;
* a CPU cluster: each task asks for ``CPUs / --jobs`` CPUs (at most one node's worth) and trains
  with that many threads.

A task whose worker process dies (a node lost, an out-of-memory kill) is retried by Ray
(``MAX_RETRIES``) and resumes from the run's checkpoint; the run's lock died with the worker, so the
retry takes it.

What the cluster must share: the project checkout (installed with ``pip install -e .`` at the same
path on every node), the datasets, and the runs directory — one shared filesystem (NFS or similar)
mounted at the same path everywhere, with working ``flock`` (NFSv4 has it).  Results are written
by the workers straight into the runs directory; the driver only collects outcomes.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from bench import store
from bench.config.schema import RunSpec
from bench.errors import BenchError
from bench.run.execute import Outcome, Placement, execute, say

MAX_RETRIES = 3


def _task(run: RunSpec, runs_root: str, placement: Placement, cwd: str) -> Outcome:
    if os.path.isdir(cwd):
        os.chdir(cwd)               # relative data roots resolve as on the driver
    return execute(run, Path(runs_root), placement)


def _ray():
    try:
        import ray
    except ImportError:
        raise BenchError("--runner ray needs Ray: pip install -e '.[ray]'") from None
    return ray


def connect(address: str | None) -> None:
    """Join the cluster at ``address`` ('auto', 'HOST:PORT'; None = $RAY_ADDRESS or a new local Ray)."""
    ray = _ray()
    if ray.is_initialized():
        return
    # the workers see the driver's PEGASUS_* settings (cache, weights, datasets)
    env = {k: v for k, v in os.environ.items() if k.startswith("PEGASUS_")}
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                 runtime_env={"env_vars": env} if env else None)
    except ConnectionError as exc:
        raise BenchError(f"--runner ray: cannot connect to a Ray cluster at {address!r}: {exc}") from None


def resources(jobs: int, wants_cuda: bool) -> tuple[dict, Placement]:
    """Ray resource request and placement of one task (see the module docstring)."""
    ray = _ray()
    total = ray.cluster_resources()
    if wants_cuda and total.get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": 1}, Placement("cuda", None, None)
    node_cpus = max((n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
    per = int(max(1, min(node_cpus, total.get("CPU", 1) // jobs)))
    shared = f"Ray tasks shared a node ({per} of its {node_cpus:g} CPUs each)" if per < node_cpus else None
    return {"num_cpus": per}, Placement("cpu", per, shared)


def run_ray(todo: list[RunSpec], runs_root: Path, *, jobs: int = 1, address: str | None = None) -> list[Outcome]:
    ray = _ray()
    connect(address)
    runs_root = Path(runs_root).resolve()
    opts, placement = resources(jobs, any(r.train.device != "cpu" for r in todo))
    task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(_task)
    refs = {task.options(**opts).remote(run, str(runs_root), placement, os.getcwd()): (i, run)
            for i, run in enumerate(todo, 1)}
    say(f"{len(todo)} runs as Ray tasks ({', '.join(f'{k}={v}' for k, v in opts.items())} each; cluster: "
        f"{ray.cluster_resources().get('CPU', 0):g} CPUs, {ray.cluster_resources().get('GPU', 0):g} GPUs)")
    out = []
    while refs:
        (ref,), _ = ray.wait(list(refs), num_returns=1)
        i, run = refs.pop(ref)
        try:
            o = ray.get(ref)
        except Exception as exc:  # retries exhausted or the task could not run: this run fails, the rest go on
            msg = f"Ray task failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            if not store.is_finished(runs_root / run.rel_dir):
                store.write_json(runs_root / run.rel_dir / store.ERROR, {"error": msg, "traceback": str(exc)})
            o = Outcome(str(run.rel_dir), "failed", f"FAILED ({msg})")
        print(f"[{i}/{len(todo)}] {run.rel_dir}: {o.message or o.state}", file=sys.stderr, flush=True)
        out.append(o)
    return out
