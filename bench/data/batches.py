"""Device-resident batching: the whole uint8 training set on the device, seeded resumable permutations of it,
flips and the float conversion batched on the device (no per-sample Python in the training loop)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from bench.errors import DataError


def to_float(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float32 in [0, 1] on ``device``."""
    return images.to(device, non_blocking=True).float().div_(255)


class Batches:
    """Seeded, resumable training batches from a device-resident uint8 tensor.

    Each epoch is a ``torch.randperm`` from an explicit generator; the last incomplete batch is
    dropped.  Flip decisions come from the same generator, so ``state_dict`` (generator state,
    permutation, position) reproduces the exact batch sequence after a resume.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int,
                 device: torch.device | str = "cpu", hflip: bool = False):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"Batches needs uint8 (N, 3, H, W) images, got {images.dtype} "
                            f"{tuple(images.shape)}")
        if not 1 <= batch_size <= len(images):
            raise DataError(f"batch_size {batch_size} must be in 1..{len(images)} "
                            f"(the number of training images)")
        self.device = torch.device(device)
        self.data = images.to(self.device)  # moved once; (N, 3, H, W) uint8
        self.batch_size, self.hflip = batch_size, hflip
        self.generator = torch.Generator().manual_seed(seed)
        self.perm: torch.Tensor | None = None  # CPU int64, current epoch's order
        self._perm_dev: torch.Tensor | None = None
        self.pos = 0
        self.epoch = 0

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.data) // self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        return self.next()

    def next(self) -> torch.Tensor:
        """The next (B, 3, H, W) float32 batch in [0, 1] on the device."""
        if self.perm is None or self.pos + self.batch_size > len(self.perm):
            self._set_perm(torch.randperm(len(self.data), generator=self.generator))
            self.pos = 0
            self.epoch += 1
        idx = self._perm_dev[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        x = self.data[idx].float().div_(255)  # (B, 3, H, W) in [0, 1]
        if self.hflip:
            flip = (torch.rand(self.batch_size, generator=self.generator) < 0.5).to(self.device)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return x

    def _set_perm(self, perm: torch.Tensor) -> None:
        self.perm = perm
        self._perm_dev = perm.to(self.device)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self.perm, "pos": self.pos,
                "epoch": self.epoch, "n": len(self.data), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["n"] != len(self.data) or state["batch_size"] != self.batch_size:
            raise DataError(f"batch state is for {state['n']} images / batch {state['batch_size']}, "
                            f"not {len(self.data)} / {self.batch_size}")
        self.generator.set_state(state["generator"])
        if state["perm"] is None:
            self.perm = self._perm_dev = None
        else:
            self._set_perm(state["perm"].cpu())
        self.pos, self.epoch = state["pos"], state["epoch"]
