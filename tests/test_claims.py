"""Claim wiring: every comparison a claim registers resolves to real arms of every ablation file that
lists the claim (the C8 / C10 patterns once named arms that no file had, so they could never fire)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.config import schema as config
from bench.pegasus import evaluate as pegasus
from bench.report import claims, rd
from bench.report.tables import RunRecord

ABLATIONS = Path(__file__).resolve().parent.parent / "ablations"
FILES = sorted(p for p in ABLATIONS.glob("*.yaml") if not p.name.startswith("_"))


def _swept(spec) -> dict[str, dict]:
    return {run.arm: dict(run.swept) for run in config.expand(spec)}


def _has_rd(spec) -> bool:
    return bool(rd.swept_weight([RunRecord(r, "done", None) for r in config.expand(spec)]))


def _pairs():
    """(file, check) for every check that applies to the file (test_every_check_applies_... below
    makes sure no check is left out everywhere)."""
    for path in FILES:
        spec = config.load(path)
        for cid in spec.claims:
            for chk in claims.CLAIMS[cid].checks:
                if claims.applies(chk, _swept(spec), _has_rd(spec)):
                    at = "".join(f"@{v:g}" for _, v in chk.at if isinstance(v, float))
                    yield pytest.param(path, spec, chk, id=f"{path.stem}-{cid}-{chk.metric}-{chk.arm}{at}")


@pytest.mark.parametrize("path,spec,chk", list(_pairs()))
def test_every_check_resolves_to_arms_of_every_file_listing_the_claim(path, spec, chk):
    swept = _swept(spec)
    arms = list(spec.arms)
    if chk.matched:       # loss families of a loss-weight sweep: arm names before the grid suffix
        arms = sorted({rd.family(a) for a in arms})
        swept = {a: {} for a in arms}
    arm = spec.baseline_arm() if chk.arm == "baseline" else chk.arm
    ref = spec.baseline_arm() if chk.ref == "baseline" else chk.ref
    if chk.datasets and not set(chk.datasets) & set(spec.datasets):
        pytest.skip(f"{path.name} does not run {chk.datasets}")
    assert claims.select(arm, chk.at, swept), f"{path.name}: no arm matches {chk.arm!r} {chk.at} (arms: {arms})"
    assert claims.select(ref, chk.ref_at, swept), f"{path.name}: no arm matches {ref!r} {chk.ref_at} (arms: {arms})"
    assert chk.expect in claims.EXPECTS, chk.expect
    known = set(claims.CATALOGUE) | set(pegasus.metric_keys()) | {claims.DIVERGED}
    for key in filter(None, (chk.metric, chk.ref_metric)):
        assert key in known, key
        if key.startswith("pegasus_"):      # only measured when the file asks for the interpolation pass
            assert all(run.eval.pegasus for run in config.expand(spec)), f"{path.name}: eval.pegasus unset"


@pytest.mark.parametrize("cid", list(claims.CLAIMS))
def test_every_check_applies_to_some_file_of_its_claim(cid):
    """A registered comparison that no file of the claim can evaluate would never fire."""
    specs = [config.load(ABLATIONS / f"{n}.yaml") for n in claims.CLAIMS[cid].ablations]
    for chk in claims.CLAIMS[cid].checks:
        assert any(claims.applies(chk, _swept(s), _has_rd(s)) for s in specs), claims.describe(chk)


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


def _summary(rows: dict[str, dict[int, float]], arm: str = "full") -> dict:
    """A minimal summary.json: one arm on stl10, metric -> {seed: value}."""
    metrics = {k: {"values": list(v.values()), "seeds": list(v.keys())} for k, v in rows.items()}
    return {"arms": {arm: {}}, "baseline": arm, "datasets": ["stl10"],
            "groups": [{"arm": arm, "dataset": "stl10", "counts": {"done": 3}, "metrics": metrics}]}


def test_paired_check_pairs_by_seed_and_needs_a_consistent_difference():
    chk = claims._paired("a", "b", "baseline", "lower")
    # per-seed differences -0.10, -0.11, -0.09: consistent, although the spread across seeds is large
    good = _summary({"a": {0: 0.40, 1: 0.89, 2: 0.11}, "b": {0: 0.50, 1: 1.00, 2: 0.20}})
    (o,) = claims.evaluate(claims.Claim("X", "x", ("f",), (chk,)), good)
    assert o.score == 1 and o.n == "3 paired" and o.arm == "full" and o.p < 0.01
    # the same values with the seeds shuffled on one side no longer pair up
    shuffled = _summary({"a": {1: 0.40, 2: 0.89, 0: 0.11}, "b": {0: 0.50, 1: 1.00, 2: 0.20}})
    (o,) = claims.evaluate(claims.Claim("X", "x", ("f",), (chk,)), shuffled)
    assert o.score == 0
    # a Welch test on the unpaired values would not see the effect either: pairing is what finds it
    assert not claims.stats.welch([0.40, 0.89, 0.11], [0.50, 1.00, 0.20]).significant


def test_paired_check_with_a_missing_metric_is_not_measured():
    chk = claims._paired("a", "b", "baseline", "lower")
    (o,) = claims.evaluate(claims.Claim("X", "x", ("f",), (chk,)), _summary({"a": {0: 1.0}}))
    assert o.score is None and o.effect == "not measured"


@pytest.mark.parametrize("expect,diffs,score", [
    ("not_lower", [0.001, -0.001, 0.0005], 1),      # within the 2% margin of a reference near 0.5
    ("not_lower", [-0.30, -0.31, -0.29], -1),       # significantly lower by far more than the margin
    ("not_lower", [0.2, -0.2, 0.0], 0),             # too noisy to tell
    ("not_higher", [0.30, 0.31, 0.29], -1),
])
def test_non_inferiority_both_directions(expect, diffs, score):
    ref = {0: 0.5, 1: 0.5, 2: 0.5}
    arm = {s: 0.5 + d for s, d in zip(ref, diffs)}
    chk = claims._paired("a", "b", "baseline", expect)
    (o,) = claims.evaluate(claims.Claim("X", "x", ("f",), (chk,)), _summary({"a": arm, "b": ref}))
    assert o.score == score, o.effect


def test_c11_rule_v2_counts_realism_and_class_mass_of_the_registered_arm_only():
    c11 = claims.CLAIMS["C11"]
    counted = {(c.metric, c.ref_metric, c.expect) for c in c11.checks if c.counted}
    assert counted == {("pegasus_v2_kid_mid_lerp", "pegasus_v2_kid_mid_crossfade", "lower"),
                       ("pegasus_v2_sharpness_lerp", "pegasus_v2_sharpness_crossfade", "higher"),
                       ("pegasus_v2_hybrid_lerp", "pegasus_v2_hybrid_crossfade", "not_lower"),
                       ("pegasus_v2_joint_mass_lerp", "pegasus_v2_joint_mass_crossfade", "not_lower")}
    assert all(c.ref_metric and c.arm == claims.PAPER_ARM for c in c11.checks)
    # no version-1 number (pegasus_hybrid_lerp ...) can be read by the version-2 rule
    assert not any(k.startswith("pegasus_") and not k.startswith("pegasus_v2_")
                   for c in c11.checks for k in (c.metric, c.ref_metric))
    assert {c.margin for c in c11.checks if c.expect == "not_lower"} == {claims.C11_MARGIN}


def test_a_registered_absolute_margin_replaces_the_relative_one():
    ref = {0: 0.10, 1: 0.11, 2: 0.09}
    arm = {s: v - 0.02 for s, v in ref.items()}            # 0.02 lower: outside 2% of 0.1, inside 0.05
    for margin, want in ((None, 0), (0.05, 1)):
        chk = claims._paired("a", "b", "baseline", "not_lower", margin=margin)
        (o,) = claims.evaluate(claims.Claim("X", "x", ("f",), (chk,)), _summary({"a": arm, "b": ref}))
        assert o.score in ((-1, 0) if want == 0 else (1,)), (margin, o.effect)


def test_matched_rate_checks_give_one_paired_comparison_per_rate():
    chk = next(c for c in claims.CLAIMS["C1"].checks if c.matched and c.metric == "st_lpips")
    fams = {"mse": {"0": [0.30, 0.20], "1": [0.31, 0.21], "2": [0.29, 0.19]},
            "ssim": {"0": [0.25, 0.20], "1": [0.265, 0.22], "2": [0.238, 0.18]}}
    summary = {"ablation": "rd_cpu", "datasets": ["cifar10"], "groups": [], "baseline": "mse--x",
               "rd": {"metrics": {"st_lpips": {"rates": [10.0, 100.0], "families": fams}}}}
    outs = [o for o in claims.evaluate(claims.CLAIMS["C1"], summary) if o.check is chk]
    assert [o.dataset for o in outs] == ["cifar10 @ KL 10.0 nats", "cifar10 @ KL 100.0 nats"]
    assert outs[0].score == 1 and outs[0].n == "3 paired"          # -0.050, -0.045, -0.052
    assert outs[1].score == 0                                        # differences 0, +0.01, -0.01
    # the per-arm checks do not apply to a loss-weight sweep, the matched-rate ones only to it
    assert all(o.check.matched for o in claims.evaluate(claims.CLAIMS["C1"], summary))
    plain = {**summary, "rd": None, "arms": {"mse": {}, "ssim": {}}}
    assert not any(o.check.matched for o in claims.evaluate(claims.CLAIMS["C1"], plain))


def _grid_summary(values: dict[float, list[float]], metric: str) -> dict:
    """A colour-weight sweep: arm ssim_colour--loss.colour.weight_<w>, one metric over 3 seeds."""
    arms, groups = {}, []
    for w, vals in values.items():
        name = f"ssim_colour--{claims.COLOUR_W}_{w:g}"
        arms[name] = {"swept": {claims.COLOUR_W: w}}
        groups.append({"arm": name, "dataset": "cifar10", "counts": {"done": 3},
                       "metrics": {metric: {"values": vals, "seeds": [0, 1, 2]}}})
    return {"arms": arms, "baseline": next(iter(arms)), "datasets": ["cifar10"], "groups": groups,
            "rd": {"metrics": {}}}


def test_checks_at_grid_values_read_the_swept_values_not_the_names():
    s = _grid_summary({0.0: [14.0, 14.2, 13.9], 1.0: [12.0, 12.1, 11.9], 10.0: [10.0, 10.2, 9.9],
                       100.0: [14.1, 14.0, 14.3]}, "recon_chroma_error")
    outs = [o for o in claims.evaluate(claims.CLAIMS["C3"], s) if o.check.metric == "recon_chroma_error"]
    # the plain ssim_colour-vs-ssim checks do not apply to a colour-weight sweep; one check per weight does
    assert [(o.arm, o.ref) for o in outs] == [
        (f"ssim_colour--{claims.COLOUR_W}_{w}", f"ssim_colour--{claims.COLOUR_W}_0") for w in ("1", "10", "100")]
    w1, w10, w100 = outs
    assert w1.score == 1 and w1.effect.startswith("-2.0")
    assert w10.score is None and w100.score is None          # dose-response: shown, not counted
    # the value is read from `swept`, not parsed from the name; a value not in the grid matches nothing
    swept = {"ssim_colour--w1": {claims.COLOUR_W: 1}, "ssim_colour--w0": {claims.COLOUR_W: 0.0}}
    assert claims.select("ssim_colour", ((claims.COLOUR_W, 1.0),), swept) == ["ssim_colour--w1"]
    assert claims.select("ssim_colour", ((claims.COLOUR_W, 3.0),), swept) == []
    assert claims.select("ssim", ((claims.COLOUR_W, 1.0),), swept) == []


def test_reading_names_what_agreed_what_disagreed_and_what_was_noise():
    s = _grid_summary({0.0: [14.0, 14.2, 13.9], 1.0: [15.0, 15.1, 14.9]}, "recon_chroma_error")
    outs = claims.evaluate(claims.CLAIMS["C3"], s)
    v = claims.verdict(outs)
    text = claims.reading(claims.CLAIMS["C3"], v, outs, "colour_cpu")
    assert v == "contradicted"
    assert text.startswith("The evidence here goes against adding the pooled colour loss to SSIM (`colour_cpu`)")
    assert "0 of 1 counted comparison agrees" in text
    assert "1 significantly disagrees (recon_chroma_error (cifar10))" in text
    assert claims.reading(claims.CLAIMS["C3"], "inconclusive", [], "x").startswith("This gives no firm basis")


def test_a_file_where_nothing_counted_was_measured_does_not_decide(tmp_path):
    """rd_cpu's rate ranges do not overlap: listed, but the next file with measured evidence decides."""
    def summary(name, rd=None, arms=None, groups=()):
        return {"ablation": name, "claims": ["C1"], "datasets": ["cifar10"], "baseline": "mse",
                "arms": arms or {}, "groups": list(groups), "rd": rd, "counts": {"done": 6}, "planned": 6}
    no_overlap = summary("rd_cpu", rd={"metrics": {"st_lpips": {"rates": [], "families": {}}}},
                         arms={"mse--loss.kl.weight_1": {"swept": {"loss.kl.weight": 1}}})
    groups = [{"arm": a, "dataset": "cifar10", "counts": {"done": 3},
               "metrics": {"st_lpips": {"values": v, "seeds": [0, 1, 2]}}}
              for a, v in (("mse", [0.70, 0.71, 0.69]), ("ssim", [0.20, 0.21, 0.19]))]
    measured = summary("loss_cpu", arms={"mse": {}, "ssim": {}}, groups=groups)
    for s in (no_overlap, measured):
        (tmp_path / s["ablation"]).mkdir()
        (tmp_path / s["ablation"] / "summary.json").write_text(json.dumps(s))
    text = claims.write_claims(tmp_path).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| [C1]"))
    assert "[loss_cpu](loss_cpu/README.md)" in row and "nothing measured" not in row, row
    assert "**`rd_cpu`** → inconclusive (nothing measured)" in text
    (tmp_path / "loss_cpu" / "summary.json").unlink()          # only the unmeasured file: it says so
    text = claims.write_claims(tmp_path).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| [C1]"))
    assert "inconclusive (nothing measured)" in row and "rd_cpu" in row, row
    assert "No counted comparison could be measured yet in `rd_cpu`" in text
