"""The report stage: everything written under results/ after runs finish, in one place.

    write(spec, runs, runs_root, results_root) -> results/<ablation>/table.md
        results/<ablation>/  tables, figures, sheets, README.md, summary.json   (report.tables, report.figures)
        results/<ablation>/rd.md  rate–distortion curves at matched rate (bench.report.rd; loss-weight sweeps)
        results/README.md    the index of every results folder                  (bench.report.tables.write_index)
        results/CLAIMS.md    verdicts on the paper's claims                     (bench.report.claims)

``as_written=False`` marks results produced under overrides that change the experiment: they are
written to their own folder, labelled as trials, and CLAIMS.md ignores them.
"""
from __future__ import annotations

import sys
from pathlib import Path

from bench.config.schema import AblationSpec, RunSpec
from bench.report import claims, rd, tables
from bench.report import figures as plots


def write(spec: AblationSpec, runs: list[RunSpec], runs_root: Path, results_root: Path, *,
          results_name: str | None = None, as_written: bool = True) -> Path:
    runs_root, results_root = Path(runs_root), Path(results_root)
    out_dir = results_root / (results_name or spec.name)
    v = tables.view(spec, runs, runs_root, as_written)
    try:
        figures = plots.write_figures(spec, v.records, v.groups, v.keys, runs_root, out_dir / "figures")
        figures += rd.write(spec, v.records, out_dir)
    except Exception as exc:  # a plotting bug must not lose the tables of a finished sweep
        print(f"warning: figures for {spec.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        figures = []
    block = rd.matched_block(spec, v.records)
    path = tables.write_tables(v, runs_root, out_dir, figures, extra={"rd": block} if block else None)
    tables.write_index(results_root)
    claims.write_claims(results_root)
    return path
