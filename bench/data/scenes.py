"""The embedded ``shapes`` scenes: procedurally rendered images with natural-image statistics (scene
backgrounds with 1/f texture, shaded and textured objects), so the quick start and the tests train on data every
loss has structure to fit.  Rendered on one thread, in bounded chunks: identical pixels on every machine."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

SHAPE_KINDS = ["circle", "square", "triangle", "ring", "star"]


def _shape_sdf(kind: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance (> 0 inside, in units of the radius) of SHAPE_KINDS[kind]."""
    name = SHAPE_KINDS[kind]
    if name == "square":
        return 0.75 - torch.maximum(u.abs(), v.abs())
    if name == "triangle":  # equilateral, vertices on the unit circle
        edges = [u * np.cos(a) + v * np.sin(a) for a in (np.pi / 2, np.pi * 7 / 6, np.pi * 11 / 6)]
        return 0.5 - torch.maximum(torch.maximum(edges[0], edges[1]), edges[2])
    rho = torch.sqrt(u * u + v * v)
    if name == "circle":
        return 1 - rho
    if name == "ring":
        return torch.minimum(rho - 0.55, 1 - rho)
    phi = torch.atan2(v, u)  # star: five points
    return 0.45 + 0.55 * ((torch.cos(5 * phi) + 1) / 2) ** 2 - rho


_SHAPE_LUMA = (0.299, 0.587, 0.114)  # Rec. 601 weights, to keep objects visible
# chroma offsets of the background's two low-frequency colour fields: red-green, yellow-blue
_SHAPE_CHROMA = ((0.04, -0.04, 0.0), (0.02, 0.02, -0.04))
# background families, as in outdoor photos: hue centre, hue spread, value range, amplitude exponent
# of the luma texture.  Colour goes with brightness and texture (bright smooth blue sky, dark
# rough green foliage), so a model that reconstructs structure can also predict the colour.
_SHAPE_SCENES = (
    (0.07, 0.05, 0.35, 0.75, 1.3),  # earth, sand, wood: warm, medium texture
    (0.28, 0.08, 0.25, 0.60, 0.8),  # foliage: green, darker, rough (power ~ 1/f^1.6)
    (0.58, 0.06, 0.60, 0.90, 2.0),  # sky, water: blue, bright, smooth (power ~ 1/f^4)
)
_SHAPE_TEXTURES = 4  # object surfaces: stripes, checks, spots, pink noise


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(n,) hue, saturation, value in [0, 1] -> (n, 3) RGB in [0, 1]."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + 6 * h.unsqueeze(1)) % 6
    return v.unsqueeze(1) * (1 - s.unsqueeze(1) * torch.minimum(k, 4 - k).clamp(0, 1))


def _pink_noise(white: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """(n, c, S, S) white noise -> fields with amplitude spectrum ~ 1/f**exponent ((n, c) each),
    zero mean and unit standard deviation per field (power spectrum ~ 1/f**(2 * exponent))."""
    size = white.shape[-1]
    fy, fx = torch.fft.fftfreq(size).view(size, 1), torch.fft.rfftfreq(size).view(1, -1)
    f = torch.sqrt(fx * fx + fy * fy) * size  # (S, S//2 + 1) cycles per image
    f[0, 0] = 1.0
    gain = f ** -exponent.unsqueeze(-1).unsqueeze(-1)
    gain[..., 0, 0] = 0.0  # no DC: the colour comes from the palette, not the noise
    x = torch.fft.irfft2(torch.fft.rfft2(white) * gain, s=(size, size))
    return x / x.square().mean(dim=(-2, -1), keepdim=True).sqrt().clamp_min(1e-8)  # mean is 0


def _render_shapes(kind: torch.Tensor, params: dict[str, torch.Tensor], white: torch.Tensor,
                   size: int) -> torch.Tensor:
    """Render one chunk of shape images; ``white`` is (n, 4, S, S) N(0, 1) noise.

    Returns (n, 3, S, S) float in [0, 1]: a lit, textured object over a pink-noise background.
    """
    n = len(kind)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = coords.view(1, size, 1), coords.view(1, 1, size)  # broadcast to (n, S, S)
    p = {k: v.view(n, 1, 1) for k, v in params.items() if v.dim() == 1}
    fields = _pink_noise(white, params["exponent"])  # (n, 4, S, S): bg luma, 2 x bg chroma, object

    # background: gradient between two related colours, 1/f luma texture, slow chroma drift
    t = (xx - 0.5) * torch.cos(p["angle"]) + (yy - 0.5) * torch.sin(p["angle"])
    t = (t * 1.4143 + 0.5).clamp(0, 1).unsqueeze(1)
    bg = torch.lerp(params["bg1"].view(n, 3, 1, 1), params["bg2"].view(n, 3, 1, 1), t)
    bg = bg * (1 + p["bg_texture"].unsqueeze(1) * fields[:, :1])
    bg = bg + torch.einsum("nkhw,kc->nchw", fields[:, 1:3], torch.tensor(_SHAPE_CHROMA))

    # one light direction per image: it shades the object and casts a soft shadow behind it
    lx, ly = torch.cos(p["light"]), torch.sin(p["light"])
    dx, dy = (xx - p["cx"]) / p["r"], (yy - p["cy"]) / p["r"]  # radius units, unrotated
    c, s = torch.cos(p["rot"]), torch.sin(p["rot"])
    sdf = torch.empty(2, n, size, size)  # approximate signed distance (> 0 inside), radius units
    for k in range(len(SHAPE_KINDS)):
        m = kind == k
        if m.any():
            for i, shift in enumerate((0.0, 0.25)):  # the object, then its shadow (moved away)
                ex, ey = dx[m] + shift * lx[m], dy[m] + shift * ly[m]
                sdf[i, m] = _shape_sdf(k, c[m] * ex + s[m] * ey, -s[m] * ex + c[m] * ey)
    d = sdf[0]
    shadow = (sdf[1] * p["r"] / 0.05 + 0.5).clamp(0, 1)  # penumbra 5% of the image wide
    bg = bg * (1 - 0.35 * shadow).unsqueeze(1)

    # object surface: texture in its own rotated frame, lit side brighter, darker rim, highlight
    u, v = c * dx + s * dy, -s * dx + c * dy
    w = 2 * np.pi * p["tex_freq"]
    ca, sa = torch.cos(p["tex_angle"]), torch.sin(p["tex_angle"])
    textures = torch.stack([
        torch.sin(w * (u * ca + v * sa)),                                # stripes
        torch.tanh(4 * torch.sin(w * u) * torch.sin(w * v)),            # soft checks
        2 * (torch.cos(w * u) * torch.cos(w * v)).clamp_min(0) - 0.5,   # spots
        fields[:, 3],                                                   # pink-noise grain
    ], 1)  # (n, 4, S, S)
    texture = textures.gather(1, params["tex_kind"].view(n, 1, 1, 1).expand(n, 1, size, size))
    shade = (0.8 + 0.25 * (dx * lx + dy * ly).clamp(-1, 1)) * (1 - 0.3 * torch.exp(-d / 0.15))
    fg = params["fg"].view(n, 3, 1, 1) * (1 + p["tex_amp"].unsqueeze(1) * texture)
    fg = fg * shade.unsqueeze(1)
    spot = (dx - 0.4 * lx) ** 2 + (dy - 0.4 * ly) ** 2
    highlight = (p["gloss"] * torch.exp(-spot / 0.06)).unsqueeze(1)
    fg = fg + highlight * (1 - fg)
    alpha = (d * p["r"] * size + 0.5).clamp(0, 1).unsqueeze(1)  # ~1 pixel antialiased edge
    return torch.lerp(bg, fg, alpha).clamp_(0, 1)


def generate(split: str, size: int, n_train: int, n_test: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 3, size, size) uint8, labels (N,) int64) of the ``shapes`` source (its docstring says what
    the scenes look like); the same pixels on every machine."""
    n = n_train if split == "train" else n_test
    # separate seed streams for train and test -> disjoint sets
    g = torch.Generator().manual_seed(seed * 1_000_003 + (1 if split == "train" else 2))

    def rand(*shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    kind = torch.randint(len(SHAPE_KINDS), (n,), generator=g)
    r = rand(n, lo=0.2, hi=0.38)
    # mid-tone palette (saturation and value away from 0 and 1, as in photographs): flat dark
    # saturated channels give SSIM's luminance term vanishing gradients
    scene = torch.tensor(_SHAPE_SCENES)[torch.randint(len(_SHAPE_SCENES), (n,), generator=g)]
    centre, spread, v_lo, v_hi, exponent = scene.unbind(1)  # (n,) each
    hue = (centre + spread * rand(n, lo=-1.0)) % 1
    bg1 = _hsv_to_rgb(hue, rand(n, lo=0.15, hi=0.55), v_lo + (v_hi - v_lo) * rand(n))
    bg2 = _hsv_to_rgb((hue + rand(n, lo=-0.1, hi=0.1)) % 1, rand(n, lo=0.15, hi=0.55),
                      v_lo + (v_hi - v_lo) * rand(n))
    fg = _hsv_to_rgb((hue + rand(n, lo=0.25, hi=0.75)) % 1, rand(n, lo=0.3, hi=0.7),
                     rand(n, lo=0.35, hi=0.9))
    luma = torch.tensor(_SHAPE_LUMA)
    bg_luma = (bg1 + bg2) @ luma / 2
    close = ((fg @ luma) - bg_luma).abs().unsqueeze(1) < 0.1  # keep the object visible
    lifted = torch.where(bg_luma.unsqueeze(1) > 0.5, fg * 0.55, fg + (1 - fg) * 0.5)
    fg = torch.where(close, lifted, fg)
    params = {
        "r": r, "cx": rand(n, lo=r, hi=1 - r), "cy": rand(n, lo=r, hi=1 - r),
        "rot": rand(n, hi=2 * np.pi), "angle": rand(n, hi=2 * np.pi),
        "light": rand(n, hi=2 * np.pi), "bg1": bg1, "bg2": bg2, "fg": fg,
        "bg_texture": rand(n, lo=0.1, hi=0.3),
        # amplitude exponents (power ~ 1/f^(2 x)): bg luma by scene, chroma smooth, grain finer
        "exponent": torch.stack([exponent + rand(n, lo=-0.15, hi=0.15), torch.full((n,), 2.0),
                                 torch.full((n,), 2.0), rand(n, lo=0.7, hi=1.2)], 1),
        "tex_kind": torch.randint(_SHAPE_TEXTURES, (n,), generator=g),
        "tex_amp": rand(n, lo=0.08, hi=0.25), "tex_freq": rand(n, lo=0.6, hi=1.4),  # per radius
        "tex_angle": rand(n, hi=np.pi), "gloss": rand(n, hi=0.5),
    }
    out = torch.empty(n, 3, size, size, dtype=torch.uint8)
    chunk = max(1, 2 ** 18 // (size * size))  # bounded memory at any resolution
    with _single_thread():                    # FFT sums depend on the thread count: same pixels everywhere
        _render_chunks(out, kind, params, g, chunk)
    return out, kind.to(torch.int64)



def _render_chunks(out: torch.Tensor, kind: torch.Tensor, params: dict[str, torch.Tensor], g: torch.Generator,
                   chunk: int) -> None:
    n, size = len(out), out.shape[-1]
    for i in range(0, n, chunk):
        j = min(n, i + chunk)
        white = torch.randn(j - i, 4, size, size, generator=g)
        img = _render_shapes(kind[i:j], {k: v[i:j] for k, v in params.items()}, white, size)
        out[i:j] = img.mul_(255).round_().to(torch.uint8)


@contextlib.contextmanager
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
