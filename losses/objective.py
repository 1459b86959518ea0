"""``Term`` (the base of every loss term) and ``Objective`` (their weighted sum).

The reduction convention is in ``losses/__init__.py``: a term returns ``(B,)`` per-image values in
per-image *sum* units; the objective weights, sums and averages over the batch.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench.errors import ConfigError
from bench.precision import float32
from losses.registry import LOSSES
from models.registry import VAEOutput


@dataclass(frozen=True)
class LossEntry:
    """One term of a run's loss: its registered name, weight and complete (bound) arguments."""
    name: str
    weight: float = 1.0
    args: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The YAML / config.yaml form ``{"name": ..., "weight": ..., **args}``."""
        return {"name": self.name, "weight": self.weight, **self.args}


def parse_loss(entries: Iterable[Mapping[str, Any] | LossEntry]) -> tuple[LossEntry, ...]:
    """``[{"name": "kl", "weight": 1.0, **term_args}, ...]`` -> LossEntries, validated once: the name
    is registered, the weight a finite number >= 0 (default 1), the arguments bound to the term's
    signature.  Errors are ``ConfigError`` keyed ``loss[i].<key>``."""
    out = []
    for i, entry in enumerate(entries):
        if isinstance(entry, LossEntry):
            out.append(entry)
            continue
        if not isinstance(entry, Mapping):
            raise ConfigError(f"a loss entry is a mapping with a name (got {entry!r})", key=f"loss[{i}]")
        args = dict(entry)                                  # never mutate the caller's dict
        name = args.pop("name", None)
        if name is None:
            raise ConfigError("loss entry needs a name", key=f"loss[{i}].name")
        weight = args.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"weight must be a number (got {weight!r})", key=f"loss[{i}].weight")
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"weight must be a finite number >= 0 (got {weight})", key=f"loss[{i}].weight")
        try:
            bound = LOSSES.bind(name, args)
        except ConfigError as exc:
            key = "name" if exc.message.startswith("unknown loss") else exc.key
            raise ConfigError(exc.message, key=f"loss[{i}]" + (f".{key}" if key else "")) from None
        out.append(LossEntry(name, float(weight), bound))
    if not out:
        raise ConfigError("at least one loss term is needed", key="loss")
    return tuple(out)


class Term(nn.Module):
    """A loss term.  ``forward(x, out, model=None, step=0) -> (B,)`` per-image values.

    ``x``: (B, 3, H, W) targets in [0, 1]; ``out``: the model's ``VAEOutput``; ``model``: the VAE
    (only terms that look inside it need it, e.g. ``deep_feature``); ``step``: the training step
    (for schedules such as KL warm-up).

    Terms compute in float32 whatever autocast is active: calling a term switches autocast off for
    the images' device and hands ``forward`` float32 copies of ``x`` and of every field of ``out``
    (gradients flow through the casts), so a bf16 model's output is scored in float32.
    """

    def __init__(self):  # explicit: the registry binds YAML args to this signature (no **kwargs)
        super().__init__()

    def __call__(self, x: torch.Tensor, out: VAEOutput, model: nn.Module | None = None,
                 step: int = 0) -> torch.Tensor:
        with float32(x.device):
            return super().__call__(x.float(), VAEOutput(*(t.float() for t in out)), model, step)

    def forward(self, x: torch.Tensor, out: VAEOutput, model: nn.Module | None = None,
                step: int = 0) -> torch.Tensor:
        raise NotImplementedError


class Objective(nn.Module):
    """Weighted sum of terms: ``total = mean_b sum_i w_i * term_i(x_b)``.

    Built from ``[(name, weight, term), ...]`` or, from YAML, with :meth:`from_config`.
    ``forward`` returns ``(total, terms)``: ``total`` a scalar tensor (differentiable), ``terms``
    a dict of *unweighted* batch means (tensors, not detached), keyed by term name; a name used
    again gets a suffix (``mse``, ``mse_2``, ``mse_3``).
    """

    def __init__(self, entries: list[tuple[str, float, Term]]):
        super().__init__()
        if not entries:
            raise ConfigError("at least one loss term is needed", key="loss")
        self.keys: list[str] = []
        for name, _, _ in entries:
            key, k = name, 1
            while key in self.keys:
                k += 1
                key = f"{name}_{k}"
            self.keys.append(key)
        self.weights = [float(w) for _, w, _ in entries]
        self.terms = nn.ModuleList(t for _, _, t in entries)

    @classmethod
    def from_config(cls, entries: Iterable[Mapping[str, Any] | LossEntry]) -> Objective:
        """LossEntries (a run's ``loss``) or their YAML dicts (parsed with :func:`parse_loss`) -> Objective."""
        return cls([(e.name, e.weight, LOSSES.build(e.name, dict(e.args))) for e in parse_loss(entries)])

    def forward(self, x: torch.Tensor, out: VAEOutput, model: nn.Module | None = None,
                step: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = x.new_zeros((), dtype=torch.float32)
        terms: dict[str, torch.Tensor] = {}
        for key, w, term in zip(self.keys, self.weights, self.terms):
            v = term(x, out, model, step)                     # (B,)
            if v.shape != (x.shape[0],):
                raise RuntimeError(f"loss term {key!r} returned shape {tuple(v.shape)}, "
                                   f"expected ({x.shape[0]},) (one value per image)")
            total = total + w * v.float().mean()
            terms[key] = v.mean()
        return total, terms

    def extra_repr(self) -> str:
        return " + ".join(f"{w:g}*{k}" for k, w in zip(self.keys, self.weights))
