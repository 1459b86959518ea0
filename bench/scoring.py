"""The scoring pass over a finished run: ``score(run, run_dir, train_result) -> metrics``.

Every metric is stored as a record carrying its protocol (keys: ``bench.metrics.CATALOGUE``)::

    {"value": 0.81, "n": 10000, "split": "test", "resolution": 32, "device": "cpu", "seed": 0, ...}
    {"value": null, "unavailable": "Inception weights not found: ...", ...}

Protocol of the pass (one streaming pass per image set, nothing decoded twice):

* **test pass** — the first ``eval.n_test`` test images (all if None), in order.  Reconstructions
  decode the posterior mean (z = mu), so they are deterministic.  Gives recon MSE / PSNR / SSIM /
  MS-SSIM, KL (+ per-dim KL), active units, recon colour / saturation / sharpness, and the
  uint8 reconstructions for recon FID / LPIPS / ST-LPIPS.
* **train pass** — the first ``eval.n_test`` training images (deterministic, unaugmented):
  ``train_recon_mse`` and ``recon_gap`` = test MSE - train MSE (C10).
* **sample pass** — ``eval.n_samples`` prior samples, z ~ N(0, I) from a generator seeded with
  ``run.seed + 2``, decoded once.  Sample metrics compare them with the *reference set*: the
  first ``min(n_samples, n_test)`` test images.
* **cost** — params, forward FLOPs/image, decoder sampling throughput, training throughput and
  wall time (from the trainer), MFU against the device's measured matmul peak, and peak CUDA
  memory of one training step (CPU: unavailable, see ``bench.metrics.cost``).
* **fidelity** (pretrained networks, ``bench.metrics.fidelity``) — imported behind a guard: if
  it is missing or fails, each key gets an ``unavailable`` record with the reason.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import torch

from bench import data as data_mod
from bench import store
from bench.config import RunSpec
from bench.metrics import cost, quality

AU_THRESHOLD = 0.01   # Burda et al. (2016): a latent unit is active if Cov_x(E[z|x]) > 0.01


def metric(value: float | int | None, *, n: int, split: str, **protocol: Any) -> dict[str, Any]:
    if value is not None and isinstance(value, float) and not math.isfinite(value):
        value = None
        protocol.setdefault("unavailable", "non-finite value")
    return {"value": value, "n": n, "split": split, **protocol}


def unavailable(reason: str, **protocol: Any) -> dict[str, Any]:
    return {"value": None, "unavailable": reason, **protocol}


# --------------------------------------------------------------------------- pure metric functions

def mse_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error over C*H*W; images in [0, 1]."""
    return (x.float() - y.float()).pow(2).flatten(1).mean(1)


def psnr_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB for data range 1; identical images give +inf (clamped at 100 dB)."""
    return 10 * torch.log10(1.0 / mse_per_image(x, y).clamp_min(1e-10))


def ssim_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) SSIM (pytorch-msssim, Gaussian window, data_range=1.0)."""
    from pytorch_msssim import ssim
    return ssim(x.float(), y.float(), data_range=1.0, size_average=False, win_size=ssim_window(x.shape[-1]))


def ssim_window(side: int, preferred: int = 11) -> int:
    """The largest odd Gaussian window <= ``preferred`` that fits the image side (the loss's rule)."""
    from losses.ssim import window_for
    return window_for(side, preferred)


def kl_per_image(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(B,) analytic KL(q(z|x) || N(0, I)) summed over latent dims."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def ms_ssim_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) size-safe MS-SSIM (see ``bench.metrics.quality.ms_ssim_config``)."""
    return quality.ms_ssim_per_image(x, y)


def active_units(mu_all: torch.Tensor, threshold: float = AU_THRESHOLD) -> int:
    """Number of latent dims whose posterior mean varies across the data (variance > threshold)."""
    return int((mu_all.float().var(0) > threshold).sum())


# --------------------------------------------------------------------------- image sheets

def save_grid(path: Path, images: torch.Tensor, nrow: int) -> None:
    """Write a PNG grid of (N, 3, H, W) images in [0, 1], atomically."""
    import torchvision
    from PIL import Image

    grid = torchvision.utils.make_grid(images.float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=1.0)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    store.write_bytes(path, buf.getvalue())


def _interleave_rows(a: torch.Tensor, b: torch.Tensor, nrow: int) -> torch.Tensor:
    """Rows of ``a`` followed by the matching rows of ``b`` (originals above reconstructions)."""
    rows = []
    for i in range(0, len(a), nrow):
        rows += [a[i:i + nrow], b[i:i + nrow]]
    return torch.cat(rows)


# --------------------------------------------------------------------------- the scoring pass

FIDELITY_KEYS = ("fid_samples", "kid_samples", "fid_recon", "lpips", "st_lpips")
RESIZE = "bench.data.resize: torch bilinear, antialias (identity at native resolution)"
SAMPLE_SEED_OFFSET = 2          # samples: run.seed + 2 (init uses seed, training noise seed + 1)


def _version(pkg: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _batches(images: torch.Tensor, batch_size: int, device: torch.device):
    for i in range(0, len(images), batch_size):
        yield i, data_mod.to_float(images[i:i + batch_size], device)    # (B, 3, H, W) in [0, 1]


@torch.no_grad()
def score(run: RunSpec, run_dir: Path, train_result: dict[str, Any], *, fidelity: bool = True) -> dict[str, Any]:
    """Evaluate the checkpoint in ``run_dir``; write sheets; return the ``metrics`` mapping.

    ``fidelity=False`` skips the pretrained-network metrics (their keys then say so)."""
    from bench.train import build_model, resolve_device

    ev = run.eval
    bs = ev["batch_size"]
    device = resolve_device(run.train["device"])
    dspec = data_mod.DataSpec(**run.data)
    test = data_mod.load(dspec, "test")
    images = test.images[: ev["n_test"]] if ev["n_test"] else test.images
    n, res = len(images), dspec.resolution
    n_ref = min(ev["n_samples"], n)                     # reference set for sample metrics

    model = build_model(run, device)
    ck = torch.load(run_dir / store.CKPT, map_location="cpu", weights_only=False)
    model.load_state_dict(ck["model"])
    model.eval()

    test_split = dspec.test_split if not dspec.holdout else f"{dspec.train_split} holdout"
    base = {"resolution": res, "resize": RESIZE, "device": str(device), "seed": run.seed}
    proto = {"split": test_split, "n": n, **base}
    ref_proto = {"split": f"prior samples vs {test_split} (first {n_ref})", "n": ev["n_samples"],
                 "n_real": n_ref, "sample_seed": run.seed + SAMPLE_SEED_OFFSET, **base}
    ssim_versions = {"torch": torch.__version__, "pytorch-msssim": _version("pytorch-msssim")}

    # ---- test pass: reconstructions of the posterior mean
    sums = {"mse": 0.0, "psnr": 0.0, "ssim": 0.0, "ms_ssim": 0.0, "kl": 0.0}
    kl_dim = torch.zeros(model.latent_dim, dtype=torch.float64)
    mus = []
    real, recon = quality.SetStats(), quality.SetStats()
    real_ref = real if n_ref == n else quality.SetStats()
    recon_u8 = torch.empty_like(images)                 # (N, 3, H, W) uint8, CPU: for fidelity
    for i, x in _batches(images, bs, device):
        mu, logvar = model.encode(x)
        r = model.decode(mu).float().clamp(0, 1)
        sums["mse"] += float(mse_per_image(x, r).sum())
        sums["psnr"] += float(psnr_per_image(x, r).sum())
        sums["ssim"] += float(ssim_per_image(x, r).sum())
        sums["ms_ssim"] += float(quality.ms_ssim_per_image(x, r).sum())
        sums["kl"] += float(kl_per_image(mu.float(), logvar.float()).sum())
        kl_dim += quality.kl_per_dim(mu, logvar).double().cpu() * len(x)
        mus.append(mu.float().cpu())
        real.update(x)
        recon.update(r)
        if real_ref is not real and i < n_ref:
            real_ref.update(x[: n_ref - i])
        recon_u8[i:i + len(x)] = quality.to_uint8(r).cpu()

    ms_win, ms_weights = quality.ms_ssim_config(res)
    metrics: dict[str, Any] = {
        "recon_mse": metric(sums["mse"] / n, **proto),
        "recon_psnr": metric(sums["psnr"] / n, **proto, note="mean of per-image PSNR (dB)"),
        "recon_ssim": metric(sums["ssim"] / n, **proto, window=ssim_window(res), impl="pytorch-msssim",
                             versions=ssim_versions),
        "recon_ms_ssim": metric(sums["ms_ssim"] / n, **proto, window=ms_win, scales=len(ms_weights),
                                weights=[round(w, 6) for w in ms_weights], versions=ssim_versions,
                                impl="pytorch-msssim, size-safe scales (bench.metrics.quality)"),
        "kl": metric(sums["kl"] / n, **proto, note="analytic KL per image, nats",
                     per_dim=[round(float(v), 6) for v in kl_dim / n]),
        "active_units": metric(active_units(torch.cat(mus)), **proto, threshold=AU_THRESHOLD,
                               latent_dim=model.latent_dim),
        "recon_colour_dist": metric(quality.colour_distance(recon, real), **proto,
                                    note="L2 between per-channel mean/std 6-vectors, recon vs test"),
        "recon_saturation": metric(recon.saturation(), **proto, note="mean HSV saturation"),
        "real_saturation": metric(real.saturation(), **proto, note="mean HSV saturation"),
        "recon_sharpness": metric(quality.sharpness_ratio(recon, real), **proto,
                                  note="var of 3x3 Laplacian (luma), recon / real"),
    }

    # ---- train pass: the generalisation gap (C10)
    train_imgs = data_mod.load(dspec, "train").images[:n]
    tr_sum = 0.0
    for _, x in _batches(train_imgs, bs, device):
        tr_sum += float(mse_per_image(x, model.decode(model.encode(x)[0])).sum())
    train_mse = tr_sum / len(train_imgs)
    tr_proto = {**base, "split": dspec.train_split, "n": len(train_imgs),
                "selection": "first n training images, unaugmented"}
    metrics["train_recon_mse"] = metric(train_mse, **tr_proto)
    metrics["recon_gap"] = metric(metrics["recon_mse"]["value"] - train_mse, **proto, n_train=len(train_imgs),
                                  note="test recon MSE - train recon MSE")

    # ---- sample pass: prior samples, decoded once
    gen = torch.Generator(device=device).manual_seed(run.seed + SAMPLE_SEED_OFFSET)
    samples, n_s = quality.SetStats(), ev["n_samples"]
    samples_u8 = torch.empty(n_s, *images.shape[1:], dtype=torch.uint8)
    for i in range(0, n_s, bs):
        z = torch.randn(min(bs, n_s - i), model.latent_dim, device=device, generator=gen)
        g = model.decode(z).float().clamp(0, 1)
        samples.update(g)
        samples_u8[i:i + len(g)] = quality.to_uint8(g).cpu()
    metrics.update({
        "sample_colour_dist": metric(quality.colour_distance(samples, real_ref), **ref_proto),
        "sample_saturation": metric(samples.saturation(), **ref_proto, note="mean HSV saturation"),
        "sample_sharpness": metric(quality.sharpness_ratio(samples, real_ref), **ref_proto,
                                   note="var of 3x3 Laplacian (luma), samples / real"),
        "spectral_dist": metric(quality.spectral_distance(samples, real_ref), **ref_proto,
                                note="mean |log10 radial power| difference, radii 1..R/2, luma"),
        "checkerboard": metric(quality.checkerboard_score(samples, real_ref), **ref_proto,
                               note="ln(fraction of AC energy on Nyquist rows/cols: samples / real)"),
    })

    # ---- cost
    metrics.update(_cost_metrics(run, model, device, res, train_result, dspec.train_split))

    # ---- fidelity (pretrained networks), guarded
    test_key = {"data": run.data, "split": test_split, "resolution": res}
    n_fid = ev.get("n_fid") or max(len(samples_u8), n)
    metrics.update(_fidelity_metrics(samples_u8[:n_fid], recon_u8[:n_fid], images[:n_fid], min(n_ref, n_fid),
                                     test_key, device, base, fidelity and ev.get("fidelity", True)))

    # ---- image sheets: originals above reconstructions, and the first scored prior samples
    k = ev["sheet"]
    nrow = max(4, int(math.sqrt(k)))
    h = min(k // 2, n)
    save_grid(run_dir / "recon.png", _interleave_rows(data_mod.to_float(images[:h]),
                                                      data_mod.to_float(recon_u8[:h]), nrow), nrow)
    save_grid(run_dir / "samples.png", data_mod.to_float(samples_u8[:k]), nrow)
    return metrics


def _cost_metrics(run: RunSpec, model: torch.nn.Module, device: torch.device, res: int,
                  train_result: dict[str, Any], train_split: str) -> dict[str, Any]:
    from models.conv import count_params

    c = {"device": str(device), "device_name": store.device_name(device), "resolution": res,
         "torch": torch.__version__}
    out: dict[str, Any] = {
        "params": metric(count_params(model), n=1, split="-"),
        "train_images_per_s": metric(train_result.get("train_images_per_s"), n=1, split=train_split,
                                     device=str(device), batch_size=run.train["batch_size"],
                                     amp=run.train["amp"], compile=run.train["compile"]),
        "wall_s": metric(train_result.get("wall_s"), n=1, split=train_split, device=str(device),
                         steps=train_result.get("steps")),
    }
    flops, how = cost.forward_flops_per_image(model, res)
    out["flops_per_image"] = metric(flops, n=1, split="-", method=how, counted="forward pass, encode + decode, 2 FLOPs per multiply-add",
                                    **{k: v for k, v in c.items() if k != "device"})

    bs = run.eval["batch_size"]
    gen = torch.Generator(device=device).manual_seed(run.seed)
    z = torch.randn(bs, model.latent_dim, device=device, generator=gen)
    ips = cost.throughput(model.decode, z, device=device)
    out["sample_images_per_s"] = metric(ips, n=1, split="-", batch_size=bs, warmup=3, repeats=7,
                                        method="median of repeats, model.decode, eval, no_grad", **c)

    tips = train_result.get("train_images_per_s")
    if tips:
        peak = cost.device_matmul_peak(device)
        value = cost.mfu(flops, tips, peak)
        if value > 1:   # impossible: the cached peak was measured too low (e.g. under load)
            out["mfu"] = unavailable(f"MFU {value:.2f} > 1: the cached matmul peak ({peak / 1e9:.1f} GFLOP/s) is "
                                     f"too low; delete {cost._cache_file()} to re-measure", n=1,
                                     split=train_split, **c)
        else:
            out["mfu"] = metric(value, n=1, split=train_split,
                                peak_flops_per_s=peak, peak_dtype=str(cost.peak_dtype(device)),
                                peak_key=cost.device_key(device), train_flops_factor=cost.TRAIN_FLOPS_FACTOR,
                                forward_flops_per_image=flops, train_images_per_s=tips, **c)
    else:
        out["mfu"] = unavailable("no training throughput was measured (run too short?)", n=1,
                                 split=train_split, **c)

    if train_result.get("peak_memory_mb") is not None:            # measured by the trainer
        out["peak_memory_mb"] = metric(train_result["peak_memory_mb"], n=1, split=train_split,
                                       method="trainer: torch.cuda.max_memory_allocated", **c)
    elif device.type == "cuda":
        out["peak_memory_mb"] = metric(_train_step_peak_mb(run, model, device), n=1, split=train_split,
                                       batch_size=run.train["batch_size"],
                                       method="torch.cuda.max_memory_allocated over one training step "
                                              "(forward + backward + Adam step, copy of the model)", **c)
    else:
        out["peak_memory_mb"] = unavailable("peak memory is measured on CUDA only", n=1, split=train_split, **c)
    return out


def _train_step_peak_mb(run: RunSpec, model: torch.nn.Module, device: torch.device) -> float | None:
    """Peak CUDA memory of one training step on a copy of the model (the scored weights stay put)."""
    import copy

    from bench.train import _autocast
    from losses import Objective

    m = copy.deepcopy(model).train()
    objective = Objective.from_config(run.loss).to(device)
    opt = torch.optim.Adam(m.parameters(), lr=run.train["lr"], fused=True)
    g = torch.Generator(device=device).manual_seed(run.seed)
    res = run.model.get("image_size") or data_mod.DataSpec(**run.data).resolution
    x = torch.rand(run.train["batch_size"], 3, res, res, device=device, generator=g)

    def step():
        with torch.enable_grad():
            with _autocast(device, run.train["amp"]):
                out = m(x, generator=g)
                total, _ = objective(x, out, m, 0)
            total.backward()
            opt.step()

    try:
        return cost.peak_memory_mb(step, device)
    finally:
        del m, opt


def _fidelity_metrics(samples_u8: torch.Tensor, recon_u8: torch.Tensor, images: torch.Tensor, n_ref: int,
                      test_key: dict[str, Any], device: torch.device, base: dict[str, Any],
                      enabled: bool) -> dict[str, Any]:
    """fid_samples, kid_samples, fid_recon, lpips, st_lpips — or ``unavailable`` records."""
    if not enabled:
        return {k: unavailable("fidelity metrics disabled (eval.fidelity: false)", **base) for k in FIDELITY_KEYS}
    try:
        from bench.metrics import fidelity as fid_mod
    except Exception as e:  # missing module or a broken optional dependency
        why = f"fidelity metrics not installed: {type(e).__name__}: {e}".splitlines()[0]
        return {k: unavailable(why, **base) for k in FIDELITY_KEYS}

    out: dict[str, Any] = {}

    def guarded(keys: tuple[str, ...], fn):
        try:
            recs = fn()
        except Exception as e:  # a failing metric must not sink the sweep; the reason is recorded
            why = f"{type(e).__name__}: {e}".splitlines()[0]
            recs = tuple(unavailable(why, **base) for _ in keys)
        for k, r in zip(keys, recs if isinstance(recs, tuple) else (recs,)):
            for pk, pv in base.items():
                r.setdefault(pk, pv)
            out[k] = r

    test_split = test_key["split"]
    ref = images[:n_ref]
    guarded(("fid_samples", "kid_samples"), lambda: fid_mod.fid_kid(
        samples_u8, ref, real_key={**test_key, "n": n_ref, "selection": "first n"}, device=device))
    guarded(("fid_recon",), lambda: fid_mod.fid_kid(
        recon_u8, images, real_key={**test_key, "n": len(images), "selection": "first n"}, device=device)[0])
    guarded(("lpips",), lambda: fid_mod.lpips_metric(images, recon_u8, device=device, split=test_split))
    guarded(("st_lpips",), lambda: fid_mod.st_lpips_metric(images, recon_u8, device=device, split=test_split))
    for k in ("fid_samples", "kid_samples"):
        out[k].setdefault("sample_seed", base["seed"] + SAMPLE_SEED_OFFSET)
    return out
