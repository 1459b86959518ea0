"""Run directories, atomic writes and locks.

    runs/<ablation>/<arm>/<dataset>/s<seed>-<hash8>/
        config.yaml  env.json  log.jsonl  ckpt.pt  tb/  recon.png  samples.png  metrics.json  .lock

``metrics.json`` is written last, atomically; its presence means the run is finished (done or
diverged) and a rerun skips it.  ``error.json`` records a crash; such runs are retried.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

METRICS = "metrics.json"
ERROR = "error.json"
CKPT = "ckpt.pt"
LOG = "log.jsonl"
LOCK = ".lock"
TENSORBOARD = "tb"
SNAPSHOTS = "snapshots"     # weights kept at train.snapshots steps, scored after training


def snapshot_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"step-{step:08d}.pt"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    _atomic(Path(path), lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_yaml(path: Path, obj: Any) -> None:
    write_text(path, yaml.safe_dump(json.loads(json.dumps(obj, default=_jsonable)), sort_keys=False))


def torch_save(path: Path, obj: Any) -> None:
    _atomic(Path(path), lambda f: torch.save(obj, f))


def _jsonable(o: Any) -> Any:
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / METRICS).exists()


@contextlib.contextmanager
def run_lock(run_dir: Path, *, wait: bool = False) -> Iterator[bool]:
    """Exclusive lock on a run dir; yields False if another process holds it (``wait=True`` blocks
    until it is free instead).  The holder's pid, host and start time are written into the lock
    file for ``bench status``.  An OS lock (flock) dies with its process, so the lock of a killed
    process is free for the next one: nothing stale to clean up."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK, "a+") as f:          # "a+": never truncate a file another process holds
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"pid": os.getpid(), "host": platform.node(),
                                "since": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
            f.flush()
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def lock_holder(run_dir: Path) -> dict[str, Any] | None:
    """Who holds the run's lock ({"pid", "host", "since"}), or None when nobody does (also when the
    lock file was left behind by a process that died).  Never creates anything."""
    path = Path(run_dir) / LOCK
    if not path.is_file():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(f.read() or "{}") or {"pid": None}
            except ValueError:
                return {"pid": None}
        fcntl.flock(f, fcntl.LOCK_UN)
        return None


ENV_COMMIT = "PEGASUS_GIT_COMMIT"   # set by a runner that ships the code to its workers (no checkout there)


def git_commit() -> str:
    """HEAD of the project checkout, with '+dirty' when tracked files outside results/ changed;
    'unknown' outside git.  Code shipped to a cluster's workers has no checkout: the runner that
    shipped it passes the driver's answer in ``$PEGASUS_GIT_COMMIT``."""
    if shipped := os.environ.get(ENV_COMMIT):
        return shipped
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return "unknown"
        # results/ holds generated tables (a sweep rewrites them itself): not a change to the code
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return head.stdout.strip()[:12] + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def package_version(pkg: str) -> str | None:
    """Installed version of a distribution, or None."""
    from importlib import metadata
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    versions = {pkg: package_version(pkg) for pkg in
                ("torch", "torchvision", "numpy", "pytorch-msssim", "torch-fidelity", "lpips", "pydantic")}
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "device": str(device),
        "device_name": device_name(device),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
    }
