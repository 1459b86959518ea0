"""Tables, statistics and the claims report on hand-written run directories (no training)."""
from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest
import torch
from scipy import stats as sps

from bench import stats, store
from bench.config import schema as config
from bench.metrics.scoring import save_grid
from bench.report import claims, tables
from bench.report import results as report

FAKE = """\
name: fake
question: does SSIM beat MSE?
claims: [C1, C3]
datasets: [shapes]
seeds: [0, 1, 2]
baseline: mse
defaults:
  model: {name: conv, widths: [8, 16], latent_dim: 8}
  loss: [{name: kl}, {name: mse}]
  train: {steps: 8, batch_size: 16, log_every: 4}
arms:
  mse: {}
  ssim: {loss: [{name: kl}, {name: ssim}]}
  ssim_colour: {loss: [{name: kl}, {name: ssim}, {name: colour}]}
"""

# arm -> per-seed values; None = diverged run
SSIM = {"mse": [0.60, 0.62, 0.61], "ssim": [0.80, 0.82, 0.79], "ssim_colour": [0.61, 0.63, None]}
COLOUR = {"mse": [0.10, 0.11, 0.12], "ssim": [0.20, 0.21, 0.19], "ssim_colour": [0.05, 0.06, None]}
CHROMA = {"mse": [0.30, 0.31, 0.32], "ssim": [0.20, 0.21, 0.19], "ssim_colour": [0.05, 0.06, None]}


def _write_runs(tmp_path, ssim=SSIM, colour=COLOUR, chroma=CHROMA):
    p = tmp_path / "fake.yaml"
    p.write_text(FAKE)
    spec = config.load(p)
    runs = config.expand(spec)
    root = tmp_path / "runs"
    for run in runs:
        d = root / run.rel_dir
        v = ssim[run.arm][run.seed]
        env = {"device": "cpu", "device_name": "cpu (test)", "git_commit": "abc123"}
        if v is None:
            doc = {"status": "diverged", "run": run.resolved(), "env": env, "metrics": {},
                   "train": {"status": "diverged", "steps": 5, "reason": "non-finite loss at step 5"}}
        else:
            doc = {"status": "done", "run": run.resolved(), "env": env, "train": {"status": "done", "steps": 8},
                   "metrics": {
                       "recon_ssim": {"value": v, "n": 40, "split": "test"},
                       "recon_colour_dist": {"value": colour[run.arm][run.seed], "n": 40, "split": "test"},
                       "recon_chroma_error": {"value": chroma[run.arm][run.seed], "n": 40, "split": "test"},
                       "kid_samples": {"value": 1.0 - v, "n": 40, "split": "test"},
                       "params": {"value": 1234.0, "n": 1, "split": "-"},
                       "train_images_per_s": {"value": 100.0 + 10 * run.seed + len(run.arm), "n": 1, "split": "train"},
                       "fid_samples": {"value": None, "unavailable": "Inception weights not found"}}}
            log = [{"step": s, "loss": 1.0 / s + run.seed * 0.01, "kl": 0.1 * s, "images_per_s": 1.0,
                    "elapsed_s": 0.1} for s in (4, 8)]
            g = torch.Generator().manual_seed(run.seed)
            save_grid(d / "recon.png", torch.rand(8, 3, 32, 32, generator=g), 4)
            save_grid(d / "samples.png", torch.rand(4, 3, 32, 32, generator=g), 4)
            store.write_text(d / "log.jsonl", "".join(json.dumps(e) + "\n" for e in log))
        store.write_json(d / "metrics.json", doc)
    return spec, runs, root


@pytest.fixture
def fake(tmp_path):
    spec, runs, root = _write_runs(tmp_path)
    path = report.write(spec, runs, root, tmp_path / "results")
    return spec, runs, root, tmp_path / "results", path.read_text()


# --------------------------------------------------------------------------- statistics

def test_t_interval_matches_hand_computation():
    # mean 2, sd 1, n 3: half = t_{0.975,2} * 1/sqrt(3) = 4.302653 * 0.577350 = 2.484138
    lo, hi = stats.t_interval([1.0, 2.0, 3.0])
    assert lo == pytest.approx(2 - 2.484138, abs=1e-5) and hi == pytest.approx(2 + 2.484138, abs=1e-5)
    s = stats.summarise([5.0])
    assert s.n == 1 and s.mean == 5.0 and math.isnan(s.lo)


def test_welch_matches_scipy_and_marks_significance_only_below_alpha():
    a, b = [0.80, 0.82, 0.79], [0.60, 0.62, 0.61]
    c = stats.welch(a, b)
    assert c.p == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    assert c.diff == pytest.approx(np.mean(a) - np.mean(b)) and c.lo < c.diff < c.hi and c.significant
    noisy = stats.welch([0.6, 0.7, 0.5], [0.61, 0.55, 0.66])
    assert noisy.p > 0.05 and not noisy.significant
    assert not stats.welch([1.0, 1.0], [2.0, 2.0]).significant    # zero variance: untestable, not "significant"



def test_median_interval_is_the_sign_tests_order_statistics():
    # 7 values: (min, max), coverage 1 - 2 / 2**7; the next pair in covers only 1 - 16 / 128 = 87.5%.
    lo, hi, cov = stats.median_interval([5.0, 1.0, 7.0, 3.0, 2.0, 6.0, 4.0])
    assert (lo, hi) == (1.0, 7.0) and cov == pytest.approx(1 - 2 / 128)
    # 15 values: k = 4 (P(Bin(15, 1/2) <= 3) = 576/32768), so (x_(4), x_(12)) at 96.5%.
    lo, hi, cov = stats.median_interval(range(1, 16))
    assert (lo, hi) == (4.0, 12.0) and cov == pytest.approx(1 - 2 * 576 / 32768)
    assert stats.median_interval(range(1, 16), confidence=0.99)[:2] == (3.0, 13.0)
    # Fewer than 6: even (min, max) covers less than 95% (5 values: 93.75%), so no interval.
    assert all(math.isnan(v) for v in stats.median_interval([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert all(math.isnan(v) for v in stats.median_interval([]))
    assert stats.median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])[:2] == (1.0, 6.0)


# --------------------------------------------------------------------------- tables

def _row(text, arm):
    """The arm's row in the first metric table (the Arms table above it describes the arms)."""
    lines = text.splitlines()
    start = lines.index("### Reconstruction quality")
    return next(line for line in lines[start:] if line.startswith(f"| {arm} | shapes |"))


def test_significance_mark_and_bold_only_outside_the_noise(fake):
    *_, text = fake
    ssim_row, col_row = _row(text, "ssim"), _row(text, "ssim_colour")
    # ssim: SSIM clearly higher (p < 0.05) -> marked and bold; ssim_colour vs mse: inside the noise
    assert tables.SIG in ssim_row.split("|")[4] and "**0.803**" in ssim_row
    assert tables.SIG not in col_row.split("|")[4] and "**" not in col_row.split("|")[4]
    assert "**" not in _row(text, "mse").split("|")[4]
    p = stats.welch([0.61, 0.63], [0.60, 0.62, 0.61]).p
    assert p > 0.05 and f"p={p:.3f}" in col_row
    assert "params" in text and "**1,234**" not in text     # descriptive columns are never bold


def test_diverged_runs_are_counted_and_excluded_from_means(fake):
    *_, text = fake
    row = _row(text, "ssim_colour")
    assert "2/3 done, 1/3 diverged" in row
    assert f"{np.mean([0.61, 0.63]):.3f} ± " in row      # mean over the two done seeds only
    assert "non-finite loss at step 5" in text


def test_csv_is_tidy_and_reproduces_markdown_cells(fake):
    spec, runs, _, results, text = fake
    rows = list(csv.DictReader((results / "fake/table.csv").open()))
    metrics = {r["metric"] for r in rows}
    assert metrics == {"recon_ssim", "recon_colour_dist", "recon_chroma_error", "kid_samples", "params",
                       "train_images_per_s", "fid_samples"}
    assert len(rows) == len(runs) * len(metrics)
    assert {(r["arm"], r["seed"], r["metric"]) for r in rows}.__len__() == len(rows)
    for arm in SSIM:
        vals = [float(r["value"]) for r in rows if r["arm"] == arm and r["metric"] == "recon_ssim" and r["value"]]
        m = np.mean(vals)
        half = sps.t.ppf(0.975, len(vals) - 1) * np.std(vals, ddof=1) / math.sqrt(len(vals))
        assert f"{m:.3f} ± {half:.3f}" in _row(text, arm).replace("**", "")
    div = [r for r in rows if r["status"] == "diverged"]
    assert len(div) == len(metrics) and all(r["value"] == "" for r in div)
    fid = [r for r in rows if r["metric"] == "fid_samples" and r["status"] == "done"]
    assert fid and all(r["unavailable"] == "Inception weights not found" for r in fid)


def test_header_footer_latex_and_figures(fake):
    _, _, _, results, text = fake
    assert "does SSIM beat MSE?" in text and "C1, C3" in text and "python -m bench run" in text
    assert "abc123" in text and "cpu (test)" in text and "**Seeds.** 0, 1, 2" in text
    assert "`fid_samples`: Inception weights not found" in text and "sample FID" not in text.split("\n\n## ")[0]
    tex = (results / "fake/table.tex").read_text()
    assert all(r in tex for r in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}"))
    assert r"ssim\_colour" in tex and r"^{\dagger}" in tex
    for f in ("metrics.png", "curves.png", "pareto.png", "sheets-shapes.png"):
        assert (results / "fake/figures" / f).stat().st_size > 1000
    readme = (results / "fake/README.md").read_text()
    assert "![" in readme and "figures/metrics.png" in readme


def test_regeneration_is_byte_identical(fake):
    spec, runs, root, results, _ = fake
    names = ["fake/table.md", "fake/table.csv", "fake/table.tex", "fake/README.md", "fake/summary.json",
             "README.md", "CLAIMS.md", "fake/figures/metrics.png"]
    before = {n: (results / n).read_bytes() for n in names}
    report.write(spec, runs, root, results)
    assert {n: (results / n).read_bytes() for n in names} == before


# --------------------------------------------------------------------------- claims and index

def test_claims_report_verdicts_and_not_run(fake):
    *_, results, _ = fake
    text = (results / "CLAIMS.md").read_text()
    assert "**Verdict rule.**" in text.split("| claim |")[0] and "Welch" in text.split("| claim |")[0]
    line = {c: next(l for l in text.splitlines() if l.startswith(f"| [{c}]")) for c in claims.CLAIMS}
    assert "**supported**" in line["C1"]            # ssim << mse on KID; recon SSIM shown, not counted
    assert "**supported**" in line["C3"]            # ssim_colour chroma error << ssim
    for c in ("C2", "C4", "C5", "C6", "C7", "C9", "C10", "C11"):
        assert "**not run**" in line[c], c
    assert "not measured" in text                   # st_lpips etc. listed, not counted
    assert "shown, not counted" in text             # recon SSIM: the SSIM arm is trained on it
    index = (results / "README.md").read_text()
    assert "[fake](fake/README.md)" in index and "8/9 done, 1 diverged" in index
    assert "speed/README.md" not in index                 # no speed folder: no link to one
    (results / "speed").mkdir()
    (results / "speed" / "README.md").write_text("# Training speed\n")
    assert "[speed/README.md](speed/README.md)" in tables.write_index(results).read_text()


def test_claim_contradicted_when_opposite_is_significant(tmp_path):
    flipped = {"mse": [0.80, 0.82, 0.79], "ssim": [0.60, 0.62, 0.61], "ssim_colour": [0.6, 0.6, 0.61]}
    chroma = {"mse": [0.1, 0.11, 0.12], "ssim": [0.3, 0.31, 0.32], "ssim_colour": [0.3, 0.3, 0.3]}
    spec, runs, root = _write_runs(tmp_path, ssim=flipped, chroma=chroma)
    report.write(spec, runs, root, tmp_path / "results")
    text = (tmp_path / "results/CLAIMS.md").read_text()
    assert "**contradicted**" in next(l for l in text.splitlines() if l.startswith("| [C1]"))
    outs = claims.evaluate(claims.CLAIMS["C1"], store.read_json(tmp_path / "results/fake/summary.json"))
    assert [o.score for o in outs if o.check.metric == "kid_samples"] == [-1]
    assert [o.score for o in outs if o.check.metric == "recon_ssim"] == [None]     # shown, not counted


def test_degenerate_runs_are_flagged_and_never_compared(tmp_path):
    spec, runs, root = _write_runs(tmp_path)
    flat = next(r for r in runs if r.arm == "ssim" and r.seed == 0)
    doc = store.read_json(root / flat.rel_dir / "metrics.json")
    doc["metrics"]["degenerate"] = {"value": 1, "n": 40, "split": "test",
                                    "reasons": ["samples: 100% of images are flat"]}
    store.write_json(root / flat.rel_dir / "metrics.json", doc)
    text = report.write(spec, runs, root, tmp_path / "results").read_text()
    row = _row(text, "ssim")
    assert "1/3 degenerate ⚠" in row and "0.805" in row       # mean of the two real models (0.82, 0.79)
    assert "100% of images are flat" in text
    summary = store.read_json(tmp_path / "results/fake/summary.json")
    group = next(g for g in summary["groups"] if g["arm"] == "ssim")
    assert group["counts"]["degenerate"] == 1 and len(group["metrics"]["recon_ssim"]["values"]) == 2
    assert "1 degenerate" in (tmp_path / "results/CLAIMS.md").read_text()


def test_timings_measured_on_a_busy_machine_are_listed_not_compared(tmp_path):
    spec, runs, root = _write_runs(tmp_path)
    busy = [r for r in runs if r.arm == "mse"]
    for run in busy:
        path = root / run.rel_dir / "metrics.json"
        doc = store.read_json(path)
        for key in ("train_images_per_s", "params"):
            doc["metrics"][key].update(machine_busy=True, load_1min=3.4)
        store.write_json(path, doc)
    records = tables.collect(runs, root)
    rec = next(r for r in records if r.run.arm == "mse")
    assert tables.value_of(rec, "train_images_per_s") is None       # a timing: void when the CPU was shared
    assert tables.value_of(rec, "params") == 1234.0                  # not a timing: kept
    keys, reasons = tables.metric_keys(records)
    assert "train_images_per_s" in keys                              # other arms still measured it
    assert any("shared the machine" in r for r in reasons["train_images_per_s"])
    text = report.write(spec, runs, root, tmp_path / "results").read_text()
    assert "shared the machine" in text


def test_no_bold_when_the_best_arm_has_a_single_value(tmp_path):
    """An arm with one usable value (e.g. the others' timings were void) beats the rest on the mean,
    so the runner-up among arms with two or more values must not be shown as best."""
    spec, runs, root = _write_runs(tmp_path)
    for run in runs:
        path = root / run.rel_dir / "metrics.json"
        doc = store.read_json(path)
        if doc["status"] != "done":
            continue
        rec = doc["metrics"]["train_images_per_s"]
        if run.arm == "mse":
            rec["value"] = 900.0 + run.seed
            rec.update(machine_busy=run.seed != 0, load_1min=3.0)    # one usable value, the best
        else:
            rec["value"] = (300.0 if run.arm == "ssim" else 100.0) + run.seed
        store.write_json(path, doc)
    v = tables.view(spec, runs, root)
    assert not any(c.bold for (arm, ds, key), c in v.cells.items() if key == "train_images_per_s")


def test_sweep_wall_clock_spans_first_start_to_last_finish(tmp_path):
    spec, runs, root = _write_runs(tmp_path)
    t0 = 1_790_000_000.0                        # a fixed epoch second
    for i, run in enumerate(runs):              # run i finishes at t0 + 600 i after 100 s train + 20 s scoring
        p = root / run.rel_dir / "metrics.json"
        doc = json.loads(p.read_text())
        doc.setdefault("train", {})["wall_s"] = 100.0
        doc["metrics"]["scoring_s"] = {"value": 20.0, "n": 1, "split": "-"}
        p.write_text(json.dumps(doc))
        os.utime(p, (t0 + 600 * i, t0 + 600 * i))
    span = tables.sweep_span(tables.collect(runs, root), root)
    assert span["wall_h"] == round((600 * (len(runs) - 1) + 120) / 3600, 2)     # diverged runs count too
    text = report.write(spec, runs, root, tmp_path / "results").read_text()
    assert f"{span['wall_h']:.1f} h, including any time the sweep was stopped" in text
