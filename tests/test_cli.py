"""CLI: one-line errors with exit code 2 and nothing written; list; plan."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


def test_bad_yaml_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.yaml").write_text("name: x\nquestion: q\ndatasets: [shapes]\nseeds: [0]\n"
                                     "arms:\n  a: {loss: [{name: kl}, {name: ssmi}]}\n")
    code = main(["run", "x.yaml"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == ("x.yaml:6: arms.a.loss[1].name: unknown loss 'ssmi' (did you mean 'ssim'?); "
                           "known: " + err.split("known: ")[1].strip())
    assert "\n" not in err.strip() and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.yaml"]     # no runs/, no results/


@pytest.mark.slow
def test_subprocess_exit_code_and_no_traceback(tmp_path):
    (tmp_path / "x.yaml").write_text("name: x\nname: y\n")
    r = subprocess.run([sys.executable, "-m", "bench", "plan", "x.yaml"], cwd=tmp_path, capture_output=True,
                       text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2
    assert r.stderr.strip() == "x.yaml:2: name: duplicate key 'name' (an earlier value would be silently dropped)"


def test_list_shows_registries(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("models:", "losses:", "conv", "ssim", "colour", "kl", "shapes", "cifar10"):
        assert word in out


def test_plan_lists_runs_and_builds_models(capsys):
    assert main(["plan", str(ROOT / "ablations/quick.yaml")]) == 0
    out = capsys.readouterr().out
    assert "quick: 6 runs = 3 arms x 1 datasets x 2 seeds" in out
    assert out.count("quick/") == 6


HEAVY = ("torch", "torchvision", "numpy", "scipy", "matplotlib")


def test_the_parser_and_help_import_no_torch():
    """`python -m bench --help` answers at once: building the parser and printing any help loads no heavy
    library (the commands import theirs when they run)."""
    code = ("import contextlib, io, sys\n"
            "from bench.__main__ import build_parser\n"
            "for argv in (['--help'], ['run', '--help'], ['status', '--help'], ['compare', '--help'],\n"
            "             ['weights', 'fetch', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        build_parser().parse_args(argv)\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
