"""Several GPUs on one machine, with the device count faked (no CUDA kernel runs here): every visible GPU is
used by default, each worker pins its device, and device names are checked once before anything is written."""
from __future__ import annotations

import pytest
import torch
from test_runners import _file

from bench.__main__ import main
from bench.config import schema as config
from bench.errors import BenchError
from bench.run import execute, local
from bench.train import runtime


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def _runs(tmp_path, device="auto"):
    runs = config.expand(config.load(_file(tmp_path)))
    return [r.replace(train={"device": device}) for r in runs]


def test_every_visible_gpu_is_used_by_default(tmp_path, two_gpus, monkeypatch):
    seen = {}

    def parallel(todo, runs_root, slots):
        seen["slots"] = [s.device for s in slots]
        return []

    monkeypatch.setattr(local, "_parallel", parallel)
    monkeypatch.setattr(local, "_sequential", lambda *a, **k: pytest.fail("one GPU of two used"))
    local.run_sweep(_runs(tmp_path), tmp_path / "runs", progress=False)
    assert seen["slots"] == ["cuda:0", "cuda:1"]
    local.run_sweep(_runs(tmp_path), tmp_path / "runs", jobs=4, progress=False)     # packing, flagged shared
    assert seen["slots"] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    local.run_sweep(_runs(tmp_path), tmp_path / "runs", devices=["cuda:1"], progress=False)
    assert seen["slots"] == ["cuda:1"]


def test_cpu_runs_stay_sequential_on_a_gpu_box(tmp_path, two_gpus, monkeypatch):
    called = []
    monkeypatch.setattr(local, "_sequential", lambda todo, *a, **k: called.append(len(todo)) or [])
    local.run_sweep(_runs(tmp_path, "cpu"), tmp_path / "runs", progress=False)
    assert called == [len(_runs(tmp_path, "cpu"))]


def test_a_worker_pins_its_device(tmp_path, two_gpus, monkeypatch):
    pinned = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pinned.append(str(d)))

    def stop(*a, **k):
        raise RuntimeError("stop after placement")

    monkeypatch.setattr(execute.store, "write_yaml", stop)
    run = _runs(tmp_path)[0]
    with pytest.raises(RuntimeError, match="stop after placement"):
        execute.run_one(run, tmp_path / "r", placement=execute.Placement("cuda:1"))
    assert pinned == ["cuda:1"]


@pytest.mark.parametrize("device, needle", [
    ("cuda:9", "device 'cuda:9' asked for, but this machine has 2 visible GPUs (cuda:0 to cuda:1)"),
    ("gpu", "unknown device 'gpu'"),
])
def test_a_bad_device_name_is_one_line(two_gpus, device, needle):
    with pytest.raises(BenchError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        runtime.resolve_device(device)


def test_cuda_without_a_gpu_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    f = _file(tmp_path)
    f.write_text(f.read_text().replace("train: {", "train: {device: cuda, "))
    assert "device: cuda" in f.read_text()
    code = main(["run", str(f), "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no CUDA device is available" in err[0], err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "res").exists()


def test_devices_flag_past_the_visible_gpus_is_refused_once(tmp_path, capsys, two_gpus):
    code = main(["run", str(_file(tmp_path)), "--devices", "cuda:0,cuda:9", "--runs-dir", str(tmp_path / "runs"),
                 "--results-dir", str(tmp_path / "res")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cuda:9" in err[0], err
    assert not (tmp_path / "runs").exists()
