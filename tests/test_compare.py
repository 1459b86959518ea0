"""`bench compare`: two results folders (or one at two commits) per arm and metric, B - A with the Welch interval
of bench.stats; what one side lacks is listed; bad input is one line and exit 2."""
from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import pytest

from bench import stats
from bench.__main__ import main
from bench.report import compare
from bench.report.tables import CSV_FIELDS

ROOT = Path(__file__).resolve().parent.parent
A_SSIM = {"mse": [0.370, 0.375, 0.378], "ssim": [0.790, 0.795, 0.800]}
B_SSIM = {"mse": [0.371, 0.374, 0.377], "ssim": [0.820, 0.826, 0.829], "colour": [0.80, 0.81]}


def _table(folder: Path, ssim: dict[str, list[float]], extra: dict[str, float]) -> Path:
    """A table.csv as bench.report.tables writes it: a row per run x metric (fid_samples unavailable)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for arm, values in ssim.items():
        for seed, v in enumerate(values):
            base = {"ablation": "loss", "arm": arm, "dataset": "shapes", "seed": seed, "hash8": "0" * 8,
                    "status": "done", "n": 40, "split": "test", "unavailable": ""}
            w.writerow({**base, "metric": "recon_ssim", "value": repr(v)})
            for k, x in extra.items():
                w.writerow({**base, "metric": k, "value": repr(x)})
            w.writerow({**base, "metric": "fid_samples", "value": "", "unavailable": "no Inception"})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "table.csv").write_text(buf.getvalue())
    return folder


@pytest.fixture
def two(tmp_path):
    return (_table(tmp_path / "a", A_SSIM, {"params": 1000.0, "checkerboard": 0.01}),
            _table(tmp_path / "b", B_SSIM, {"params": 1000.0, "kl": 3.0}))


def test_differences_with_welch_intervals_and_what_one_side_lacks(two):
    c = compare.compare(compare.read_folder(two[0]), compare.read_folder(two[1]))
    rows = {(r.arm, r.metric): r for r in c.rows}
    assert set(rows) == {(a, m) for a in ("mse", "ssim") for m in ("recon_ssim", "fid_samples", "params")}
    for arm in ("mse", "ssim"):
        ref = stats.welch(B_SSIM[arm], A_SSIM[arm])
        got = rows[(arm, "recon_ssim")].diff
        assert (got.diff, got.lo, got.hi, got.p) == pytest.approx((ref.diff, ref.lo, ref.hi, ref.p))
    assert rows[("ssim", "recon_ssim")].verdict == "better" and rows[("mse", "recon_ssim")].verdict == ""
    assert rows[("mse", "params")].diff.diff == 0 and rows[("mse", "fid_samples")].a.n == 0
    assert c.one_side == [
        f"metrics only in A ({two[0]}): checkerboard",
        f"arms only in B ({two[1]}): shapes/colour",
        f"metrics only in B ({two[1]}): kl",
        f"no value in A ({two[0]}; unavailable or not finished): shapes/mse fid_samples, shapes/ssim fid_samples",
        f"no value in B ({two[1]}; unavailable or not finished): shapes/mse fid_samples, shapes/ssim fid_samples"]


def test_cli_prints_the_table_and_writes_markdown(two, tmp_path, capsys):
    out = tmp_path / "cmp.md"
    assert main(["compare", str(two[0]), str(two[1]), "--metrics", "recon_ssim", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Welch" in text and "arms only in B" in text and "metrics only" not in text    # kl, checkerboard unasked
    ssim = next(line for line in text.splitlines() if line.split()[:3] == ["shapes", "ssim", "recon_ssim"])
    assert ssim.split()[3:6] == ["0.795", "(3)", "0.825"] and ssim.endswith("better")
    md = out.read_text()
    assert md.startswith("# Comparison\n") and "| shapes | ssim | recon_ssim | 0.795 (3) | 0.825 (3) | +0.030 |" in md
    assert "## On one side only" in md and "shapes/colour" in md


def test_a_folder_against_itself_differs_by_nothing():
    folder = ROOT / "results" / "loss_cpu"              # a table.csv written by bench.report.tables
    side = compare.read_folder(folder)
    c = compare.compare(side, side)
    assert c.rows and all((r.diff.diff == 0 or r.a.n == 0) and not r.verdict for r in c.rows)
    assert all(line.startswith("no value in") for line in c.one_side)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def test_one_folder_at_two_commits(tmp_path, capsys):
    repo = tmp_path / "repo"
    folder = _table(repo / "results" / "loss", A_SSIM, {})
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "A")
    _table(folder, B_SSIM, {})                        # the working tree has moved on
    assert main(["compare", str(folder), "--at", "HEAD"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("A: results/loss at HEAD (") and f"B: {folder} (loss)" in text
    assert "arms only in B" in text and "shapes/colour" in text


@pytest.mark.parametrize("argv, message", [
    (["compare", "{t}/nowhere", "{t}/b"], "{t}/nowhere: no such folder"),
    (["compare", "{t}/empty", "{t}/b"], "{t}/empty: not a results folder (no table.csv; `bench run` or "
                                        "`bench table` writes one)"),
    (["compare", "{t}/b"], "compare: give two results folders (A B), or one and --at REV"),
    (["compare", "{t}/b", "--at", "HEAD"], "--at HEAD: {t}/b is not inside a git repository"),
    (["compare", "{t}/repo/results/loss", "--at", "nosuchrev"], "--at nosuchrev: unknown commit in {t}/repo"),
    (["compare", "{t}/repo/results/new", "--at", "HEAD"], "results/new at HEAD: not a results folder there "
                                                          "(no results/new/table.csv in that commit)"),
    (["compare", "{t}/bad", "{t}/b"], "{t}/bad: table.csv lacks the columns"),
    (["compare", "{t}/b", "{t}/b", "--metrics", "nosuch"], "--metrics: nosuch on neither side"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    t = tmp_path / "w"                                  # not inside any git repository
    _table(t / "b", A_SSIM, {})
    (t / "empty").mkdir()
    (t / "bad").mkdir()
    (t / "bad" / "table.csv").write_text("a,b\n1,2\n")
    _table(t / "repo" / "results" / "loss", A_SSIM, {})
    _table(t / "repo" / "results" / "new", A_SSIM, {})
    _git(t / "repo", "init", "-q")
    _git(t / "repo", "add", "results/loss")
    _git(t / "repo", "commit", "-q", "-m", "A")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert main([a.format(t=t) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(t=t)) and err.count("\n") == 1
