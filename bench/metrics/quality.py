"""Weight-free image-quality metrics: pure, batched, device-agnostic functions.

Inputs are image sets as float tensors in [0, 1], ``(N, 3, H, W)`` (uint8 is accepted and
scaled by 1/255).  Everything runs on the tensors' device; nothing needs pretrained weights.

Set-level metrics (colour statistics, saturation, sharpness, spectra, checkerboard) are computed
from *sufficient statistics* that add over batches, so the scoring pass makes one streaming pass
over 10k images without holding them all as floats::

    real, gen = SetStats(), SetStats()
    for x, g in batches: real.update(x); gen.update(g)
    colour_distance(gen, real); checkerboard_score(gen, real); sharpness_ratio(gen, real)

Each set-level function also takes plain image tensors (it then makes a one-batch ``SetStats``).
Per-image functions (``pooled_colour_error``, ``chroma_error``, ``checkerboard_excess``,
``spatial_std``) return ``(B,)`` and are summed by the caller.  The degeneracy check works on a
plain subset (a few thousand images): it needs the real set's median, which does not stream.

Conventions
-----------
* grayscale = ITU-R BT.601 luma, ``0.299 R + 0.587 G + 0.114 B``.
* colour statistics (C3): per-channel mean and std over all pixels of the set -> a 6-vector;
  ``colour_distance`` = Euclidean distance between two such vectors.  Set-level only: it cannot
  see an image whose colours are wrong if the set's totals are right.
* per-image colour (C3): ``pooled_colour_error`` = both images ``adaptive_avg_pool2d``'d to
  pool x pool (paper: 3), RGB squared error averaged over cells and channels — the pooled
  colour loss's own measure (losses/colour.py without its C*H*W scale), so it is circular for an
  arm trained on that loss; ``chroma_error`` = mean per-pixel Euclidean distance in CIELAB
  a*b* (sRGB -> linear -> XYZ -> Lab, D65 white), blind to lightness, independent of any loss.
* saturation: HSV ``S = (max - min) / max`` per pixel (0 where max = 0), averaged over the set;
  ``saturation_ratio`` = generated / real (< 1: washed out, the "sepia" of C3).
* sharpness: variance of the 3x3 Laplacian (valid conv) of the grayscale image, per image,
  averaged over the set; ``sharpness_ratio`` = generated / real (< 1: blurrier than real).
* spectra (C4): grayscale power spectrum ``|FFT2|^2 / (H W)``, radially averaged over integer
  frequency radii 1..min(H, W)//2 (DC dropped; the corners beyond the inscribed circle are
  ignored), ``log10`` per image, averaged over the set.  ``spectral_distance`` = mean absolute
  difference of two such log spectra (in decades).
* checkerboard (C4): per image, ``ln((L + f) / (N + f))`` clipped below at 0, where L = mean
  power on the stride-2 checkerboard lines (row H/2 and column W/2, which cross at (H/2, W/2);
  with ``quarter=True`` also the H/4 and W/4 lines of two-stage deconvolutions), N = mean power on
  the lines 1 and 2 frequencies either side of them (H/2-1, H/2-2, ...; folded, line bins and DC
  excluded) and f = ``CB_FLOOR`` x the image's mean AC power per frequency (its luma variance, by
  Parseval) + ``CB_FLOOR_ABS``.  The score compares each image with its *own* neighbouring
  frequencies, so blur, which lowers both, cancels; the floor makes a flat image or a spectral
  null (a 2x2 box filter zeroes Nyquist) give 0 rather than the log of two round-off errors; the
  clip counts only *excess* line power — an image with less power on the lines than beside them
  has no checkerboard, however much less.  ``checkerboard_score`` = set mean for the generated
  set minus that of the real set: 0 = like real images (also for blurred or flat images),
  > 0 = checkerboard artifacts (a +-0.03 pixel checkerboard on smooth images scores > 3).
  The price of the clip: an artifact that does not lift the lines above their neighbours
  (weak, on an image with much high-frequency content) is not seen.
* degeneracy: ``spatial_std`` = per-image std of the luma over pixels; an image is *flat* when
  it is below ``FLAT_STD`` (or ``FLAT_STD_REL`` x the real set's median, if larger); *diversity*
  = per-pixel (and channel) std across the set, averaged over pixels (0 = every image the same).
  ``is_degenerate`` flags a set with at least ``FLAT_FRACTION_MAX`` flat images, or diversity
  below ``DIVERSITY_RATIO_MIN`` x real's (``DIVERSITY_MIN`` when no real set is given).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from bench.precision import fp32
from losses.ssim import ms_ssim_per_image as _ms_ssim
from losses.ssim import ms_ssim_plan, window_for

LUMA = (0.299, 0.587, 0.114)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)   # Wang et al. (2003), 5 scales
LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
EPS = 1e-12

# checkerboard (see module doc)
CB_NEIGHBOURS = (1, 2)      # compare each line with the lines this many frequencies away
CB_FLOOR = 1e-3             # x mean AC power per frequency: line power below it is invisible
CB_FLOOR_ABS = 1e-10        # absolute floor (power units): float32 FFT round-off of a flat image

# CIELAB (sRGB primaries, D65 white; IEC 61966-2-1 and CIE 15)
SRGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375),
               (0.2126729, 0.7151522, 0.0721750),
               (0.0193339, 0.1191920, 0.9503041))
D65_WHITE = (0.95047, 1.0, 1.08883)

# degenerate outputs
FLAT_STD = 1e-3             # luma std below this: flat (a quarter of one uint8 grey level)
FLAT_STD_REL = 0.02         # ... or below 2% of the real set's median luma std, if that is larger
FLAT_FRACTION_MAX = 0.5     # a set with at least this fraction of flat images is degenerate
DIVERSITY_RATIO_MIN = 0.05  # across-set per-pixel std below 5% of real's: (near) identical outputs
DIVERSITY_MIN = 1e-3        # the same, absolute, when no real set is given


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
    return ms_ssim_plan(side, preferred_win)


@fp32()
def ms_ssim_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) MS-SSIM(x, y) with data_range=1.0, scales/window chosen by :func:`ms_ssim_config`.

    With the full 5 scales this equals ``pytorch_msssim.ms_ssim``; with fewer it runs the same
    algorithm without the library's fixed "4 downsamplings" size assertion.
    """
    x, y = as_float(x), as_float(y)
    return _ms_ssim(x, y, *ms_ssim_config(min(x.shape[-2:])))


# --------------------------------------------------------------------------- per-image primitives

def saturation_map(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) HSV saturation (max - min) / max, 0 where max = 0."""
    x = as_float(x)
    mx, mn = x.amax(1), x.amin(1)
    return torch.where(mx > EPS, (mx - mn) / mx.clamp_min(EPS), torch.zeros_like(mx))


@fp32()
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


def _checkerboard_lines(n: int, quarter: bool) -> list[int]:
    return [n // 2, n // 4] if quarter else [n // 2]


def _lines_mask(h: int, w: int, rows: list[int], cols: list[int], device) -> torch.Tensor:
    """(H, W) bool: |ky| in rows or |kx| in cols, in the unshifted spectrum."""
    ky, kx = _freq_index(h, device).abs(), _freq_index(w, device).abs()
    return torch.isin(ky, torch.tensor(rows, device=device, dtype=torch.long)).view(-1, 1) \
        | torch.isin(kx, torch.tensor(cols, device=device, dtype=torch.long)).view(1, -1)


def checkerboard_mask(h: int, w: int, device, quarter: bool = False) -> torch.Tensor:
    """(H, W) bool mask of the checkerboard lines in the unshifted spectrum (see module doc)."""
    mask = _lines_mask(h, w, _checkerboard_lines(h, quarter), _checkerboard_lines(w, quarter), device)
    mask[0, 0] = False
    return mask


def checkerboard_neighbour_mask(h: int, w: int, device, quarter: bool = False) -> torch.Tensor:
    """(H, W) bool mask of the reference lines: ``CB_NEIGHBOURS`` frequencies either side of each
    checkerboard line, folded into 0..n//2 (so H/2 +- 1 -> H/2 - 1), minus the lines and DC."""
    def near(n: int) -> list[int]:
        out = set()
        for k in _checkerboard_lines(n, quarter):
            for d in CB_NEIGHBOURS:
                for m in (abs(k - d), k + d):
                    out.add(m if m <= n // 2 else n - m)
        return sorted(out)
    mask = _lines_mask(h, w, near(h), near(w), device) & ~checkerboard_mask(h, w, device, quarter)
    mask[0, 0] = False
    return mask


def checkerboard_excess(x: torch.Tensor, quarter: bool = False) -> torch.Tensor:
    """(N,) per-image ``max(0, ln((L + f) / (N + f)))``: checkerboard-line power over the power
    on the neighbouring lines, floored (see module doc).  0 for flat and blurred images."""
    p = power_spectrum(x)                                           # (N, H, W)
    h, w = p.shape[-2:]
    line = p[:, checkerboard_mask(h, w, p.device, quarter)].mean(1)
    near = p[:, checkerboard_neighbour_mask(h, w, p.device, quarter)].mean(1)
    ac_mean = (p.flatten(1).sum(1) - p[:, 0, 0]).clamp_min(0) / max(h * w - 1, 1)
    floor = CB_FLOOR * ac_mean + CB_FLOOR_ABS
    return torch.log((line + floor) / (near + floor)).clamp_min(0)


# --------------------------------------------------------------------------- colour, per image

@fp32()
def srgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) sRGB in [0, 1] -> CIELAB (L* in 0..100, a*, b*), D65 white."""
    x = as_float(x).clamp(0, 1)
    lin = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055).pow(2.4))
    m = torch.tensor(SRGB_TO_XYZ, device=x.device, dtype=x.dtype)
    white = torch.tensor(D65_WHITE, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    t = torch.einsum("ij,njhw->nihw", m, lin) / white
    d = 6 / 29
    f = torch.where(t > d ** 3, t.clamp_min(d ** 3).pow(1 / 3), t / (3 * d * d) + 4 / 29)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], 1)


def pooled_colour_error(x: torch.Tensor, y: torch.Tensor, pool: int = 3) -> torch.Tensor:
    """(B,) MSE between the pool x pool average-pooled RGB images (cells and channels averaged).

    The paper's pooled colour loss measure (losses/colour.py, without its C*H*W scale): an arm
    trained on that loss is scored on its own objective here; use ``chroma_error`` to compare it.
    """
    px, py = F.adaptive_avg_pool2d(as_float(x), pool), F.adaptive_avg_pool2d(as_float(y), pool)
    return (px - py).square().flatten(1).mean(1)


@fp32()
def chroma_error(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) mean per-pixel Euclidean distance in CIELAB a*b* (hue and chroma; lightness ignored)."""
    ab_x, ab_y = srgb_to_lab(x)[:, 1:], srgb_to_lab(y)[:, 1:]
    return (ab_x - ab_y).square().sum(1).sqrt().flatten(1).mean(1)


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
    cb_excess_sum: float = 0.0

    @torch.no_grad()
    @fp32()
    def update(self, x: torch.Tensor) -> SetStats:
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
        self.cb_excess_sum += float(checkerboard_excess(x, self.quarter).double().sum())
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

    def checkerboard(self) -> float:
        """Mean per-image checkerboard excess (``checkerboard_excess``)."""
        return self.cb_excess_sum / max(self.n, 1)


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


def saturation_ratio(gen: torch.Tensor | SetStats, real: torch.Tensor | SetStats) -> float:
    """mean HSV saturation of ``gen`` / that of ``real`` (< 1: less saturated than real)."""
    return _stats(gen).saturation() / max(_stats(real).saturation(), EPS)


def sharpness_ratio(gen: torch.Tensor | SetStats, real: torch.Tensor | SetStats) -> float:
    """mean Laplacian variance of ``gen`` / that of ``real`` (< 1: blurrier than real)."""
    return _stats(gen).sharpness() / max(_stats(real).sharpness(), EPS)


def spectral_distance(gen: torch.Tensor | SetStats, real: torch.Tensor | SetStats) -> float:
    """Mean |log10 S_gen(r) - log10 S_real(r)| over radii 1..min(H, W)//2."""
    return float((_stats(gen).log_spectrum() - _stats(real).log_spectrum()).abs().mean())


def checkerboard_score(gen: torch.Tensor | SetStats, real: torch.Tensor | SetStats,
                       quarter: bool = False) -> float:
    """Mean checkerboard excess of ``gen`` minus that of ``real`` (module doc): 0 = like real,
    also for blurred or flat images; > 0 = more stride-2 line power than the neighbouring
    frequencies of the same images, beyond what real images have."""
    g, r = _stats(gen, quarter), _stats(real, quarter)
    if g.quarter != r.quarter:
        raise ValueError("checkerboard_score: both sets must use the same mask (quarter=...)")
    return g.checkerboard() - r.checkerboard()


# --------------------------------------------------------------------------- degenerate outputs

def spatial_std(x: torch.Tensor) -> torch.Tensor:
    """(B,) std of the luma over each image's pixels (0 = a flat image)."""
    return grayscale(x).flatten(1).std(1, unbiased=False)


def set_diversity(images: torch.Tensor, chunk: int = 256) -> float:
    """Per-pixel, per-channel std across the set, averaged over pixels (0 = all images equal);
    two passes over chunks, so uint8 input is never converted whole."""
    if len(images) < 2:
        raise ValueError(f"set_diversity: need at least 2 images, got {len(images)}")
    mean = sum(as_float(images[i:i + chunk]).sum(0) for i in range(0, len(images), chunk)) / len(images)
    sq = sum((as_float(images[i:i + chunk]) - mean).square().sum(0) for i in range(0, len(images), chunk))
    return float((sq / len(images)).sqrt().mean())


def degeneracy(images: torch.Tensor, real: torch.Tensor | None = None) -> dict[str, float | int | None]:
    """Flat-image fraction and across-set diversity of ``images`` (N >= 2), relative to ``real``
    when given (thresholds: module constants).  Plain tensors: pass a subset of a few thousand."""
    def stds_of(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([spatial_std(x[i:i + 256]) for i in range(0, len(x), 256)])
    stds = stds_of(images)
    flat_std = FLAT_STD
    if real is not None:
        flat_std = max(FLAT_STD, FLAT_STD_REL * float(stds_of(real).median()))
    div = set_diversity(images)
    real_div = set_diversity(real) if real is not None else None
    return {"n": len(stds),
            "flat_fraction": float((stds < flat_std).float().mean()),
            "flat_std": flat_std,
            "diversity": div,
            "real_diversity": real_div,
            "diversity_ratio": div / max(real_div, EPS) if real_div is not None else None}


def is_degenerate(d: dict) -> str | None:
    """One-line reason when a ``degeneracy`` result shows flat or identical outputs, else None."""
    if d["flat_fraction"] >= FLAT_FRACTION_MAX:
        return f"{d['flat_fraction']:.0%} of images are flat (luma spatial std < {d['flat_std']:.2g})"
    if d.get("diversity_ratio") is not None:
        if d["diversity_ratio"] < DIVERSITY_RATIO_MIN:
            return (f"images (near) identical: diversity ratio {d['diversity_ratio']:.3g} "
                    f"< {DIVERSITY_RATIO_MIN} (per-pixel std across the set vs real)")
    elif d["diversity"] < DIVERSITY_MIN:
        return f"images (near) identical: per-pixel std across the set {d['diversity']:.2g} < {DIVERSITY_MIN}"
    return None


# --------------------------------------------------------------------------- latent

def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(D,) analytic KL(q(z|x) || N(0, 1)) per latent dim, averaged over the batch (nats)."""
    mu, logvar = mu.float(), logvar.float()
    return (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).mean(0)


# --------------------------------------------------------------------------- per-image reconstruction metrics

AU_THRESHOLD = 0.01   # Burda et al. (2016): a latent unit is active if Cov_x(E[z|x]) > 0.01


def mse_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error over C*H*W; images in [0, 1]."""
    return (x.float() - y.float()).pow(2).flatten(1).mean(1)


def psnr_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB for data range 1; identical images give +inf (clamped at 100 dB)."""
    return 10 * torch.log10(1.0 / mse_per_image(x, y).clamp_min(1e-10))


@fp32()
def ssim_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) SSIM (pytorch-msssim, Gaussian window, data_range=1.0)."""
    from pytorch_msssim import ssim
    return ssim(x.float(), y.float(), data_range=1.0, size_average=False, win_size=ssim_window(x.shape[-1]))


def ssim_window(side: int, preferred: int = 11) -> int:
    """The largest odd Gaussian window <= ``preferred`` that fits the image side (the loss's rule)."""
    return window_for(side, preferred)


def kl_per_image(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(B,) analytic KL(q(z|x) || N(0, I)) summed over latent dims."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def active_units(mu_all: torch.Tensor, threshold: float = AU_THRESHOLD) -> int:
    """Number of latent dims whose posterior mean varies across the data (variance > threshold)."""
    return int((mu_all.float().var(0) > threshold).sum())
