"""Budget snapshots: a run keeps its weights at ``train.snapshots`` steps and scores each one, so one run gives a
budget curve; with the constant learning rate the suite trains with, the snapshot at step k is exactly a k-step
run; snapshots do not change a run's identity; bad snapshot lists are refused with their key."""
from __future__ import annotations

import pytest
import torch

from bench import store
from bench.config import schema as config
from bench.errors import ConfigError
from bench.run import execute
from bench.train.loop import train

TINY = """\
name: budget
question: does a snapshot equal a shorter run?
datasets: [shapes]
seeds: [0]
data:
  shapes: {n_train: 64, n_test: 16}
defaults:
  model: {name: conv, widths: [8, 16], latent_dim: 8}
  loss: [{name: kl}, {name: ssim}, {name: colour}]
  train: {steps: STEPS, batch_size: 16, log_every: 2, ckpt_every: 3, val_every: 100SNAP}
  eval: {n_test: 16, n_samples: 16, batch_size: 16, sheet: 8, fidelity: false}
arms:
  a: {}
"""


def _run(tmp_path, steps: int, snapshots: str = "", name: str = "f.yaml"):
    p = tmp_path / name
    p.write_text(TINY.replace("STEPS", str(steps)).replace("SNAP", f", snapshots: {snapshots}" if snapshots else ""))
    return config.expand(config.load(p))[0]


def test_the_snapshot_at_step_k_is_a_k_step_run(tmp_path):
    long, short = _run(tmp_path, 8, "[2, 5]"), _run(tmp_path, 5, name="g.yaml")
    train(long, tmp_path / "long", progress=False)
    train(short, tmp_path / "short", progress=False)
    snap = torch.load(store.snapshot_path(tmp_path / "long", 5), weights_only=False)
    ref = torch.load(tmp_path / "short" / store.CKPT, weights_only=False)
    assert snap["step"] == ref["step"] == 5
    assert all(torch.equal(snap["model"][k], ref["model"][k]) for k in ref["model"])
    final = torch.load(tmp_path / "long" / store.CKPT, weights_only=False)["model"]
    assert not all(torch.equal(snap["model"][k], final[k]) for k in final)     # it is not the end of the run


def test_snapshots_are_not_part_of_the_run_identity(tmp_path):
    assert _run(tmp_path, 8, "[2, 5]").rel_dir == _run(tmp_path, 8, name="g.yaml").rel_dir


def test_each_snapshot_is_scored_beside_the_final_metrics(tmp_path):
    run = _run(tmp_path, 6, "[3]")
    out = execute.execute(run, tmp_path / "runs")
    assert out.state == "trained", out.message
    doc = store.read_json(tmp_path / "runs" / run.rel_dir / store.METRICS)
    snap = doc["snapshots"]["3"]
    assert set(snap) >= {"recon_ssim", "recon_mse", "kl"} and "train_images_per_s" not in snap
    assert snap["recon_ssim"]["n"] == doc["metrics"]["recon_ssim"]["n"] == 16        # the same evaluation set
    assert snap["recon_mse"]["value"] != doc["metrics"]["recon_mse"]["value"]


def test_a_missing_snapshot_is_recorded_with_its_reason(tmp_path):
    run = _run(tmp_path, 6, "[3]")
    run_dir = tmp_path / "r"
    train(run, run_dir, progress=False)
    store.snapshot_path(run_dir, 3).unlink()
    got = execute.score_snapshots(run, run_dir, {}, device=torch.device("cpu"))
    assert "no snapshot at step 3" in got["3"]["unavailable"]


@pytest.mark.parametrize("snapshots, needle", [("[5, 2]", "increasing"), ("[2, 2]", "increasing"),
                                               ("[8]", "before the last"), ("[0]", "greater than 0")])
def test_bad_snapshot_lists_are_refused_with_their_key(tmp_path, snapshots, needle):
    with pytest.raises(ConfigError, match=needle) as exc:
        _run(tmp_path, 8, snapshots)
    assert "train.snapshots" in str(exc.value)


def test_a_budget_file_draws_its_metrics_against_images_seen(tmp_path):
    import dataclasses

    from bench.report import figures, tables
    p = tmp_path / "f.yaml"
    text = TINY.replace("STEPS", "6").replace("SNAP", ", snapshots: [2, 4]")
    p.write_text(text.replace("seeds: [0]", "seeds: [0, 1]"))
    spec = config.load(p)
    runs = config.expand(spec)
    for run in runs:
        assert execute.execute(run, tmp_path / "runs").state == "trained"
    v = tables.view(spec, runs, tmp_path / "runs")
    # 6-step runs of a tiny model may be flagged degenerate, which keeps them out of every figure: count them here
    records = [dataclasses.replace(r, status="done") for r in v.records]
    points = figures.budget_points(records[0])
    assert sorted(points) == [32, 64, 96] and all("recon_ssim" in pt for pt in points.values())   # steps x batch 16
    groups = tables.groups_of(spec, records)
    got = figures._budget_fig(spec, records, groups, v.keys, tmp_path / "runs", tmp_path / "fig")
    assert got[0] == "figures/budget.png" and (tmp_path / "fig" / "budget.png").stat().st_size > 1000
    assert figures._budget_fig(spec, v.records[:0], groups[:0], v.keys, tmp_path / "runs", tmp_path / "x") is None
