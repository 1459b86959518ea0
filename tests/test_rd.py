"""Rate–distortion view: matched rates stay inside every curve, interpolation is linear in log(rate),
families are compared with the baseline paired by seed, and the report writes rd.md + the figure."""
from __future__ import annotations

import math

import pytest

from bench.config import schema as config
from bench.report import rd
from bench.report.tables import RunRecord

GRID = """\
name: rdtiny
question: matched rate?
claims: []
datasets: [shapes]
seeds: [0, 1, 2]
baseline: mse
grid:
  loss.kl.weight: [0.1, 1.0, 10.0]
defaults:
  model: {name: conv, widths: [8, 16], latent_dim: 8}
  loss: [{name: kl}, {name: mse}]
  train: {steps: 8, batch_size: 16}
arms:
  mse: {}
  ssim: {loss: [{name: kl}, {name: ssim}]}
"""


def _records(tmp_path, offset: dict[str, float]):
    """Synthetic finished runs: rate = 100 / weight (* seed factor), distortion = 0.2 - 0.02 ln(rate)
    + a per-family offset + a per-seed wobble."""
    p = tmp_path / "rd.yaml"
    p.write_text(GRID)
    spec = config.load(p)
    out = []
    for run in config.expand(spec):
        w = run.swept["loss.kl.weight"]
        rate = 100 / w * (1 + 0.1 * run.seed)
        fam = rd.family(run.arm)
        value = 0.2 - 0.02 * math.log(rate) + offset[fam] + 0.001 * run.seed * (fam == "ssim")
        doc = {"status": "done", "metrics": {"kl": {"value": rate}, "recon_mse": {"value": value}}}
        out.append(RunRecord(run, "done", doc))
    return spec, out


def test_matched_rates_lie_inside_every_curve_and_interpolate_in_log_rate(tmp_path):
    spec, recs = _records(tmp_path, {"mse": 0.0, "ssim": -0.01})
    c = rd.curves(recs, "recon_mse")
    rates = rd.matched_rates(c)
    # seed 2's curve spans [12, 1200], seed 0's [10, 1000]: the common range is [12, 1000]
    assert len(rates) == rd.N_MATCHED and min(rates) > 12 and max(rates) < 1000
    pts = [(10.0, 1.0), (1000.0, 3.0)]
    assert rd.at_rate(pts, 100.0) == pytest.approx(2.0)          # halfway in log(rate)
    row = rd.compare(c, "mse", rates[1])
    d = row["ssim"]["vs_base"]
    assert d.diff == pytest.approx(-0.01 + 0.001, abs=1e-9)       # offset + mean seed wobble (0, 1, 2)/1000
    assert d.lo < d.diff < d.hi < 0
    assert "vs_base" not in row["mse"]


def test_no_overlap_no_comparison(tmp_path):
    spec, recs = _records(tmp_path, {"mse": 0.0, "ssim": 0.0})
    for r in recs:                                  # move the ssim family to rates 1000x higher
        if rd.family(r.run.arm) == "ssim":
            r.doc["metrics"]["kl"]["value"] *= 1000
    assert rd.matched_rates(rd.curves(recs, "recon_mse")) == []
    assert "do not overlap" in rd.render(spec, recs, "loss.kl.weight", "mse")


def test_report_writes_rd_table_and_figure_only_for_weight_sweeps(tmp_path):
    spec, recs = _records(tmp_path, {"mse": 0.0, "ssim": -0.01})
    figs = rd.write(spec, recs, tmp_path / "out")
    assert figs == [("figures/rd.png", "Rate–distortion curves (matched-rate table: [rd.md](rd.md))")]
    text = (tmp_path / "out/rd.md").read_text()
    assert "swept over `loss.kl.weight`" in text and "| rate (nats) | mse | ssim |" in text
    assert (tmp_path / "out/figures/rd.png").stat().st_size > 1000
    unswept = [RunRecord(r.run.replace(swept={}), r.status, r.doc) for r in recs]
    assert rd.write(spec, unswept, tmp_path / "none") == [] and not (tmp_path / "none").exists()
