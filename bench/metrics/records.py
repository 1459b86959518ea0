"""Metric records: a value with the protocol that produced it, or the reason it is missing.

    {"value": 0.81, "n": 10000, "split": "test", "resolution": 32, "selection": ..., ...}
    {"value": null, "unavailable": "Inception weights not found: ...", ...}

Every module that produces metrics (scoring, fidelity, pegasus) builds its records here, so the
record shape has one home below all of them.
"""
from __future__ import annotations

import math
from typing import Any


def metric(value: float | int | None, *, n: int, split: str, **protocol: Any) -> dict[str, Any]:
    """A measured value; a non-finite float becomes ``None`` with the reason recorded."""
    if value is not None and isinstance(value, float) and not math.isfinite(value):
        value = None
        protocol.setdefault("unavailable", "non-finite value")
    return {"value": value, "n": n, "split": split, **protocol}


def unavailable(reason: str, **protocol: Any) -> dict[str, Any]:
    """A metric that could not be computed here, with its one-line reason."""
    return {"value": None, "unavailable": reason, **protocol}
