"""Run the numbered notebooks headless, in order, into one run folder (papermill).

This is what ``make demo`` and the notebook tests run, and what a cluster user runs instead of
JupyterLab. Each executed notebook is saved under ``run_dir/notebooks/`` (as .ipynb and .html) and
``run_dir/index.html`` links every notebook, summary and figure of the run.

Example
-------
>>> results = run_chain("runs/demo", quick=True)          # doctest: +SKIP
>>> [(r.name, round(r.seconds)) for r in results]           # doctest: +SKIP
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microseg.errors import MicrosegError
from microseg.runs import atomic_write_text


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
    run_dir = Path(run_dir).resolve()
    out_dir = run_dir / "notebooks"
    params = {"run_dir": str(run_dir), "quick": quick, **(parameters or {})}
    results = []
    for notebook in [Path(p) for p in notebooks] if notebooks else list_notebooks():
        log(f"running {notebook.name} ...")
        result = run_notebook(notebook, out_dir / notebook.name, params, kernel, cwd=notebook.parent)
        log(f"  done in {result.seconds:.1f} s -> {result.output}")
        results.append(result)
        if html_export:
            export_html(result.output)
    write_index(run_dir, results)
    return results


def export_html(notebook: str | Path) -> Path:
    """Write an executed notebook as a standalone HTML page beside it."""
    import nbconvert
    import nbformat

    notebook = Path(notebook)
    body, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    return atomic_write_text(notebook.with_suffix(".html"), body)


def write_index(run_dir: str | Path, results: list[NotebookRun]) -> Path:
    """Write ``run_dir/index.html`` linking notebooks, summaries, reports and figures."""
    run_dir = Path(run_dir)
    rows = []
    for r in results:
        page = r.output.with_suffix(".html")
        target = page if page.exists() else r.output
        rows.append(f"<tr><td><a href='{_rel(target, run_dir)}'>{html.escape(r.name)}</a></td>"
                    f"<td>{r.seconds:.1f} s</td></tr>")
    sections = [("Summaries", "summary.json"), ("Reports", "report.html"), ("Figures", "*.png")]
    lists = []
    for title, pattern in sections:
        files = sorted(p for p in run_dir.rglob(pattern) if "notebooks" not in p.parts)
        items = "".join(f"<li><a href='{_rel(p, run_dir)}'>{html.escape(_rel(p, run_dir))}</a></li>"
                        for p in files)
        lists.append(f"<h2>{title}</h2><ul>{items or '<li>none</li>'}</ul>")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>microseg run "
        f"{html.escape(run_dir.name)}</title><style>body{{font-family:sans-serif;max-width:60em;"
        "margin:2em auto}}td{padding:0.2em 1em}</style></head><body>"
        f"<h1>microseg run: {html.escape(run_dir.name)}</h1><h2>Notebooks</h2><table>"
        f"<tr><th>notebook</th><th>time</th></tr>{''.join(rows)}</table>{''.join(lists)}"
        "</body></html>\n"
    )
    return atomic_write_text(run_dir / "index.html", page)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
