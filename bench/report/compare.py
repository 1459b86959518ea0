"""``python -m bench compare A B``: two results folders arm by arm and metric by metric; or one folder at two
commits, ``compare results/loss_cpu --at HEAD~3`` (A: the folder as committed at HEAD~3, read with ``git show``;
B: the folder as it is now).

Each side is read from its ``table.csv`` (one row per run x metric, ``bench.report.tables``): per dataset, arm
and metric, the values of that side's finished runs.  The difference is B - A of the means over seeds, with the
95% Welch t-interval and two-sided p (``bench.stats.welch``, the test the tables use): the seeds of the two sides
are independent runs, so they are not paired.  Fewer than two values on a side give no interval (—).  Where
the interval excludes 0, the row says better or worse by the catalogue's direction (changed where the metric
has none).  Arms (dataset x arm) and metrics found on one side only are listed, never dropped; so are metrics
without any value on a side (unavailable there).
"""
from __future__ import annotations

import csv
import io
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench import stats
from bench.errors import BenchError
from bench.metrics import CATALOGUE
from bench.report.tables import CSV_FIELDS, info

TABLE = "table.csv"
NEEDED = ("ablation", "arm", "dataset", "seed", "status", "metric", "value")
METHOD = ("B − A: difference of the means over seeds, 95% Welch t-interval and two-sided Welch p "
          "(bench.stats.welch; seeds are independent runs, not paired)")


@dataclass
class Side:
    """One results folder as its table.csv has it."""
    label: str
    ablations: list[str]
    values: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)   # (dataset, arm, metric)
    groups: list[tuple[str, str]] = field(default_factory=list)                     # (dataset, arm), file order
    metrics: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Row:
    dataset: str
    arm: str
    metric: str
    a: stats.Summary
    b: stats.Summary
    diff: stats.Comparison
    verdict: str                # better | worse | changed | "" (no interval, or it holds 0)


@dataclass
class Comparison:
    a: Side
    b: Side
    rows: list[Row]
    one_side: list[str]         # what only one side has, or has no value of, one line each


# --------------------------------------------------------------------------- reading a side

def parse(text: str, label: str) -> Side:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in NEEDED if c not in (reader.fieldnames or [])]
    if missing:
        raise BenchError(f"{label}: {TABLE} lacks the columns {', '.join(missing)} (not one bench writes: "
                         f"{', '.join(CSV_FIELDS)})")
    side = Side(label, [])
    for row in reader:
        group, key = (row["dataset"], row["arm"]), (row["dataset"], row["arm"], row["metric"])
        if row["ablation"] not in side.ablations:
            side.ablations.append(row["ablation"])
        if group not in side.groups:
            side.groups.append(group)
        if row["metric"] not in side.metrics:
            side.metrics.append(row["metric"])
        side.values.setdefault(key, [])
        if row["status"] == "done" and row["value"] not in ("", None):
            try:
                side.values[key].append(float(row["value"]))
            except ValueError:
                raise BenchError(f"{label}: {TABLE}: {row['metric']} of {row['arm']} has the value "
                                 f"{row['value']!r}, not a number") from None
    return side


def read_folder(folder: Path) -> Side:
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchError(f"{folder}: no such folder")
    if not (folder / TABLE).is_file():
        raise BenchError(f"{folder}: not a results folder (no {TABLE}; `bench run` or `bench table` writes one)")
    return parse((folder / TABLE).read_text(), str(folder))


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise BenchError(f"--at needs git: {exc}") from None


def read_at(folder: Path, rev: str) -> Side:
    """The folder as committed at ``rev`` (``git show REV:<folder>/table.csv`` in the repository holding it)."""
    folder = Path(folder).absolute()
    near = next((p for p in (folder, *folder.parents) if p.is_dir()), Path.cwd())
    top = _git(near, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise BenchError(f"--at {rev}: {folder} is not inside a git repository")
    root = Path(top.stdout.strip())
    commit = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if commit.returncode != 0:
        raise BenchError(f"--at {rev}: unknown commit in {root}")
    rel = folder.resolve().relative_to(root.resolve()).as_posix()
    shown = _git(root, "show", f"{commit.stdout.strip()}:{rel}/{TABLE}")
    if shown.returncode != 0:
        raise BenchError(f"{rel} at {rev}: not a results folder there (no {rel}/{TABLE} in that commit)")
    return parse(shown.stdout, f"{rel} at {rev} ({commit.stdout.strip()[:12]})")


# --------------------------------------------------------------------------- comparing

def _verdict(metric: str, c: stats.Comparison) -> str:
    if math.isnan(c.lo) or (c.lo <= 0 <= c.hi):
        return ""
    better = info(metric).higher_is_better
    if better is None:
        return "changed"
    return "better" if (c.diff > 0) == better else "worse"


def _ordered_metrics(a: Side, b: Side) -> list[str]:
    both = set(a.metrics) & set(b.metrics)
    return [k for k in CATALOGUE if k in both] + sorted(both - set(CATALOGUE))


def compare(a: Side, b: Side, metrics: list[str] | None = None) -> Comparison:
    """Every (dataset, arm, metric) of both sides as a Row; the rest listed in ``one_side``."""
    shown = _ordered_metrics(a, b)
    if metrics:
        unknown = [m for m in metrics if m not in set(a.metrics) | set(b.metrics)]
        if unknown:
            raise BenchError(f"--metrics: {', '.join(unknown)} on neither side (metrics: {', '.join(shown)})")
        shown = [m for m in shown if m in metrics]
    one_side = []
    for side, other, name in ((a, b, "A"), (b, a, "B")):
        only = [f"{d}/{arm}" for d, arm in side.groups if (d, arm) not in other.groups]
        if only:
            one_side.append(f"arms only in {name} ({side.label}): {', '.join(only)}")
        only = [m for m in side.metrics if m not in other.metrics and (not metrics or m in metrics)]
        if only:
            one_side.append(f"metrics only in {name} ({side.label}): {', '.join(only)}")
    rows, empty = [], {"A": [], "B": []}
    for d, arm in [g for g in b.groups if g in a.groups]:
        for m in shown:
            va, vb = a.values.get((d, arm, m), []), b.values.get((d, arm, m), [])
            for name, v in (("A", va), ("B", vb)):
                if not v:
                    empty[name].append(f"{d}/{arm} {m}")
            c = stats.welch(vb, va)
            rows.append(Row(d, arm, m, stats.summarise(va), stats.summarise(vb), c, _verdict(m, c)))
    for name, side in (("A", a), ("B", b)):
        if empty[name]:
            one_side.append(f"no value in {name} ({side.label}; unavailable or not finished): "
                            f"{', '.join(empty[name])}")
    return Comparison(a, b, rows, one_side)


# --------------------------------------------------------------------------- rendering

def _num(x: float, fmt: str, sign: bool = False) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:{'+' if sign else ''}{fmt}}"


def _cells(r: Row) -> list[str]:
    fmt = info(r.metric).fmt
    ci = "—" if math.isnan(r.diff.lo) else f"[{_num(r.diff.lo, fmt, True)}, {_num(r.diff.hi, fmt, True)}]"
    p = "—" if math.isnan(r.diff.p) else ("<0.001" if r.diff.p < 0.001 else f"{r.diff.p:.3f}")
    return [r.dataset, r.arm, r.metric, f"{_num(r.a.mean, fmt)} ({r.a.n})", f"{_num(r.b.mean, fmt)} ({r.b.n})",
            _num(r.diff.diff, fmt, True), ci, p, r.verdict]


HEAD = ["dataset", "arm", "metric", "A mean (n)", "B mean (n)", "B − A", "95% CI", "p", ""]


def _header(c: Comparison) -> list[str]:
    return [f"A: {c.a.label} ({', '.join(c.a.ablations) or 'no runs'})",
            f"B: {c.b.label} ({', '.join(c.b.ablations) or 'no runs'})", METHOD]


def render_text(c: Comparison) -> str:
    body = [HEAD] + [_cells(r) for r in c.rows]
    widths = [max(len(row[i]) for row in body) for i in range(len(HEAD))]
    lines = _header(c) + [""]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in body]
    return "\n".join(lines + ([""] + c.one_side if c.one_side else []))


def render_markdown(c: Comparison) -> str:
    out = ["# Comparison", ""] + [f"- {line}" for line in _header(c)] + ["", "| " + " | ".join(HEAD) + " |",
                                                                         "|" + "---|" * len(HEAD)]
    out += ["| " + " | ".join(_cells(r)) + " |" for r in c.rows]
    if c.one_side:
        out += ["", "## On one side only", ""] + [f"- {line}" for line in c.one_side]
    return "\n".join(out) + "\n"
