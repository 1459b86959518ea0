"""Evaluation subsets: fixed, seeded, class-stratified samples — never "the first n".

Image folders list their classes one after another, so ``images[:n]`` of a test split is a
handful of classes (the first 250 CIFAR-10 test JPEGs are all airplanes).  Every image set the
scoring pass uses (test pass, train pass, sample reference, FID/KID reference, sheets) is instead
chosen here:

* **stratified**: each class gets ``n // k`` images, the remainder goes one each to classes
  chosen by the seeded generator (a class with too few images gives all it has and the rest is
  spread over the others), so the sample's class mix matches a balanced set;
* **seeded and fixed**: the generator seed is ``EVAL_SEED`` (not the run's seed), so every arm
  and every seed of an ablation is scored on the same images;
* **identified**: ``Subset.protocol()`` gives n, the rule and a hash of the sorted indices, which
  every metric record stores, so two numbers can be checked to come from the same images.

Unlabelled sets (labels -1) get a plain seeded uniform sample under the same rule.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

EVAL_SEED = 20240601    # one fixed seed for every evaluation subset of every run


@dataclass(frozen=True)
class Subset:
    """Sorted indices into a set of ``total`` images, with the rule that chose them."""
    indices: torch.Tensor           # (n,) int64, sorted
    total: int
    stratified: bool
    seed: int

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def index_hash(self) -> str:
        return index_hash(self.indices)

    def protocol(self, prefix: str = "") -> dict:
        """Fields for a metric record: ``n``-independent identity of the images used."""
        rule = (f"class-stratified seeded sample (seed {self.seed})" if self.stratified
                else f"seeded uniform sample (seed {self.seed}, unlabelled)")
        if len(self.indices) == self.total:
            rule = "all images"
        return {f"{prefix}selection": rule, f"{prefix}n_selected": len(self.indices),
                f"{prefix}n_available": self.total, f"{prefix}index_sha256": self.index_hash}


def index_hash(indices: torch.Tensor) -> str:
    """First 16 hex digits of sha256 over the sorted int64 indices."""
    arr = indices.to(torch.int64).sort().values.contiguous().numpy()
    return hashlib.sha256(arr.tobytes()).hexdigest()[:16]


def stratified(labels: torch.Tensor, n: int | None, seed: int = EVAL_SEED) -> Subset:
    """A class-stratified sample of ``n`` indices into ``labels`` (all of them when n is None or >= N)."""
    labels = labels.to(torch.int64).cpu()
    total = len(labels)
    labelled = bool(total) and bool((labels >= 0).all())
    if n is None or n >= total:
        return Subset(torch.arange(total), total, labelled, seed)
    if n < 0:
        raise ValueError(f"subset size must be >= 0, got {n}")
    g = torch.Generator().manual_seed(seed)
    if not labelled:
        idx = torch.randperm(total, generator=g)[:n]
        return Subset(idx.sort().values, total, False, seed)
    classes = labels.unique(sorted=True)
    pools = [(labels == c).nonzero().flatten() for c in classes]
    pools = [p[torch.randperm(len(p), generator=g)] for p in pools]   # each class shuffled once
    quota = _quotas([len(p) for p in pools], n, g)
    idx = torch.cat([p[:q] for p, q in zip(pools, quota)])
    return Subset(idx.sort().values, total, True, seed)


def _quotas(sizes: list[int], n: int, g: torch.Generator) -> list[int]:
    """Per-class counts summing to n: as equal as the class sizes allow, remainder seeded."""
    k = len(sizes)
    quota = [0] * k
    left = n
    open_ = [i for i in range(k) if sizes[i] > 0]
    while left > 0 and open_:
        share = left // len(open_)
        if share == 0:                                   # fewer images left than classes: seeded pick
            order = torch.randperm(len(open_), generator=g).tolist()
            for j in order[:left]:
                quota[open_[j]] += 1
            break
        for i in open_:
            take = min(share, sizes[i] - quota[i])
            quota[i] += take
            left -= take
        open_ = [i for i in open_ if quota[i] < sizes[i]]
    return quota


def kid_subset_size(n: int, requested: int | None = None) -> int:
    """KID subset size: half the set (at most 1000) so subsets differ and kid_std means something."""
    return max(2, min(requested or min(1000, n // 2), n))
