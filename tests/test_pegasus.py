"""Pegasus (C11): interpolation identities, PPL by hand, the class probe, errors, the CLI end to end."""
from __future__ import annotations

import json
import math

import pytest
import torch

from bench import store
from bench.__main__ import main
from bench.data import batches as batches_mod
from bench.data import sources as data_mod
from bench.errors import BenchError, WeightsError
from bench.pegasus import evaluate as P
from bench.pegasus import pairs, paths
from bench.pegasus import probe as probe_mod
from models import MODELS

TINY = """\
name: tiny
question: does pegasus run?
datasets: [shapes]
seeds: [0]
data:
  shapes: {n_train: 96, n_test: 40}
defaults:
  model: {name: conv, widths: [8, 16], latent_dim: 8}
  loss: [{name: kl}, {name: mse}]
  train: {steps: 8, batch_size: 16, lr: 1e-3, log_every: 4, ckpt_every: 8, device: cpu}
  eval: {n_test: 40, n_samples: 16, batch_size: 20, sheet: 16, fidelity: false}
arms:
  mse: {}
"""
SMALL_PROBE = probe_mod.ProbeConfig(widths=(8, 16), steps=20, batch_size=16)


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


# --------------------------------------------------------------------------- paths

def test_slerp_keeps_norm_and_meets_lerp_at_the_ends():
    a, b = 3 * _unit(5, 16, 0), 3 * _unit(5, 16, 1)
    for t in torch.linspace(0, 1, 11, dtype=torch.float64):
        assert torch.allclose(paths.slerp(a, b, t).norm(dim=1), torch.full((5,), 3.0, dtype=torch.float64))
    for t, end in ((0.0, a), (1.0, b)):
        assert torch.allclose(paths.slerp(a, b, t), end) and torch.allclose(paths.lerp(a, b, t), end)
    cos = torch.nn.functional.cosine_similarity(paths.slerp(a, b, 0.5), paths.lerp(a, b, 0.5), dim=1)
    assert torch.allclose(cos, torch.ones(5, dtype=torch.float64))           # same direction, other norm
    assert paths.lerp(a, b, 0.5).norm(dim=1).max() < 3 - 1e-3                  # lerp cuts the corner
    mid = paths.slerp(a, b, 0.3)
    assert not torch.allclose(mid / mid.norm(dim=1, keepdim=True),          # but slerp is no lerp
                              paths.lerp(a, b, 0.3) / paths.lerp(a, b, 0.3).norm(dim=1, keepdim=True))
    assert torch.allclose(paths.slerp(a, a.clone(), 0.4), a)                    # parallel: no division by 0


def test_path_ends_decode_to_the_endpoints_reconstructions():
    model = MODELS.build("conv", {"image_size": 16, "widths": [8, 16], "latent_dim": 8}).eval()
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        za, zb = model.encode(x[:3])[0], model.encode(x[3:])[0]
        ra, rb = model.decode(za), model.decode(zb)
        for kind in P.LATENT_KINDS:
            frames = paths.path_frames(paths.latent_path(model.decode, za, zb, kind), torch.linspace(0, 1, 5), 3)
            assert frames.shape == (3, 5, 3, 16, 16)
            assert torch.allclose(frames[:, 0], ra, atol=1e-6) and torch.allclose(frames[:, -1], rb, atol=1e-6)
            assert torch.allclose(frames[:, 2], model.decode(paths.INTERP[kind](za, zb, 0.5)), atol=1e-6)
        assert (ra - rb).abs().max() > 0                                    # the ends are distinct images


# --------------------------------------------------------------------------- smoothness

def _sq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).pow(2).flatten(1).sum(1)


def test_ppl_equals_hand_computation_on_a_toy_decoder():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(12, 4, generator=g, dtype=torch.float64)
    decode = lambda z: (z @ A.T).view(-1, 3, 2, 2)                          # linear toy "decoder"
    za, zb = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    ts = paths.ppl_times(3, 4, torch.Generator().manual_seed(1)).double()
    assert ((ts >= 0) & (ts <= 1 - paths.EPS)).all()
    assert ((ts * 4 / (1 - paths.EPS)).floor() == torch.arange(4)).all()      # one draw per stratum

    # lerp through a linear map: every step is eps * A (zb - za), so PPL = |A (zb - za)|^2 exactly
    got = paths.perceptual_path_length(paths.latent_path(decode, za, zb, "lerp"), ts, _sq)
    assert torch.allclose(got, ((zb - za) @ A.T).pow(2).sum(1), rtol=1e-6)

    # slerp, by hand: x(t) = A (sin((1-t)w)/sin w za + sin(tw)/sin w zb), d = squared L2, / eps^2, mean
    want = []
    for i in range(3):
        w = math.acos(float(za[i] @ zb[i] / (za[i].norm() * zb[i].norm())))
        x = lambda t: A @ (math.sin((1 - t) * w) / math.sin(w) * za[i] + math.sin(t * w) / math.sin(w) * zb[i])
        want.append(sum(float((x(t + paths.EPS) - x(t)).pow(2).sum()) / paths.EPS ** 2 for t in ts[i].tolist()) / 4)
    got = paths.perceptual_path_length(paths.latent_path(decode, za, zb, "slerp"), ts, _sq)
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=1e-6)
    batched = paths.ppl_batched(lambda a, b: paths.latent_path(decode, a, b, "slerp"), za, zb, ts, _sq, rows=8)
    assert torch.allclose(batched, got, rtol=1e-9)                         # 2 pairs x 4 samples per call

    # the pixel cross-fade: PPL = |xb - xa|^2
    xa, xb = decode(za), decode(zb)
    got = paths.perceptual_path_length(paths.pixel_path(xa, xb), ts, _sq)
    assert torch.allclose(got, (xb - xa).pow(2).flatten(1).sum(1), rtol=1e-6)


def test_max_step_ratio_flags_a_jump():
    steps = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 5.0]], dtype=torch.float64)
    assert torch.allclose(paths.max_step_ratio(steps), torch.tensor([1.0, 2.5], dtype=torch.float64))
    frames = torch.zeros(1, 3, 3, 2, 2)
    frames[0, 1] += 1
    frames[0, 2] += 3                                                       # steps 1 and 2 (squared: 12, 48)
    assert torch.allclose(paths.step_distances(frames, _sq, torch.device("cpu")),
                          torch.tensor([[12.0, 48.0]], dtype=torch.float64))


# --------------------------------------------------------------------------- class mass along a path

def test_hybrid_score_and_switch_time():
    assert paths.hybrid_score(torch.tensor([0.5, 1.0, 0.3]), torch.tensor([0.5, 0.0, 0.1])).tolist() == \
        pytest.approx([1.0, 0.0, 0.2])
    ts = torch.tensor([0.0, 0.5, 1.0])
    p_from = torch.tensor([[0.9, 0.6, 0.2], [0.9, 0.8, 0.7], [0.1, 0.6, 0.2]])
    p_to = torch.tensor([[0.1, 0.3, 0.7], [0.0, 0.1, 0.2], [0.8, 0.3, 0.7]])
    t = paths.switch_time(ts, p_from, p_to)
    assert t[0].item() == pytest.approx(0.5 + 0.5 * 0.3 / 0.8)             # linear between frames
    assert math.isnan(t[1]) and math.isnan(t[2])                           # never switches / starts on `to`


def test_records_without_a_distance_network_say_why():
    per_pair = {"hybrid": torch.tensor([0.2, 0.4], dtype=torch.float64),
                "joint_mass": torch.tensor([0.5, 0.7], dtype=torch.float64),
                "off_class": torch.tensor([0.5, 0.3], dtype=torch.float64),
                "switch_t": torch.tensor([0.4, math.nan], dtype=torch.float64),
                "sharpness": torch.tensor([0.9, 1.1], dtype=torch.float64)}
    walks = {k: P.Walk(torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.zeros(0), dict(per_pair))
             for k in P.KINDS}
    recs = P._path_records(walks, {"split": "test"}, (None, {"distance": None}, "no perceptual distance: x"))
    assert recs[P.key("ppl", "slerp")] == {"value": None, "unavailable": "no perceptual distance: x",
                                            "split": "test", "kind": "slerp", "distance": None,
                                            "definition": P.QUANTITIES["ppl"][1]}
    assert recs[P.diff_key("max_step", "lerp")]["unavailable"] == "no perceptual distance: x"
    h = recs[P.key("hybrid", "lerp")]
    assert h["value"] == pytest.approx(0.3) and h["n"] == 2 and h["lo"] < 0.3 < h["hi"]
    s = recs[P.key("switch_t", "crossfade")]
    assert s["value"] == pytest.approx(0.4) and s["n"] == 1 and s["n_switched"] == 1 and s["lo"] is None
    assert recs[P.diff_key("hybrid", "slerp")]["value"] == 0.0


def test_pairs_are_seeded_and_from_the_right_classes():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    a, b = pairs.choose_pairs(labels, 0, 2, 6, seed=0), pairs.choose_pairs(labels, 0, 2, 6, seed=0)
    assert a.as_list() == b.as_list() and a.sha256 == b.sha256
    assert (labels[a.from_idx] == 0).all() and (labels[a.to_idx] == 2).all()   # 6 > 4 members: repeats
    assert pairs.choose_pairs(labels, 0, 2, 6, seed=1).sha256 != a.sha256


def test_unknown_class_lists_the_known_ones():
    with pytest.raises(BenchError) as err:
        pairs.class_index(["horse", "bird", "cat"], "hrose", "--from")
    assert str(err.value) == "--from: unknown class 'hrose' (did you mean 'horse'?); known: horse, bird, cat"


# --------------------------------------------------------------------------- the class probe

@pytest.mark.slow
def test_probe_learns_shapes_and_is_cached(monkeypatch):
    spec = data_mod.DataSpec(source="shapes", resolution=32, n_train=2000, n_test=500, classes=["ring", "star"])
    cfg = probe_mod.ProbeConfig(widths=(16, 32, 64, 64), steps=200)
    probe = probe_mod.get_probe(spec, torch.device("cpu"), cfg, progress=False)
    assert probe.classes == data_mod.SHAPE_KINDS                           # all classes, not the run's subset
    assert probe.info["n_train"] == 2000 and probe.info["n_test"] == 500
    assert probe.accuracy > 0.5                                            # chance: 0.2
    x = batches_mod.to_float(data_mod.load(probe_mod.all_classes(spec), "test").images[:8])
    p = probe.probs(x)
    assert p.shape == (8, 5) and torch.allclose(p.sum(1), torch.ones(8))
    assert probe_mod.cache_path(probe.fingerprint).is_file()

    def no_training(*a, **k):
        raise AssertionError("retrained although cached")
    monkeypatch.setattr(probe_mod, "train_probe", no_training)
    again = probe_mod.get_probe(spec, torch.device("cpu"), cfg, progress=False)
    assert again.fingerprint == probe.fingerprint and again.accuracy == probe.accuracy
    assert torch.equal(again.probs(x), p)
    other = probe_mod.fingerprint(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2), ["a"], cfg)
    assert other != probe.fingerprint


def test_probe_trains_inside_a_no_grad_scoring_pass():
    """The first scoring pass of a dataset trains the probe from inside torch.no_grad()."""
    spec = data_mod.DataSpec(source="shapes", resolution=32, n_train=64, n_test=20)
    train = data_mod.load(spec, "train")
    with torch.no_grad():
        net = probe_mod.train_probe(train.images, train.labels, 5, SMALL_PROBE, torch.device("cpu"))
    assert all(p.grad is not None for p in net.parameters())           # it really took gradient steps


# --------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny shapes run trained and scored through `python -m bench run`."""
    d = tmp_path_factory.mktemp("pegasus")
    (d / "tiny.yaml").write_text(TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PEGASUS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        assert main(["run", str(d / "tiny.yaml"), "--runs-dir", str(d / "runs"),
                     "--results-dir", str(d / "results"), "--no-progress"]) == 0
    (run_dir,) = (d / "runs" / "tiny" / "mse" / "shapes").iterdir()
    return run_dir


def test_cli_end_to_end_writes_sheets_and_metrics(finished_run, monkeypatch, capsys):
    monkeypatch.setattr(probe_mod, "DEFAULT_CONFIG", SMALL_PROBE)

    def no_inception(*a, **k):
        raise WeightsError("Inception weights not found: test")
    monkeypatch.setattr(P.weights, "fid_source", no_inception)
    args = ["interpolate", str(finished_run), "--from", "circle", "--to", "star", "--pairs", "4", "--steps", "5",
            "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "pegasus circle -> star: 4 pairs x 5 steps" in out and "held-out accuracy" in out
    d = finished_run / "pegasus" / "circle-star"
    for f in ("sheet_lerp.png", "sheet_slerp.png", "crossfade.png", "gallery.png", "prior_paths.png",
              "metrics.json"):
        assert (d / f).is_file(), f
    from PIL import Image
    with Image.open(d / "sheet_lerp.png") as im:                            # 4 rows x (5 + 2) columns of 32 px
        assert im.size == (7 * 34 + 2, 4 * 34 + 2)

    doc = store.read_json(d / "metrics.json")
    m, proto = doc["metrics"], doc["protocol"]
    assert sorted(m) == sorted(P.metric_keys())
    assert proto["pairs"] == 4 and proto["steps"] == 5 and proto["eps"] == paths.EPS and proto["pair_seed"] == 0
    assert len(proto["pair_indices"]) == 4 and proto["probe"]["config"]["steps"] == SMALL_PROBE.steps
    held = data_mod.load(probe_mod.all_classes(data_mod.DataSpec(**proto["run"]["data"])), "test")
    assert all(held.labels[i] == 0 and held.labels[j] == 4 for i, j in proto["pair_indices"])
    for k in ("lerp", "slerp", "crossfade"):
        rec = m[P.key("hybrid", k)]
        assert 0 <= rec["value"] <= 1 and rec["n"] == 4 and len(rec["per_pair"]) == 4
        assert rec["lo"] <= rec["value"] <= rec["hi"]
        assert rec["probe_accuracy"] == round(proto["probe"]["accuracy"], 4) and rec["pair_index_sha256"]
        assert m[P.key("off_class", k)]["value"] == pytest.approx(
            sum(1 - a - b for row_a, row_b in zip(doc["curves"][k]["p_from"], doc["curves"][k]["p_to"])
                for a, b in zip(row_a[1:-1], row_b[1:-1])) / (4 * 3), abs=1e-5)
        assert m[P.kid_key(k)]["value"] is None and "Inception" in m[P.kid_key(k)]["unavailable"]
    diff = m[P.diff_key("sharpness", "slerp")]["per_pair"]
    assert diff == pytest.approx([a - b for a, b in zip(m[P.key("sharpness", "slerp")]["per_pair"],
                                                        m[P.key("sharpness", "crossfade")]["per_pair"])], abs=1e-5)
    ppl = m[P.key("ppl", "slerp")]
    if ppl["value"] is not None:                                           # ST-LPIPS installed
        assert ppl["value"] > 0 and ppl["eps"] == paths.EPS and ppl["distance"].startswith(("lpips", "st_lpips"))
    else:
        assert ppl["unavailable"]
    assert 1 <= len(doc["gallery"]) <= 8 and doc["gallery"][0]["rank"] == 1
    assert doc["gallery"][0]["kind"] in P.LATENT_KINDS and 0 < doc["gallery"][0]["t"] < 1

    # the same pairs for the same dataset, whatever the run: a second call agrees
    assert main(args) == 0
    assert store.read_json(d / "metrics.json")["protocol"]["pair_index_sha256"] == proto["pair_index_sha256"]


def test_cli_unknown_class_is_one_line_exit_2(finished_run, capsys):
    assert main(["interpolate", str(finished_run), "--from", "hrose", "--to", "star"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "--from: unknown class 'hrose'; known: circle, square, triangle, ring, star"
    assert not (finished_run / "pegasus" / "hrose-star").exists()


def test_cli_unfinished_run_is_one_line_exit_2(finished_run, tmp_path, capsys):
    d = tmp_path / "run"
    d.mkdir()
    for where, want in ((tmp_path / "nope", "no such run directory"), (d, "not a run directory (no config.yaml)")):
        assert main(["interpolate", str(where), "--from", "circle", "--to", "star"]) == 2
        assert want in capsys.readouterr().err
    (d / "config.yaml").write_text((finished_run / "config.yaml").read_text())
    assert main(["interpolate", str(d), "--from", "circle", "--to", "star"]) == 2
    err = capsys.readouterr().err
    assert "run not finished (no metrics.json)" in err and len(err.strip().splitlines()) == 1
    (d / "metrics.json").write_text(json.dumps({"status": "done"}))
    assert main(["interpolate", str(d), "--from", "circle", "--to", "star"]) == 2
    err = capsys.readouterr().err
    assert "has no ckpt.pt" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- results/pegasus

PEGASUS_FILE = TINY.replace("name: tiny", "name: tinypeg").replace(      # long enough not to collapse
    "steps: 8, batch_size: 16, lr: 1e-3, log_every: 4, ckpt_every: 8",
    "steps: 120, batch_size: 16, lr: 3e-3, log_every: 40, ckpt_every: 120").replace(
    "{name: kl}", "{name: kl, weight: 0.1}").replace(
    "fidelity: false}", "fidelity: false, pegasus: [circle, star]}").replace(
    "  mse: {}", "  mse: {}\n  wide: {model: {latent_dim: 16}}")


@pytest.mark.slow
def test_report_ranks_arms_and_draws_the_best_run(tmp_path, monkeypatch, capsys):
    from bench.pegasus import report as pegasus_report

    monkeypatch.setattr(probe_mod, "DEFAULT_CONFIG", SMALL_PROBE)
    monkeypatch.setenv("PEGASUS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(P.weights, "fid_source", lambda *a, **k: (_ for _ in ()).throw(WeightsError("no Inception")))
    f = tmp_path / "tinypeg.yaml"
    f.write_text(PEGASUS_FILE)
    common = ["--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    # nothing trained yet: one line, exit 2, nothing written
    assert main(["pegasus", str(f), "--from", "circle", "--to", "star", *common]) == 2
    assert "no finished run has pegasus metrics" in capsys.readouterr().err
    assert not (tmp_path / "results" / "pegasus").exists()

    assert main(["run", str(f), *common, "--no-progress"]) == 0
    assert main(["pegasus", str(f), "--from", "circle", "--to", "star", "--no-progress", *common]) == 0
    out = tmp_path / "results" / "pegasus"
    readme = (out / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| tinypeg |")]
    assert len(rows) == 2
    hybrid = {}
    for arm in ("mse", "wide"):
        (run_dir,) = (tmp_path / "runs" / "tinypeg" / arm / "shapes").iterdir()
        hybrid[arm] = store.read_json(run_dir / "metrics.json")["metrics"][P.key("hybrid", "lerp")]["value"]
    ranked = sorted(hybrid, key=lambda a: -hybrid[a])
    assert [r.split(" | ")[1] for r in rows] == ranked                       # best hybrid score first
    assert f"Best run by hybrid score: `tinypeg/{ranked[0]}/shapes/" in readme
    doc = store.read_json(out / "metrics.json")
    assert doc["run"].startswith(f"tinypeg/{ranked[0]}/")
    # re-walking the best run reproduces the hybrid score its scoring pass recorded
    assert doc["metrics"][P.key("hybrid", "lerp")]["value"] == pytest.approx(hybrid[ranked[0]], abs=1e-5)
    from PIL import Image
    with Image.open(out / "sheet_lerp.png") as im:                         # 8 of 16 pairs x (9 + 2) columns
        assert im.size == (11 * 34 + 2, pegasus_report.ROWS_SHOWN * 34 + 2)
    assert (out / "crossfade.png").is_file() and (out / "gallery.png").is_file()
    assert "held-out accuracy" in readme and "Runs trained and scored by commit" in readme
