"""The model registry and the output every model returns (imported by the factories, the losses and
the engine; ``models/__init__`` only re-exports them and imports the factories so they register)."""
from __future__ import annotations

from typing import NamedTuple

import torch

from bench.registry import Registry

MODELS = Registry("model")


class VAEOutput(NamedTuple):
    recon: torch.Tensor   # (B, 3, H, W) in [0, 1]
    mu: torch.Tensor      # (B, D)
    logvar: torch.Tensor  # (B, D)
    z: torch.Tensor       # (B, D), the reparameterised sample decoded into recon
