"""PNG image sheets: grids of (N, 3, H, W) images in [0, 1], written atomically."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from bench import store


def save_grid(path: Path, images: torch.Tensor, nrow: int) -> None:
    """Write a PNG grid of (N, 3, H, W) images in [0, 1], atomically."""
    import torchvision
    from PIL import Image

    grid = torchvision.utils.make_grid(images.float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=1.0)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    store.write_bytes(path, buf.getvalue())


def interleave_rows(a: torch.Tensor, b: torch.Tensor, nrow: int) -> torch.Tensor:
    """Rows of ``a`` followed by the matching rows of ``b`` (originals above reconstructions)."""
    rows = []
    for i in range(0, len(a), nrow):
        rows += [a[i:i + nrow], b[i:i + nrow]]
    return torch.cat(rows)
