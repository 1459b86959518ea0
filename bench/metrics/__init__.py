"""Metric catalogue: the one place that names every metric a run can report.

``scoring.py`` writes records under these keys into metrics.json; tables, plots and the claims
report read titles, formats and directions from here.  A metric missing from a run's
metrics.json is "not measured"; a record with ``value: null`` carries ``unavailable: reason``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    title: str                      # column title
    fmt: str                        # format spec for the mean
    higher_is_better: bool | None   # None: descriptive, never ranked
    group: str                      # quality | colour | artifact | latent | cost | fidelity
    doc: str = ""


CATALOGUE: dict[str, MetricInfo] = {
    # reconstruction quality (test split, decode of the posterior mean)
    "recon_ssim": MetricInfo("test SSIM", ".3f", True, "quality", "SSIM(x, x̂), pytorch-msssim, data_range=1"),
    "recon_ms_ssim": MetricInfo("test MS-SSIM", ".3f", True, "quality", "size-safe MS-SSIM(x, x̂)"),
    "recon_psnr": MetricInfo("test PSNR (dB)", ".2f", True, "quality", "mean of per-image PSNR"),
    "recon_mse": MetricInfo("test MSE", ".4f", False, "quality", "per-pixel MSE"),
    "train_recon_mse": MetricInfo("train MSE", ".4f", False, "quality", "per-pixel MSE on training images"),
    "recon_mse_all_classes": MetricInfo("test MSE (all classes)", ".4f", False, "quality",
                                        "per-pixel MSE on every class (full-data arm only)"),
    "recon_ssim_all_classes": MetricInfo("test SSIM (all classes)", ".3f", True, "quality",
                                         "SSIM on every class (full-data arm only)"),
    "recon_gap": MetricInfo("test−train MSE", ".4f", False, "quality", "generalisation gap (C10)"),
    # sample/recon fidelity with pretrained networks
    "fid_samples": MetricInfo("sample FID", ".2f", False, "fidelity", "FID(samples, reference split)"),
    "kid_samples": MetricInfo("sample KID", ".4f", False, "fidelity", "KID(samples, reference split)"),
    "fid_recon": MetricInfo("recon FID", ".2f", False, "fidelity", "FID(test reconstructions, test images)"),
    "lpips": MetricInfo("LPIPS", ".3f", False, "fidelity", "LPIPS(x, x̂), lpips package"),
    "st_lpips": MetricInfo("ST-LPIPS", ".3f", False, "fidelity", "shift-tolerant LPIPS (stlpips-pytorch)"),
    # colour (C3)
    "sample_colour_dist": MetricInfo("sample colour dist", ".4f", False, "colour",
                                     "distance of per-channel mean/std of samples to real images"),
    "recon_colour_dist": MetricInfo("recon colour dist", ".4f", False, "colour",
                                    "distance of per-channel mean/std of reconstructions to real images"),
    "recon_colour_error": MetricInfo("recon colour err", ".5f", False, "colour",
                                     "per-image MSE of 3x3-pooled RGB, recon vs original"),
    "recon_chroma_error": MetricInfo("recon chroma err", ".3f", False, "colour",
                                     "per-image CIELAB a*b* error, recon vs original"),
    "recon_saturation_ratio": MetricInfo("recon sat. ratio", ".3f", None, "colour",
                                         "HSV saturation of recons / originals (1 = as saturated)"),
    "sample_saturation_ratio": MetricInfo("sample sat. ratio", ".3f", None, "colour",
                                          "HSV saturation of samples / real reference (1 = as saturated)"),
    "sample_saturation": MetricInfo("sample saturation", ".3f", None, "colour", "mean HSV saturation of samples"),
    "recon_saturation": MetricInfo("recon saturation", ".3f", None, "colour", "mean HSV saturation of recons"),
    "real_saturation": MetricInfo("real saturation", ".3f", None, "colour", "mean HSV saturation of test images"),
    # artifacts and sharpness (C4)
    "spectral_dist": MetricInfo("spectral dist", ".4f", False, "artifact",
                                "radially averaged log power spectrum distance, samples vs real"),
    "checkerboard": MetricInfo("checkerboard", ".4f", False, "artifact",
                               "excess energy at the stride-2 checkerboard frequencies vs real"),
    "sample_sharpness": MetricInfo("sample sharpness", ".4f", None, "artifact",
                                   "variance of Laplacian of samples / real"),
    "recon_sharpness": MetricInfo("recon sharpness", ".4f", None, "artifact",
                                  "variance of Laplacian of recons / real"),
    # latent (C9)
    "kl": MetricInfo("KL (nats)", ".1f", None, "latent", "analytic KL per test image"),
    "degenerate": MetricInfo("degenerate", ".0f", None, "latent",
                             "1 = flat/identical outputs or posterior collapse (reasons in metrics.json)"),
    "active_units": MetricInfo("active units", ".0f", True, "latent", "dims with Cov_x(E[z|x]) > 0.01"),
    # latent interpolation between two classes (C11; eval.pegasus, bench/pegasus.py)
    "pegasus_hybrid_lerp": MetricInfo("hybrid (lerp)", ".3f", True, "pegasus",
                                      "2·min(P(from), P(to)) of the class probe at the latent midpoint"),
    "pegasus_hybrid_lerp_minus_crossfade": MetricInfo("hybrid − cross-fade", ".3f", True, "pegasus",
                                                      "hybrid score of the latent midpoint minus the "
                                                      "pixel cross-fade's"),
    "pegasus_joint_mass_lerp": MetricInfo("P(from)+P(to) mid", ".3f", True, "pegasus",
                                          "probe mass of the two classes at the latent midpoint"),
    "pegasus_ppl_lerp": MetricInfo("path length (lerp)", ".3g", False, "pegasus",
                                   "perceptual path length, eps 1e-4 (Karras et al. 2019)"),
    "pegasus_max_step_lerp": MetricInfo("max/mean step", ".2f", False, "pegasus",
                                        "largest step between frames / mean step (1 = even)"),
    "pegasus_sharpness_lerp": MetricInfo("midpoint sharpness", ".3f", None, "pegasus",
                                         "Laplacian variance of the midpoint / its endpoints"),
    "pegasus_kid_mid_lerp": MetricInfo("midpoint KID", ".4f", False, "pegasus",
                                       "KID of latent midpoints vs held-out images of the two classes"),
    # cost (C5, C6, C7)
    "params": MetricInfo("params", ",.0f", None, "cost", "trainable parameters"),
    "flops_per_image": MetricInfo("FLOPs/img", ".3g", None, "cost", "forward FLOPs per image (encode + decode)"),
    "bottleneck": MetricInfo("bottleneck h·w", ".0f", None, "cost", "spatial cells of the last encoder map"),
    "train_images_per_s": MetricInfo("train img/s", ".0f", True, "cost",
                                     "training throughput, isolated measurement after training"),
    "loop_images_per_s": MetricInfo("loop img/s", ".0f", None, "cost",
                                    "training-loop average (machine shared; descriptive)"),
    "scoring_s": MetricInfo("scoring (s)", ".0f", None, "cost", "wall time of the scoring pass"),
    "sample_images_per_s": MetricInfo("sample img/s", ".0f", True, "cost", "decoder sampling throughput"),
    "peak_memory_mb": MetricInfo("peak mem (MB)", ".0f", False, "cost", "peak device memory while training"),
    "mfu": MetricInfo("MFU", ".3f", True, "cost", "model FLOPs utilisation vs the device's measured matmul peak"),
    "wall_s": MetricInfo("wall (s)", ".0f", None, "cost", "training wall time"),
}
