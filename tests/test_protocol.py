"""The evaluation protocol: stratified fixed subsets, held-out carve, run identity, trial results,
provenance, KID subsets — each test fails on the behaviour the review found at 99f30ab."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from bench import stats
from bench.config import schema as config
from bench.data import evalsets, subsets
from bench.data import sources as data
from bench.errors import BenchError
from bench.metrics import scoring
from bench.report import tables

CLASSES = ["ant", "bee", "cat", "dog"]


def _folder(root, split: str, per_class: int, size: int = 8) -> None:
    """root/<split>/<class>/NNN.png, each class a different flat colour (class-sorted on disk)."""
    for k, name in enumerate(CLASSES):
        d = root / split / name
        d.mkdir(parents=True)
        for i in range(per_class):
            arr = np.full((size, size, 3), 40 * k + i, dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{i:03d}.png")


def test_stratified_subset_is_balanced_fixed_and_not_the_first_n():
    labels = torch.arange(4).repeat_interleave(25)            # class-sorted, like an image folder
    sub = subsets.stratified(labels, 20)
    counts = torch.bincount(labels[sub.indices], minlength=4)
    assert counts.tolist() == [5, 5, 5, 5]                      # images[:20] would be all class 0
    assert not torch.equal(sub.indices, torch.arange(20))
    again = subsets.stratified(labels, 20)
    assert torch.equal(sub.indices, again.indices) and sub.index_hash == again.index_hash
    assert subsets.stratified(labels, 20, seed=1).index_hash != sub.index_hash
    proto = sub.protocol()
    assert proto["n_selected"] == 20 and proto["n_available"] == 100 and "stratified" in proto["selection"]
    odd = subsets.stratified(labels, 22)
    assert sorted(torch.bincount(labels[odd.indices]).tolist()) == [5, 5, 6, 6]
    assert len(subsets.stratified(labels, None)) == 100


def test_stratified_handles_small_classes_and_unlabelled():
    labels = torch.tensor([0] * 2 + [1] * 50)
    sub = subsets.stratified(labels, 10)
    assert torch.bincount(labels[sub.indices]).tolist() == [2, 8]
    unl = subsets.stratified(torch.full((50,), -1), 10)
    assert len(unl) == 10 and not unl.stratified


def test_stratified_subsets_of_one_split_are_nested():
    """What lets every evaluation set be drawn from the split and still lie inside the test subset."""
    rng = random.Random(0)
    for _ in range(150):
        sizes = [rng.randint(0, 12) for _ in range(rng.randint(1, 5))]
        labels = torch.tensor([c for c, s in enumerate(sizes) for _ in range(s)], dtype=torch.int64)
        if not len(labels):
            continue
        labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
        chosen = [set(subsets.stratified(labels, n).indices.tolist()) for n in range(len(labels) + 1)]
        assert all(chosen[i] <= chosen[i + 1] for i in range(len(labels)))


NESTED_YAML = """\
name: x
question: subsets
datasets: [folder]
seeds: [0]
data:
  folder: {{source: imagefolder, root: {root}, resolution: 8}}
defaults:
  model: {{name: conv, widths: [8, 16], latent_dim: 8}}
  loss: [{{name: kl}}, {{name: mse}}]
  train: {{steps: 2, batch_size: 8, device: cpu}}
  eval: {{n_test: {n_test}, n_samples: 16, n_fid: 8, batch_size: 8, sheet: 8, fidelity: false}}
arms:
  a: {{}}
"""


@pytest.mark.parametrize("n_test", [8, 16, None])
def test_reference_subsets_lie_inside_the_test_subset(tmp_path, monkeypatch, n_test):
    monkeypatch.setenv("PEGASUS_CACHE", str(tmp_path / "cache"))
    _folder(tmp_path / "img", "train", per_class=6)
    _folder(tmp_path / "img", "test", per_class=10)
    p = tmp_path / "x.yaml"
    p.write_text(NESTED_YAML.format(root=tmp_path / "img", n_test="null" if n_test is None else n_test))
    (run,) = config.expand(config.load(p))
    s = evalsets.eval_sets(run)
    assert int(s.fid_pos.indices.max()) < len(s.test)
    assert torch.bincount(s.test_labels[s.fid_pos.indices]).tolist() == [2, 2, 2, 2]


def test_holdout_carve_is_class_stratified(tmp_path, monkeypatch):
    monkeypatch.setenv("PEGASUS_CACHE", str(tmp_path / "cache"))
    _folder(tmp_path / "img", "train", per_class=10)
    spec = data.DataSpec(source="imagefolder", root=str(tmp_path / "img"), resolution=8, holdout=0.2)
    test, train = data.load(spec, "test"), data.load(spec, "train")
    assert torch.bincount(test.labels).tolist() == [2, 2, 2, 2]     # the old carve was a global perm
    assert len(train) == 32
    # a class-subset arm sees exactly the held-out images of its classes from the same carve
    sub = data.DataSpec(source="imagefolder", root=str(tmp_path / "img"), resolution=8, holdout=0.2,
                        classes=["bee", "dog"])
    sub_test = data.load(sub, "test")
    full_bd = test.images[torch.isin(test.labels, torch.tensor([1, 3]))]
    assert torch.equal(sub_test.images, full_bd)


YAML = """\
name: proto
question: protocol
datasets: [folder]
seeds: [0]
data:
  folder: {{source: imagefolder, root: {root}, resolution: 16}}
defaults:
  model: {{name: conv, widths: [8, 16], latent_dim: 8}}
  loss: [{{name: kl}}, {{name: mse}}]
  train: {{steps: 2, batch_size: 8, log_every: 1, device: cpu}}
  eval: {{n_test: 8, n_samples: 16, batch_size: 8, sheet: 8, fidelity: false}}
arms:
  full: {{}}
  sub: {{data: {{classes: [bee, dog]}}}}
"""


def _spec(tmp_path, extra: str = ""):
    _folder(tmp_path / "img", "train", per_class=10)
    _folder(tmp_path / "img", "test", per_class=6)
    p = tmp_path / "proto.yaml"
    p.write_text(YAML.format(root=tmp_path / "img") + extra)
    return p


def test_eval_sets_are_stratified_and_shared_across_arms(tmp_path, monkeypatch):
    monkeypatch.setenv("PEGASUS_CACHE", str(tmp_path / "cache"))
    p = _spec(tmp_path)
    full, sub = config.expand(config.load(p, ["defaults.eval.classes=[bee, dog]"]))
    a, b = evalsets.eval_sets(full), evalsets.eval_sets(sub)
    # both arms are scored on the same held-out bee + dog images (C10), 4 of each
    assert torch.equal(a.test, b.test) and a.test_sub.index_hash == b.test_sub.index_hash
    assert torch.bincount(a.test_labels).tolist() == [4, 4]
    # without eval.classes the full arm's test set has every class, balanced
    (full,) = [r for r in config.expand(config.load(p)) if r.arm == "full"]
    s = evalsets.eval_sets(full)
    assert torch.bincount(s.test_labels).tolist() == [2, 2, 2, 2]
    assert sorted(torch.bincount(data.load(full.data, "train").labels[s.train_sub.indices]).tolist()) \
        == [2, 2, 2, 2]
    assert s.proto("fid")["index_sha256"] and s.proto("ref")["n_available"] == 24


def test_eval_classes_are_validated(tmp_path):
    p = _spec(tmp_path)
    p.write_text(p.read_text().replace("sub: {data: {classes: [bee, dog]}}", "sub: {}"))
    # an unknown eval class of a canonical dataset is refused before training
    q = tmp_path / "q.yaml"
    q.write_text("name: q\nquestion: q\ndatasets: [shapes]\nseeds: [0]\n"
                 "defaults: {eval: {classes: [circle, hexagon]}}\narms: {a: {}}\n")
    with pytest.raises(BenchError, match="hexagon"):
        config.expand(config.load(q))


def test_run_identity_ignores_eval_and_device(tmp_path):
    p = _spec(tmp_path)
    base = config.expand(config.load(p))[0]
    for override in ("defaults.eval.n_test=4", "defaults.eval.fidelity=true", "defaults.train.device=auto",
                     "defaults.train.log_every=2"):
        assert config.expand(config.load(p, [override]))[0].hash8 == base.hash8, override
    assert config.expand(config.load(p, ["defaults.train.lr=0.01"]))[0].hash8 != base.hash8


def test_experiment_overrides_write_trial_results(tmp_path):
    p = _spec(tmp_path)
    assert config.results_name(config.load(p, ["data.folder.root=/elsewhere"])) == ("proto", True)
    name, as_written = config.results_name(config.load(p, ["seeds=[1]", "defaults.train.steps=50"]))
    assert name.startswith("proto~trial-") and not as_written


@pytest.mark.slow
def test_cli_trial_run_does_not_touch_committed_results_and_score_rescores(tmp_path, monkeypatch):
    from bench.__main__ import main

    monkeypatch.setenv("PEGASUS_CACHE", str(tmp_path / "cache"))
    p = _spec(tmp_path)
    common = [str(p), "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    assert main(["run", *common, "--no-progress"]) == 0
    table = (tmp_path / "results/proto/table.md").read_text()
    assert main(["run", *common, "--no-progress", "--set", "defaults.train.lr=0.002"]) == 0
    assert (tmp_path / "results/proto/table.md").read_text() == table
    trials = [d.name for d in (tmp_path / "results").iterdir() if "~trial-" in d.name]
    assert len(trials) == 1 and "Trial results" in (tmp_path / "results" / trials[0] / "table.md").read_text()
    # re-scoring with another n_test changes the records, not the run directory (no retraining)
    run = config.expand(config.load(p))[0]
    ckpt = tmp_path / "runs" / run.rel_dir / "ckpt.pt"
    mtime = ckpt.stat().st_mtime
    assert main(["score", *common, "--no-progress", "--set", "defaults.eval.n_test=4"]) == 0
    doc = __import__("json").loads((tmp_path / "runs" / run.rel_dir / "metrics.json").read_text())
    assert doc["metrics"]["recon_mse"]["n"] == 4 and doc["scored"]["rescored"]
    assert ckpt.stat().st_mtime == mtime


def test_provenance_warns_on_mixed_or_dirty_commits():
    assert tables.provenance(["abc123"]) is None
    assert "2 commits" in tables.provenance(["abc123", "def456"])
    assert "uncommitted" in tables.provenance(["abc123+dirty"])


def test_kid_subsets_are_smaller_than_the_set():
    assert scoring.kid_subset_size(250) == 125                 # was 250: every subset = the whole set
    assert scoring.kid_subset_size(4000) == 1000
    assert scoring.kid_subset_size(250, 50) == 50


def test_non_superiority_and_detectable_effect():
    worse, base, better = [0.70, 0.71, 0.69], [0.80, 0.81, 0.79], [0.90, 0.91, 0.89]
    upper, p = stats.one_sided_upper(worse, base)
    assert upper < 0 and p > 0.99                                 # significantly worse: no boost
    upper, p = stats.one_sided_upper(better, base)
    assert p < 0.01
    d = stats.detectable_effect(base, worse)
    assert 0 < d < 0.1 and math.isnan(stats.detectable_effect([1.0], base))


def test_eval_pegasus_classes_are_validated(tmp_path):
    q = tmp_path / "q.yaml"
    q.write_text("name: q\nquestion: q\ndatasets: [shapes]\nseeds: [0]\n"
                 "defaults: {eval: {pegasus: [circle, hexagon]}}\narms: {a: {}}\n")
    with pytest.raises(BenchError, match="defaults.eval.pegasus.*hexagon"):
        config.expand(config.load(q))
    q.write_text(q.read_text().replace("[circle, hexagon]", "[circle]"))
    with pytest.raises(BenchError, match="pegasus"):
        config.expand(config.load(q))


def test_generated_results_do_not_make_the_tree_dirty(tmp_path, monkeypatch):
    import subprocess

    from bench import store

    repo = tmp_path / "repo"
    (repo / "results").mkdir(parents=True)
    (repo / "bench").mkdir()
    for f in ("results/table.md", "bench/code.py"):
        (repo / f).write_text("v1\n")
    git = lambda *a: subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *a], cwd=repo,
                                    check=True, capture_output=True)
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "init")
    monkeypatch.setattr(store, "PROJECT_ROOT", repo)
    (repo / "results/table.md").write_text("v2\n")          # a sweep rewrote its own tables
    assert not store.git_commit().endswith("+dirty")
    (repo / "bench/code.py").write_text("v2\n")             # a code change is dirty
    assert store.git_commit().endswith("+dirty")
