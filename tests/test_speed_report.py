"""results/speed/ (``python -m bench speed``): the peers benchmarks' records, built by the same
functions the benchmarks use, read back from real pytest-benchmark JSON and turned into tables."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.__main__ import main
from bench.errors import BenchError
from bench.speed import report as sr

ROOT = Path(__file__).resolve().parent.parent
# images/s by round of each variant (7 rounds); the trainer is ahead of plain_cl in 6 rounds of 7
ROUNDS = {"trainer": [800, 820, 790, 810, 805, 900, 700], "trainer_torch_defaults": [640, 650, 630, 660, 655, 700, 600],
          "plain": [600, 610, 590, 605, 600, 640, 560], "plain_cl": [780, 790, 800, 790, 800, 850, 720],
          "plain_cl_kept": [770, 780, 760, 790, 770, 820, 690], "pythae": [590, 600, 590, 600, 600, 630, 550]}
PEAKS = [1.5e11, 1.6e11, 1.4e11, 1.5e11, 1.55e11, 1.45e11, 1.5e11]
FLOPS = 90e6                    # a training step's FLOPs per image: MFU = 90e6 * 805 / 1.6e11 = 0.45


def _record(benches: list[dict], commit: str = "a" * 40, dirty: bool = False) -> dict:
    """A pytest-benchmark JSON document as ``--benchmark-json`` writes it (the parts the report reads)."""
    return {"machine_info": {"cpu": {"brand_raw": "Test CPU", "count": 2}},
            "commit_info": {"id": commit, "dirty": dirty}, "datetime": "2026-11-27T10:00:00+00:00",
            "benchmarks": benches}


def _versus(size: int = 32, batch: int = 128, rounds: dict = ROUNDS) -> dict:
    info = sr.versus_info({k: list(map(float, v)) for k, v in rounds.items()}, ("plain", "plain_cl", "plain_cl_kept"),
                          FLOPS, max(PEAKS), PEAKS, size)
    return {"name": f"{sr.TESTS['vs']}[{size}-{batch}]", "params": {"image_size": size, "batch": batch},
            "extra_info": info | {"wall_s": 754.2, "pytest_args": ["--benchmark", "-k", "peers and 32"]}}


def _write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc, indent=2))
    return path


def test_versus_record_picks_the_fastest_plain_loop_and_decides_ratios_round_by_round():
    info = sr.versus_info({k: list(map(float, v)) for k, v in ROUNDS.items()}, ("plain", "plain_cl", "plain_cl_kept"),
                          FLOPS, 1.6e11, PEAKS, 32)
    assert info["best_plain"] == "plain_cl" and info["rounds"] == 7
    assert info["trainer_images_per_s"] == 805.0 and info["trainer_images_per_s_by_round"][5] == 900.0
    # trainer / plain_cl by round: 1.026, 1.038, 0.988, 1.025, 1.006, 1.059, 0.972 -> median 1.025, undecided
    assert info["trainer_vs_best_plain"] == pytest.approx(1.025, abs=1e-3)
    assert info["trainer_vs_best_plain_target_met"] and not info["trainer_vs_best_plain_decided_by_this_run"]
    # trainer / pythae: every round's ratio is under 1.5 (1.27-1.43) -> missed, and decided
    assert not info["trainer_vs_pythae_target_met"] and info["trainer_vs_pythae_decided_by_this_run"]
    assert info["trainer_mfu"] == pytest.approx(FLOPS * 805 / 1.6e11, abs=1e-3)
    assert info["train_flops_per_image"] == FLOPS and "FlopCounterMode" in info["train_flops_method"]
    assert info["mfu_target"] == 0.55 and not info["trainer_mfu_target_met"]
    assert info["matmul_peak_gflops"] == 160.0 and info["matmul_peak_gflops_by_round"][0] == 150.0


def test_the_report_knows_the_benchmarks_and_variants_by_their_real_names():
    import test_peer_benchmarks as peers

    assert all(callable(getattr(peers, name, None)) for name in sr.TESTS.values())
    assert set(sr.LABELS) == set(peers.VARIANTS) and sr.BEFORE in peers.VARIANTS


def test_an_mfu_above_one_is_refused_not_recorded():
    with pytest.raises(ValueError, match="MFU outside"):
        sr.versus_info({k: list(map(float, v)) for k, v in ROUNDS.items()}, ("plain",), 1e9, 1e11, [1e11], 32)
    with pytest.raises(ValueError, match="MFU outside"):
        sr.batch_info({64: [900.0] * 6}, 1e9, 1e11, [1e11] * 6, 32)


def test_mfu_is_judged_round_by_round_against_the_highest_peak_and_shown_against_each_rounds_own():
    # 90e6 training FLOPs per image: 1000 images/s do 90 GFLOP/s, MFU 0.6 against the highest peak (150)
    ips = [1000.0, 1050.0, 980.0, 1100.0, 1020.0, 1010.0, 990.0]
    peaks = [1.5e11, 1.2e11, 1.4e11, 1.5e11, 1.3e11, 1.5e11, 1.45e11]
    info = sr.mfu_info("t", ips, FLOPS, 1.5e11, peaks, 0.55)
    assert info["t_mfu"] == 0.606 and info["t_mfu_interval"] == [0.588, 0.66]     # 1010, 980 and 1100 images/s
    assert info["t_mfu_target_met"] and info["t_mfu_decided_by_this_run"]       # every round above 0.55
    assert not sr.mfu_info("t", ips, FLOPS, 1.5e11, peaks, 0.60)["t_mfu_decided_by_this_run"]
    # own peaks: 0.600, 0.7875, 0.630, 0.660, 0.706, 0.606, 0.614 -> median 0.630
    assert info["t_mfu_own_peak"] == 0.63 and info["t_mfu_own_peak_interval"] == [0.6, pytest.approx(0.7875, abs=1e-3)]
    slow = sr.mfu_info("t", ips, FLOPS, 1.5e11, [1.5e11, 0.8e11] + peaks[2:], 0.55)    # 94.5 GFLOP/s > 80
    assert slow["t_mfu"] == 0.606 and slow["t_mfu_own_peak"] == (
        "not shown: round 2's peak (80 GFLOP/s) gives an MFU above 1")
    assert "t_mfu_own_peak" not in sr.mfu_info("t", ips, FLOPS, 1.5e11, [1.5e11], 0.55)   # no peak by round
    with pytest.raises(ValueError, match="MFU outside"):          # one round above the highest peak
        sr.mfu_info("t", [1000.0] * 6 + [1700.0], FLOPS, 1.5e11, [1.5e11] * 7, 0.55)


def test_records_made_before_mfu_had_an_interval_still_render(tmp_path):
    old = _versus()
    for k in [k for k in old["extra_info"] if k.startswith(("trainer_mfu_", "train_flops_"))]:
        del old["extra_info"][k]
    old["extra_info"]["trainer_mfu_target_met"] = False
    batch = {"name": f"{sr.TESTS['batch']}[32-batches0]", "params": {"image_size": 32, "batches": [128]},
             "extra_info": {"batch128_images_per_s": 800.0, "batch128_mfu": 0.45, "matmul_peak_gflops": 160.0,
                            "matmul_peak_gflops_by_round": [160.0], "rounds": 7}}
    text = sr.write([_write(tmp_path / "old.json", _record([old, batch]))], tmp_path / "speed").read_text()
    assert "| trainer MFU >= 0.55 (at each column's batch) | 0.453: missed |" in text
    assert "| 32 px | 128 | 800 | 0.45 | not recorded | not recorded | 160 |" in text
    assert "MFU counts 3 x the forward FLOPs per image (these records predate the counted training FLOPs" in text


def test_the_batch_size_benchmark_measures_the_suites_training_batch_at_both_sizes():
    import test_peer_benchmarks as peers

    marks = [m for m in peers.test_peers_trainer_batch_scaling.pytestmark if m.name == "parametrize"]
    sizes = dict(marks[0].args[1])
    assert set(sizes) == set(sr.MFU_TARGET) and all(sr.TRAIN_BATCH in b for b in sizes.values())
    assert all(max(b) > sr.TRAIN_BATCH for b in sizes.values())     # shows whether a larger batch would help


def test_anatomy_record_splits_the_step_and_its_ceiling_is_the_conv_passes_alone():
    s = [0.170, 0.175, 0.168, 0.180, 0.172, 0.171]
    info = sr.anatomy_info({"step": s, "conv": [x - 0.02 for x in s], "bn": [0.018] * 6}, ["conv", "bn"],
                           {"conv": [["enc", 0.1], ["dec", 0.05]], "bn": [["bn1", 0.018]]}, FLOPS, 128, 1.5e11,
                           [1.5e11] * 6, 96)
    assert info["step_ms"] == pytest.approx(171.5) and info["conv_ms"] == pytest.approx(151.5)
    assert info["other_ms"] == pytest.approx(2.0)
    assert info["mfu_ceiling"] > info["step_mfu"] and info["mfu_target"] == 0.60
    assert info["conv_ms_by_pass"] == {"enc": 100.0, "dec": 50.0} and info["rounds"] == 6


def _anatomy(size: int, batch: int, matmuls: bool) -> dict:
    s = [0.200, 0.205, 0.198, 0.210, 0.202, 0.201]
    by_round = {"step": s, "conv_linear": [x - 0.03 for x in s], "bn_leakyrelu": [0.024] * 6}
    by_pass = {"conv_linear": [["enc", 0.1], ["dec", 0.07]], "bn_leakyrelu": [["bn1", 0.024]]}
    if matmuls:
        by_round[sr.MATMULS], by_pass[sr.MATMULS] = [0.120] * 6, [["enc", 0.07], ["dec", 0.05]]
    info = sr.anatomy_info(by_round, ["conv_linear", "bn_leakyrelu"], by_pass, FLOPS, batch, 1.6e11, [1.6e11] * 6, size)
    return {"name": f"{sr.TESTS['anatomy']}[{size}-{batch}]", "params": {"image_size": size, "batch": batch},
            "extra_info": info | {"wall_s": 80.0, "pytest_args": ["--benchmark", "-k", "step_anatomy"]}}


def test_anatomy_sets_the_passes_beside_plain_matmuls_of_their_shapes(tmp_path):
    info = _anatomy(32, 128, matmuls=True)["extra_info"]
    # 90e6 FLOPs x 128 images: in the matmuls' 120 ms, 96 GFLOP/s = MFU 0.600 of 160; in the passes'
    # 171.5 ms, 0.420 (the ceiling); the whole step (201.5 ms) 0.357; the step with the matmuls instead
    # of the passes, 201.5 - 171.5 + 120 = 150 ms, 0.480
    assert info["mfu_matmuls"] == pytest.approx(0.600) and info["matmuls_gflops"] == pytest.approx(96.0)
    assert info["mfu_ceiling"] == pytest.approx(0.420, abs=1e-3) and info["step_mfu"] == pytest.approx(0.357, abs=1e-3)
    assert info["step_with_matmuls_ms"] == pytest.approx(150.0) and info["mfu_step_with_matmuls"] == pytest.approx(0.48)
    assert not info["mfu_target_within_step_with_matmuls"] and not info["mfu_target_within_ceiling"]
    assert info["other_ms"] == pytest.approx(6.0)              # the matmuls are no part of the step
    old = _anatomy(96, 32, matmuls=False)["extra_info"]        # a record from before them
    assert "mfu_matmuls" not in old
    text = sr.write([_write(tmp_path / "a.json", _record([_anatomy(32, 128, True), _anatomy(96, 32, False)]))],
                    tmp_path / "speed").read_text()
    assert ("| 32 px, batch 128 | 201.5 | 171.5 (67 GFLOP/s) | 24.0 | 6.0 | 0.85 (0.85-0.86) | 0.36 | "
            "0.42 (target 0.55 beyond it) | 120.0 (96 GFLOP/s, MFU 0.60) | 150.0, MFU 0.48 (target 0.55 beyond it) "
            "| 160 |") in text
    assert "| 96 px, batch 32 |" in text and "| not measured | not measured | 160 |" in text
    assert "- 32 px, batch 128: enc 100.0, dec 70.0, bn1 24.0" in text       # the matmuls are no pass of the step


def test_report_tables_come_from_the_records_alone(tmp_path):
    a = _write(tmp_path / "vs.json", _record([_versus(32, 128), _versus(96, 32)]))
    batch = {"name": f"{sr.TESTS['batch']}[32-batches0]", "params": {"image_size": 32, "batches": [64, 128]},
             "extra_info": sr.batch_info({64: [700.0] * 6, 128: [800.0] * 6}, FLOPS, 1.6e11, [1.6e11] * 6, 32)}
    b = _write(tmp_path / "batch.json", _record([batch]))
    out = tmp_path / "results" / "speed"
    readme = sr.write([a, b], out)
    text = readme.read_text()
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "batch.json", "vs.json"]
    assert f"Commit `{'a' * 12}` (no uncommitted changes); Test CPU, 2 cores" in text
    assert ("| images/s (MFU) | trainer | trainer, torch defaults (before) | plain NCHW | plain channels_last | "
            "plain cl, kept memory | pythae |") in text
    assert "| 32 px, batch 128 | 805 (0.45) | 650 (0.37) | 600 (0.34) | 790 (0.44) | 770 (0.43) | 600 (0.34) |" in text
    assert "1.025 (0.972-1.059, 98.4%): met by the median, undecided (against plain channels_last)" in text
    assert "| trainer / pythae >= 1.5 | 1.350 (1.273-1.429, 98.4%): missed | 1.350" in text
    assert "| after / before: trainer / trainer with torch defaults (no target) | 1.250 (1.167-1.286) |" in text
    # MFU by round against the highest peak (160): 90e6 * images/s / 1.6e11, 0.394 (700) to 0.506 (900);
    # against each round's own peak: 0.420 (700 / 150) to 0.559 (900 / 145), median 0.480 (800 / 150)
    assert ("| trainer MFU >= 0.55 / 0.60 (at each column's batch) | 0.453 (0.394-0.506, 98.4%): missed; "
            "against each round's own peak 0.480 (0.420-0.559), no verdict | 0.453 (") in text
    assert ("| trainer MFU at the suite's training batch (128), batch-size benchmark | 0.450 (0.450-0.450, 96.9%): "
            "missed; against each round's own peak 0.450 (0.450-0.450), no verdict | not measured |") in text
    assert "| 32 px | 128 | 800 | 0.45 | 0.45-0.45 | 0.45 (0.45-0.45) | 160 |" in text
    assert "no verdict (the largest of several noisy medians leans high): 32 px 0.45 at batch 128 (target 0.55; " \
           "batches 64-128)." in text
    assert "12 min 34 s" in text and "`--benchmark -k 'peers and 32'`" in text
    assert ("MFU counts a training step's FLOPs per image, forward and backward as counted on the model: "
            "0.0900 GFLOP at 32 px, 0.0900 GFLOP at 96 px.") in text


def test_bad_records_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "speed"
    good = _write(tmp_path / "good.json", _record([_versus()]))
    cases = {
        "dirty.json": (_record([_versus()], dirty=True), "with uncommitted changes"),
        "other.json": (_record([_versus(96, 32)], commit="b" * 40), "a results folder comes from one clean commit"),
        "none.json": (_record([{"name": "test_something_else", "params": {}, "extra_info": {}}]), "no peers benchmark"),
        "unversioned.json": (_record([_versus()], commit="unversioned"), "no commit recorded"),
        "twice.json": (_record([_versus()]), "is also in good.json"),
    }
    for name, (doc, message) in cases.items():
        with pytest.raises(BenchError, match=message):
            sr.write([good, _write(tmp_path / name, doc)], out)
        assert not out.exists()
    (tmp_path / "broken.json").write_text('{"benchmarks": [\n  {"name": }\n]}')
    assert main(["speed", str(good), str(tmp_path / "broken.json"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{tmp_path / 'broken.json'}:2: not JSON")
    assert main(["speed", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
    assert "missing.json: cannot read" in capsys.readouterr().err and not out.exists()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(BenchError, match="a-file: not a folder"):
        sr.write([good], tmp_path / "a-file")


def test_a_record_already_in_the_folder_is_never_dropped(tmp_path):
    out = tmp_path / "speed"
    old = sr.write([_write(tmp_path / "old.json", _record([_versus()]))], out)
    before = old.read_text()
    with pytest.raises(BenchError, match="old.json: a record not among the files given"):
        sr.write([_write(tmp_path / "new.json", _record([_versus(96, 32)]))], out)
    assert old.read_text() == before and sorted(p.name for p in out.iterdir()) == ["README.md", "old.json"]
    sr.write([out / "old.json"], out)                # re-rendering from the folder's own records is fine
    assert old.read_text() == before


@pytest.mark.slow
def test_reads_what_pytest_benchmark_really_writes(tmp_path):
    """A real pytest-benchmark run (in a fresh git repository, so it records a clean commit) of a
    benchmark that fills extra_info as the peers benchmarks do; then the command line renders it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "test_tiny.py").write_text(textwrap.dedent(f"""
        import pytest
        from bench.speed import report as sr
        ROUNDS = {ROUNDS!r}

        @pytest.mark.parametrize("image_size,batch", [(32, 128)])
        def test_peers_trainer_vs_plain_loop_vs_pythae(benchmark, image_size, batch):
            benchmark.pedantic(lambda: None, rounds=1, iterations=1)
            got = {{k: [float(x) for x in v] for k, v in ROUNDS.items()}}
            benchmark.extra_info.update(sr.versus_info(got, ("plain", "plain_cl"), {FLOPS}, 1.6e11, [1.6e11], 32))
        """))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PYTHONPATH": str(ROOT)}
    for cmd in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "tiny"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env)
    record = tmp_path / "tiny.json"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_tiny.py",
                    f"--benchmark-json={record}"], cwd=repo, check=True, env=env, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "bench", "speed", str(record), "--out", str(tmp_path / "speed")],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "speed" / "README.md").read_text()
    assert "| 32 px, batch 128 | 805 (0.45) |" in text and "against plain channels_last" in text
