"""Metrics that need pretrained networks: FID/KID (Inception), LPIPS, shift-tolerant LPIPS.

Inputs are uint8 (N, 3, H, W) CPU tensors.  Every function returns metric records
(``bench.metrics.records.metric`` / ``unavailable``) carrying their protocol: extractor, weights path
+ sha256 + provenance, resize, library versions, device.  Missing or corrupt weights give an
``unavailable`` record with the reason -- never a crash of the sweep, never a made-up number.

FID/KID follow torch-fidelity exactly (features '2048' of ``inception-v3-compat``, its
TF1-compatible bilinear resize to 299, ``fid_statistics_to_metric``, ``kid_features_to_metric``
with its defaults: cubic polynomial kernel, 100 subsets, rng seed 2020); we only compute the
features ourselves so that the real set's features are cached once per
(dataset key, extractor, weights sha256) under ``$PEGASUS_CACHE/fid_stats/`` -- torch-fidelity's
own cache key ignores the weights file.  ``tests/test_fidelity.py`` checks equality with
``torch_fidelity.calculate_metrics`` on the same sets.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from bench import store
from bench.errors import WeightsError
from bench.metrics.records import metric, unavailable
from bench.paths import cache_root
from bench.precision import fp32
from bench.weights import files as weights
from bench.weights.networks import (
    FEATURE_LAYER,
    INCEPTION_LAYOUT,
    build_inception,
    build_lpips,
    build_st_lpips,
)

RESIZE = "torch-fidelity TF1-compatible bilinear to 299x299"
BATCH = 50
STATS_VERSION = 2   # 2: features computed in channels_last (INCEPTION_LAYOUT); 1 was NCHW
KID_SUBSETS = 100   # torch-fidelity default
KID_SEED = 2020     # torch-fidelity default rng_seed


def _versions(*pkgs: str) -> dict[str, str | None]:
    out = {}
    for p in ("torch", *pkgs):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def _check_images(x: torch.Tensor, name: str) -> None:
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: expected uint8 (N, 3, H, W), got {x.dtype} {tuple(x.shape)}")


# --------------------------------------------------------------------------- FID / KID
def cache_dir() -> Path:
    root = cache_root()
    return root / "fid_stats"


@fp32()
def _features(extractor, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, 2048) float32 CPU features; uint8 in, the extractor resizes and normalises."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), BATCH):
            out.append(extractor(images[i:i + BATCH].to(device))[0].cpu())
    return torch.cat(out)


def _ref_path(real_key: dict, src: dict[str, Any]) -> tuple[Path, dict]:
    key = {"dataset": real_key, "extractor": src["extractor"], "weights_sha256": src["sha256"],
           "feature": FEATURE_LAYER, "version": STATS_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return cache_dir() / f"{digest[:24]}.pt", key


def reference_features(real_uint8: torch.Tensor, real_key: dict, src: dict[str, Any],
                       device: torch.device, extractor=None) -> tuple[torch.Tensor, Path]:
    """Real-set Inception features, cached atomically; the key holds the weights sha256."""
    path, key = _ref_path(real_key, src)
    if path.is_file():
        with contextlib.suppress(Exception):  # unreadable/stale cache -> recompute
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob["key"] == json.loads(json.dumps(key, default=str)) and len(blob["features"]) == len(real_uint8):
                return blob["features"], path
    extractor = extractor if extractor is not None else build_inception(src, device)
    feats = _features(extractor, real_uint8, device)
    store.torch_save(path, {"key": json.loads(json.dumps(key, default=str)), "features": feats})
    return feats, path


def fid_from_features(f1: torch.Tensor, f2: torch.Tensor) -> float:
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    s1, s2 = fid_features_to_statistics(f1), fid_features_to_statistics(f2)
    return float(fid_statistics_to_metric(s1, s2, False)["frechet_inception_distance"])


def kid_from_features(f_fake: torch.Tensor, f_real: torch.Tensor, subset_size: int) -> tuple[float, float]:
    from torch_fidelity.metric_kid import kid_features_to_metric
    m = kid_features_to_metric(f_fake, f_real, kid_subset_size=subset_size, kid_subsets=KID_SUBSETS,
                               rng_seed=KID_SEED, verbose=False)
    return float(m["kernel_inception_distance_mean"]), float(m["kernel_inception_distance_std"])


def fid_kid(fake_uint8: torch.Tensor, real_uint8: torch.Tensor, *, real_key: dict,
            device: torch.device | str = "cpu", kid_subset_size: int | None = None,
            weights_dir: str | os.PathLike | None = None) -> tuple[dict, dict]:
    """(FID record, KID record) of ``fake`` against ``real``.

    ``real_key`` identifies the real set for the cache, e.g. ``{dataset, split, resolution,
    n}``; its ``split`` goes into the records.  KID subset size defaults to min(1000, n).
    Inception source: :func:`bench.weights.files.fid_source` (torch-fidelity original, else
    fid-helper); neither -> two ``unavailable`` records.
    """
    _check_images(fake_uint8, "fake")
    _check_images(real_uint8, "real")
    device = torch.device(device)
    split = str(real_key.get("split", "?"))
    n = min(len(fake_uint8), len(real_uint8))
    try:
        src = weights.fid_source(weights_dir)
    except WeightsError as e:
        return unavailable(str(e), split=split), unavailable(str(e), split=split)
    protocol = {"extractor": src["extractor"], "feature": FEATURE_LAYER, "weights_path": src["weights_path"],
                "weights_sha256": src["sha256"], "provenance": src["provenance"],
                "source_sha256": src["source_sha256"], "resize": RESIZE,
                "memory_format": INCEPTION_LAYOUT, "n_fake": len(fake_uint8),
                "n_real": len(real_uint8), "reference": real_key,
                "versions": _versions("torch-fidelity"), "device": str(device)}
    if n < 2:
        why = f"FID/KID need at least 2 images per set (got {len(fake_uint8)} fake, {len(real_uint8)} real)"
        return unavailable(why, split=split, **protocol), unavailable(why, split=split, **protocol)
    try:
        extractor = build_inception(src, device)
    except WeightsError as e:
        return unavailable(str(e), split=split, **protocol), unavailable(str(e), split=split, **protocol)
    except Exception as e:  # a file that passed its checksum but does not load (wrong format)
        why = f"cannot load Inception weights {src['weights_path']}: {type(e).__name__}: {e}".splitlines()[0]
        return unavailable(why, split=split, **protocol), unavailable(why, split=split, **protocol)
    f_real, ref = reference_features(real_uint8, real_key, src, device, extractor)
    f_fake = _features(extractor, fake_uint8, device)
    protocol["reference_cache"] = str(ref)
    fid = metric(fid_from_features(f_fake, f_real), n=len(fake_uint8), split=split, **protocol)
    size = min(kid_subset_size or 1000, n)
    kid_mean, kid_std = kid_from_features(f_fake, f_real, size)
    kid = metric(kid_mean, n=len(fake_uint8), split=split, kid_std=kid_std, kid_subset_size=size,
                 kid_subsets=KID_SUBSETS, kernel="polynomial degree 3, gamma 1/d, coef0 1", **protocol)
    return fid, kid


# --------------------------------------------------------------------------- LPIPS
def _to_pm1(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.to(device, torch.float32) / 127.5 - 1.0   # uint8 -> [-1, 1]


@fp32()
def _per_image_mean(model, x: torch.Tensor, r: torch.Tensor, device: torch.device) -> float:
    vals = []
    with torch.no_grad():
        for i in range(0, len(x), BATCH):
            vals.append(model(_to_pm1(x[i:i + BATCH], device), _to_pm1(r[i:i + BATCH], device)).flatten().cpu())
    return float(torch.cat(vals).double().mean())


def lpips_metric(x_uint8: torch.Tensor, r_uint8: torch.Tensor, *, net: str = "alex",
                 device: torch.device | str = "cpu", split: str = "test",
                 weights_dir: str | os.PathLike | None = None) -> dict:
    """Mean per-image LPIPS(x, r) (lpips package, v0.1 heads), inputs scaled to [-1, 1]."""
    _check_images(x_uint8, "x")
    _check_images(r_uint8, "r")
    device = torch.device(device)
    protocol: dict[str, Any] = {"net": net, "versions": _versions("lpips", "torchvision"), "device": str(device)}
    try:
        model, trunk_path, heads_path = build_lpips(net, weights_dir)
    except WeightsError as e:
        return unavailable(str(e), split=split, **protocol)
    protocol.update(trunk_path=str(trunk_path), trunk_sha256=weights.sha256_file(trunk_path),
                    heads_path=str(heads_path), heads_sha256=weights.sha256_file(heads_path),
                    provenance="lpips v0.1 heads + torchvision trunk", input_range="[-1, 1]")
    value = _per_image_mean(model.to(device), x_uint8, r_uint8, device)
    return metric(value, n=len(x_uint8), split=split, **protocol)


# --------------------------------------------------------------------------- ST-LPIPS
def st_lpips_metric(x_uint8: torch.Tensor, r_uint8: torch.Tensor, *, net: str = "alex",
                    device: torch.device | str = "cpu", split: str = "test") -> dict:
    """Mean per-image shift-tolerant LPIPS (stlpips-pytorch), inputs in [-1, 1].
    Reported as ``st_lpips`` -- a different metric from ``lpips``."""
    _check_images(x_uint8, "x")
    _check_images(r_uint8, "r")
    device = torch.device(device)
    protocol: dict[str, Any] = {"metric": "st_lpips", "net": net, "variant": "shift_tolerant",
                                "versions": _versions("stlpips-pytorch"), "device": str(device)}
    try:
        model, path = build_st_lpips(net)
    except WeightsError as e:
        return unavailable(str(e), split=split, **protocol)
    protocol.update(weights_path=str(path), weights_sha256=weights.sha256_file(path),
                    provenance="stlpips-pytorch bundled weights", input_range="[-1, 1]")
    value = _per_image_mean(model.to(device), x_uint8, r_uint8, device)
    return metric(value, n=len(x_uint8), split=split, **protocol)
