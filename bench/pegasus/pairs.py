"""The pairs of a pegasus walk: held-out images of two classes, chosen by a fixed seed so that every run of a
dataset meets the same pairs."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import torch

from bench.errors import BenchError

PAIR_SEED = 0            # the same pairs for every run of a dataset (not the run's seed)


# --------------------------------------------------------------------------- pairs

@dataclass(frozen=True)
class Pairs:
    """P (from, to) index pairs into the held-out split (all classes)."""
    from_idx: torch.Tensor
    to_idx: torch.Tensor
    seed: int

    def __len__(self) -> int:
        return len(self.from_idx)

    def as_list(self) -> list[list[int]]:
        return [[int(i), int(j)] for i, j in zip(self.from_idx, self.to_idx)]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.as_list()).encode()).hexdigest()[:16]

    def protocol(self) -> dict[str, Any]:
        return {"pairs": len(self), "pair_seed": self.seed, "pair_index_sha256": self.sha256}


def choose_pairs(labels: torch.Tensor, i_from: int, i_to: int, n: int, seed: int = PAIR_SEED) -> Pairs:
    """n seeded pairs: a permutation of each class's held-out images (repeated if n exceeds it)."""
    g = torch.Generator().manual_seed(seed)

    def draw(c: int) -> torch.Tensor:
        members = (labels == c).nonzero().flatten()
        reps = math.ceil(n / len(members))
        return torch.cat([members[torch.randperm(len(members), generator=g)] for _ in range(reps)])[:n]

    return Pairs(draw(i_from), draw(i_to), seed)


def class_index(classes: list[str], name: str, flag: str) -> int:
    """Index of a class name, else a one-line error listing the known ones."""
    if name in classes:
        return classes.index(name)
    import difflib
    close = difflib.get_close_matches(name, classes, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise BenchError(f"{flag}: unknown class {name!r}{hint}; known: {', '.join(classes)}")


