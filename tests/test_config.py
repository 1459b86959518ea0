"""Ablation files: strict loading, line-numbered errors, expansion and hashing."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import schema as config
from bench.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
ABLATIONS = sorted(p for p in (ROOT / "ablations").glob("*.yaml") if not p.name.startswith("_"))

GOOD = """\
name: t
question: does it load?
datasets: [shapes]
seeds: [0, 1]
defaults:
  model: {name: conv, widths: [8, 16], latent_dim: 8}
  loss: [{name: kl}, {name: mse}]
  train: {steps: 4, batch_size: 8, lr: 1e-3}
arms:
  mse: {}
  ssim: {loss: [{name: kl}, {name: ssim}]}
"""


def write(tmp_path: Path, text: str, name: str = "a.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def err(tmp_path: Path, text: str, *overrides: str) -> str:
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, text), overrides)
    return str(e.value)


@pytest.mark.parametrize("path", ABLATIONS, ids=lambda p: p.name)
def test_every_shipped_ablation_loads_and_expands(path):
    spec = config.load(path)
    runs = config.expand(spec)
    assert len(runs) == len(spec.arms) * len(spec.datasets) * len(spec.seeds)
    # quick is a smoke demo; sigma_cpu places the sigma-VAE against rd_cpu's curves and decides nothing
    assert spec.question and (spec.claims or spec.name in ("quick", "sigma_cpu"))


def test_expand_resolves_and_scientific_number_is_float(tmp_path):
    spec = config.load(write(tmp_path, GOOD))
    runs = config.expand(spec)
    assert len(runs) == 4
    assert runs[0].train.lr == 1e-3 and isinstance(runs[0].train.lr, float)
    assert runs[0].model["image_size"] == 32
    assert [t.name for t in runs[2].loss] == ["kl", "ssim"]
    assert runs[0].loss[0].weight == 1.0


def test_hash_ignores_seed_and_paths_but_not_arms(tmp_path):
    runs = config.expand(config.load(write(tmp_path, GOOD)))
    assert runs[0].hash8 == runs[1].hash8                 # seeds 0 and 1 of one arm
    assert runs[0].hash8 != runs[2].hash8                 # different arms
    moved = config.expand(config.load(write(tmp_path, GOOD), ["data.shapes.n_train=4000"]))
    assert moved[0].hash8 == runs[0].hash8                # the default value: same config
    changed = config.expand(config.load(write(tmp_path, GOOD), ["arms.ssim.train.lr=0.01"]))
    assert changed[0].hash8 == runs[0].hash8 and changed[2].hash8 != runs[2].hash8


@pytest.mark.parametrize("bad,expect", [
    ("qestion: x\n", ":5: qestion: unknown key (did you mean 'question'?)"),
    ("arms:\n  mse: {}\n  x: {los: []}\n", "arms.x.los: unknown key (did you mean 'loss'?)"),
])
def test_unknown_keys(tmp_path, bad, expect):
    text = GOOD.replace("arms:\n  mse: {}\n  ssim: {loss: [{name: kl}, {name: ssim}]}\n", "") \
        if bad.startswith("arms") else GOOD
    if not bad.startswith("arms"):
        text = GOOD.replace("seeds: [0, 1]\n", "seeds: [0, 1]\n" + bad)
    else:
        text = text + bad
    assert expect in err(tmp_path, text)


def test_unknown_loss_name_points_at_its_line(tmp_path):
    text = GOOD.replace("{name: ssim}", "{name: ssmi}")
    msg = err(tmp_path, text)
    assert msg.startswith(f"{tmp_path / 'a.yaml'}:11: arms.ssim.loss[1].name: unknown loss 'ssmi'")
    assert "did you mean 'ssim'" in msg


def test_unknown_model_and_bad_model_arg(tmp_path):
    assert "defaults.model.name: unknown model 'cnv'" in err(tmp_path, GOOD.replace("name: conv", "name: cnv"))
    msg = err(tmp_path, GOOD.replace("latent_dim: 8", "latentdim: 8"))
    assert ":6: defaults.model.latentdim: unknown argument" in msg and "did you mean 'latent_dim'" in msg


def test_wrong_types(tmp_path):
    assert ":8: defaults.train.steps:" in err(tmp_path, GOOD.replace("steps: 4", "steps: many"))
    # YAML 1.1 would turn `off` into False; here it stays a string and fails the bool check
    assert "defaults.train.amp" in err(tmp_path, GOOD.replace("lr: 1e-3", "lr: 1e-3, amp: off"))
    assert "seeds" in err(tmp_path, GOOD.replace("seeds: [0, 1]", "seeds: zero"))


def test_duplicate_keys_rejected(tmp_path):
    msg = err(tmp_path, GOOD.replace("seeds: [0, 1]\n", "seeds: [0, 1]\nseeds: [2]\n"))
    assert ":5: seeds: duplicate key 'seeds'" in msg


def test_missing_required_and_missing_file(tmp_path):
    assert "question: required key is missing" in err(tmp_path, GOOD.replace("question: does it load?\n", ""))
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "nope.yaml")
    assert "base: base file not found" in err(tmp_path, "base: nope.yaml\n" + GOOD)


def test_unknown_dataset_and_class(tmp_path):
    assert "datasets[0]: unknown dataset 'shape'" in err(tmp_path, GOOD.replace("[shapes]", "[shape]"))


def test_base_is_merged_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path, "seeds: [7]\ndefaults:\n  train: {steps: 9, batch_size: 8}\n", "_base.yaml")
    child = GOOD.replace("seeds: [0, 1]\n", "").replace("  train: {steps: 4, batch_size: 8, lr: 1e-3}\n", "")
    p = write(tmp_path / "sub", "base: ../_base.yaml\n" + child)
    spec = config.load(p)
    assert spec.seeds == [7] and config.expand(spec)[0].train.steps == 9
    # an error in the base file is reported with the base file's name and line
    write(tmp_path, "seeds: [7]\ndefaults:\n  train: {stepz: 9}\n", "_base.yaml")
    with pytest.raises(ConfigError, match=r"_base.yaml:3: defaults.train.stepz: unknown key"):
        config.load(p)


def test_overrides(tmp_path):
    spec = config.load(write(tmp_path, GOOD), ["defaults.train.steps=7", "seeds=[3]"])
    assert spec.seeds == [3] and config.expand(spec)[0].train.steps == 7
    with pytest.raises(ConfigError, match=r"--set defaults.train.stepz=7: defaults.train.stepz: unknown key"):
        config.load(write(tmp_path, GOOD), ["defaults.train.stepz=7"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config.load(write(tmp_path, GOOD), ["steps"])


def test_yaml_syntax_error_has_line(tmp_path):
    assert ":3: YAML syntax error" in err(tmp_path, "name: t\nquestion: q\n  bad: [\n")


# --------------------------------------------------------------------------- bad input: one line, exit 2

def _cli_refuses(tmp_path, path, capsys) -> str:
    from bench.__main__ import main
    runs, results = tmp_path / "runs", tmp_path / "results"
    code = main(["run", str(path), "--runs-dir", str(runs), "--results-dir", str(results), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert not runs.exists() and not results.exists()                 # nothing written
    return err


@pytest.mark.parametrize("content,expect", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not a UTF-8 text file"),
    (b"name: t\x00\nquestion: q\n", "NUL bytes"),
    (b"", "empty file"),
    (b"  \n\n", "empty file"),
    (b"- just\n- a list\n", "must be a mapping"),
])
def test_binary_empty_and_non_mapping_files_are_refused(tmp_path, capsys, content, expect):
    p = tmp_path / "bad.yaml"
    p.write_bytes(content)
    assert expect in _cli_refuses(tmp_path, p, capsys)


def test_a_directory_instead_of_a_file_is_refused(tmp_path, capsys):
    d = tmp_path / "dir.yaml"
    d.mkdir()
    assert "cannot read" in _cli_refuses(tmp_path, d, capsys)


@pytest.mark.parametrize("edit,key", [
    (("latent_dim: 8", "latent_dim: 0"), "latent_dim"),
    (("{name: mse}", "{name: mse, weight: .nan}"), "defaults.loss[1].weight"),
    (("{name: mse}", "{name: mse, weight: -1}"), "defaults.loss[1].weight"),
    (("{name: mse}", "{name: mse, weight: .inf}"), "defaults.loss[1].weight"),
    (("lr: 1e-3", "lr: 0"), "defaults.train.lr"),
    (("lr: 1e-3", "lr: .inf"), "defaults.train.lr"),
    (("lr: 1e-3", "lr: .nan"), "defaults.train.lr"),
    (("steps: 4", "steps: 0"), "defaults.train.steps"),
    (("batch_size: 8", "batch_size: 0"), "defaults.train.batch_size"),
])
def test_out_of_range_and_non_finite_values_are_refused(tmp_path, capsys, edit, key):
    p = write(tmp_path, GOOD.replace(*edit))
    assert GOOD.replace(*edit) != GOOD
    err = _cli_refuses(tmp_path, p, capsys)
    assert key in err and "a.yaml" in err, err


# --------------------------------------------------------------------------- the grid block

GRID = GOOD + """\
grid:
  loss.kl.weight: [0.1, 1]
  train.lr: [1.0e-3, 3.0e-3]
"""


def test_grid_expands_arms_by_values_and_records_them(tmp_path):
    spec = config.load(write(tmp_path, GRID.replace("  train: {steps: 4, batch_size: 8, lr: 1e-3}",
                                                    "  train: {steps: 4, batch_size: 8}")))
    names = list(spec.arms)
    assert names == [f"{arm}--loss.kl.weight_{w}--train.lr_{lr}" for arm in ("mse", "ssim")
                     for w in ("0.1", "1") for lr in ("0.001", "0.003")]
    runs = config.expand(spec)
    assert len(runs) == 8 * 2                                      # 8 arms x 2 seeds
    r = next(r for r in runs if r.arm == "ssim--loss.kl.weight_0.1--train.lr_0.003")
    assert r.swept == {"loss.kl.weight": 0.1, "train.lr": 0.003}
    assert r.train.lr == 0.003 and [(t.name, t.weight) for t in r.loss] == [("kl", 0.1), ("ssim", 1.0)]
    assert r.resolved()["swept"] == r.swept
    assert len({x.hash8 for x in runs}) == 8                      # every grid point is its own experiment
    assert spec.baseline_arm() == names[0]


def test_grid_baseline_names_the_first_combination(tmp_path):
    text = GRID.replace("  train: {steps: 4, batch_size: 8, lr: 1e-3}", "  train: {steps: 4, batch_size: 8}")
    spec = config.load(write(tmp_path, text + "baseline: ssim\n"))
    assert spec.baseline_arm() == "ssim--loss.kl.weight_0.1--train.lr_0.001"


@pytest.mark.parametrize("grid,expect", [
    ("grid:\n  train.lr: [1.0e-3]\n", "already sets train.lr"),                    # defaults do not count,
    ("grid:\n  loss.colour.weight: [1, 2]\n", "has no loss term 'colour'"),
    ("grid:\n  optim.lr: [1]\n", "unknown grid key 'optim.lr'"),
    ("grid:\n  train.lr: []\n", "non-empty list"),
    ("grid:\n  train.lr: [0.1, 0.1]\n", "lists a value twice"),
    ("grid:\n  train.lr: [.nan]\n", "finite numbers"),
    ("grid: [1, 2]\n", "must map dotted keys"),
])
def test_grid_errors_point_at_the_grid_line(tmp_path, grid, expect):
    text = GOOD.replace("  mse: {}", "  mse: {train: {lr: 1.0e-3}}") + grid
    msg = err(tmp_path, text)
    line = text.splitlines().index(next(x for x in text.splitlines() if x.startswith("grid"))) + 1
    assert expect in msg and (f"a.yaml:{line}:" in msg or f"a.yaml:{line + 1}:" in msg), msg


ARM_GRID = GOOD.replace("  mse: {}", "  mse: {grid: {loss.kl.weight: [0.01, 0.03]}}").replace(
    "  ssim: {loss: [{name: kl}, {name: ssim}]}",
    "  ssim: {loss: [{name: kl}, {name: ssim}], grid: {loss.kl.weight: [1, 3, 10]}}") + \
    "grid:\n  loss.kl.weight: [0.1, 1]\n"


def test_an_arm_grid_replaces_the_file_grid_values_for_that_arm(tmp_path):
    spec = config.load(write(tmp_path, ARM_GRID + "baseline: ssim\n"))
    assert list(spec.arms) == ["mse--loss.kl.weight_0.01", "mse--loss.kl.weight_0.03",
                               "ssim--loss.kl.weight_1", "ssim--loss.kl.weight_3", "ssim--loss.kl.weight_10"]
    runs = config.expand(spec)
    r = next(r for r in runs if r.arm == "ssim--loss.kl.weight_10")
    assert r.swept == {"loss.kl.weight": 10} and [(t.name, t.weight) for t in r.loss] == [("kl", 10.0), ("ssim", 1.0)]
    assert spec.baseline_arm() == "ssim--loss.kl.weight_1"
    # an arm without its own grid keeps the file's values
    spec = config.load(write(tmp_path, ARM_GRID.replace(", grid: {loss.kl.weight: [1, 3, 10]}", "")))
    assert [a for a in spec.arms if a.startswith("ssim")] == ["ssim--loss.kl.weight_0.1", "ssim--loss.kl.weight_1"]


@pytest.mark.parametrize("old,new,expect", [
    ("mse: {grid: {loss.kl.weight: [0.01, 0.03]}}", "mse: {grid: {train.lr: [0.01]}}", "not a key of the file's grid"),
    ("[0.01, 0.03]", "[0.01, 0.01]", "lists a value twice"),
    ("[0.01, 0.03]", "[0.01, -1]", "finite number >= 0"),
])
def test_arm_grid_errors_point_at_the_arm_line(tmp_path, old, new, expect):
    text = ARM_GRID.replace(old, new)
    msg = err(tmp_path, text)
    line = text.splitlines().index(next(x for x in text.splitlines() if x.startswith("  mse:"))) + 1
    assert expect in msg and f"a.yaml:{line}:" in msg, msg


def test_an_arm_grid_needs_a_file_grid(tmp_path):
    text = GOOD.replace("  mse: {}", "  mse: {grid: {loss.kl.weight: [0.01]}}")
    msg = err(tmp_path, text)
    assert "there is none" in msg and "a.yaml:10:" in msg, msg


def test_grid_values_are_validated_like_any_field(tmp_path):
    text = GRID.replace("  train: {steps: 4, batch_size: 8, lr: 1e-3}", "  train: {steps: 4, batch_size: 8}")
    msg = err(tmp_path, text.replace("[1.0e-3, 3.0e-3]", "[1.0e-3, -1]"))
    assert "train.lr" in msg and "greater than 0" in msg, msg
