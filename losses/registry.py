"""The loss-term registry (imported by every term and by the objective; ``losses/__init__`` re-exports it)."""
from __future__ import annotations

from bench.registry import Registry

LOSSES = Registry("loss")
