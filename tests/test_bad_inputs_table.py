"""docs/bad_inputs.md: every row names at least one test, and every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "bad_inputs.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def table_rows() -> list[str]:
    lines = TABLE.read_text().splitlines()
    return [line for line in lines
            if line.startswith("| ") and not line.startswith("| bad input")]


def functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_every_row_names_a_test():
    rows = table_rows()
    assert len(rows) >= 40
    without = [row[:60] for row in rows if not REFERENCE.search(row)]
    assert not without, f"rows without a test: {without}"


def test_every_test_named_in_the_table_exists():
    missing = []
    for row in table_rows():
        for file, name in REFERENCE.findall(row):
            path = ROOT / file
            if not path.is_file() or name not in functions_in(path):
                missing.append(f"{file}::{name}")
    assert not missing, f"docs/bad_inputs.md names tests that do not exist: {missing}"


def test_the_readme_points_to_the_table():
    assert "docs/bad_inputs.md" in (ROOT / "README.md").read_text()
