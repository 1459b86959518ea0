"""The scoring pass over a finished run: ``score(run, run_dir, train_result) -> metrics``.

Every metric is a record carrying its protocol (``bench.metrics.records``; keys:
``bench.metrics.CATALOGUE``), including the identity of the images it was computed on.

Evaluation sets (``bench.data.evalsets.eval_sets``; all fixed, seeded, class-stratified — ``bench.data.subsets`` — and
identical for every arm and seed of an ablation; never "the first n"):

* **test** — ``eval.n_test`` held-out images (all if None) of the run's test split, restricted to
  ``eval.classes`` when given (C10: every arm meets on the same held-out horses and birds).
  Reconstructions decode the posterior mean (z = mu), so they are deterministic.
* **train** — as many training images of the same classes, unaugmented: ``train_recon_mse`` and
  ``recon_gap`` = test MSE - train MSE (C10).
* **reference** — ``min(n_samples, n_test)`` images of the test set: the real side of every
  sample metric (colour, saturation, sharpness, spectra, checkerboard).
* **fid** — ``eval.n_fid`` images of the test set: the real side of FID/KID and the pairs of
  recon FID / LPIPS / ST-LPIPS.  Prior samples are i.i.d., so the first ``n`` of them are a
  random sample (z ~ N(0, I) from a generator seeded with ``run.seed + 2``).

Passes: test (reconstruction quality, KL, active units, per-image colour error), train, samples,
degeneracy flags, cost (an isolated measurement after training, never the loop's wall clock),
fidelity (pretrained networks, guarded: a missing network gives ``unavailable`` records).
"""
from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench import store
from bench.config.schema import RunSpec
from bench.data import batches as batches_mod
from bench.data import sources as data_mod
from bench.data import subsets
from bench.data.evalsets import EvalSets, eval_sets
from bench.data.subsets import kid_subset_size
from bench.errors import BenchError
from bench.metrics import cost, quality
from bench.metrics import fidelity as fid_mod
from bench.metrics.records import metric, unavailable
from bench.pegasus import evaluate as pegasus
from bench.precision import fp32
from bench.report.sheets import interleave_rows, save_grid
from bench.train.loop import make_optimizer, train_step
from bench.train.runtime import load_run_model, memory_format, resolve_device
from losses import Objective
from models.conv import count_params

KL_COLLAPSE_NATS = 0.5  # a mean KL below this per image means the posterior ignores x
FIDELITY_KEYS = ("fid_samples", "kid_samples", "fid_recon", "kid_recon", "lpips", "st_lpips")
RESIZE = "bench.data.resize: torch bilinear, antialias (identity at native resolution)"
SAMPLE_SEED_OFFSET = 2          # samples: run.seed + 2 (init uses seed, training noise seed + 1)
COST_WARMUP, COST_REPEATS = 3, 7

__all__ = ["metric", "save_grid", "score", "unavailable"]


def _batches(images: torch.Tensor, batch_size: int, device: torch.device):
    for i in range(0, len(images), batch_size):
        yield i, batches_mod.to_float(images[i:i + batch_size], device)    # (B, 3, H, W) in [0, 1]


# --------------------------------------------------------------------------- the scoring pass

@torch.no_grad()
@fp32()
def score(run: RunSpec, run_dir: Path, train_result: dict[str, Any], *, fidelity: bool = True,
          progress: Callable[[str], None] | None = None, device: torch.device | None = None,
          shared: str | None = None, snapshot: int | None = None) -> dict[str, Any]:
    """Evaluate the checkpoint in ``run_dir``; write sheets; return the ``metrics`` mapping.

    ``snapshot``: score the weights kept at that ``train.snapshots`` step instead, with the same evaluation
    sets and protocol, but no sheets and no cost pass (the cost of a step does not depend on the budget).

    ``fidelity=False`` skips the pretrained-network metrics (their keys then say so);
    ``progress`` receives one line per pass (scoring a 96 px run on a CPU takes minutes);
    ``device`` overrides the run's own setting (a runner's placement; not part of the run's identity);
    ``shared`` says what else ran on the device meanwhile (parallel jobs): the timings are then
    recorded as not isolated, and the tables list them without comparing them."""
    say = progress or (lambda _msg: None)
    device = device or resolve_device(run.train.device)
    path = run_dir / store.CKPT if snapshot is None else store.snapshot_path(run_dir, snapshot)
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = load_run_model(run, ck, device)
    sets = eval_sets(run)
    base = {"resolution": run.data.resolution, "resize": RESIZE,
            "device": str(device), "seed": run.seed}
    timing: dict[str, float] = {}

    def timed(name: str, fn):
        say(f"scoring: {name}")
        t0 = time.perf_counter()
        out = fn()
        timing[name] = round(time.perf_counter() - t0, 3)
        return out

    metrics, recon_u8 = timed("test pass", lambda: _test_pass(model, sets, run, device, base))
    metrics.update(timed("train pass", lambda: _train_pass(model, sets, run, device, base, metrics)))
    if sets.classes and run.data.classes is None:
        metrics.update(timed("all-classes pass", lambda: _all_classes_pass(model, run, device, base)))
    sample_metrics, samples_u8 = timed("samples", lambda: _sample_pass(model, sets, run, device, base))
    metrics.update(sample_metrics)
    metrics["degenerate"] = _degeneracy(sets, recon_u8, samples_u8, metrics, base)
    if snapshot is None:
        metrics.update(timed("cost (isolated)", lambda: _cost_metrics(run, model, sets, device, train_result,
                                                                             shared)))
    enabled = fidelity and run.eval.fidelity
    metrics.update(timed("fidelity", lambda: _fidelity_metrics(
        samples_u8, recon_u8, sets, run, device, base, enabled)))
    metrics.update(timed("pegasus", lambda: _pegasus_metrics(model, run, device, base)))
    if snapshot is None:
        timed("sheets", lambda: _write_sheets(run_dir, sets, recon_u8, samples_u8, run.eval.sheet))
    metrics["scoring_s"] = metric(round(sum(timing.values()), 3), n=1, split="-", breakdown=timing,
                                  device=str(device))
    return metrics


def _test_pass(model, sets: EvalSets, run: RunSpec, device, base) -> tuple[dict[str, Any], torch.Tensor]:
    """Reconstruction quality, KL, active units and colour of the test set; also the uint8 recons."""
    images, n, res = sets.test, len(sets.test), base["resolution"]
    keys = ("mse", "psnr", "ssim", "ms_ssim", "kl", "colour_err", "chroma_err")
    sums = dict.fromkeys(keys, 0.0)
    kl_dim = torch.zeros(model.latent_dim, dtype=torch.float64)
    mus = []
    real, recon = quality.SetStats(), quality.SetStats()
    recon_u8 = torch.empty_like(images)                 # (N, 3, H, W) uint8, CPU: for fidelity
    for i, x in _batches(images, run.eval.batch_size, device):
        mu, logvar = model.encode(x)
        r = model.decode(mu).float().clamp(0, 1)
        for k, fn in (("mse", quality.mse_per_image), ("psnr", quality.psnr_per_image),
                      ("ssim", quality.ssim_per_image), ("ms_ssim", quality.ms_ssim_per_image),
                      ("colour_err", quality.pooled_colour_error), ("chroma_err", quality.chroma_error)):
            sums[k] += float(fn(x, r).sum())
        sums["kl"] += float(quality.kl_per_image(mu.float(), logvar.float()).sum())
        kl_dim += quality.kl_per_dim(mu, logvar).double().cpu() * len(x)
        mus.append(mu.float().cpu())
        real.update(x)
        recon.update(r)
        recon_u8[i:i + len(x)] = quality.to_uint8(r).cpu()
    proto = {"split": sets.split, "n": n, **base, **sets.proto("test")}
    versions = {"torch": torch.__version__, "pytorch-msssim": store.package_version("pytorch-msssim")}
    ms_win, ms_weights = quality.ms_ssim_config(res)
    mean = {k: v / n for k, v in sums.items()}
    return {
        "recon_mse": metric(mean["mse"], **proto),
        "recon_psnr": metric(mean["psnr"], **proto, note="mean of per-image PSNR (dB)"),
        "recon_ssim": metric(mean["ssim"], **proto, window=quality.ssim_window(res), impl="pytorch-msssim",
                             versions=versions),
        "recon_ms_ssim": metric(mean["ms_ssim"], **proto, window=ms_win, scales=len(ms_weights),
                                weights=[round(w, 6) for w in ms_weights], versions=versions,
                                impl="pytorch-msssim, size-safe scales (bench.metrics.quality)"),
        "kl": metric(mean["kl"], **proto, note="analytic KL per image, nats",
                     per_dim=[round(float(v), 6) for v in kl_dim / n]),
        "active_units": metric(quality.active_units(torch.cat(mus)), **proto, threshold=quality.AU_THRESHOLD,
                               latent_dim=model.latent_dim),
        "recon_colour_dist": metric(quality.colour_distance(recon, real), **proto,
                                    note="L2 between per-channel mean/std 6-vectors, recon set vs test set"),
        "recon_colour_error": metric(mean["colour_err"], **proto, pool=3,
                                     note="per image: MSE of 3x3 average-pooled RGB, recon vs original "
                                          "(the colour loss's own measure: circular for arms trained on it)"),
        "recon_chroma_error": metric(mean["chroma_err"], **proto,
                                     note="per image: mean CIELAB a*b* distance, recon vs original (D65)"),
        "recon_saturation": metric(recon.saturation(), **proto, note="mean HSV saturation"),
        "real_saturation": metric(real.saturation(), **proto, note="mean HSV saturation"),
        "recon_saturation_ratio": metric(quality.saturation_ratio(recon, real), **proto,
                                         note="mean HSV saturation, recons / their originals"),
        "recon_sharpness": metric(quality.sharpness_ratio(recon, real), **proto,
                                  note="var of 3x3 Laplacian (luma), recon / real"),
    }, recon_u8


def _train_pass(model, sets: EvalSets, run: RunSpec, device, base, metrics) -> dict[str, Any]:
    """Reconstruction MSE on as many training images (same classes, stratified): the gap (C10)."""
    total = 0.0
    for _, x in _batches(sets.train, run.eval.batch_size, device):
        total += float(quality.mse_per_image(x, model.decode(model.encode(x)[0])).sum())
    train_mse = total / max(len(sets.train), 1)
    dspec = run.data
    tr_proto = {**base, "split": dspec.train_split, "n": len(sets.train), **sets.proto("train"),
                "augmentation": "none"}
    test_proto = {k: v for k, v in metrics["recon_mse"].items() if k != "value"}
    return {"train_recon_mse": metric(train_mse, **tr_proto),
            "recon_gap": metric(metrics["recon_mse"]["value"] - train_mse, **test_proto,
                                n_train=len(sets.train), train_index_sha256=sets.train_sub.index_hash,
                                note="test recon MSE - train recon MSE")}


def _all_classes_pass(model, run: RunSpec, device, base) -> dict[str, Any]:
    """A run trained on every class but scored on ``eval.classes`` is also scored on all classes."""
    test = data_mod.load(run.data, "test")
    sub = subsets.stratified(test.labels, run.eval.n_test)
    mse = ssim = 0.0
    for _, x in _batches(test.images[sub.indices], run.eval.batch_size, device):
        r = model.decode(model.encode(x)[0]).float().clamp(0, 1)
        mse += float(quality.mse_per_image(x, r).sum())
        ssim += float(quality.ssim_per_image(x, r).sum())
    proto = {**base, "split": f"{test.name} (all classes)", "n": len(sub), **sub.protocol()}
    return {"recon_mse_all_classes": metric(mse / len(sub), **proto),
            "recon_ssim_all_classes": metric(ssim / len(sub), **proto)}


def _sample_pass(model, sets: EvalSets, run: RunSpec, device, base) -> tuple[dict[str, Any], torch.Tensor]:
    """Prior samples, decoded once, against the stratified reference set."""
    bs, n_s = run.eval.batch_size, run.eval.n_samples
    gen = torch.Generator(device=device).manual_seed(run.seed + SAMPLE_SEED_OFFSET)
    samples = quality.SetStats()
    samples_u8 = torch.empty(n_s, *sets.test.shape[1:], dtype=torch.uint8)
    for i in range(0, n_s, bs):
        z = torch.randn(min(bs, n_s - i), model.latent_dim, device=device, generator=gen)
        g = model.decode(z).float().clamp(0, 1)
        samples.update(g)
        samples_u8[i:i + len(g)] = quality.to_uint8(g).cpu()
    ref = quality.SetStats()
    for _, x in _batches(sets.test[sets.ref_pos.indices], bs, device):
        ref.update(x)
    proto = {"split": f"prior samples vs {sets.split}", "n": n_s, "n_real": len(sets.ref_pos),
             "sample_seed": run.seed + SAMPLE_SEED_OFFSET, **base, **sets.proto("ref")}
    proto["n_selected"] = len(sets.ref_pos)
    return {
        "sample_colour_dist": metric(quality.colour_distance(samples, ref), **proto),
        "sample_saturation": metric(samples.saturation(), **proto, note="mean HSV saturation"),
        "sample_saturation_ratio": metric(quality.saturation_ratio(samples, ref), **proto,
                                          note="mean HSV saturation, samples / real reference"),
        "sample_sharpness": metric(quality.sharpness_ratio(samples, ref), **proto,
                                   note="var of 3x3 Laplacian (luma), samples / real"),
        "spectral_dist": metric(quality.spectral_distance(samples, ref), **proto,
                                note="mean |log10 radial power| difference, radii 1..R/2, luma"),
        "checkerboard": metric(quality.checkerboard_score(samples, ref), **proto,
                               note="stride-2 line power vs neighbouring frequencies of the same image, "
                                    "samples minus real (0 = like real, blur ~0, > 0 = artifacts)"),
    }, samples_u8


def _degeneracy(sets: EvalSets, recon_u8, samples_u8, metrics, base) -> dict[str, Any]:
    """1 when reconstructions or samples are (near) constant/identical or the KL collapsed, else 0."""
    reasons = []
    real = sets.test[sets.ref_pos.indices]
    for what, imgs in (("reconstructions", recon_u8), ("samples", samples_u8)):
        why = quality.is_degenerate(quality.degeneracy(quality.as_float(imgs[:2000]), quality.as_float(real)))
        if why:
            reasons.append(f"{what}: {why}")
    if metrics["active_units"]["value"] == 0 or (metrics["kl"]["value"] or 0.0) < KL_COLLAPSE_NATS:
        reasons.append(f"posterior collapse: KL {metrics['kl']['value']:.3g} nats, "
                       f"{metrics['active_units']['value']} active units")
    return metric(int(bool(reasons)), n=len(recon_u8), split=sets.split, reasons=reasons, **base,
                  rule=f"bench.metrics.quality.is_degenerate on recons and samples; KL < {KL_COLLAPSE_NATS} "
                       "nats or no active unit")


# --------------------------------------------------------------------------- cost (isolated)

def _cost_metrics(run: RunSpec, model, sets: EvalSets, device: torch.device,
                  train_result: dict[str, Any], shared: str | None = None) -> dict[str, Any]:
    """Params, FLOPs, and throughput measured in an isolated pass after training (warm-up, median of
    repeats, one fixed batch), never from the training loop's wall clock."""
    res = run.data.resolution
    c = {"device": str(device), "device_name": store.device_name(device), "resolution": res,
         "torch": torch.__version__, "threads": torch.get_num_threads()}
    flops, how = cost.forward_flops_per_image(model, res)
    bs = run.train.batch_size
    load_before = os.getloadavg()[0]
    ips, peak_mb = _train_step_cost(run, model, sets, device)
    # Other processes on the machine slow an isolated measurement too: record the load around it
    c["load_1min"] = round(max(load_before, os.getloadavg()[0]), 2)
    c["machine_busy"] = bool(shared) or (device.type == "cpu" and c["load_1min"] > (os.cpu_count() or 1) + 0.5)
    if shared:
        c["shared"] = shared
    iso = {"batch_size": bs, "warmup": COST_WARMUP, "repeats": COST_REPEATS, "amp": run.train.amp,
           "method": "isolated: median of single training steps (forward, loss, backward, Adam) on a "
                     "copy of the trained model, one fixed batch, after training", **c}
    out: dict[str, Any] = {
        "params": metric(count_params(model), n=1, split="-"),
        "bottleneck": _bottleneck(model),
        "flops_per_image": metric(flops, n=1, split="-", method=how,
                                  counted="forward pass, encode + decode, 2 FLOPs per multiply-add", **c),
        "train_images_per_s": metric(ips, n=1, split="-", **iso),
        "loop_images_per_s": metric(train_result.get("train_images_per_s"), n=1, split="-",
                                    note="training loop average (shares the machine with whatever ran "
                                         "then; descriptive only)", **c),
        "wall_s": metric(train_result.get("wall_s"), n=1, split="-", device=str(device),
                         steps=train_result.get("steps"), breakdown=train_result.get("breakdown")),
    }
    gen = torch.Generator(device=device).manual_seed(run.seed)
    z = torch.randn(run.eval.batch_size, model.latent_dim, device=device, generator=gen)
    out["sample_images_per_s"] = metric(cost.throughput(model.decode, z, device=device), n=1, split="-",
                                        batch_size=run.eval.batch_size, warmup=3, repeats=7,
                                        method="median of repeats, model.decode, eval, no_grad", **c)
    out["mfu"] = _mfu(cost.training_flops_per_image(model, res), ips, device, c)
    out["peak_memory_mb"] = (metric(peak_mb, n=1, split="-", method="torch.cuda.max_memory_allocated over "
                                    "one isolated training step", batch_size=bs, **c)
                             if peak_mb is not None else
                             unavailable("peak memory is measured on CUDA only", n=1, split="-", **c))
    return out


def _bottleneck(model) -> dict[str, Any]:
    """Spatial cells h*w of the last encoder map (the value), with its C x h x w shape."""
    shape = getattr(model, "bottleneck", None)
    if shape is None:
        return unavailable("the model does not report its bottleneck", n=1, split="-")
    c, h, w = shape
    return metric(h * w, n=1, split="-", shape=f"{c}x{h}x{w}", note="C x h x w of the last encoder map")


def _train_step_cost(run: RunSpec, model, sets: EvalSets, device) -> tuple[float, float | None]:
    """(images/s, peak CUDA MiB or None) of one training step on a copy of the model."""
    m = copy.deepcopy(model).train()
    objective = Objective.from_config(run.loss).to(device)
    opt = make_optimizer(m, run.train, device)
    bs = run.train.batch_size
    reps = -(-bs // len(sets.test))
    x = batches_mod.to_float(sets.test.repeat(reps, 1, 1, 1)[:bs], device)     # (B, 3, H, W) fixed batch
    x = x.contiguous(memory_format=memory_format(run))
    g = torch.Generator(device=device).manual_seed(run.seed)

    def step(batch):              # the trainer's own step (bench.train.loop.train_step)
        with torch.enable_grad():
            train_step(m, m, objective, opt, batch, g, run.train.steps, run.train, device)

    ips = cost.throughput(step, x, device=device, warmup=COST_WARMUP, repeats=COST_REPEATS)
    peak = cost.peak_memory_mb(lambda: step(x), device)
    return ips, peak           # the copy and its optimiser state go out of scope here


def _mfu(train_flops: tuple[int, str], ips: float, device: torch.device, c: dict[str, Any]) -> dict[str, Any]:
    flops, how = train_flops
    peak = cost.device_matmul_peak(device)
    value = cost.mfu(flops, ips, peak)
    if value > 1:   # impossible: the cached matmul peak was measured too low (e.g. under load)
        return unavailable(f"MFU {value:.2f} > 1: the cached matmul peak ({peak / 1e9:.1f} GFLOP/s) is too "
                           f"low; delete {cost._cache_file()} to re-measure", n=1, split="-", **c)
    return metric(value, n=1, split="-", peak_flops_per_s=peak, peak_dtype=str(cost.peak_dtype(device)),
                  peak_key=cost.device_key(device), train_flops_per_image=flops, train_flops_method=how,
                  train_images_per_s=ips, **c)


# --------------------------------------------------------------------------- fidelity (guarded)

def _fidelity_metrics(samples_u8: torch.Tensor, recon_u8: torch.Tensor, sets: EvalSets, run: RunSpec,
                      device: torch.device, base: dict[str, Any], enabled: bool) -> dict[str, Any]:
    """fid_samples, kid_samples, fid_recon, kid_recon, lpips, st_lpips — or ``unavailable`` records."""
    if not enabled:
        return {k: unavailable("fidelity metrics disabled (eval.fidelity: false)", **base) for k in FIDELITY_KEYS}
    out: dict[str, Any] = {}
    sel = sets.proto("fid")

    def guarded(keys: tuple[str, ...], fn):
        try:
            recs = fn()
        except Exception as e:  # a failing metric must not sink the sweep; the reason is recorded
            why = f"{type(e).__name__}: {e}".splitlines()[0]
            recs = tuple(unavailable(why, **base) for _ in keys)
        for k, r in zip(keys, recs if isinstance(recs, tuple) else (recs,)):
            for pk, pv in {**base, **sel}.items():
                r.setdefault(pk, pv)
            out[k] = r

    real = sets.test[sets.fid_pos.indices]
    recon = recon_u8[sets.fid_pos.indices]
    fake = samples_u8[:len(real)]
    key = {"data": {k: v for k, v in run.data.model_dump().items() if k not in ("root", "path")}, "split": sets.split,
           "resolution": base["resolution"], "n": len(real), "index_sha256": sel["index_sha256"]}
    kid_size = kid_subset_size(len(real), run.eval.kid_subset)
    guarded(("fid_samples", "kid_samples"), lambda: fid_mod.fid_kid(
        fake, real, real_key=key, device=device, kid_subset_size=kid_size))
    if run.eval.fid_recon:      # the reconstructions of the same real images, against them (C10's like for like)
        guarded(("fid_recon", "kid_recon"), lambda: fid_mod.fid_kid(recon, real, real_key=key, device=device,
                                                                    kid_subset_size=kid_size))
    else:
        for k in ("fid_recon", "kid_recon"):
            out[k] = unavailable("not computed (eval.fid_recon: false)", **base)
    guarded(("lpips",), lambda: fid_mod.lpips_metric(real, recon, device=device, split=sets.split))
    guarded(("st_lpips",), lambda: fid_mod.st_lpips_metric(real, recon, device=device, split=sets.split))
    for k in ("fid_samples", "kid_samples"):
        out[k].setdefault("sample_seed", base["seed"] + SAMPLE_SEED_OFFSET)
    return out


def _pegasus_metrics(model, run: RunSpec, device, base) -> dict[str, Any]:
    """Latent interpolation metrics between ``eval.pegasus`` classes (C11), or why they are missing."""
    pair = run.eval.pegasus
    if not pair:
        return {}
    try:
        return pegasus.pegasus_metrics(model, run, device, pair[0], pair[1])
    except BenchError as exc:      # e.g. an unlabelled held-out split: recorded, the sweep goes on
        return {k: unavailable(str(exc), **base) for k in pegasus.metric_keys()}


def _write_sheets(run_dir: Path, sets: EvalSets, recon_u8, samples_u8, k: int) -> None:
    """Originals above reconstructions (a class-stratified handful), and the first prior samples."""
    nrow = max(4, int(math.sqrt(k)))
    pos = sets.sheet_pos.indices
    save_grid(run_dir / "recon.png", interleave_rows(batches_mod.to_float(sets.test[pos]),
                                                      batches_mod.to_float(recon_u8[pos]), nrow), nrow)
    save_grid(run_dir / "samples.png", batches_mod.to_float(samples_u8[:k]), nrow)
