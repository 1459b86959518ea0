"""Ray runner: one Ray task per unfinished run (``python -m bench run FILE --runner ray --address HEAD:6379``).

Each task calls the seam every runner calls, ``bench.run.execute.execute`` (with ``wait=True``: a task
whose run another process holds waits for the lock, then skips the run if that process finished it, or
trains it if that process died), so a run trained on a Ray worker has the same directory, hash, files,
lock and resume as one trained locally.  The driver never trains a run itself.

Before anything is submitted, one probe task pinned to each alive node that can run a task (a node
without CPUs, such as a head started with ``--num-cpus 0``, runs none) writes a file into the runs
directory, reads the datasets' roots and hashes the project code it imports.  Unless the driver sees
every node's file on its own filesystem, every node sees the datasets as it does and every node runs
its code, the sweep is refused with one line naming the nodes and what they miss (exit 2, nothing
trained).  After each task the driver checks on its own filesystem that the run is finished (its
metrics.json is here); anything else fails the run, with the reason in error.json, never "trained".

Resources of each task, from its run's ``train.device``: ``cpu`` asks for ``--cpus-per-run`` CPUs (default
1; the run trains with that many threads); ``cuda`` for ``--gpus-per-run`` of a GPU (default 1; 0.25 packs
four small runs on one GPU, and their timings are marked shared) and ``--cpus-per-run`` CPUs; ``auto`` for
a GPU when the cluster has any, else CPUs.  Ray sets CUDA_VISIBLE_DEVICES, so a task sees its GPU as ``cuda``.
A task whose worker process or node dies (a node lost, an out-of-memory kill) is retried by Ray
(``MAX_RETRIES``) and resumes from the run's checkpoint; the lock died with the worker, so the retry takes it.

What a cluster needs:

* the runs directory and the datasets on one shared filesystem (NFS or similar) mounted at the same path on
  the driver and every node, with working ``flock`` (NFSv4 has it);
* the code: shipped by default (``--ray-code ship``: the driver's ``bench``, ``models`` and ``losses``
  packages go to the workers as the job's ``runtime_env`` working_dir, with the driver's git commit), so the
  nodes need only the dependencies (torch, ...) installed; ``--ray-code installed``: the project is
  installed at the same path on every node, and the probe refuses nodes whose code is not the driver's.

A node that joins after the probe is not probed; a run it trains without sharing the runs directory
fails (its metrics.json is not here) rather than being lost.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import bench
import losses
import models
from bench import store
from bench.config.schema import RunSpec
from bench.errors import BenchError
from bench.run.execute import Outcome, Placement, execute, failed, say, visible

CODE = ("ship", "installed")
PACKAGES = (bench, models, losses)     # what --ray-code ship sends to the workers
MAX_RETRIES = 3
VISIBLE_S = 60.0                       # how long a task's metrics.json may take to show here (execute.visible)
PROBE_DIR = ".ray-probe"               # runs/.ray-probe/<token>/<node id>.json, removed after the probe
PROBE_TIMEOUT_S = 300.0                # a node's first task sets up its runtime env (code download, worker start)
PROBE_VISIBLE_S = 10.0                 # how long a probe file may take to show here


@dataclass(frozen=True)
class RaySettings:
    """The cluster to join (``address``: 'auto', 'HOST:PORT'; None = $RAY_ADDRESS or a new local Ray),
    the resources of each task (one run), and how the code reaches the workers (``code``: see CODE)."""
    address: str | None = None
    cpus_per_run: int = 1
    gpus_per_run: float = 1.0
    code: str = "ship"


def _ray():
    try:
        import ray
    except ImportError:
        raise BenchError("--runner ray needs Ray: pip install -e '.[ray]'") from None
    return ray


def check(settings: RaySettings, runs: list[RunSpec]) -> None:
    """What would make the sweep fail whatever the cluster, one line each, before Ray is started."""
    if settings.code not in CODE:
        raise BenchError(f"--ray-code must be one of {', '.join(CODE)} (got {settings.code!r})")
    if settings.cpus_per_run < 1 or not 0 <= settings.gpus_per_run <= 1:
        raise BenchError(f"--cpus-per-run must be >= 1 and --gpus-per-run between 0 and 1 (a run trains on one "
                         f"GPU; got {settings.cpus_per_run}, {settings.gpus_per_run:g})")
    if not settings.gpus_per_run and any(r.train.device == "cuda" for r in runs):
        raise BenchError("--runner ray: runs ask for cuda but --gpus-per-run is 0; give each a GPU or a share of "
                         "one (--gpus-per-run 1 or 0.25) or set train.device to auto or cpu")


# --------------------------------------------------------------------------- resources

def wants_gpu(run: RunSpec, settings: RaySettings, cluster_gpus: float) -> bool:
    return run.train.device == "cuda" or (run.train.device == "auto" and cluster_gpus > 0
                                          and settings.gpus_per_run > 0)


def request(run: RunSpec, settings: RaySettings, *, cluster_gpus: float, node_cpus: float) -> tuple[dict, Placement]:
    """The Ray resources of ``run``'s task and where in them it trains (see the module docstring).
    ``cluster_gpus``: the cluster's GPUs; ``node_cpus``: the most CPUs of one node (a task with fewer
    shares its node with others, and its timings say so)."""
    cpus, gpus = settings.cpus_per_run, settings.gpus_per_run
    if wants_gpu(run, settings, cluster_gpus):
        shared = f"up to {int(1 / gpus)} Ray tasks shared a GPU ({gpus:g} GPU each)" if gpus < 1 else None
        return {"num_cpus": cpus, "num_gpus": gpus}, Placement("cuda", cpus, shared)
    shared = f"Ray tasks shared a node ({cpus} of its {node_cpus:g} CPUs each)" if cpus < node_cpus else None
    return {"num_cpus": cpus, "num_gpus": 0}, Placement("cpu", cpus, shared)


def infeasible(requests: list[dict], nodes: list[dict]) -> str | None:
    """Why no alive node could ever run some of these tasks (Ray would wait for one forever), or None."""
    fits = [n["Resources"] for n in nodes]
    for opts in requests:
        if not any(r.get("CPU", 0) >= opts["num_cpus"] and r.get("GPU", 0) >= opts["num_gpus"] for r in fits):
            gpu = f" and {_count(opts['num_gpus'], 'GPU')}" if opts["num_gpus"] else ""
            have = "; ".join(f"{_count(r.get('CPU', 0), 'CPU')}, {_count(r.get('GPU', 0), 'GPU')}" for r in fits)
            return (f"--runner ray: a run asks for {_count(opts['num_cpus'], 'CPU')}{gpu} and no node of the cluster "
                    f"has that ({have or 'no nodes'}); lower --cpus-per-run, or set train.device to cpu for a "
                    f"cluster without GPUs")
    return None


def _count(n: float, what: str) -> str:
    return f"{n:g} {what}{'s' * (n != 1)}"


def task_nodes(nodes: list[dict]) -> list[dict]:
    """The alive nodes a training task can run on (every task asks for at least one CPU)."""
    return [n for n in nodes if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]


def node_label(node_id: str, nodes: list[dict]) -> str:
    ip = next((n.get("NodeManagerAddress") for n in nodes if n.get("NodeID") == node_id), None)
    return f"{ip} ({node_id[:8]})" if ip else node_id[:8]


# --------------------------------------------------------------------------- the code and the probe

def stage(code_dir: Path) -> None:
    """Copy the project packages (their .py files) into ``code_dir``, the job's working_dir."""
    for pkg in PACKAGES:
        shutil.copytree(Path(pkg.__file__).parent, Path(code_dir) / pkg.__name__,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def runtime_env(settings: RaySettings, code_dir: str | None) -> dict[str, Any]:
    """The job's runtime env: the driver's PEGASUS_* settings (cache, weights, datasets), and with
    ``--ray-code ship`` the staged project packages as its working_dir (uploaded once, first on every
    worker's path; as a working_dir, not py_modules, because without one Ray puts the driver's current
    directory ahead of py_modules, and a node with an old checkout at that path would import it) and
    the commit they are."""
    env = {k: v for k, v in os.environ.items() if k.startswith("PEGASUS_")}
    out: dict[str, Any] = {"env_vars": env}
    if settings.code == "ship":
        env[store.ENV_COMMIT] = store.git_commit()
        out["working_dir"] = code_dir
    return out


def connect(settings: RaySettings) -> None:
    """Join the cluster (a Ray already started in this process is used as it is: the probe then checks
    that its workers run this code)."""
    ray = _ray()
    if ray.is_initialized():
        return
    with tempfile.TemporaryDirectory(prefix="bench-ray-code-") as code_dir:   # uploaded by ray.init
        if settings.code == "ship":
            stage(Path(code_dir))
        try:
            ray.init(address=settings.address, include_dashboard=False, log_to_driver=False,
                     logging_level="WARNING", runtime_env=runtime_env(settings, code_dir))
        except ConnectionError as exc:
            raise BenchError(f"--runner ray: cannot connect to a Ray cluster at {settings.address!r}: {exc}") \
                from None


def source_hash(packages: tuple = PACKAGES) -> str:
    """sha256 of the project's Python source as imported here (every .py file of bench, models, losses,
    by its path in the package): the same on two machines only if they run the same code."""
    h = hashlib.sha256()
    for pkg in packages:
        root = Path(pkg.__file__).parent
        for f in sorted(root.rglob("*.py")):
            h.update(f"{pkg.__name__}/{f.relative_to(root).as_posix()}\0".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def data_view(path: str) -> list[int] | str:
    """What this machine sees at a dataset root: [files, bytes] under it, or why it cannot read it."""
    p = Path(path)
    if not p.exists():
        return "nothing"
    count = size = 0
    try:
        if p.is_file():
            with open(p, "rb") as f:
                f.read(1)
            return [1, p.stat().st_size]
        for dirpath, _, names in os.walk(p, onerror=_raise):
            for name in names:
                count, size = count + 1, size + os.stat(os.path.join(dirpath, name)).st_size
    except OSError as exc:
        return f"unreadable ({exc.strerror or type(exc).__name__})"
    return [count, size]


def _raise(exc: OSError):
    raise exc


def _describe(view: list[int] | str) -> str:
    return f"{view[0]} files, {view[1]} bytes" if isinstance(view, list) else view


def data_roots(runs: list[RunSpec]) -> list[str]:
    """The datasets' roots (and files) of ``runs``, absolute as on the driver."""
    return sorted({str(Path(v).expanduser().resolve()) for r in runs for k, v in r.data.source_args().items()
                   if k in ("root", "path") and v})


def sentinel(runs_root: Path, token: str, node: str) -> Path:
    """Where the probe on ``node`` writes its file (and where the driver looks for it)."""
    return Path(runs_root) / PROBE_DIR / token / f"{node}.json"


def _probe(token: str, runs_root: str, roots: list[str], cwd: str) -> dict:
    """On a node: write the probe file, look at the datasets, hash the code."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    node = _ray().get_runtime_context().get_node_id()
    report: dict[str, Any] = {"node": node, "host": platform.node(), "code": source_hash(),
                              "code_at": str(Path(bench.__file__).parent), "data": {p: data_view(p) for p in roots}}
    try:
        store.write_json(sentinel(Path(runs_root), token, node), {"node": node, "host": platform.node()})
    except OSError as exc:
        report["write_error"] = f"{type(exc).__name__}: {exc}"
    return report


def probe_problems(nodes: list[dict], reports: dict[str, dict | str], runs_root: Path, token: str,
                   roots: list[str], settings: RaySettings, *, wait_s: float = 0.0) -> list[str]:
    """What each node misses, one phrase per node ([] when every node sees what the driver sees).
    ``reports``: each node's probe report, or why its probe did not answer."""
    deadline = time.monotonic() + wait_s
    seen = {}
    while True:     # a file written a moment ago on a network filesystem may take a while to show
        for n in nodes:
            path = sentinel(runs_root, token, n["NodeID"])
            try:
                seen[n["NodeID"]] = store.read_json(path).get("node") == n["NodeID"]
            except (OSError, ValueError):
                seen[n["NodeID"]] = False
        if all(seen.values()) or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    here = {p: data_view(p) for p in roots}
    code_here = source_hash()
    out = []
    for n in nodes:
        node, label = n["NodeID"], node_label(n["NodeID"], nodes)
        report = reports.get(node, "no answer")
        if isinstance(report, str):
            out.append(f"node {label}: its probe task failed ({report})")
            continue
        miss = []
        if report.get("write_error"):
            miss.append(f"cannot write into the runs directory {runs_root} ({report['write_error']})")
        elif not seen[node]:
            miss.append(f"does not share the runs directory (the file it wrote as {sentinel(runs_root, token, node)} "
                        f"is not here)")
        for p in roots:
            if report["data"].get(p) != here[p]:
                miss.append(f"sees {_describe(report['data'].get(p, 'nothing'))} at the dataset root {p} "
                            f"(here: {_describe(here[p])})")
        if report["code"] != code_here:
            fix = "install this commit there or ship it (--ray-code ship)" if settings.code == "installed" else \
                "the code shipped with the job did not reach it (was Ray started in this process without it?)"
            miss.append(f"runs other code ({report['code_at']}, source {report['code'][:12]}; here "
                        f"{Path(bench.__file__).parent}, {code_here[:12]}): {fix}")
        if miss:
            out.append(f"node {label} " + ", ".join(miss))
    return out


def refusal(problems: list[str]) -> BenchError:
    return BenchError("--runner ray: refused before training: " + "; ".join(problems) + " (every node needs the "
                      "runs directory and the datasets on a shared filesystem at the driver's paths, and its code)")


def probe(nodes: list[dict], runs_root: Path, runs: list[RunSpec], settings: RaySettings) -> None:
    """One probe task pinned to each node; a BenchError naming every node that misses something."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    existed, token = runs_root.exists(), uuid.uuid4().hex[:12]
    roots = data_roots(runs)
    task = ray.remote(num_cpus=0, max_retries=0)(_probe)
    refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(token, str(runs_root), roots, os.getcwd()): n["NodeID"] for n in nodes}
    ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
    reports: dict[str, dict | str] = {}
    for ref in ready:
        try:
            reports[refs[ref]] = ray.get(ref)
        except Exception as exc:  # the task could not run there (its runtime env, a dead worker): say why
            reports[refs[ref]] = _first_line(exc)
    for ref in late:
        ray.cancel(ref, force=True)
        reports[refs[ref]] = f"no answer within {PROBE_TIMEOUT_S:g} s"
    try:
        problems = probe_problems(nodes, reports, runs_root, token, roots, settings, wait_s=PROBE_VISIBLE_S)
    finally:
        shutil.rmtree(runs_root / PROBE_DIR / token, ignore_errors=True)
        for d in ([runs_root / PROBE_DIR] + ([] if existed else [runs_root])):
            with contextlib.suppress(OSError):     # only if empty: another sweep may be probing too
                d.rmdir()
    if problems:
        raise refusal(problems)


# --------------------------------------------------------------------------- the tasks

def _train(run: RunSpec, runs_root: str, placement: Placement, cwd: str) -> tuple[Outcome, str]:
    """On a node: one run through the seam, in the driver's working directory (relative data roots
    resolve as there); its lock is waited for, never skipped."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    node = _ray().get_runtime_context().get_node_id()
    return execute(run, Path(runs_root), replace(placement, node=node), wait=True), node


def outcome(run: RunSpec, result: tuple[Outcome, str] | BaseException, runs_root: Path) -> Outcome:
    """A run's Outcome as the driver sees it: the task's when the run is finished on this filesystem,
    failed with the reason otherwise (the task died past its retries, or it said it finished a run whose
    metrics.json is not here)."""
    rel, run_dir = str(run.rel_dir), Path(runs_root) / run.rel_dir
    if isinstance(result, BaseException):
        return failed(run_dir, rel, f"Ray task failed ({type(result).__name__}: {_first_line(result)})")
    o, _ = result
    if o.state != "failed" and not visible(run_dir, VISIBLE_S):
        return failed(run_dir, rel, f"the Ray task said {o.state!r} but {run_dir / store.METRICS} is not on this "
                                    f"filesystem (runs/ must be shared with the nodes)")
    return o


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_ray(todo: list[RunSpec], runs_root: Path, settings: RaySettings = RaySettings()) -> list[Outcome]:
    """Probe the nodes, submit a task per run of ``todo``, wait for them all, return an Outcome per run."""
    check(settings, todo)
    ray = _ray()
    connect(settings)
    runs_root = Path(runs_root).resolve()
    nodes = task_nodes(ray.nodes())
    gpus = ray.cluster_resources().get("GPU", 0)
    node_cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=1)
    planned = [request(r, settings, cluster_gpus=gpus, node_cpus=node_cpus) for r in todo]
    if why := infeasible([opts for opts, _ in planned], nodes):
        raise BenchError(why)
    probe(nodes, runs_root, todo, settings)
    task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(_train)
    refs = {task.options(**opts).remote(run, str(runs_root), where, os.getcwd()): (i, run)
            for i, (run, (opts, where)) in enumerate(zip(todo, planned), 1)}
    asks = sorted({", ".join(f"{k}={v:g}" for k, v in opts.items() if v) for opts, _ in planned})
    say(f"{len(todo)} runs as Ray tasks on {len(nodes)} nodes ({'; '.join(asks)} each; code "
        f"{'shipped' if settings.code == 'ship' else 'installed'}; cluster: "
        f"{ray.cluster_resources().get('CPU', 0):g} CPUs, {gpus:g} GPUs)")
    out = []
    while refs:
        (ref,), _ = ray.wait(list(refs), num_returns=1)
        i, run = refs.pop(ref)
        try:
            result = ray.get(ref)
        except Exception as exc:  # retries exhausted or the task could not run: this run fails, the rest go on
            result = exc
        o = outcome(run, result, runs_root)
        where = f" (node {node_label(result[1], nodes)})" if isinstance(result, tuple) else ""
        say(f"[{i}/{len(todo)}] {run.rel_dir}: {o.message or o.state}{where}")
        out.append(o)
    return out
