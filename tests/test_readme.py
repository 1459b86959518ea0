"""The README leads with the answers and cannot drift from them: its verdict block is CLAIMS.md's; every local
link and every document the repository names exists in it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bench.report import readme

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_LINES = 250


def test_the_verdict_block_is_claims_md_s():
    text = README.read_text()
    assert readme.START in text and readme.END in text
    assert readme.replace_block(text, (ROOT / "results" / "CLAIMS.md").read_text()) == text
    assert len(readme.rows((ROOT / "results" / "CLAIMS.md").read_text())) == 11


def test_the_block_follows_a_changed_verdict(tmp_path):
    claims = "| [C1](#c1) | SSIM beats MSE | **supported** | [loss_cpu](loss_cpu/README.md) |\n"
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "CLAIMS.md").write_text(claims)
    (tmp_path / "README.md").write_text(f"intro\n{readme.START}\nold\n{readme.END}\nrest\n")
    assert readme.sync(tmp_path / "README.md", tmp_path / "results" / "CLAIMS.md")
    text = (tmp_path / "README.md").read_text()
    assert "| [C1](results/CLAIMS.md#c1) | SSIM beats MSE | **supported** | [loss_cpu](results/loss_cpu/README.md) |" \
        in text and "old" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert not readme.sync(tmp_path / "README.md", tmp_path / "results" / "CLAIMS.md")   # nothing left to do


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= MAX_LINES


def _tracked(*patterns: str) -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out.stdout.split()]


def test_every_local_link_of_the_readmes_resolves():
    broken = []
    for md in [README, *_tracked("results/*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", md.read_text()):
            if not re.match(r"[a-z]+:", target) and not (md.parent / target).exists():
                broken.append(f"{md.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_no_file_cites_a_document_outside_the_repository():
    names = {p.name for p in _tracked()}
    cited = []
    for f in _tracked("*.py", "*.md", "*.yaml", "*.toml", "*.ini", ".ci/run"):
        for doc in set(re.findall(r"\b([A-Z][A-Z_]+\.md)\b", f.read_text())):
            if doc not in names:
                cited.append(f"{f.relative_to(ROOT)} cites {doc}")
        outside = "../" + "shared"          # spelt in two pieces so this file does not match itself
        if outside in f.read_text() and not f.is_relative_to(ROOT / "results"):
            cited.append(f"{f.relative_to(ROOT)} names a folder outside the repository")
    assert not cited, cited
