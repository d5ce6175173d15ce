"""Notebook 01 reproduces its printed results: nbval in lax mode on the cells marked for checks.

Committed notebooks carry no outputs, so the reference outputs are made here: notebook 01 runs
headless (quick) once with papermill, then ``pytest --nbval-lax`` re-executes that executed copy
and compares the outputs of the cells whose first line is ``# NBVAL_CHECK_OUTPUT`` (image count,
split counts, class frequencies, normalization statistics) with the first run's. Both runs get
the relative ``run_dir = "run"``, which each kernel resolves in its own working folder: the second
run starts from an empty folder (nothing of the first run is reused or overwritten) and prints the
same relative paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

from microseg.data.split import load_manifest
from microseg.notebook.chain import notebooks_dir, run_notebook

MARKER = "# NBVAL_CHECK_OUTPUT"
PREPARE = notebooks_dir() / "01_prepare_data.ipynb"


def marked_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The code cells whose first line is the nbval marker."""
    return [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(MARKER + "\n")]


def nbval_lax(notebook: Path) -> tuple[dict[str, str], str]:
    """Run ``pytest --nbval-lax`` on ``notebook`` in a subprocess, in the notebook's folder.

    Returns the outcome of each cell (``"Cell 0"``: ``"passed"``/``"failed"``/...) from the
    JUnit report, and the report printed by pytest.
    """
    report = notebook.with_name(notebook.stem + ".junit.xml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q",
         "-p", "no:cacheprovider", f"--rootdir={notebook.parent}", f"--junitxml={report}",
         notebook.name],
        cwd=notebook.parent, env=env, capture_output=True, text=True, timeout=600,
    )
    printed = result.stdout + result.stderr
    assert report.is_file(), f"nbval did not run on {notebook}:\n{printed[-4000:]}"
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        problems = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name")] = problems[0] if problems else "passed"
    return outcomes, printed


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """Notebook 01 run twice (papermill, then nbval on the executed copy) in two fresh folders."""
    first = tmp_path_factory.mktemp("first")
    second = tmp_path_factory.mktemp("second")
    executed = second / PREPARE.name
    run_notebook(PREPARE, executed, {"run_dir": "run", "quick": True}, cwd=first)
    outcomes, printed = nbval_lax(executed)
    return first / "run", second / "run", nbformat.read(executed, as_version=4), outcomes, printed


def test_prepare_notebook_marks_a_few_cells_for_output_checks():
    cells = marked_cells(nbformat.read(PREPARE, as_version=4))
    assert 2 <= len(cells) <= 4
    assert all("parameters" not in c.metadata.get("tags", []) for c in cells)


def test_marked_cells_print_the_results_of_the_run(reproduced):
    first, _, executed, _, _ = reproduced
    summary = json.loads((first / "data" / "summary.json").read_text())
    printed = ["".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                       for o in c.outputs) for c in marked_cells(executed)]
    assert all(printed), "every marked cell prints something nbval can compare"
    shown = "\n".join(printed)
    assert (f"{summary['n_images']} images: {summary['n_train']} training, {summary['n_val']} "
            f"validation, {summary['n_test']} test; {summary['n_classes']} classes") in shown
    assert f"{summary['n_images']} images in run/data/synthetic/images" in shown
    assert str(first.parent.parent) not in shown, "marked outputs must not hold run-specific paths"


def test_rerun_reproduces_every_marked_output(reproduced):
    first, second, executed, outcomes, printed = reproduced
    n_code = sum(c.cell_type == "code" for c in executed.cells)
    assert outcomes == {f"Cell {i}": "passed" for i in range(n_code)}, printed[-4000:]
    # The re-run made its own split from scratch, equal to the first one.
    columns = ["subset", "stem", "norm_low", "norm_high"]
    again = load_manifest(second).table()[columns]
    assert again.equals(load_manifest(first).table()[columns])
    assert json.loads((second / "data" / "summary.json").read_text())["reused"] is False


def test_nbval_lax_compares_only_marked_cells(tmp_path):
    """The check can fail: a marked cell whose output differs fails, an unmarked one does not."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    stream = nbformat.v4.new_output("stream", name="stdout", text="5\n")
    for source in (f"{MARKER}\nprint(2 + 2)", "print(2 + 2)", f"{MARKER}\nprint(2 + 3)"):
        nb.cells.append(nbformat.v4.new_code_cell(source, execution_count=1, outputs=[stream]))
    path = tmp_path / "check.ipynb"
    nbformat.write(nb, path)
    outcomes, printed = nbval_lax(path)
    assert outcomes == {"Cell 0": "failure", "Cell 1": "passed", "Cell 2": "passed"}, printed
