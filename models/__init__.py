"""VAE variants: ``nn.Module``s only, no loss code.

Contract: ``model(x, generator=None) -> VAEOutput(recon, mu, logvar, z)`` with ``x``
and ``recon`` float32 in [0, 1], NCHW; models also expose ``encode(x) -> (mu, logvar)``,
``decode(z) -> images``, ``sample(n, generator=None) -> images`` and ``features(x)`` (the
encoder's feature maps, for the own-encoder deep-feature loss).

Factories are registered in ``MODELS``; every factory takes ``image_size`` (filled in by the
engine from the dataset) and its ablation axes as keyword arguments.
"""
from __future__ import annotations

from models import conv  # registers the factories
from models.registry import MODELS, VAEOutput

__all__ = ["MODELS", "VAEOutput", "conv"]
