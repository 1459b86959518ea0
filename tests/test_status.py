"""`bench status`: the key metric per run, --json for scripts (a stable list of objects), --watch redrawing
every --interval seconds until Ctrl-C (exit 0).  Run directories are written by hand: nothing trains."""
from __future__ import annotations

import io
import json

import pytest
from test_runners import _file

from bench import store
from bench.__main__ import main
from bench.config import schema as config
from bench.run import status

KEYS = ["run", "arm", "dataset", "seed", "state", "step", "total_steps", "metric", "holder", "job",
        "images_per_s", "eta_s", "detail"]


@pytest.fixture
def sweep(tmp_path):
    """Two runs of the tiny file: the first finished, the second logged to step 4 (nobody running it)."""
    f = _file(tmp_path)
    runs, root = config.expand(config.load(f)), tmp_path / "runs"
    store.write_json(root / runs[0].rel_dir / store.METRICS,
                     {"status": "done", "train": {"steps": 8, "train_images_per_s": 120.5, "wall_s": 3.0},
                      "metrics": {"recon_ssim": {"value": 0.51234}, "scoring_s": {"value": 1.0}}})
    d = root / runs[1].rel_dir
    d.mkdir(parents=True)
    (d / store.LOG).write_text(json.dumps({"step": 4, "loss": 0.0213, "images_per_s": 100.0}) + "\n")
    (d / store.CKPT).write_bytes(b"")
    return f, runs, root


def test_the_table_shows_the_key_metric(sweep):
    _, runs, root = sweep
    lines = status.report("tiny", runs, root).splitlines()
    assert "metric" in lines[0]
    assert "recon_ssim 0.512" in lines[1] and "loss 0.0213" in lines[2] and "interrupted" in lines[2]


def test_json_is_one_object_per_run_with_stable_keys(sweep, capsys):
    f, runs, root = sweep
    with store.run_lock(root / runs[1].rel_dir):                     # someone is running the second one
        assert main(["status", str(f), "--runs-dir", str(root), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [list(d) for d in doc] == [KEYS, KEYS]
    done, running = doc
    assert done == {"run": str(runs[0].rel_dir), "arm": "mse", "dataset": "shapes", "seed": 0, "state": "done",
                    "step": 8, "total_steps": 8, "metric": {"name": "recon_ssim", "value": 0.51234},
                    "holder": None, "job": None, "images_per_s": 120.5, "eta_s": None, "detail": ""}
    assert running["state"] == "running" and running["step"] == 4 and running["seed"] == 1
    assert running["metric"] == {"name": "loss", "value": 0.0213}
    assert set(running["holder"]) == {"pid", "host", "since"} and running["holder"]["pid"] > 0
    assert running["eta_s"] == pytest.approx((8 - 4) * 16 / 100.0)


def _count_sleeps(monkeypatch, n: int, between=None) -> list[float]:
    """status.watch's sleep: records the interval, runs ``between`` after the first refresh, Ctrl-C at the n-th."""
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1 and between:
            between()
        if len(slept) == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(status, "_sleep", sleep)
    return slept


def test_watch_redraws_until_ctrl_c_and_exits_0(sweep, monkeypatch, capsys):
    f, runs, root = sweep
    fail = lambda: store.write_json(root / runs[1].rel_dir / store.ERROR, {"error": "RuntimeError: boom"})
    slept = _count_sleeps(monkeypatch, 3, between=fail)
    assert main(["status", str(f), "--runs-dir", str(root), "--watch", "--interval", "0.5"]) == 0
    out = capsys.readouterr().out
    assert slept == [0.5, 0.5, 0.5] and out.count("every 0.5 s, Ctrl-C to stop") == 3
    assert "\033[2J" not in out                                       # not a terminal: refreshes follow each other
    first, *later = out.split("every 0.5 s")[1:]
    assert "interrupted" in first and all("RuntimeError: boom" in t for t in later)   # each refresh re-reads


def test_watch_json_is_a_list_per_line_and_clears_a_terminal(sweep, monkeypatch, capsys):
    f, _, root = sweep
    _count_sleeps(monkeypatch, 2)
    assert main(["status", str(f), "--runs-dir", str(root), "--watch", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all([d["state"] for d in json.loads(ln)] == ["done", "interrupted"] for ln in lines)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    _count_sleeps(monkeypatch, 2)
    term = Terminal()
    assert status.watch(lambda: "table", 1.0, out=term) == 0
    assert term.getvalue() == (status.CLEAR + "table\n") * 2


@pytest.mark.parametrize("interval", ["0", "-1", "soon"])
def test_a_bad_interval_is_refused(sweep, interval, capsys):
    f, _, root = sweep
    with pytest.raises(SystemExit) as exc:
        main(["status", str(f), "--runs-dir", str(root), "--watch", "--interval", interval])
    assert exc.value.code == 2 and "--interval" in capsys.readouterr().err
