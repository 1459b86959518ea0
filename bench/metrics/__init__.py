"""Metric catalogue: the one place that names every metric a run can report.

``scoring.py`` writes records under these keys into metrics.json; tables, plots and the claims
report read titles, formats and directions from here.  A metric missing from a run's
metrics.json is "not measured"; a record with ``value: null`` carries ``unavailable: reason``.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class MetricInfo:
    title: str                      # column title
    fmt: str                        # format spec for the mean
    higher_is_better: bool | None   # None: descriptive, never ranked
    group: str                      # quality | colour | artifact | latent | cost | fidelity
    doc: str = ""


class M(StrEnum):
    """Every catalogued metric key as a named constant (a str: ``M.KID_SAMPLES == "kid_samples"``).
    Code that names a metric uses these, so a misspelt key fails at import, not silently."""

    RECON_SSIM = "recon_ssim"
    RECON_MS_SSIM = "recon_ms_ssim"
    RECON_PSNR = "recon_psnr"
    RECON_MSE = "recon_mse"
    TRAIN_RECON_MSE = "train_recon_mse"
    RECON_MSE_ALL_CLASSES = "recon_mse_all_classes"
    RECON_SSIM_ALL_CLASSES = "recon_ssim_all_classes"
    RECON_GAP = "recon_gap"
    FID_SAMPLES = "fid_samples"
    KID_SAMPLES = "kid_samples"
    FID_RECON = "fid_recon"
    KID_RECON = "kid_recon"
    LPIPS = "lpips"
    ST_LPIPS = "st_lpips"
    SAMPLE_COLOUR_DIST = "sample_colour_dist"
    RECON_COLOUR_DIST = "recon_colour_dist"
    RECON_COLOUR_ERROR = "recon_colour_error"
    RECON_CHROMA_ERROR = "recon_chroma_error"
    RECON_SATURATION_RATIO = "recon_saturation_ratio"
    SAMPLE_SATURATION_RATIO = "sample_saturation_ratio"
    SAMPLE_SATURATION = "sample_saturation"
    RECON_SATURATION = "recon_saturation"
    REAL_SATURATION = "real_saturation"
    SPECTRAL_DIST = "spectral_dist"
    CHECKERBOARD = "checkerboard"
    SAMPLE_SHARPNESS = "sample_sharpness"
    RECON_SHARPNESS = "recon_sharpness"
    KL = "kl"
    DEGENERATE = "degenerate"
    ACTIVE_UNITS = "active_units"
    PEGASUS_HYBRID_LERP = "pegasus_v2_hybrid_lerp"
    PEGASUS_HYBRID_LERP_MINUS_CROSSFADE = "pegasus_v2_hybrid_lerp_minus_crossfade"
    PEGASUS_JOINT_MASS_LERP = "pegasus_v2_joint_mass_lerp"
    PEGASUS_PPL_LERP = "pegasus_v2_ppl_lerp"
    PEGASUS_MAX_STEP_LERP = "pegasus_v2_max_step_lerp"
    PEGASUS_SHARPNESS_LERP = "pegasus_v2_sharpness_lerp"
    PEGASUS_KID_MID_LERP = "pegasus_v2_kid_mid_lerp"
    PEGASUS_SHARPNESS_ABS_LERP = "pegasus_v2_sharpness_abs_lerp"
    PEGASUS_ENDS_CORRECT_LERP = "pegasus_v2_ends_correct_lerp"
    PARAMS = "params"
    FLOPS_PER_IMAGE = "flops_per_image"
    BOTTLENECK = "bottleneck"
    TRAIN_IMAGES_PER_S = "train_images_per_s"
    LOOP_IMAGES_PER_S = "loop_images_per_s"
    SCORING_S = "scoring_s"
    SAMPLE_IMAGES_PER_S = "sample_images_per_s"
    PEAK_MEMORY_MB = "peak_memory_mb"
    MFU = "mfu"
    WALL_S = "wall_s"


CATALOGUE: dict[str, MetricInfo] = {
    # reconstruction quality (test split, decode of the posterior mean)
    M.RECON_SSIM: MetricInfo("test SSIM", ".3f", True, "quality", "SSIM(x, x̂), pytorch-msssim, data_range=1"),
    M.RECON_MS_SSIM: MetricInfo("test MS-SSIM", ".3f", True, "quality", "size-safe MS-SSIM(x, x̂)"),
    M.RECON_PSNR: MetricInfo("test PSNR (dB)", ".2f", True, "quality", "mean of per-image PSNR"),
    M.RECON_MSE: MetricInfo("test MSE", ".4f", False, "quality", "per-pixel MSE"),
    M.TRAIN_RECON_MSE: MetricInfo("train MSE", ".4f", False, "quality", "per-pixel MSE on training images"),
    M.RECON_MSE_ALL_CLASSES: MetricInfo("test MSE (all classes)", ".4f", False, "quality",
                                        "per-pixel MSE on every class (full-data arm only)"),
    M.RECON_SSIM_ALL_CLASSES: MetricInfo("test SSIM (all classes)", ".3f", True, "quality",
                                         "SSIM on every class (full-data arm only)"),
    M.RECON_GAP: MetricInfo("test−train MSE", ".4f", False, "quality", "generalisation gap (C10)"),
    # sample/recon fidelity with pretrained networks
    M.FID_SAMPLES: MetricInfo("sample FID", ".2f", False, "fidelity", "FID(samples, reference split)"),
    M.KID_SAMPLES: MetricInfo("sample KID", ".4f", False, "fidelity", "KID(samples, reference split)"),
    M.FID_RECON: MetricInfo("recon FID", ".2f", False, "fidelity", "FID(test reconstructions, test images)"),
    M.KID_RECON: MetricInfo("recon KID", ".4f", False, "fidelity", "KID(test reconstructions, test images)"),
    M.LPIPS: MetricInfo("LPIPS", ".3f", False, "fidelity", "LPIPS(x, x̂), lpips package"),
    M.ST_LPIPS: MetricInfo("ST-LPIPS", ".3f", False, "fidelity", "shift-tolerant LPIPS (stlpips-pytorch)"),
    # colour (C3)
    M.SAMPLE_COLOUR_DIST: MetricInfo("sample colour dist", ".4f", False, "colour",
                                     "distance of per-channel mean/std of samples to real images"),
    M.RECON_COLOUR_DIST: MetricInfo("recon colour dist", ".4f", False, "colour",
                                    "distance of per-channel mean/std of reconstructions to real images"),
    M.RECON_COLOUR_ERROR: MetricInfo("recon colour err", ".5f", False, "colour",
                                     "per-image MSE of 3x3-pooled RGB, recon vs original"),
    M.RECON_CHROMA_ERROR: MetricInfo("recon chroma err", ".3f", False, "colour",
                                     "per-image CIELAB a*b* error, recon vs original"),
    M.RECON_SATURATION_RATIO: MetricInfo("recon sat. ratio", ".3f", None, "colour",
                                         "HSV saturation of recons / originals (1 = as saturated)"),
    M.SAMPLE_SATURATION_RATIO: MetricInfo("sample sat. ratio", ".3f", None, "colour",
                                          "HSV saturation of samples / real reference (1 = as saturated)"),
    M.SAMPLE_SATURATION: MetricInfo("sample saturation", ".3f", None, "colour", "mean HSV saturation of samples"),
    M.RECON_SATURATION: MetricInfo("recon saturation", ".3f", None, "colour", "mean HSV saturation of recons"),
    M.REAL_SATURATION: MetricInfo("real saturation", ".3f", None, "colour", "mean HSV saturation of test images"),
    # artifacts and sharpness (C4)
    M.SPECTRAL_DIST: MetricInfo("spectral dist", ".4f", False, "artifact",
                                "radially averaged log power spectrum distance, samples vs real"),
    M.CHECKERBOARD: MetricInfo("checkerboard", ".4f", False, "artifact",
                               "excess energy at the stride-2 checkerboard frequencies vs real"),
    M.SAMPLE_SHARPNESS: MetricInfo("sample sharpness", ".4f", None, "artifact",
                                   "variance of Laplacian of samples / real"),
    M.RECON_SHARPNESS: MetricInfo("recon sharpness", ".4f", None, "artifact",
                                  "variance of Laplacian of recons / real"),
    # latent (C9)
    M.KL: MetricInfo("KL (nats)", ".1f", None, "latent", "analytic KL per test image"),
    M.DEGENERATE: MetricInfo("degenerate", ".0f", None, "latent",
                             "1 = flat/identical outputs or posterior collapse (reasons in metrics.json)"),
    M.ACTIVE_UNITS: MetricInfo("active units", ".0f", True, "latent", "dims with Cov_x(E[z|x]) > 0.01"),
    # latent interpolation between two classes (C11; eval.pegasus, bench/pegasus/evaluate.py)
    M.PEGASUS_HYBRID_LERP: MetricInfo("hybrid (lerp)", ".3f", True, "pegasus",
                                      "max(0, 2·min(P(from), P(to)) − off-class mass) at the latent midpoint"),
    M.PEGASUS_HYBRID_LERP_MINUS_CROSSFADE: MetricInfo("hybrid − cross-fade", ".3f", True, "pegasus",
                                                      "hybrid score of the latent midpoint minus the "
                                                      "pixel cross-fade's"),
    M.PEGASUS_JOINT_MASS_LERP: MetricInfo("P(from)+P(to) mid", ".3f", True, "pegasus",
                                          "probe mass of the two classes at the latent midpoint"),
    M.PEGASUS_PPL_LERP: MetricInfo("path length (lerp)", ".3g", False, "pegasus",
                                   "perceptual path length, eps 1e-4 (Karras et al. 2019)"),
    M.PEGASUS_MAX_STEP_LERP: MetricInfo("max/mean step", ".2f", False, "pegasus",
                                        "largest step between frames / mean step (1 = even)"),
    M.PEGASUS_SHARPNESS_LERP: MetricInfo("midpoint sharpness", ".3f", None, "pegasus",
                                         "Laplacian variance of the midpoint / the real endpoints'"),
    M.PEGASUS_KID_MID_LERP: MetricInfo("midpoint KID", ".4f", False, "pegasus",
                                       "KID of latent midpoints vs real images of both classes (no endpoint)"),
    M.PEGASUS_SHARPNESS_ABS_LERP: MetricInfo("midpoint sharpness (abs)", ".2e", None, "pegasus",
                                             "Laplacian variance of the latent midpoint"),
    M.PEGASUS_ENDS_CORRECT_LERP: MetricInfo("ends read as own class", ".3f", True, "pegasus",
                                            "share of reconstructed endpoints the probe assigns to their class"),
    # cost (C5, C6, C7)
    M.PARAMS: MetricInfo("params", ",.0f", None, "cost", "trainable parameters"),
    M.FLOPS_PER_IMAGE: MetricInfo("FLOPs/img", ".3g", None, "cost", "forward FLOPs per image (encode + decode)"),
    M.BOTTLENECK: MetricInfo("bottleneck h·w", ".0f", None, "cost", "spatial cells of the last encoder map"),
    M.TRAIN_IMAGES_PER_S: MetricInfo("train img/s", ".0f", True, "cost",
                                     "training throughput, isolated measurement after training"),
    M.LOOP_IMAGES_PER_S: MetricInfo("loop img/s", ".0f", None, "cost",
                                    "training-loop average (machine shared; descriptive)"),
    M.SCORING_S: MetricInfo("scoring (s)", ".0f", None, "cost", "wall time of the scoring pass"),
    M.SAMPLE_IMAGES_PER_S: MetricInfo("sample img/s", ".0f", True, "cost", "decoder sampling throughput"),
    M.PEAK_MEMORY_MB: MetricInfo("peak mem (MB)", ".0f", False, "cost", "peak device memory while training"),
    M.MFU: MetricInfo("MFU", ".3f", True, "cost", "model FLOPs utilisation vs the device's measured matmul peak"),
    M.WALL_S: MetricInfo("wall (s)", ".0f", None, "cost", "training wall time"),
}

#: the one number per run that ``bench status`` shows
KEY_METRIC = M.RECON_SSIM

assert set(CATALOGUE) == set(M), "every catalogued key has a constant and vice versa"

# The metrics each loss term optimises (by name in the loss registry; tests/test_verdicts.py checks that every
# registered term is listed).  A comparison on a metric either arm trained on is no independent evidence:
# the claims report shows it and never counts it.
_MSE = (M.RECON_MSE, M.RECON_PSNR, M.TRAIN_RECON_MSE, M.RECON_MSE_ALL_CLASSES)
TRAINED_ON: dict[str, tuple[str, ...]] = {
    "mse": _MSE,
    "gaussian_optimal_sigma": _MSE,             # MSE with a learnt shared variance
    "l1": (),
    "ssim": (M.RECON_SSIM, M.RECON_SSIM_ALL_CLASSES),
    "ms_ssim": (M.RECON_MS_SSIM,),
    "colour": (M.RECON_COLOUR_ERROR,),          # the pooled 3x3 RGB error is the colour loss itself
    "kl": (M.KL,),
    "lpips": (M.LPIPS,),
    "deep_feature": (),                          # features of a network, no catalogued metric
}


def trained_on(loss_names) -> set[str]:
    """Metric keys a run whose loss has these terms optimised (unknown terms: none)."""
    return {m for name in loss_names for m in TRAINED_ON.get(name, ())}
