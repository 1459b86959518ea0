"""The verdict block of the project README, generated from results/CLAIMS.md so the two cannot drift.

    block(claims_md) -> Markdown table: claim | the paper says | verdict | decided by
    sync(readme, claims_md_path)  rewrites the text between the README's two markers

``bench.report.claims.write_claims`` calls :func:`sync` on the README beside the results folder (when it has the
markers), so every `bench run` / `bench table` keeps it current; tests/test_readme.py checks the committed pair.
"""
from __future__ import annotations

import re
from pathlib import Path

from bench import store

START, END = "<!-- verdicts: generated from results/CLAIMS.md -->", "<!-- /verdicts -->"
# an overview row of CLAIMS.md: | [C1](#c1) | text | **verdict** | decided by |
ROW = re.compile(r"^\| \[(C\d+)\]\(#c\d+\) \| (.+?) \| \*\*(.+?)\*\* \| (.+?) \|$", re.M)


def rows(claims_md: str) -> list[tuple[str, str, str, str]]:
    """(claim id, the paper's claim, verdict, deciding files) of each overview row, in order."""
    return ROW.findall(claims_md)


def _relink(cell: str, prefix: str) -> str:
    """CLAIMS.md's links are relative to results/; the README's to the repository root."""
    return re.sub(r"\]\((?!https?:|#)", f"]({prefix}", cell)


def block(claims_md: str, prefix: str = "results/") -> str:
    lines = ["| claim | the paper says | verdict | decided by |", "|---|---|---|---|"]
    for cid, text, verdict, by in rows(claims_md):
        lines.append(f"| [{cid}]({prefix}CLAIMS.md#{cid.lower()}) | {text} | **{verdict}** | {_relink(by, prefix)} |")
    return "\n".join(lines) + "\n"


def replace_block(readme_text: str, claims_md: str) -> str | None:
    """The README with its verdict block regenerated; None when it has no markers."""
    i, j = readme_text.find(START), readme_text.find(END)
    if i < 0 or j < i:
        return None
    return readme_text[:i + len(START)] + "\n" + block(claims_md) + readme_text[j:]


def sync(readme: Path, claims_path: Path) -> bool:
    """Rewrite ``readme``'s verdict block from ``claims_path``; False when there is nothing to do."""
    if not readme.exists() or not claims_path.exists():
        return False
    text = readme.read_text()
    new = replace_block(text, claims_path.read_text())
    if new is None or new == text:
        return False
    store.write_text(readme, new)
    return True
