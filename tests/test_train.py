"""End to end on the CPU: a tiny run trains, scores, writes its files, skips when done,
resumes to the identical result after an interruption, and records divergence."""
from __future__ import annotations

import json
import re

import pytest
import torch

from bench import store
from bench.config import schema as config
from bench.data import batches as batches_mod
from bench.report import results as report
from bench.run import local as runners
from bench.train import runtime
from bench.train.loop import train

TINY = """\
name: tiny
question: does the loop run?
claims: [C1]
datasets: [shapes]
seeds: [0, 1]
data:
  shapes: {n_train: 96, n_test: 40}
defaults:
  model: {name: conv, widths: [8, 16], latent_dim: 8}
  loss: [{name: kl}, {name: mse}]
  train: {steps: 8, batch_size: 16, lr: 1e-3, log_every: 2, ckpt_every: 4}
  eval: {n_test: 40, n_samples: 32, batch_size: 16, sheet: 16, fidelity: false}  # FID: tests/test_fidelity.py
arms:
  mse: {}
  ssim: {loss: [{name: kl}, {name: ssim}, {name: colour}]}
"""


@pytest.fixture
def spec(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    return config.load(p)


def test_sweep_writes_runs_and_table_then_skips(spec, tmp_path):
    runs = config.expand(spec)
    s = runners.run_sweep(runs, tmp_path / "runs", progress=False)
    assert len(s.trained) == 4 and not s.failed
    d = tmp_path / "runs" / runs[0].rel_dir
    for f in ("config.yaml", "env.json", "log.jsonl", "ckpt.pt", "recon.png", "samples.png", "metrics.json"):
        assert (d / f).exists(), f
    doc = store.read_json(d / "metrics.json")
    assert doc["status"] == "done" and doc["train"]["steps"] == 8
    assert doc["env"]["allocator"] == runtime.keep_freed_memory()   # recorded with the run
    parts = doc["train"]["breakdown"]          # where the training wall time went
    assert set(parts) == {"data_s", "setup_s", "steps_s", "ckpt_s", "val_s"} and min(parts.values()) >= 0
    assert sum(parts.values()) == pytest.approx(doc["train"]["wall_s"], abs=0.01)
    assert doc["metrics"]["wall_s"]["breakdown"] == parts
    m = doc["metrics"]
    assert 0 < m["recon_mse"]["value"] < 1 and -1 <= m["recon_ssim"]["value"] <= 1
    assert m["recon_ssim"]["n"] == 40 and m["recon_ssim"]["split"] == "test"
    assert 0 <= m["active_units"]["value"] <= 8 and m["params"]["value"] > 0
    log = [json.loads(l) for l in (d / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [2, 4, 6, 8] and all("kl" in e and "mse" in e for e in log)

    again = runners.run_sweep(runs, tmp_path / "runs", progress=False)
    assert not again.trained and len(again.skipped) == 4

    table = report.write(spec, runs, tmp_path / "runs", tmp_path / "results")
    text = table.read_text()
    # 8 steps: the runs may be flagged degenerate (posterior collapse), but they are all counted
    for arm in ("mse", "ssim"):
        assert re.search(rf"\| {arm} \| shapes \| (2/2 done|[01]/2 done, [12]/2 degenerate ⚠) \|", text), arm
    assert (tmp_path / "results/tiny/table.csv").exists()
    assert (tmp_path / "results/tiny/sheets/ssim-shapes-samples.png").exists()


def test_resume_after_interruption_equals_uninterrupted(spec, tmp_path, monkeypatch):
    run = config.expand(spec)[0]
    full = train(run, tmp_path / "a", progress=False)
    ref = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=False)

    calls = {"n": 0}
    real_next = batches_mod.Batches.next

    def dying_next(self):
        calls["n"] += 1
        if calls["n"] == 7:                       # after the step-4 checkpoint, before the end
            raise KeyboardInterrupt
        return real_next(self)

    monkeypatch.setattr(batches_mod.Batches, "next", dying_next)
    with pytest.raises(KeyboardInterrupt):
        train(run, tmp_path / "b", progress=False)
    monkeypatch.setattr(batches_mod.Batches, "next", real_next)
    assert torch.load(tmp_path / "b" / "ckpt.pt", weights_only=False)["step"] == 4
    resumed = train(run, tmp_path / "b", progress=False)
    got = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=False)
    assert resumed.resumed_from == 4 and resumed.steps == full.steps == 8
    for k, v in ref["model"].items():
        assert torch.equal(v, got["model"][k]), k
    steps = [json.loads(l)["step"] for l in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8]                  # no duplicated log lines after the resume


def test_nan_loss_is_recorded_as_diverged(spec, tmp_path, monkeypatch):
    from losses import Objective
    real = Objective.forward

    def poisoned(self, x, out, model=None, step=0):
        total, terms = real(self, x, out, model, step)
        return (total * float("nan") if step == 4 else total), terms

    monkeypatch.setattr(Objective, "forward", poisoned)
    runs = config.expand(spec)[:1]
    s = runners.run_sweep(runs, tmp_path / "runs", progress=False)
    assert s.diverged == [str(runs[0].rel_dir)]
    doc = store.read_json(tmp_path / "runs" / runs[0].rel_dir / "metrics.json")
    assert doc["status"] == "diverged" and doc["train"]["steps"] == 5 and "step 5" in doc["train"]["reason"]
    text = report.write(spec, runs, tmp_path / "runs", tmp_path / "results").read_text()
    assert "0/1 done, 1/1 diverged" in text


def test_crash_is_recorded_and_sweep_continues(spec, tmp_path, monkeypatch):
    import bench.run.execute as r
    runs = config.expand(spec)[:2]
    real = r.run_one
    seen = []

    def flaky(run, run_dir, **kw):
        seen.append(run.seed)
        if run.seed == 0:
            raise RuntimeError("boom")
        return real(run, run_dir, **kw)

    monkeypatch.setattr(r, "run_one", flaky)
    s = runners.run_sweep(runs, tmp_path / "runs", progress=False)
    assert seen == [0, 1] and len(s.failed) == 1 and len(s.trained) == 1
    assert "boom" in store.read_json(tmp_path / "runs" / runs[0].rel_dir / "error.json")["error"]


def test_fused_adam_on_the_cpu_takes_the_default_adam_steps():
    """make_optimizer uses the fused kernel on the CPU; 50 steps agree with torch's default Adam to
    float rounding (same update rule), so the option changes speed, not the trajectory."""
    import copy

    from bench.config.schema import TrainSpec
    from bench.train.loop import make_optimizer

    torch.manual_seed(0)
    fused_model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4))
    plain_model, start = copy.deepcopy(fused_model), copy.deepcopy(fused_model)
    cfg = TrainSpec(lr=1e-2, weight_decay=1e-4)
    fused = make_optimizer(fused_model, cfg, torch.device("cpu"))
    plain = torch.optim.Adam(plain_model.parameters(), lr=1e-2, betas=tuple(cfg.betas), weight_decay=1e-4)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        x = torch.randn(8, 16, generator=g)
        for m, opt in ((fused_model, fused), (plain_model, plain)):
            opt.zero_grad()
            m(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert max((a - s).abs().max() for a, s in zip(fused_model.parameters(), start.parameters())) > 0.05
