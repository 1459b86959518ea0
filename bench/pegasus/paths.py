"""The maths of a pegasus walk: latent and pixel paths, their smoothness (perceptual path length, step
evenness) and what the class probe and the sharpness measure say along them.  Pure functions of tensors.
The protocol that uses them is in ``bench.pegasus.evaluate``."""
from __future__ import annotations

from collections.abc import Callable

import torch

from bench.metrics import quality

EPS = 1e-4               # Karras et al. (2019)
BATCH = 64               # images per distance-network call and per batched PPL decode


# --------------------------------------------------------------------------- paths

def _times(t: torch.Tensor | float, n: int, like: torch.Tensor) -> torch.Tensor:
    """t as (n, 1, ..., 1) broadcastable against ``like`` (n rows)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(n)
    return t.view(n, *([1] * (like.dim() - 1)))


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """(1 - t) a + t b, row-wise; ``t`` a scalar or one value per row."""
    return a + (b - a) * _times(t, len(a), a)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Spherical interpolation of (B, D) rows: sin((1-t)w)/sin(w) a + sin(tw)/sin(w) b, w = angle(a, b).

    Keeps the norm when |a| = |b|; (near-)parallel rows fall back to ``lerp``."""
    t = _times(t, len(a), a)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12).clamp(-1, 1).unsqueeze(1)
    omega = torch.acos(cos)
    so = torch.sin(omega)
    parallel = so.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(so), so)
    wa = torch.where(parallel, 1 - t, torch.sin((1 - t) * omega) / safe)
    wb = torch.where(parallel, t, torch.sin(t * omega) / safe)
    return wa * a + wb * b


INTERP: dict[str, Callable[..., torch.Tensor]] = {"lerp": lerp, "slerp": slerp}

ImagePath = Callable[[torch.Tensor], torch.Tensor]          # t (B,) -> images (B, 3, H, W) in [0, 1]


def latent_path(decode: Callable[[torch.Tensor], torch.Tensor], za: torch.Tensor, zb: torch.Tensor,
                kind: str) -> ImagePath:
    interp = INTERP[kind]
    return lambda t: decode(interp(za, zb, t))


def pixel_path(xa: torch.Tensor, xb: torch.Tensor) -> ImagePath:
    return lambda t: lerp(xa, xb, t)


def path_frames(path: ImagePath, ts: torch.Tensor, n: int) -> torch.Tensor:
    """(n, K, 3, H, W) frames of ``path`` at the K times ``ts`` (the same t for every row), CPU."""
    return torch.stack([path(t.expand(n)).cpu() for t in ts], 1)


# --------------------------------------------------------------------------- smoothness

ImageDistance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (B, 3, H, W) x2 in [0, 1] -> (B,)


def ppl_times(n: int, m: int, generator: torch.Generator, eps: float = EPS) -> torch.Tensor:
    """(n, m) times stratified in [0, 1 - eps]: one uniform draw in each of m equal bins."""
    return (torch.arange(m) + torch.rand(n, m, generator=generator)) / m * (1 - eps)


def perceptual_path_length(path: ImagePath, ts: torch.Tensor, distance: ImageDistance,
                           eps: float = EPS) -> torch.Tensor:
    """(B,) per-row mean over the M columns of ``ts`` (B, M) of d(path(t), path(t + eps)) / eps^2."""
    out = []
    for m in range(ts.shape[1]):
        t = ts[:, m]
        out.append(distance(path(t), path(t + eps)).double().cpu() / eps ** 2)
    return torch.stack(out, 1).double().mean(1)


def ppl_batched(make_path: Callable[[torch.Tensor, torch.Tensor], ImagePath], a: torch.Tensor, b: torch.Tensor,
                ts: torch.Tensor, distance: ImageDistance, eps: float = EPS, rows: int | None = None) -> torch.Tensor:
    """(B,) :func:`perceptual_path_length` of the paths ``make_path(a, b)`` with all B x M samples
    evaluated ``rows`` at a time (endpoints repeated per sample: big batches, few calls)."""
    m = ts.shape[1]
    per = max(1, (rows or BATCH) // m)
    out = []
    for i in range(0, len(a), per):
        j = min(len(a), i + per)
        path = make_path(a[i:j].repeat_interleave(m, 0), b[i:j].repeat_interleave(m, 0))
        out.append(perceptual_path_length(path, ts[i:j].reshape(-1, 1), distance, eps).view(j - i, m).mean(1))
    return torch.cat(out)


def step_distances(frames: torch.Tensor, distance: ImageDistance, device: torch.device) -> torch.Tensor:
    """(B, K-1) distances between consecutive frames of (B, K, 3, H, W)."""
    b, k = frames.shape[:2]
    d = distance(frames[:, :-1].flatten(0, 1).to(device), frames[:, 1:].flatten(0, 1).to(device))
    return d.double().cpu().view(b, k - 1)


def max_step_ratio(steps: torch.Tensor) -> torch.Tensor:
    """(B,) largest consecutive-frame distance / the mean one (1 = evenly spaced)."""
    return steps.max(1).values / steps.mean(1).clamp_min(1e-12)


# --------------------------------------------------------------------------- class probe along paths

def leak_proof_hybrid(p_from: torch.Tensor, p_to: torch.Tensor) -> torch.Tensor:
    """max(0, 2 min(P(from), P(to)) - off-class mass): 1 for an even split of all the mass between the two
    classes; 0 when either class is absent or at least as much mass leaks to other classes as is split."""
    return (2 * torch.minimum(p_from, p_to) - (1 - p_from - p_to)).clamp_min(0)


def laplacian_ratio(mid: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """(B,) Laplacian variance of the midpoint / the mean of the two endpoints' (pass the real endpoints so
    that every path is measured on one scale)."""
    ends = (quality.laplacian_variance(start) + quality.laplacian_variance(end)) / 2
    return (quality.laplacian_variance(mid) / ends.clamp_min(quality.EPS)).double()


