"""Weight-free image-quality metrics: pure, batched, device-agnostic functions.

Inputs are image sets as float tensors in [0, 1], ``(N, 3, H, W)`` (uint8 is accepted and
scaled by 1/255).  Everything runs on the tensors' device; nothing needs pretrained weights.

Set-level metrics (colour statistics, saturation, sharpness, spectra) are computed from
*sufficient statistics* that add over batches, so the scoring pass makes one streaming pass
over 10k images without holding them all as floats::

    real, gen = SetStats(), SetStats()
    for x, g in batches: real.update(x); gen.update(g)
    colour_distance(gen, real); checkerboard_score(gen, real); sharpness_ratio(gen, real)

Each set-level function also takes plain image tensors (it then makes a one-batch ``SetStats``).

Conventions
-----------
* grayscale = ITU-R BT.601 luma, ``0.299 R + 0.587 G + 0.114 B``.
* colour statistics (C3): per-channel mean and std over all pixels of the set -> a 6-vector;
  ``colour_distance`` = Euclidean distance between two such vectors.
* saturation: HSV ``S = (max - min) / max`` per pixel (0 where max = 0), averaged over the set.
* sharpness: variance of the 3x3 Laplacian (valid conv) of the grayscale image, per image,
  averaged over the set; ``sharpness_ratio`` = generated / real (< 1: blurrier than real).
* spectra (C4): grayscale power spectrum ``|FFT2|^2 / (H W)``, radially averaged over integer
  frequency radii 1..min(H, W)//2 (DC dropped; the corners beyond the inscribed circle are
  ignored), ``log10`` per image, averaged over the set.  ``spectral_distance`` = mean absolute
  difference of two such log spectra (in decades).
* checkerboard: fraction of the non-DC spectral energy on the stride-2 checkerboard lines
  (row H/2, column W/2 — which include the (H/2, W/2) corner; with ``quarter=True`` also rows
  and columns H/4, 3H/4, W/4, 3W/4 for two-stage deconvolutions), pooled over the set;
  ``checkerboard_score`` = ``ln(fraction_generated / fraction_real)``: 0 = as much energy there as
  real images, > 0 = excess (checkerboard artifacts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)   # Wang et al. (2003), 5 scales
LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
EPS = 1e-12


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 / 255; float stays float32 (values assumed in [0, 1])."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [0, 1] -> uint8 (rounded, clamped)."""
    return x.float().mul(255).round_().clamp_(0, 255).to(torch.uint8)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, H, W) BT.601 luma."""
    w = torch.tensor(LUMA, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (as_float(x) * w).sum(1)


# --------------------------------------------------------------------------- MS-SSIM, size-safe

def ms_ssim_config(side: int, preferred_win: int = 11) -> tuple[int, tuple[float, ...]]:
    """(win_size, weights) for MS-SSIM at this image side: the ``ms_ssim`` loss term's rule
    (losses/ssim.py ``ms_ssim_plan``), so the metric and the loss measure the same thing.
    32 px -> win 11, 2 scales; 96 px -> 4 scales; >= 161 px -> the standard 5 scales and weights."""
    from losses.ssim import ms_ssim_plan
    return ms_ssim_plan(side, preferred_win)


def ms_ssim_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) MS-SSIM(x, y) with data_range=1.0, scales/window chosen by :func:`ms_ssim_config`.

    With the full 5 scales this equals ``pytorch_msssim.ms_ssim``; with fewer it runs the same
    algorithm without the library's fixed "4 downsamplings" size assertion.
    """
    from losses.ssim import ms_ssim_per_image as _ms_ssim
    x, y = as_float(x), as_float(y)
    return _ms_ssim(x, y, *ms_ssim_config(min(x.shape[-2:])))


# --------------------------------------------------------------------------- per-image primitives

def saturation_map(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) HSV saturation (max - min) / max, 0 where max = 0."""
    x = as_float(x)
    mx, mn = x.amax(1), x.amin(1)
    return torch.where(mx > EPS, (mx - mn) / mx.clamp_min(EPS), torch.zeros_like(mx))


def laplacian_variance(x: torch.Tensor) -> torch.Tensor:
    """(N,) variance of the 3x3 Laplacian of the grayscale image (valid convolution)."""
    g = grayscale(x).unsqueeze(1)
    k = torch.tensor(LAPLACIAN, device=g.device, dtype=g.dtype).view(1, 1, 3, 3)
    return F.conv2d(g, k).flatten(1).var(1)


def power_spectrum(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) grayscale power |FFT2|^2 / (H W), unshifted (index 0 = DC)."""
    g = grayscale(x)
    return torch.fft.fft2(g).abs().pow(2) / (g.shape[-1] * g.shape[-2])


def _freq_index(n: int, device) -> torch.Tensor:
    return torch.fft.fftfreq(n, d=1.0 / n, device=device).round().long()   # integer cycles/image


def _radial_bins(h: int, w: int, device) -> tuple[torch.Tensor, int]:
    ky, kx = _freq_index(h, device), _freq_index(w, device)
    r = torch.sqrt(ky.view(-1, 1).float() ** 2 + kx.view(1, -1).float() ** 2).round().long()
    return r.flatten(), min(h, w) // 2


def radial_log_spectrum(x: torch.Tensor) -> torch.Tensor:
    """(N, R) log10 radially averaged power for radii 1..min(H, W)//2."""
    p = power_spectrum(x).flatten(1)
    r, rmax = _radial_bins(*x.shape[-2:], x.device)
    keep = (r >= 1) & (r <= rmax)
    idx = r[keep] - 1
    sums = torch.zeros(p.shape[0], rmax, device=p.device, dtype=p.dtype).index_add_(1, idx, p[:, keep])
    counts = torch.bincount(idx, minlength=rmax).to(p.dtype)
    return torch.log10(sums / counts + EPS)


def checkerboard_mask(h: int, w: int, device, quarter: bool = False) -> torch.Tensor:
    """(H, W) bool mask of the checkerboard lines in the unshifted spectrum (see module doc)."""
    ky, kx = _freq_index(h, device).abs(), _freq_index(w, device).abs()
    rows, cols = [h // 2], [w // 2]
    if quarter:
        rows, cols = rows + [h // 4], cols + [w // 4]
    mask = torch.isin(ky, torch.tensor(rows, device=device)).view(-1, 1) \
        | torch.isin(kx, torch.tensor(cols, device=device)).view(1, -1)
    mask[0, 0] = False
    return mask


# --------------------------------------------------------------------------- set statistics

@dataclass
class SetStats:
    """Additive sufficient statistics of an image set (float64 accumulators on the CPU)."""
    quarter: bool = False           # include the H/4 lines in the checkerboard mask
    n: int = 0
    pixels: int = 0
    ch_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))
    ch_sumsq: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))
    sat_sum: float = 0.0
    lap_var_sum: float = 0.0
    log_spec_sum: torch.Tensor | None = None
    cb_energy: float = 0.0
    ac_energy: float = 0.0

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> "SetStats":
        x = as_float(x)                                       # (B, 3, H, W) in [0, 1]
        b, _, h, w = x.shape
        self.n += b
        self.pixels += b * h * w
        xd = x.double()
        self.ch_sum += xd.sum((0, 2, 3)).cpu()
        self.ch_sumsq += xd.pow(2).sum((0, 2, 3)).cpu()
        self.sat_sum += float(saturation_map(x).double().sum())
        self.lap_var_sum += float(laplacian_variance(x).double().sum())
        spec = radial_log_spectrum(x).double().sum(0).cpu()
        self.log_spec_sum = spec if self.log_spec_sum is None else self.log_spec_sum + spec
        p = power_spectrum(x)
        p[:, 0, 0] = 0                                        # drop DC: brightness is not texture
        self.ac_energy += float(p.double().sum())
        self.cb_energy += float(p[:, checkerboard_mask(h, w, x.device, self.quarter)].double().sum())
        return self

    # -- finalisers
    def colour_vector(self) -> torch.Tensor:
        """(6,) per-channel mean (R, G, B) then per-channel std."""
        mean = self.ch_sum / self.pixels
        std = (self.ch_sumsq / self.pixels - mean ** 2).clamp_min(0).sqrt()
        return torch.cat([mean, std])

    def saturation(self) -> float:
        return self.sat_sum / self.pixels

    def sharpness(self) -> float:
        return self.lap_var_sum / self.n

    def log_spectrum(self) -> torch.Tensor:
        return self.log_spec_sum / self.n

    def checkerboard_fraction(self) -> float:
        return self.cb_energy / max(self.ac_energy, EPS)


def _stats(s: SetStats | torch.Tensor, quarter: bool = False) -> SetStats:
    return s if isinstance(s, SetStats) else SetStats(quarter=quarter).update(s)


def colour_stats(images: torch.Tensor | SetStats) -> torch.Tensor:
    """(6,) per-channel mean and std of a set."""
    return _stats(images).colour_vector()


def colour_distance(a: torch.Tensor | SetStats, b: torch.Tensor | SetStats) -> float:
    """Euclidean distance between the per-channel mean/std 6-vectors of two sets."""
    return float((colour_stats(a) - colour_stats(b)).norm())


def mean_saturation(images: torch.Tensor | SetStats) -> float:
    return _stats(images).saturation()


def sharpness_ratio(gen: torch.Tensor | SetStats, real: torch.Tensor | SetStats) -> float:
    """mean Laplacian variance of ``gen`` / that of ``real`` (< 1: blurrier than real)."""
    return _stats(gen).sharpness() / max(_stats(real).sharpness(), EPS)


def spectral_distance(gen: torch.Tensor | SetStats, real: torch.Tensor | SetStats) -> float:
    """Mean |log10 S_gen(r) - log10 S_real(r)| over radii 1..min(H, W)//2."""
    return float((_stats(gen).log_spectrum() - _stats(real).log_spectrum()).abs().mean())


def checkerboard_score(gen: torch.Tensor | SetStats, real: torch.Tensor | SetStats,
                       quarter: bool = False) -> float:
    """ln(checkerboard energy fraction of ``gen`` / that of ``real``); > 0 = excess energy."""
    g, r = _stats(gen, quarter), _stats(real, quarter)
    if g.quarter != r.quarter:
        raise ValueError("checkerboard_score: both sets must use the same mask (quarter=...)")
    return math.log(max(g.checkerboard_fraction(), EPS) / max(r.checkerboard_fraction(), EPS))


# --------------------------------------------------------------------------- latent

def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(D,) analytic KL(q(z|x) || N(0, 1)) per latent dim, averaged over the batch (nats)."""
    mu, logvar = mu.float(), logvar.float()
    return (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).mean(0)
