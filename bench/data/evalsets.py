"""The fixed images a run is scored on: test, train, sample reference, FID/KID and sheet subsets.

Every set is a fixed, seeded, class-stratified sample (bench/data/subsets.py), identical for every arm
and seed of an ablation, and identified in each metric record by ``EvalSets.proto``.  With
``eval.classes`` every arm is scored on the held-out images of those classes only (C10).

Each set is drawn from the (class-restricted) split itself, so it depends only on (dataset, split, n):
the FID/KID reference of 500 images is the same 500 in a file scoring 2000 test images and in one scoring
all 10000, and the numbers of two folders compare.  Stratified samples of one split are nested (a
smaller n takes a subset of a larger one's images, tests/test_verdicts.py), so every set lies inside
the test subset and its reconstructions come from the one test pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench.config.schema import RunSpec
from bench.data import sources as data_mod
from bench.data import subsets


@dataclass
class EvalSets:
    """The fixed images a run is scored on (see the module docstring)."""
    test: torch.Tensor              # (N, 3, R, R) uint8
    test_labels: torch.Tensor
    test_sub: subsets.Subset        # indices into the (class-restricted) test split
    train: torch.Tensor
    train_sub: subsets.Subset
    ref_pos: subsets.Subset         # positions within ``test``: sample reference
    fid_pos: subsets.Subset         # positions within ``test``: FID/KID/LPIPS
    sheet_pos: subsets.Subset       # positions within ``test``: the recon sheet
    split: str
    classes: list[str] | None       # eval.classes, if the run restricts scoring to them

    def proto(self, which: str) -> dict[str, Any]:
        """Selection fields of one set, with indices hashed in the split's own numbering."""
        if which == "test":
            return self.test_sub.protocol()
        if which == "train":
            return self.train_sub.protocol()
        pos = {"ref": self.ref_pos, "fid": self.fid_pos}[which]
        absolute = self.test_sub.indices[pos.indices]
        out = pos.protocol()
        out["index_sha256"] = subsets.index_hash(absolute)
        out["n_available"] = self.test_sub.total
        return out


def _restrict(images: torch.Tensor, labels: torch.Tensor, have: list[str], want: list[str] | None):
    """Keep only the images of classes ``want`` (labels re-indexed into ``want`` order)."""
    if want is None:
        return images, labels
    old = torch.tensor([have.index(c) for c in want])
    keep = torch.isin(labels, old)
    remap = torch.full((max(len(have), 1),), -1, dtype=torch.int64)
    remap[old] = torch.arange(len(want))
    return images[keep], remap[labels[keep]]


def eval_sets(run: RunSpec) -> EvalSets:
    """Load the run's test/train splits and choose every evaluation subset (seeded, stratified)."""
    ev, dspec = run.eval, run.data
    want = ev.classes
    test_set, train_set = data_mod.load(dspec, "test"), data_mod.load(dspec, "train")
    test_imgs, test_lab = _restrict(test_set.images, test_set.labels, test_set.classes, want)
    train_imgs, train_lab = _restrict(train_set.images, train_set.labels, train_set.classes, want)
    test_sub = subsets.stratified(test_lab, ev.n_test)
    test, labels = test_imgs[test_sub.indices], test_lab[test_sub.indices]
    n = len(test)
    train_sub = subsets.stratified(train_lab, n)
    n_fid = min(ev.n_fid or max(ev.n_samples, n), n)
    split = dspec.test_split if not dspec.holdout else f"{dspec.train_split} holdout {dspec.holdout:g}"
    if want:
        split += f" classes={','.join(want)}"

    def within_test(k: int) -> subsets.Subset:
        """The split's own stratified sample of k images, as positions within the test subset."""
        return _positions(test_sub, subsets.stratified(test_lab, k))
    return EvalSets(test, labels, test_sub, train_imgs[train_sub.indices], train_sub,
                    within_test(min(ev.n_samples, n)), within_test(n_fid), within_test(min(ev.sheet // 2, n)),
                    split, want)


def _positions(outer: subsets.Subset, inner: subsets.Subset) -> subsets.Subset:
    """``inner``'s indices (into the same split as ``outer``'s) as positions within ``outer``."""
    pos = torch.searchsorted(outer.indices, inner.indices)
    if len(pos) and (int(pos.max()) >= len(outer) or not torch.equal(outer.indices[pos], inner.indices)):
        raise RuntimeError("evaluation subsets are not nested in the test subset (bench.data.subsets.stratified)")
    return subsets.Subset(pos, len(outer), inner.stratified, inner.seed)
