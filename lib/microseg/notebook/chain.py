"""Run the numbered notebooks headless, in order, into one run folder (papermill).

This is what ``make demo`` and the notebook tests run, and what a cluster user runs instead of
JupyterLab. Each executed notebook is saved under ``run_dir/notebooks/`` (as .ipynb and .html) and
``run_dir/index.html`` is the run's front page (:mod:`microseg.reports.run_report`), written again after
the last notebook, or after the one that failed.

Example
-------
>>> results = run_chain("runs/demo", quick=True)          # doctest: +SKIP
>>> [(r.name, round(r.seconds)) for r in results]           # doctest: +SKIP
"""

from __future__ import annotations

import functools
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
    "check_chain_parameters",
    "declared_parameters",
    "export_html",
    "list_notebooks",
    "notebooks_dir",
    "parameter_rows",
    "parameters_markdown",
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
    return Path(__file__).resolve().parents[3] / "notebooks"


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


def parameter_rows(notebook: str | Path) -> list[tuple[str, str, str]]:
    """(name, default as written, explanation) of each parameter of the notebook's cell tagged
    ``parameters``, in order."""
    import papermill

    return [(name, item["default"], item.get("help") or "")
            for name, item in papermill.inspect_notebook(str(notebook)).items()]


def parameters_markdown(notebooks: list[Path] | None = None) -> str:
    """Every notebook's parameters as Markdown: one table per notebook with each name, its
    default and the explanation from its parameters cell (``docs/parameters.md``)."""
    parts = ["# Notebook parameters", "",
             "What each notebook's cell tagged `parameters` declares: the only names it accepts "
             "(from papermill `-p`, `python -m microseg run -p`, an edited cell or the form). A "
             "name it does not declare stops it before anything runs, with the closest declared "
             "names. Written by `python -m microseg parameters --markdown`.", ""]
    for path in notebooks or list_notebooks():
        parts += [f"## {path.stem}", "", "| name | default | meaning |", "|---|---|---|"]
        for name, default, meaning in parameter_rows(path):
            escaped = meaning.replace("|", "\\|")
            parts.append(f"| `{name}` | `{default}` | {escaped} |")
        parts.append("")
    return "\n".join(parts)


def check_chain_parameters(notebooks: list[Path], parameters: dict[str, Any],
                           declared: dict[str, set[str]] | None = None) -> None:
    """Stop when a parameter is declared by none of ``notebooks`` (a misspelt name would
    otherwise reach no notebook and be dropped without a word). ``declared``: each notebook's
    names (stem → names) when already read, else read from the notebooks.

    Raises
    ------
    ConfigError
        Naming each such parameter and the closest names the notebooks declare.
    """
    from microseg.notebook.parameters import unknown_names_error

    known = declared or {}
    names = set().union(*(known[p.stem] if p.stem in known else declared_parameters(p)
                          for p in notebooks))
    unknown = [name for name in parameters if name not in names]
    if unknown:
        raise unknown_names_error(
            f"no notebook of {', '.join(p.stem for p in notebooks)} has the", unknown,
            sorted(names), "The parameters of every notebook are listed in docs/parameters.md.")


@functools.cache
def _local_kernel_manager() -> type | None:
    """jupyter_client's kernel manager talking to the kernel over a local (IPC) socket instead
    of TCP on 127.0.0.1 — nothing reaches the network, and the kernel has no reason to warn
    "Kernel is running over TCP without encryption" once per notebook. None on Windows (no IPC
    sockets there: jupyter_client's default, TCP)."""
    if os.name == "nt":
        return None
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class LocalKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

    return LocalKernelManager


def run_notebook(
    notebook: str | Path,
    output: str | Path,
    parameters: dict[str, Any],
    kernel: str = "python3",
    cwd: str | Path | None = None,
) -> NotebookRun:
    """Execute one notebook with papermill and ``parameters``, every one of which it must
    declare (the chain runner passes each notebook only its own).

    Raises
    ------
    ConfigError
        A parameter the notebook does not declare, with the closest declared names; nothing
        runs and nothing is written.
    MicrosegError
        When a cell fails; the message names the notebook and where the executed copy (with the
        traceback in its failing cell) was saved.
    """
    import papermill

    notebook, output = Path(notebook), Path(output)
    check_chain_parameters([notebook], parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    manager = _local_kernel_manager()
    try:
        papermill.execute_notebook(
            str(notebook), str(output), parameters=dict(parameters), kernel_name=kernel,
            cwd=str(cwd) if cwd else None, progress_bar=False,
            **({"kernel_manager_class": manager} if manager else {}),
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
    per_notebook: dict[str, dict[str, Any]] | None = None,
) -> list[NotebookRun]:
    """Run the numbered notebooks in order into ``run_dir`` and write ``run_dir/index.html``.

    Parameters
    ----------
    run_dir : the run folder every notebook receives as ``run_dir``.
    quick : passed to every notebook (a smoke run of seconds to a minute each on a CPU).
    parameters : further parameters, each given to the notebooks that declare it (e.g. ndim);
        one that no notebook of the chain declares stops it before anything runs
        (:func:`check_chain_parameters`).
    notebooks : paths to run instead of every numbered notebook.
    per_notebook : notebook stem → parameters for that notebook only (e.g. the demo budget),
        over ``parameters``; each must be one that notebook declares.
    """
    run_dir = Path(run_dir).resolve()
    # quick is passed only when asked for, so that it is not listed as given otherwise
    params = {"run_dir": str(run_dir), **({"quick": True} if quick else {}),
              **(parameters or {})}
    chain = [Path(p) for p in notebooks] if notebooks else list_notebooks()
    declared = {p.stem: declared_parameters(p) for p in chain}
    check_chain_parameters(chain, params, declared)
    own = {p.stem: (per_notebook or {}).get(p.stem, {}) for p in chain}
    for notebook in chain:
        check_chain_parameters([notebook], own[notebook.stem], declared)
    results = []
    with _FrontPage(run_dir, [p.stem for p in chain]) as page:
        for notebook in chain:
            log(f"running {notebook.name} ...")
            wanted = {k: v for k, v in {**params, **own[notebook.stem]}.items()
                      if k in declared[notebook.stem]}
            results.append(_run_and_export(notebook, run_dir / "notebooks", wanted, kernel,
                                           html_export))
            log(f"  done in {results[-1].seconds:.1f} s -> {results[-1].output}")
            page.write()
    return results


class _FrontPage:
    """The run's front page kept current while a chain runs: rewritten every ``every`` seconds
    (the running notebook's cell, the ones still to come) and after each notebook. Nothing is
    written before the first notebook has made the run folder (its checks come first)."""

    def __init__(self, run_dir: Path, planned: list[str], every: float = 20.0) -> None:
        import threading

        self.run_dir, self.planned, self.every = run_dir, planned, every
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._planned = False
        self._thread = threading.Thread(target=self._refresh, daemon=True)

    def __enter__(self) -> _FrontPage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.write()

    def _refresh(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.write()
            except Exception:  # a page half-read mid-write is retried next time
                pass

    def write(self) -> None:
        from microseg.reports.run_report import CHAIN_PLAN, write_run_report
        from microseg.runs import atomic_write_json

        folder = self.run_dir / "notebooks"
        if not folder.is_dir():
            return
        with self._lock:
            if not self._planned:
                atomic_write_json(folder / CHAIN_PLAN, {"notebooks": self.planned})
                self._planned = True
            write_run_report(self.run_dir)


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
