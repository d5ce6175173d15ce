"""Run the numbered notebooks headless, in order, into one run folder (papermill).

This is what ``make demo`` and the notebook tests run, and what a cluster user runs instead of
JupyterLab. Each executed notebook is saved under ``run_dir/notebooks/`` (as .ipynb and .html) and
``run_dir/index.html`` is the run's front page (:mod:`microseg.run_report`), written again after
the last notebook, or after the one that failed.

Example
-------
>>> results = run_chain("runs/demo", quick=True)          # doctest: +SKIP
>>> [(r.name, round(r.seconds)) for r in results]           # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microseg.errors import MicrosegError
from microseg.runs import atomic_write_text

__all__ = [
    "NotebookRun",
    "declared_parameters",
    "export_html",
    "list_notebooks",
    "notebooks_dir",
    "run_chain",
    "run_notebook",
]


@dataclass(frozen=True)
class NotebookRun:
    """One executed notebook: its stem, the executed copy, and how long it took."""

    name: str
    output: Path
    seconds: float


def notebooks_dir() -> Path:
    """The folder holding the numbered notebooks.

    ``$MICROSEG_NOTEBOOKS`` if set, else ``notebooks/`` beside ``lib/`` in a source checkout.
    """
    if os.environ.get("MICROSEG_NOTEBOOKS"):
        return Path(os.environ["MICROSEG_NOTEBOOKS"])
    return Path(__file__).resolve().parents[2] / "notebooks"


def list_notebooks(folder: str | Path | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in ``folder``, in order."""
    folder = Path(folder) if folder else notebooks_dir()
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise MicrosegError(f"no numbered notebooks (NN_name.ipynb) found in {folder}")
    return found


def declared_parameters(notebook: str | Path) -> set[str]:
    """Names assigned in the notebook's cell tagged ``parameters``."""
    import papermill

    return set(papermill.inspect_notebook(str(notebook)))


def run_notebook(
    notebook: str | Path,
    output: str | Path,
    parameters: dict[str, Any],
    kernel: str = "python3",
    cwd: str | Path | None = None,
) -> NotebookRun:
    """Execute one notebook with papermill, passing only the parameters it declares.

    Raises
    ------
    MicrosegError
        When a cell fails; the message names the notebook and where the executed copy (with the
        traceback in its failing cell) was saved.
    """
    import papermill

    notebook, output = Path(notebook), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    wanted = declared_parameters(notebook)
    params = {k: v for k, v in parameters.items() if k in wanted}
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook), str(output), parameters=params, kernel_name=kernel,
            cwd=str(cwd) if cwd else None, progress_bar=False,
        )
    except papermill.PapermillExecutionError as err:
        raise MicrosegError(
            f"{notebook.name} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
            f"the executed notebook with the full traceback is {output}"
        ) from None
    return NotebookRun(notebook.stem, output, time.perf_counter() - start)


def run_chain(
    run_dir: str | Path,
    quick: bool = False,
    parameters: dict[str, Any] | None = None,
    notebooks: list[str | Path] | None = None,
    kernel: str = "python3",
    html_export: bool = True,
    log: Callable[[str], None] = print,
) -> list[NotebookRun]:
    """Run the numbered notebooks in order into ``run_dir`` and write ``run_dir/index.html``.

    Parameters
    ----------
    run_dir : the run folder every notebook receives as ``run_dir``.
    quick : passed to every notebook (a smoke run of seconds to a minute each on a CPU).
    parameters : further parameters, each given to the notebooks that declare it (e.g. ndim).
    notebooks : paths to run instead of every numbered notebook.
    """
    from microseg.run_report import write_run_report

    run_dir = Path(run_dir).resolve()
    params = {"run_dir": str(run_dir), "quick": quick, **(parameters or {})}
    results = []
    try:
        for notebook in [Path(p) for p in notebooks] if notebooks else list_notebooks():
            log(f"running {notebook.name} ...")
            results.append(_run_and_export(notebook, run_dir / "notebooks", params, kernel,
                                           html_export))
            log(f"  done in {results[-1].seconds:.1f} s -> {results[-1].output}")
    finally:
        if run_dir.is_dir():
            write_run_report(run_dir)
    return results


def _run_and_export(notebook: Path, out_dir: Path, params: dict[str, Any], kernel: str,
                    html_export: bool) -> NotebookRun:
    """Run one notebook; export it as HTML afterwards, also when it failed (to show where)."""
    output = out_dir / notebook.name
    try:
        return run_notebook(notebook, output, params, kernel, cwd=notebook.parent)
    finally:
        if html_export and output.is_file():
            export_html(output)


def export_html(notebook: str | Path) -> Path:
    """Write an executed notebook as a standalone HTML page beside it."""
    import nbconvert
    import nbformat

    notebook = Path(notebook)
    body, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    return atomic_write_text(notebook.with_suffix(".html"), body)
