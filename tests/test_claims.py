"""Claim wiring: every comparison a claim registers resolves to real arms of every ablation file that
lists the claim (the C8 / C10 patterns once named arms that no file had, so they could never fire)."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench import claims, config

ABLATIONS = Path(__file__).resolve().parent.parent / "ablations"
FILES = sorted(p for p in ABLATIONS.glob("*.yaml") if not p.name.startswith("_"))


def _pairs():
    for path in FILES:
        spec = config.load(path)
        for cid in spec.claims:
            for chk in claims.CLAIMS[cid].checks:
                yield pytest.param(path, spec, chk, id=f"{path.stem}-{cid}-{chk.metric}-{chk.arm}")


@pytest.mark.parametrize("path,spec,chk", list(_pairs()))
def test_every_check_resolves_to_arms_of_every_file_listing_the_claim(path, spec, chk):
    arms = list(spec.arms)
    ref = spec.baseline_arm() if chk.ref == "baseline" else chk.ref
    if chk.datasets and not set(chk.datasets) & set(spec.datasets):
        pytest.skip(f"{path.name} does not run {chk.datasets}")
    assert claims._match(chk.arm, arms), f"{path.name}: no arm matches {chk.arm!r} (arms: {arms})"
    assert claims._match(ref, arms), f"{path.name}: no arm matches {ref!r} (arms: {arms})"
    assert chk.metric == claims.DIVERGED or chk.metric in claims.CATALOGUE, chk.metric


@pytest.mark.parametrize("cid", list(claims.CLAIMS))
def test_every_ablation_a_claim_names_exists_and_lists_it(cid):
    for name in claims.CLAIMS[cid].ablations:
        path = ABLATIONS / f"{name}.yaml"
        assert path.exists(), f"{cid} names ablation {name!r}, but {path.name} does not exist"
        assert cid in config.load(path).claims, f"{path.name} does not list {cid}"


def test_each_claim_listed_by_a_file_is_registered_for_it():
    for path in FILES:
        spec = config.load(path)
        for cid in spec.claims:
            assert spec.name in claims.CLAIMS[cid].ablations or spec.name == "quick", (path.name, cid)
