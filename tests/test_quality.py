"""Weight-free quality metrics: identities, references and the direction of each effect."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.metrics import quality as q

SEPIA = torch.tensor([1.0, 0.85, 0.6]).view(1, 3, 1, 1)


def smooth_images(n: int = 16, side: int = 32, seed: int = 0) -> torch.Tensor:
    """Colourful, smooth images in [0, 1]: upsampled low-resolution noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, side // 8, side // 8, generator=g)
    return F.interpolate(low, size=(side, side), mode="bicubic", align_corners=False).clamp(0, 1)


def textured_images(n: int = 16, side: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 100)
    return (smooth_images(n, side, seed) + 0.15 * torch.randn(n, 3, side, side, generator=g)).clamp(0, 1)


def sepia(x: torch.Tensor, amount: float = 0.8) -> torch.Tensor:
    lum = q.grayscale(x).unsqueeze(1)
    return ((1 - amount) * x + amount * lum * SEPIA).clamp(0, 1)


def checkerboard(side: int) -> torch.Tensor:
    i = torch.arange(side)
    return ((i.view(-1, 1) + i.view(1, -1)) % 2).float().mul(2).sub(1)          # +-1


def blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k.view(-1, 1) * k.view(1, -1) / 256).expand(3, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=3)


# --------------------------------------------------------------------------- MS-SSIM

@pytest.mark.parametrize("side", [32, 96])
def test_ms_ssim_runs_at_32_and_96_and_is_one_for_identical_images(side):
    x = textured_images(4, side)
    assert torch.allclose(q.ms_ssim_per_image(x, x), torch.ones(4), atol=1e-5)
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    v = q.ms_ssim_per_image(x, noisy)
    assert v.shape == (4,) and (v < 0.99).all() and (v > 0).all()
    win, w = q.ms_ssim_config(side)
    assert abs(sum(w) - 1) < 1e-9 and len(w) == {32: 2, 96: 4}[side] and win == 11


def test_ms_ssim_reduced_scales_follow_the_library_algorithm():
    """Our scale loop with the full 5 weights equals pytorch_msssim.ms_ssim where the library runs."""
    import pytorch_msssim
    x = textured_images(3, 176)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    ref = pytorch_msssim.ms_ssim(x, y, data_range=1.0, size_average=False)
    assert q.ms_ssim_config(176) == (11, q.MS_SSIM_WEIGHTS)
    assert torch.allclose(q.ms_ssim_per_image(x, y), ref, atol=1e-5)    # full scales: the library itself


def test_uint8_and_float_inputs_agree():
    x = textured_images(4)
    u = q.to_uint8(x)
    assert q.colour_distance(u, q.as_float(u)) == pytest.approx(0, abs=1e-9)


# --------------------------------------------------------------------------- colour (C3)

def test_colour_distance_zero_for_same_set_and_grows_with_sepia():
    x = textured_images(32)
    assert q.colour_distance(x, x) == pytest.approx(0, abs=1e-9)
    d_light, d_strong = q.colour_distance(sepia(x, 0.3), x), q.colour_distance(sepia(x, 0.9), x)
    assert 0 < d_light < d_strong
    assert q.mean_saturation(sepia(x, 0.9)) < q.mean_saturation(x)
    assert q.colour_stats(x).shape == (6,)


def test_colour_stats_match_direct_computation_and_stream_over_batches():
    x = textured_images(20)
    direct = torch.cat([x.mean((0, 2, 3)), x.transpose(0, 1).reshape(3, -1).std(1, unbiased=False)])
    s = q.SetStats()
    for i in range(0, 20, 7):
        s.update(x[i:i + 7])
    assert torch.allclose(s.colour_vector().float(), direct, atol=1e-5)
    assert s.sharpness() == pytest.approx(q.SetStats().update(x).sharpness(), rel=1e-6)


def test_saturation_of_gray_is_zero_and_of_pure_colour_is_one():
    gray = torch.full((2, 3, 8, 8), 0.5)
    red = torch.zeros(2, 3, 8, 8)
    red[:, 0] = 1
    assert q.mean_saturation(gray) == pytest.approx(0)
    assert q.mean_saturation(red) == pytest.approx(1)
    assert q.mean_saturation(torch.zeros(1, 3, 4, 4)) == 0          # black: max = 0, no NaN


# --------------------------------------------------------------------------- spectra / artifacts (C4)

@pytest.mark.parametrize("side", [32, 96])
def test_checkerboard_score_increases_with_added_checkerboard(side):
    n = 32 if side == 32 else 8
    real, gen = smooth_images(n, side, seed=0), smooth_images(n, side, seed=1)
    cb = (gen + 0.05 * checkerboard(side)).clamp(0, 1)
    clean = q.checkerboard_score(gen, real)
    assert abs(clean) < 1.0
    assert q.checkerboard_score(cb, real) > clean + 1.0


def test_checkerboard_quarter_mask_sees_period_four_pattern():
    real, gen = smooth_images(16, 32, 0), smooth_images(16, 32, 1)
    i = torch.arange(32)
    p4 = torch.cos(torch.pi / 2 * i).view(1, -1).expand(32, 32)         # period 4 along x
    art = (gen + 0.05 * p4).clamp(0, 1)
    assert q.checkerboard_score(art, real, quarter=True) > q.checkerboard_score(gen, real, quarter=True) + 0.5


def test_spectral_distance_zero_for_same_set_and_grows_with_high_frequency_noise():
    real, gen = smooth_images(16, 32, 0), smooth_images(16, 32, 1)
    noisy = (gen + 0.1 * torch.randn(gen.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    assert q.spectral_distance(gen, gen) == pytest.approx(0, abs=1e-12)
    assert q.spectral_distance(noisy, real) > q.spectral_distance(gen, real) + 0.2
    x = textured_images(8)
    assert q.radial_log_spectrum(x).shape == (8, 16)
    mask = q.checkerboard_mask(32, 32, "cpu")
    assert mask[16].all() and mask[:, 16].all() and not mask[0, 0] and mask.sum() == 32 + 32 - 1


# --------------------------------------------------------------------------- sharpness

def test_sharpness_ratio_below_one_for_blurred_images():
    x = textured_images(16)
    assert q.sharpness_ratio(x, x) == pytest.approx(1)
    assert q.sharpness_ratio(blur(x), x) < 0.5
    assert q.sharpness_ratio(blur(blur(x)), x) < q.sharpness_ratio(blur(x), x)


# --------------------------------------------------------------------------- latent

def test_kl_per_dim_sums_to_analytic_kl_and_is_zero_at_prior():
    from bench.scoring import kl_per_image
    mu, logvar = torch.randn(10, 6), torch.randn(10, 6) * 0.3
    assert torch.allclose(q.kl_per_dim(mu, logvar).sum(), kl_per_image(mu, logvar).mean(), atol=1e-5)
    assert torch.allclose(q.kl_per_dim(torch.zeros(4, 3), torch.zeros(4, 3)), torch.zeros(3))
