"""Pegasus (claim C11): walk a VAE's latent space between held-out images of two classes.

    python -m bench interpolate RUN_DIR --from horse --to bird [--pairs 16 --steps 9 --seed 0]
    pegasus_metrics(model, run, device, "horse", "bird") -> {key: record}   # for a scoring pass

Writes ``RUN_DIR/pegasus/<from>-<to>/``: sheet_lerp.png, sheet_slerp.png (rows = pairs; columns =
the real ``from`` image, the path from its reconstruction (t = 0) to the other's (t = 1), the real
``to`` image), crossfade.png (the same pairs as a pixel cross-fade), gallery.png (the most hybrid
frames, ranked), prior_paths.png (slerp between z ~ N(0, I) pairs) and metrics.json.

This module holds the protocol and the orchestration; the path maths is ``bench.pegasus.paths``, the pair
selection ``bench.pegasus.pairs``, the files and the printed summary ``bench.pegasus.outputs``.

Protocol (version 2; version 1, until 2026-12-03, judged with a yardstick that favoured one side: see
results/pegasus/README.md)
--------
* **Pairs**: P images of each class (default 100) from the dataset's held-out split with *every* class
  (``bench.data.sources.load(spec, "test")``, class subset removed), chosen by a generator seeded with the
  pair seed (default 0, not the run's seed), so every run of a dataset meets the same pairs; a class with
  fewer held-out images than P repeats them (each image once before any twice).  Their indices and
  sha256 are stored.
* **Paths**: endpoints are encoded to mu; K frames at t = 0, 1/(K-1), ..., 1 are decoded along
  ``lerp`` and ``slerp`` (t = 0 and 1 are the endpoints' reconstructions).  The baseline
  ``crossfade`` is the pixel cross-fade (1 - t) x_from + t x_to of the real images (the "double
  exposure").  The midpoint t = 0.5 is always evaluated, whatever K.
* **Class probe** (``bench.pegasus.probe``: linear on TF-Inception features, fitted on the train split
  without the KID reference; its held-out accuracy and fingerprint are in every record), at t = 0.5:
  ``hybrid`` = max(0, 2 min(P(from), P(to)) - (1 - P(from) - P(to))): the mass split evenly between the
  two classes minus the mass that leaked to every other class, so a blurry frame the probe spreads over
  all classes scores 0, not "ambiguous"; 1 = all mass split evenly between the two classes.
  ``joint_mass`` = P(from) + P(to).  ``ends_correct`` = the share of the path's endpoints (the
  reconstructions for a latent path, the real images for the cross-fade) the probe assigns to their own
  class: whether the model's horse is still a horse.
* **Smoothness**: perceptual path length (Karras et al. 2019) E_t[d(x(t), x(t + eps)) / eps^2],
  eps = 1e-4, ``PPL_SAMPLES`` times per pair stratified in [0, 1 - eps] (seeded), on float images
  (a 1e-4 step would vanish in uint8); d = LPIPS (AlexNet) when its weights are present, else
  ST-LPIPS (AlexNet, shift-tolerant); per-pair means, no percentile filtering.  ``max_step`` =
  the largest distance between consecutive frames / their mean (1 = even steps; large = a jump).
* **Realism**: ``sharpness`` = Laplacian variance of the midpoint / the mean of the two *real*
  endpoints' (one scale for every path: a latent path is not measured against its own blurry
  reconstructions); ``sharpness_abs`` = the midpoint's Laplacian variance itself.  KID of the P
  midpoints against a reference of real images of the two classes that holds *no* pair endpoint: the
  held-out images left over (class-stratified, at most ``KID_REAL_MAX``) when each class has at least
  ``REF_MIN_PER_CLASS`` of them, else half of each class's train-split images (seeded; images the model
  trained on, which the probe is then fitted without); ``unavailable`` with the reason when no
  Inception weights are present.
* **Statistics**: every per-pair quantity is the mean over pairs with a 95% t-interval
  (``bench.stats``); a latent path is compared with the cross-fade pair by pair (the interval of
  the paired differences, ``*_minus_crossfade``).
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import torch
import yaml

from bench import stats, store
from bench.config.schema import RunSpec
from bench.data import batches as batches_mod
from bench.data import sources as data_mod
from bench.data import subsets
from bench.data.subsets import kid_subset_size
from bench.errors import BenchError, ConfigError, WeightsError
from bench.metrics import fidelity, quality
from bench.metrics.records import metric, unavailable
from bench.pegasus import probe as probe_mod
from bench.pegasus.pairs import PAIR_SEED, Pairs, choose_pairs, class_index
from bench.pegasus.paths import (
    BATCH,
    EPS,
    ImageDistance,
    ImagePath,
    laplacian_ratio,
    latent_path,
    leak_proof_hybrid,
    max_step_ratio,
    path_frames,
    pixel_path,
    ppl_batched,
    ppl_times,
    step_distances,
)
from bench.train.runtime import load_run_model
from bench.weights import files as weights
from bench.weights import networks as pretrained

PROTOCOL_VERSION = 2
DEFAULT_PAIRS = 100
DEFAULT_STEPS = 9
PPL_SAMPLES = 8          # t samples per pair
PRIOR_PAIRS = 8
GALLERY_SIZE = 16
KID_REAL_MAX = 1000      # real images of the two classes used as KID's reference (stratified)
REF_MIN_PER_CLASS = 100  # held-out images per class left after the endpoints, below which the reference is train
PPL_SEED_OFFSET, PRIOR_SEED_OFFSET, REF_SEED_OFFSET = 1, 2, 3
OUT_DIR = "pegasus"
CONFIG, CKPT_FILE = "config.yaml", store.CKPT

LATENT_KINDS = ("lerp", "slerp")
BASELINE = "crossfade"
KINDS = LATENT_KINDS + (BASELINE,)

# per-pair quantities: name -> (summary-table title, definition stored in every record)
QUANTITIES: dict[str, tuple[str, str]] = {
    "hybrid": ("hybrid t=.5", "max(0, 2 min(P(from), P(to)) - (1 - P(from) - P(to))) at t = 0.5 (class probe): "
               "the evenly split mass minus the mass leaked to other classes"),
    "joint_mass": ("P(from)+P(to) t=.5", "P(from) + P(to) at t = 0.5 (class probe)"),
    "ends_correct": ("ends read as own class", "share of the path's two endpoints (reconstructions; real images "
                     "for the cross-fade) the probe assigns to their own class"),
    "ppl": ("PPL", "perceptual path length, E_t[d(x(t), x(t + eps)) / eps^2] (Karras et al. 2019)"),
    "max_step": ("max step / mean", "largest distance between consecutive frames / their mean"),
    "sharpness": ("sharpness mid/real ends", "Laplacian variance of the midpoint / mean of the real endpoints'"),
    "sharpness_abs": ("sharpness mid", "Laplacian variance of the midpoint (grey, [0, 1] images)"),
}
COMPARED = ("hybrid", "joint_mass", "ppl", "max_step", "sharpness", "sharpness_abs")
USES_DISTANCE = ("ppl", "max_step")


# Metric keys carry the protocol version: numbers measured with version 1 (``pegasus_hybrid_lerp`` ...) stay
# readable in committed results under their own names, and no rule written for version 2 can read them.
PREFIX = f"pegasus_v{PROTOCOL_VERSION}"


def key(quantity: str, kind: str) -> str:
    return f"{PREFIX}_{quantity}_{kind}"


def diff_key(quantity: str, kind: str) -> str:
    return f"{PREFIX}_{quantity}_{kind}_minus_{BASELINE}"


def kid_key(kind: str) -> str:
    return f"{PREFIX}_kid_mid_{kind}"


KID_RECON = f"{PREFIX}_kid_recon"
PPL_PRIOR, MAX_STEP_PRIOR = f"{PREFIX}_ppl_prior", f"{PREFIX}_max_step_prior"


# --------------------------------------------------------------------------- a finished run

def run_from_dir(run_dir: Path) -> RunSpec:
    """The RunSpec a run directory was trained with (its config.yaml, defaults filled for keys added since)."""
    path = Path(run_dir) / CONFIG
    if not Path(run_dir).is_dir():
        raise BenchError(f"{run_dir}: no such run directory")
    if not path.is_file():
        raise BenchError(f"{run_dir}: not a run directory (no {CONFIG})")
    try:
        return RunSpec.from_resolved(yaml.safe_load(path.read_text()))   # keys added since: their defaults
    except (yaml.YAMLError, KeyError, TypeError, AttributeError, pydantic.ValidationError, ConfigError) as exc:
        raise BenchError(f"{path}: unreadable run config ({type(exc).__name__}: {exc})".splitlines()[0]) from None


def load_finished(run_dir: Path, device: torch.device) -> tuple[RunSpec, torch.nn.Module]:
    """(run, model in eval mode) of a finished, non-diverged run; a one-line BenchError otherwise."""
    run_dir = Path(run_dir)
    run = run_from_dir(run_dir)
    if not store.is_finished(run_dir):
        raise BenchError(f"{run_dir}: run not finished (no {store.METRICS}); finish it with "
                         "`python -m bench run <ablation.yaml>` first")
    status = store.read_json(run_dir / store.METRICS).get("status")
    if status != "done":
        raise BenchError(f"{run_dir}: run is {status!r}, not 'done'; its weights cannot be interpolated")
    if not (run_dir / CKPT_FILE).is_file():
        raise BenchError(f"{run_dir}: finished run has no {CKPT_FILE} (deleted?); rerun it to interpolate")
    ck = torch.load(run_dir / CKPT_FILE, map_location="cpu", weights_only=False)
    return run, load_run_model(run, ck, device)


# --------------------------------------------------------------------------- perceptual distance

@dataclass(frozen=True)
class Distance:
    fn: ImageDistance
    name: str
    info: dict[str, Any]


def perceptual_distance(device: torch.device) -> Distance:
    """LPIPS (AlexNet) when its weights are present, else ST-LPIPS (AlexNet); WeightsError if neither."""
    try:
        net, trunk, heads = pretrained.build_lpips("alex")
        name = "lpips (alex)"
        info: dict[str, Any] = {"trunk_sha256": weights.sha256_file(trunk), "heads_sha256": weights.sha256_file(heads)}
    except WeightsError as exc:
        try:
            net, path = pretrained.build_st_lpips("alex")
        except WeightsError as st_exc:
            raise WeightsError(f"no perceptual distance: LPIPS: {exc}; ST-LPIPS: {st_exc}") from None
        name = "st_lpips (alex, shift-tolerant)"
        info = {"weights_sha256": weights.sha256_file(path), "lpips_unavailable": str(exc)}
    net = net.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = [net(a[i:i + BATCH].to(device) * 2 - 1, b[i:i + BATCH].to(device) * 2 - 1).flatten()
               for i in range(0, len(a), BATCH)]
        return torch.cat(out)

    return Distance(fn, name, {"distance": name, "input_range": "[-1, 1], float (not quantised)", **info})


# --------------------------------------------------------------------------- the evaluation

@dataclass
class Walk:
    """One path kind over all pairs."""
    frames: torch.Tensor            # (P, K, 3, H, W) float in [0, 1], CPU
    mid: torch.Tensor               # (P, 3, H, W) t = 0.5
    p_mid: torch.Tensor | None      # (P, n_classes) class probabilities at t = 0.5; None without a probe
    per_pair: dict[str, torch.Tensor]   # quantity -> (P,) float64 (NaN = not defined for that pair)


@dataclass(frozen=True)
class Reference:
    """KID's real side: images of the two classes that hold no pair endpoint."""
    images: torch.Tensor            # (N, 3, H, W) uint8
    protocol: dict[str, Any]
    train_exclude: torch.Tensor | None   # train-split indices the probe must not be fitted on


@dataclass
class Evaluation:
    records: dict[str, dict[str, Any]]
    walks: dict[str, Walk]
    real_from: torch.Tensor         # (P, 3, H, W) float
    real_to: torch.Tensor
    prior: torch.Tensor             # (n, K, 3, H, W)
    gallery: list[dict[str, Any]]
    protocol: dict[str, Any]
    ts: torch.Tensor


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"pegasus: {msg}", file=sys.stderr, flush=True)


def rounded_or_none(x: float) -> float | None:
    x = float(x)
    return float(f"{x:.6g}") if math.isfinite(x) else None          # 6 significant digits


def _summary(values: torch.Tensor, proto: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Mean over pairs with its 95% t-interval; NaN entries (undefined for a pair) left out."""
    v = [float(x) for x in values if math.isfinite(float(x))]
    per_pair = [rounded_or_none(x) for x in values]
    if not v:
        return unavailable("undefined for every pair", **proto, per_pair=per_pair, **extra)
    s = stats.summarise(v)
    return metric(s.mean, n=s.n, **proto, lo=rounded_or_none(s.lo), hi=rounded_or_none(s.hi), n_pairs=len(values),
                  per_pair=per_pair, ci="95% t-interval over pairs", **extra)


def _held_out_name(dspec: data_mod.DataSpec) -> str:
    return dspec.test_split if not dspec.holdout else f"{dspec.train_split} holdout {dspec.holdout:g}"


def held_out(dspec: data_mod.DataSpec, from_cls: str, to_cls: str) -> tuple[data_mod.ImageSet, int, int]:
    """(held-out split with every class, index of ``from``, index of ``to``); one-line errors otherwise."""
    held = data_mod.load(probe_mod.all_classes(dspec), "test")
    if not held.classes:
        raise BenchError(f"{held.name}: no class labels, so there is nothing to interpolate between")
    i_from, i_to = class_index(held.classes, from_cls, "--from"), class_index(held.classes, to_cls, "--to")
    for name, i in ((from_cls, i_from), (to_cls, i_to)):
        if not bool((held.labels == i).any()):
            raise BenchError(f"{held.name}: no held-out images of class {name!r}")
    return held, i_from, i_to


def kid_reference(dspec: data_mod.DataSpec, held: data_mod.ImageSet, i_from: int, i_to: int,
                  chosen: Pairs) -> Reference:
    """Real images of both classes, none of them a pair endpoint (see the module docstring)."""
    free = torch.ones(len(held.labels), dtype=torch.bool)
    free[torch.cat([chosen.from_idx, chosen.to_idx])] = False
    pools = [(free & (held.labels == c)).nonzero().flatten() for c in (i_from, i_to)]
    if min(len(p) for p in pools) >= REF_MIN_PER_CLASS:
        members = torch.cat(pools)
        sub = subsets.stratified(held.labels[members], KID_REAL_MAX)
        idx = members[sub.indices]
        return Reference(held.images[idx], {
            "reference_split": f"{_held_out_name(dspec)} minus every pair endpoint", "n_real": len(idx),
            "real_selection": sub.protocol()["selection"], "real_index_sha256": subsets.index_hash(idx)}, None)
    train = data_mod.load(probe_mod.all_classes(dspec), "train")
    if train.classes != held.classes:
        raise BenchError(f"{train.name}: train classes {train.classes} differ from the held-out split's {held.classes}")
    pools = [(train.labels == c).nonzero().flatten() for c in (i_from, i_to)]
    per = min(KID_REAL_MAX // 2, *(len(p) // 2 for p in pools))
    g = torch.Generator().manual_seed(PAIR_SEED + REF_SEED_OFFSET)
    idx = torch.cat([p[torch.randperm(len(p), generator=g)[:per]] for p in pools]).sort().values
    left = [len(p) for p in pools]
    return Reference(train.images[idx], {
        "reference_split": (f"{dspec.train_split} (the held-out split keeps fewer than {REF_MIN_PER_CLASS} images "
                            f"per class beside the endpoints): images the model trained on, the probe fitted "
                            f"without them"),
        "n_real": len(idx), "real_selection": f"{per} per class of {left}, seeded (seed {PAIR_SEED + REF_SEED_OFFSET})",
        "real_index_sha256": subsets.index_hash(idx)}, idx)


def evaluate(model: torch.nn.Module, run: RunSpec, device: torch.device, from_cls: str, to_cls: str, *,
             pairs: int = DEFAULT_PAIRS, steps: int = DEFAULT_STEPS, seed: int = PAIR_SEED, kid: bool = True,
             progress: bool = False, probe: probe_mod.Probe | None = None,
             distance: Distance | None = None) -> Evaluation:
    """Everything ``interpolate`` writes and ``pegasus_metrics`` returns (see the module docstring)."""
    if pairs < 1:
        raise BenchError(f"--pairs must be >= 1 (got {pairs})")
    if steps < 3:
        raise BenchError(f"--steps must be >= 3 so the path has an interior (got {steps})")
    if from_cls == to_cls:
        raise BenchError(f"--from and --to name the same class {from_cls!r}")
    t0 = time.perf_counter()
    dspec = run.data
    held, i_from, i_to = held_out(dspec, from_cls, to_cls)
    chosen = choose_pairs(held.labels, i_from, i_to, pairs, seed)
    ref = kid_reference(dspec, held, i_from, i_to, chosen)
    _say(progress, f"{from_cls} -> {to_cls}: {pairs} pairs x {steps} steps; KID reference {ref.protocol['n_real']} "
                   f"images ({ref.protocol['reference_split']})")
    probe, probe_reason, distance, dist_reason = _networks(dspec, device, held, ref, probe, distance, progress)

    split = _held_out_name(dspec)
    proto: dict[str, Any] = {"pegasus_protocol": PROTOCOL_VERSION, "split": split, "from": from_cls, "to": to_cls,
                             "steps": steps, **chosen.protocol(),
                             **(probe.protocol() if probe is not None else {"probe": None}),
                             "resolution": dspec.resolution, "device": str(device), "seed": run.seed}
    dist_proto = ({"distance": distance.name, "eps": EPS, "ppl_samples": PPL_SAMPLES,
                   "ppl_t": f"stratified U(0, 1 - eps), seed pair_seed + {PPL_SEED_OFFSET}"}
                  if distance else {"distance": None})
    was_training = model.training
    model.eval()
    try:
        walks, feats, prior, prior_rec, real_a, real_b, ts = _walk_all(
            model, held, chosen, i_from, i_to, steps, seed, probe, distance, device, progress)
    finally:
        model.train(was_training)

    dist = (distance, dist_proto, dist_reason)
    records = {**_path_records(walks, proto, dist, probe_reason),
               **_prior_records(prior_rec, len(prior), seed, proto, dist)}

    _say(progress, "KID" if kid else "KID skipped")
    records.update(_kid_records(walks, feats, probe, ref, run, dspec, device, proto, kid))
    gallery = rank_gallery(walks, chosen, i_from, i_to, GALLERY_SIZE)
    protocol = {**proto, "pair_indices": chosen.as_list(), "t": [rounded_or_none(t) for t in ts],
                "probe": ({"accuracy": probe.accuracy, "fingerprint": probe.fingerprint, "classes": probe.classes,
                           "kind": proto["probe"], **probe.info} if probe is not None
                          else {"unavailable": probe_reason}),
                "reference": ref.protocol, "distance": distance.info if distance else
                {"distance": None, "unavailable": dist_reason}, "eps": EPS, "ppl_samples": PPL_SAMPLES,
                "prior_pairs": len(prior), "prior_seed": seed + PRIOR_SEED_OFFSET,
                "baseline": "pixel cross-fade of the real endpoint images", "held_out": held.description,
                "wall_s": round(time.perf_counter() - t0, 2)}
    return Evaluation(records, walks, real_a, real_b, prior, gallery, protocol, ts)


def _networks(dspec: data_mod.DataSpec, device: torch.device, held: data_mod.ImageSet, ref: Reference,
              probe: probe_mod.Probe | None, distance: Distance | None, progress: bool):
    """(probe, why it is missing, perceptual distance, why it is missing): the ones given, else built here."""
    probe_reason = dist_reason = None
    if probe is None:
        try:
            probe = probe_mod.get_probe(dspec, device, exclude=ref.train_exclude, progress=progress)
        except WeightsError as exc:
            probe_reason = f"no class probe: {exc}"
    if probe is not None and probe.classes != held.classes:
        raise BenchError(f"class probe classes {probe.classes} differ from the held-out split's {held.classes}")
    if distance is None:
        try:
            distance = perceptual_distance(device)
        except WeightsError as exc:
            dist_reason = str(exc)
    return probe, probe_reason, distance, dist_reason


_Dist = tuple[Distance | None, dict[str, Any], str | None]   # (network, its protocol, why it is missing)
USES_PROBE = ("hybrid", "joint_mass", "ends_correct")


def _path_records(walks: dict[str, Walk], proto: dict[str, Any], dist: _Dist,
                  probe_reason: str | None) -> dict[str, dict[str, Any]]:
    """One record per (quantity, kind), and the paired latent-minus-crossfade differences."""
    distance, dist_proto, dist_reason = dist

    def missing(q: str) -> str | None:
        if q in USES_DISTANCE and distance is None:
            return dist_reason
        return probe_reason if q in USES_PROBE else None

    records: dict[str, dict[str, Any]] = {}
    for kind, w in walks.items():
        for q, (_, definition) in QUANTITIES.items():
            extra = {"kind": kind, "definition": definition, **(dist_proto if q in USES_DISTANCE else {})}
            why = missing(q)
            records[key(q, kind)] = (unavailable(why, **proto, **extra) if why
                                     else _summary(w.per_pair[q], proto, **extra))
    for kind in LATENT_KINDS:
        for q in COMPARED:
            extra = {"kind": f"{kind} - {BASELINE}", "definition": f"paired difference of {q}: {QUANTITIES[q][1]}",
                     **(dist_proto if q in USES_DISTANCE else {})}
            why = missing(q)
            records[diff_key(q, kind)] = (unavailable(why, **proto, **extra) if why else _summary(
                walks[kind].per_pair[q] - walks[BASELINE].per_pair[q], proto, **extra))
    return records


def _prior_records(prior_rec: dict[str, torch.Tensor], n: int, seed: int, proto: dict[str, Any],
                   dist: _Dist) -> dict[str, dict[str, Any]]:
    distance, dist_proto, dist_reason = dist
    prior_proto = {**proto, "split": "prior z ~ N(0, I)", "prior_pairs": n,
                   "prior_seed": seed + PRIOR_SEED_OFFSET, "kind": "slerp"}
    return {k: (_summary(prior_rec[q], prior_proto, definition=QUANTITIES[q][1], **dist_proto)
                if distance is not None else unavailable(dist_reason, **prior_proto, **dist_proto))
            for k, q in ((PPL_PRIOR, "ppl"), (MAX_STEP_PRIOR, "max_step"))}


@torch.no_grad()
def _walk_all(model, held: data_mod.ImageSet, chosen: Pairs, i_from: int, i_to: int, steps: int, seed: int,
              probe: probe_mod.Probe | None, distance: Distance | None, device: torch.device, progress: bool):
    """Decode every path, read the midpoints and endpoints through the probe, measure every per-pair quantity.
    Returns the walks, the probe's features of what it read (reused by KID when they are Inception's), ..."""
    n = len(chosen)
    xa = batches_mod.to_float(held.images[chosen.from_idx], device)       # (P, 3, H, W) in [0, 1]
    xb = batches_mod.to_float(held.images[chosen.to_idx], device)
    za, zb = model.encode(xa)[0], model.encode(xb)[0]                  # posterior means
    ts = torch.linspace(0, 1, steps, device=device)
    g = torch.Generator().manual_seed(seed + PPL_SEED_OFFSET)
    ppl_ts = ppl_times(n, PPL_SAMPLES, g).to(device)
    makers: dict[str, Callable[[torch.Tensor, torch.Tensor], ImagePath]] = {
        kind: (lambda a, b, kind=kind: latent_path(model.decode, a, b, kind)) for kind in LATENT_KINDS}
    makers[BASELINE] = pixel_path
    ends = {**dict.fromkeys(LATENT_KINDS, (za, zb)), BASELINE: (xa, xb)}
    real_a, real_b = xa.cpu(), xb.cpu()
    nan = torch.full((n,), float("nan"), dtype=torch.float64)
    feats: dict[str, torch.Tensor] = {}       # "mid_<kind>", "ends_recon", "ends_real" -> (N, D)

    def features(name: str, x: torch.Tensor) -> torch.Tensor:
        if name not in feats:
            feats[name] = probe.features(quality.to_uint8(x))
        return feats[name]

    walks = {}
    for kind, make in makers.items():
        _say(progress, f"{kind} paths")
        path = make(*ends[kind])
        frames = path_frames(path, ts, n)                                   # (P, K, 3, H, W)
        mid = path(torch.full((n,), 0.5, device=device)).cpu()
        per_pair = {"sharpness": laplacian_ratio(mid, real_a, real_b),
                    "sharpness_abs": quality.laplacian_variance(mid).double()}
        pm = None
        if probe is not None:
            pm = probe.probs_of(features(f"mid_{kind}", mid)).double()
            which = "ends_real" if kind == BASELINE else "ends_recon"
            pe = probe.probs_of(features(which, torch.cat([frames[:, 0], frames[:, -1]]))).double()
            per_pair.update(hybrid=leak_proof_hybrid(pm[:, i_from], pm[:, i_to]),
                            joint_mass=pm[:, i_from] + pm[:, i_to],
                            ends_correct=((pe[:n].argmax(1) == i_from).double()
                                          + (pe[n:].argmax(1) == i_to).double()) / 2)
        else:
            per_pair.update(dict.fromkeys(USES_PROBE, nan))
        if distance is not None:
            per_pair["ppl"] = ppl_batched(make, *ends[kind], ppl_ts, distance.fn)
            per_pair["max_step"] = max_step_ratio(step_distances(frames, distance.fn, device))
        walks[kind] = Walk(frames, mid, pm, per_pair)

    _say(progress, "prior paths")
    gp = torch.Generator().manual_seed(seed + PRIOR_SEED_OFFSET)
    z0 = torch.randn(PRIOR_PAIRS, model.latent_dim, generator=gp).to(device)
    z1 = torch.randn(PRIOR_PAIRS, model.latent_dim, generator=gp).to(device)
    prior_path = latent_path(model.decode, z0, z1, "slerp")
    prior = path_frames(prior_path, ts, PRIOR_PAIRS)
    prior_rec: dict[str, torch.Tensor] = {}
    if distance is not None:
        prior_rec["ppl"] = ppl_batched(makers["slerp"], z0, z1, ppl_times(PRIOR_PAIRS, PPL_SAMPLES, g).to(device),
                                       distance.fn)
        prior_rec["max_step"] = max_step_ratio(step_distances(prior, distance.fn, device))
    return walks, feats, prior, prior_rec, real_a, real_b, ts.cpu()


def _kid_records(walks: dict[str, Walk], feats: dict[str, torch.Tensor], probe: probe_mod.Probe | None,
                 ref: Reference, run: RunSpec, dspec: data_mod.DataSpec, device: torch.device,
                 proto: dict[str, Any], enabled: bool) -> dict[str, dict[str, Any]]:
    """KID of each kind's midpoints (and of the endpoint reconstructions) vs the disjoint reference."""
    sets = {kid_key(kind): (f"mid_{kind}", w.mid) for kind, w in walks.items()}
    recon = torch.cat([walks["lerp"].frames[:, 0], walks["lerp"].frames[:, -1]])
    sets[KID_RECON] = ("ends_recon", recon)
    what = {**{kid_key(k): f"{k} midpoints (t = 0.5)" for k in walks},
            KID_RECON: "the endpoints' reconstructions (t = 0 and 1), for reference"}
    real_proto = {**ref.protocol, "reference_disjoint_from_endpoints": True}
    if not enabled:
        return {k: unavailable("KID disabled (--no-kid)", **proto, **real_proto, images=what[k]) for k in sets}
    try:
        src = weights.fid_source()
    except WeightsError as exc:
        return {k: unavailable(str(exc), **proto, **real_proto, images=what[k]) for k in sets}
    real_key = {"data": run.data.model_dump(exclude={"root", "path", "classes", "model"}),
                "reference": ref.protocol["reference_split"], "resolution": dspec.resolution,
                "classes": [proto["from"], proto["to"]], "n": ref.protocol["n_real"],
                "index_sha256": ref.protocol["real_index_sha256"]}
    shared = probe is not None and probe.features.fingerprint == src["sha256"]   # the probe read them through Inception
    out = {}
    try:
        extractor = pretrained.build_inception(src, device)
        f_real, cache = fidelity.reference_features(ref.images, real_key, src, device, extractor)
        for k, (name, images) in sets.items():
            f_fake = feats[name] if shared and name in feats else fidelity._features(
                extractor, quality.to_uint8(images), device)
            size = kid_subset_size(min(len(f_fake), len(f_real)))
            mean, std = fidelity.kid_from_features(f_fake, f_real, size)
            out[k] = metric(mean, n=len(f_fake), **proto, images=what[k], kid_std=std, kid_subset_size=size,
                            kid_subsets=fidelity.KID_SUBSETS, extractor=src["extractor"],
                            weights_sha256=src["sha256"], provenance=src["provenance"], resize=fidelity.RESIZE,
                            memory_format=pretrained.INCEPTION_LAYOUT,
                            reference_cache=str(cache), **real_proto)
    except Exception as exc:  # a failing optional metric must not sink the rest; the reason is recorded
        why = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return {k: unavailable(why, **proto, **real_proto, images=what[k]) for k in sets}
    return out


def rank_gallery(walks: dict[str, Walk], chosen: Pairs, i_from: int, i_to: int, size: int) -> list[dict[str, Any]]:
    """The midpoints of every (pair, latent path), ranked by the leak-proof hybrid score, then joint mass."""
    cands = []
    for kind in LATENT_KINDS:
        w = walks[kind]
        if w.p_mid is None:
            return []
        h = leak_proof_hybrid(w.p_mid[:, i_from], w.p_mid[:, i_to])
        for p in range(len(h)):
            cands.append({"pair": p, "kind": kind, "t": 0.5, "hybrid": rounded_or_none(h[p]),
                          "p_from": rounded_or_none(w.p_mid[p, i_from]), "p_to": rounded_or_none(w.p_mid[p, i_to]),
                          "from_index": int(chosen.from_idx[p]), "to_index": int(chosen.to_idx[p])})
    cands.sort(key=lambda c: (-c["hybrid"], -(c["p_from"] + c["p_to"]), c["pair"], c["kind"]))
    return [{"rank": i + 1, **c} for i, c in enumerate(cands[:size])]


def pegasus_metrics(model: torch.nn.Module, run: RunSpec, device: torch.device, from_cls: str, to_cls: str, *,
                    pairs: int = DEFAULT_PAIRS, steps: int = DEFAULT_STEPS, seed: int = PAIR_SEED,
                    kid: bool = True, progress: bool = False) -> dict[str, dict[str, Any]]:
    """{metric key: record} (``bench.metrics.records`` format) for a scoring pass; writes nothing
    except the class probe's cache.  Keys: :func:`metric_keys`."""
    return evaluate(model, run, device, from_cls, to_cls, pairs=pairs, steps=steps, seed=seed, kid=kid,
                    progress=progress).records


def metric_keys() -> list[str]:
    """Every key ``pegasus_metrics`` returns."""
    keys = [key(q, k) for k in KINDS for q in QUANTITIES]
    keys += [diff_key(q, k) for k in LATENT_KINDS for q in COMPARED]
    return keys + [PPL_PRIOR, MAX_STEP_PRIOR] + [kid_key(k) for k in KINDS] + [KID_RECON]
