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
from bench.data import subsets
from bench.errors import BenchError, WeightsError
from bench.metrics import quality
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
SMALL_PROBE = probe_mod.ProbeConfig(per_class=20, test_per_class=8, max_iter=50)


def tiny_features(device: torch.device | None = None) -> probe_mod.FeatureNet:
    """A small seeded random conv net standing in for Inception (no weights are downloadable in tests)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 5, stride=2), torch.nn.ReLU(),
                                  torch.nn.Conv2d(16, 32, 3, stride=2), torch.nn.ReLU(),
                                  torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()).eval()

    @torch.no_grad()
    def fn(x: torch.Tensor) -> torch.Tensor:
        return net(x.float() / 255)

    return probe_mod.FeatureNet("tiny random conv", "tiny-0", fn)


@pytest.fixture(autouse=True)
def _tiny_probe(monkeypatch):
    monkeypatch.setattr(probe_mod, "FEATURES", tiny_features)
    monkeypatch.setattr(probe_mod, "DEFAULT_CONFIG", SMALL_PROBE)


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

def test_leak_proof_hybrid_does_not_count_mass_spread_over_other_classes():
    p_from = torch.tensor([0.5, 1.0, 0.1, 0.4, 0.3])
    p_to = torch.tensor([0.5, 0.0, 0.1, 0.4, 0.1])
    # even split: 1; one class only: 0; diffuse (0.8 leaked): 0, where 2 min(P) said 0.2; 0.8 - 0.2; 0.2 - 0.6 -> 0
    assert paths.leak_proof_hybrid(p_from, p_to).tolist() == pytest.approx([1.0, 0.0, 0.0, 0.6, 0.0])


def test_records_without_a_distance_network_say_why():
    per_pair = {"hybrid": torch.tensor([0.2, 0.4], dtype=torch.float64),
                "joint_mass": torch.tensor([0.5, 0.7], dtype=torch.float64),
                "ends_correct": torch.tensor([1.0, math.nan], dtype=torch.float64),
                "sharpness": torch.tensor([0.9, 1.1], dtype=torch.float64),
                "sharpness_abs": torch.tensor([0.01, 0.02], dtype=torch.float64)}
    walks = {k: P.Walk(torch.zeros(0), torch.zeros(0), None, dict(per_pair)) for k in P.KINDS}
    recs = P._path_records(walks, {"split": "test"}, (None, {"distance": None}, "no perceptual distance: x"), None)
    assert recs[P.key("ppl", "slerp")] == {"value": None, "unavailable": "no perceptual distance: x",
                                            "split": "test", "kind": "slerp", "distance": None,
                                            "definition": P.QUANTITIES["ppl"][1]}
    assert recs[P.diff_key("max_step", "lerp")]["unavailable"] == "no perceptual distance: x"
    h = recs[P.key("hybrid", "lerp")]
    assert h["value"] == pytest.approx(0.3) and h["n"] == 2 and h["lo"] < 0.3 < h["hi"]
    s = recs[P.key("ends_correct", "crossfade")]
    assert s["value"] == pytest.approx(1.0) and s["n"] == 1 and s["lo"] is None          # NaN pair left out
    assert recs[P.diff_key("hybrid", "slerp")]["value"] == 0.0
    no_probe = P._path_records(walks, {"split": "test"}, (None, {"distance": None}, "x"), "no class probe: y")
    assert no_probe[P.key("hybrid", "lerp")]["unavailable"] == "no class probe: y"
    assert no_probe[P.key("sharpness", "lerp")]["value"] == pytest.approx(1.0)             # needs no probe


def test_kid_reference_holds_no_endpoint():
    """Enough held-out images: the reference is the held-out images left after the endpoints; too few: half
    of each class's train images, which the probe is then fitted without."""
    kinds = data_mod.SHAPE_KINDS
    spec = data_mod.DataSpec(source="shapes", resolution=32, n_train=200, n_test=40)
    labels = torch.arange(500) % 5                                        # 100 per class
    held = data_mod.ImageSet(torch.zeros(500, 3, 4, 4, dtype=torch.uint8), labels, kinds, "held")
    ref = P.kid_reference(spec, held, 0, 4, pairs.choose_pairs(labels, 0, 4, 1))   # 99 left: below the minimum
    assert ref.train_exclude is not None and "trained on" in ref.protocol["reference_split"]
    train = data_mod.load(probe_mod.all_classes(spec), "train")
    assert set(train.labels[ref.train_exclude].tolist()) == {0, 4}
    half = min(int((train.labels == c).sum()) // 2 for c in (0, 4))       # balanced: half of the smaller class
    assert [int((train.labels[ref.train_exclude] == c).sum()) for c in (0, 4)] == [half, half]

    big = data_mod.ImageSet(torch.zeros(1000, 3, 4, 4, dtype=torch.uint8), torch.arange(1000) % 5, kinds, "held")
    chosen = pairs.choose_pairs(big.labels, 0, 4, 100)
    ref = P.kid_reference(spec, big, 0, 4, chosen)
    assert ref.train_exclude is None and ref.protocol["n_real"] == 200     # the 100 + 100 left over
    ends = set(torch.cat([chosen.from_idx, chosen.to_idx]).tolist())
    members = ((big.labels == 0) | (big.labels == 4)).nonzero().flatten().tolist()
    left = sorted(set(members) - ends)
    assert len(left) == 200 and ref.protocol["real_index_sha256"] == subsets.index_hash(torch.tensor(left))


def test_sharpness_of_every_path_is_measured_against_the_real_endpoints(finished_run):
    run, model = P.load_finished(finished_run, torch.device("cpu"))
    ev = P.evaluate(model, run, torch.device("cpu"), "circle", "star", pairs=6, steps=5, kid=False)
    real = (quality.laplacian_variance(ev.real_from) + quality.laplacian_variance(ev.real_to)) / 2
    for kind, w in ev.walks.items():
        mid = quality.laplacian_variance(w.mid)
        assert w.per_pair["sharpness"].float() == pytest.approx(mid / real, rel=1e-5), kind
        assert w.per_pair["sharpness_abs"].float() == pytest.approx(mid, rel=1e-6), kind
    # the cross-fade's midpoint is measured on the same scale: not 0.5 by construction of its own endpoints
    assert ev.protocol["reference"]["n_real"] > 0 and ev.records[P.kid_key("lerp")]["reference_disjoint_from_endpoints"]


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

def test_probe_learns_shapes_is_cached_and_excludes_what_it_is_told():
    spec = data_mod.DataSpec(source="shapes", resolution=32, n_train=400, n_test=200, classes=["ring", "star"])
    cfg = probe_mod.ProbeConfig(per_class=60, test_per_class=30, max_iter=100)
    probe = probe_mod.get_probe(spec, torch.device("cpu"), cfg, progress=False)
    assert probe.classes == data_mod.SHAPE_KINDS                           # all classes, not the run's subset
    assert probe.info["n_train"] == 300 and probe.info["n_test"] == 150    # class-balanced samples
    test = data_mod.load(probe_mod.all_classes(spec), "test")        # the accuracy is on the balanced sample
    te = probe_mod.balanced(test.labels, 30, cfg.seed + 1)
    by_hand = (probe.probs(batches_mod.to_float(test.images[te])).argmax(1) == test.labels[te]).float().mean()
    assert probe.accuracy == pytest.approx(float(by_hand))   # (random tiny features: fitting is tested below)
    x = batches_mod.to_float(test.images[:8])
    p = probe.probs(x)
    assert p.shape == (8, 5) and torch.allclose(p.sum(1), torch.ones(8))
    assert probe_mod.cache_path(probe.fingerprint).is_file()

    def no_fitting(*a, **k):
        raise AssertionError("refitted although cached")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(probe_mod, "fit_linear", no_fitting)
        again = probe_mod.get_probe(spec, torch.device("cpu"), cfg, progress=False)
    assert again.fingerprint == probe.fingerprint and again.accuracy == probe.accuracy
    assert torch.equal(again.probs(x), p)
    # images excluded (a KID reference from the train split) are not fitted on: another probe
    train = data_mod.load(probe_mod.all_classes(spec), "train")
    excl = (train.labels == 4).nonzero().flatten()[:40]
    assert not set(probe_mod.balanced(train.labels, 60, 0, excl).tolist()) & set(excl.tolist())
    other = probe_mod.get_probe(spec, torch.device("cpu"), cfg, exclude=excl, progress=False)
    assert other.fingerprint != probe.fingerprint and other.info["n_excluded"] == 40


def test_probe_fits_inside_a_no_grad_scoring_pass():
    """The first scoring pass of a dataset fits the probe from inside torch.no_grad()."""
    f = torch.randn(60, 4, generator=torch.Generator().manual_seed(0))
    y = (f[:, 0] > 0).long()
    with torch.no_grad():
        w, b, mu, sd = probe_mod.fit_linear(f, y, 2, SMALL_PROBE)
    assert w.abs().sum() > 0                                          # it really took gradient steps
    assert ((((f - mu) / sd) @ w + b).argmax(1) == y).float().mean() > 0.9


def test_probe_without_inception_weights_says_why(monkeypatch):
    monkeypatch.setattr(probe_mod, "FEATURES", probe_mod.inception_features)
    monkeypatch.setattr(probe_mod.weights, "fid_source", lambda *a, **k: (_ for _ in ()).throw(
        WeightsError("Inception weights not found: test")))
    spec = data_mod.DataSpec(source="shapes", resolution=32, n_train=40, n_test=20)
    with pytest.raises(WeightsError, match="Inception weights not found"):
        probe_mod.get_probe(spec, torch.device("cpu"), progress=False)


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
    assert len(proto["pair_indices"]) == 4 and proto["probe"]["config"]["per_class"] == SMALL_PROBE.per_class
    assert proto["pegasus_protocol"] == P.PROTOCOL_VERSION and proto["probe"]["kind"] == "linear on tiny random conv"
    held = data_mod.load(probe_mod.all_classes(data_mod.DataSpec(**proto["run"]["data"])), "test")
    assert all(held.labels[i] == 0 and held.labels[j] == 4 for i, j in proto["pair_indices"])
    for k in ("lerp", "slerp", "crossfade"):
        rec = m[P.key("hybrid", k)]
        assert 0 <= rec["value"] <= 1 and rec["n"] == 4 and len(rec["per_pair"]) == 4
        assert rec["lo"] <= rec["value"] <= rec["hi"]
        assert rec["probe_accuracy"] == round(proto["probe"]["accuracy"], 4) and rec["pair_index_sha256"]
        probs = doc["class_probabilities_t0.5"][k]["p_mid"]
        assert m[P.key("joint_mass", k)]["per_pair"] == pytest.approx([row[0] + row[4] for row in probs], abs=1e-5)
        assert m[P.key("hybrid", k)]["per_pair"] == pytest.approx(
            [max(0.0, 2 * min(row[0], row[4]) - (1 - row[0] - row[4])) for row in probs], abs=1e-5)
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
    assert doc["gallery"][0]["kind"] in P.LATENT_KINDS and doc["gallery"][0]["t"] == 0.5

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
    "  mse: {}", "  wide: {model: {latent_dim: 16}}\n  ssim_colour: {}")


@pytest.mark.slow
def test_report_leads_with_the_registered_model_and_ranks_every_arm(tmp_path, monkeypatch, capsys):
    from bench.pegasus import report as pegasus_report

    monkeypatch.setenv("PEGASUS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(P.weights, "fid_source", lambda *a, **k: (_ for _ in ()).throw(WeightsError("no Inception")))
    f = tmp_path / "tinypeg.yaml"
    f.write_text(PEGASUS_FILE)
    common = ["--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    # nothing trained yet: one line, exit 2, nothing written
    assert main(["pegasus", str(f), "--from", "circle", "--to", "star", *common]) == 2
    assert "no finished run of arm 'ssim_colour'" in capsys.readouterr().err
    assert not (tmp_path / "results" / "pegasus").exists()

    assert main(["run", str(f), *common, "--no-progress"]) == 0
    assert main(["pegasus", str(f), "--from", "circle", "--to", "star", "--no-progress", *common]) == 0
    out = tmp_path / "results" / "pegasus"
    readme = (out / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| tinypeg |")]
    assert len(rows) == 2
    hybrid = {}
    for arm in ("wide", "ssim_colour"):
        (run_dir,) = (tmp_path / "runs" / "tinypeg" / arm / "shapes").iterdir()
        hybrid[arm] = store.read_json(run_dir / "metrics.json")["metrics"][P.key("hybrid", "lerp")]["value"]
    ranked = sorted(hybrid, key=lambda a: -hybrid[a])
    assert [r.split(" | ")[1] for r in rows] == ranked                       # best hybrid score first
    # the page leads with the registered arm (the paper's final loss), not with the best-scoring one
    assert "The registered model: `tinypeg/ssim_colour/shapes/s0-" in readme
    doc = store.read_json(out / "metrics.json")
    assert doc["run"].startswith("tinypeg/ssim_colour/")
    # re-walking that run reproduces the hybrid score its scoring pass recorded
    assert doc["metrics"][P.key("hybrid", "lerp")]["value"] == pytest.approx(hybrid["ssim_colour"], abs=1e-5)
    from PIL import Image
    with Image.open(out / "sheet_lerp.png") as im:                         # 8 of 16 pairs x (9 + 2) columns
        assert im.size == (11 * 34 + 2, pegasus_report.ROWS_SHOWN * 34 + 2)
    assert (out / "crossfade.png").is_file() and (out / "gallery.png").is_file()
    assert "held-out accuracy" in readme and "Runs trained and scored by commit" in readme
    assert "none of them a pair endpoint" in readme and "[HISTORY.md](HISTORY.md)" in readme
