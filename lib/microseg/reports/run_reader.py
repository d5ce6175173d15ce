"""Reading a run folder for its front page: JSON files that may be damaged (their problems
collected, not raised), file sizes, and the notebooks' records — the executed copies, the
parameters each ran with, the chain plan — with the errors and warnings in their outputs.

Used by :mod:`microseg.reports.run_report`; only reads.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from pathlib import Path
from typing import Any

from microseg.reports.run_facts import NotebookEntry, Problem, RunHeader

__all__ = ["CHAIN_PLAN", "RunReader", "newest_first", "notebook_entries", "notebook_problems",
           "run_header", "size_of", "walk_files"]

_PROBLEM_LINE = re.compile(r"^(WARNING|ERROR|CRITICAL)\b|\b[A-Z]\w*(Warning|Error):")
_SKIPPED_DIRS = ("notebooks",)


# ---------------------------------------------------------------- small readers


class RunReader:
    """Reads JSON files of one run folder; unreadable ones become problems, not exceptions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[Problem] = []

    def json(self, path: Path) -> Any:
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            self.problems.append(Problem("warning", self.rel(path) or str(path),
                                         f"could not be read: {err}"))
            return None

    def rel(self, path: str | Path | None) -> str | None:
        """``path`` relative to the run folder (POSIX) if it lies inside and exists, else None.

        Paths written on another machine or before the folder was moved are found by the part
        after the run folder's name.
        """
        if not path:
            return None
        path = Path(path)
        candidates = [path if path.is_absolute() else self.root / path]
        if self.root.name in path.parts[:-1]:
            last = len(path.parts) - 1 - path.parts[::-1].index(self.root.name)
            candidates.append(self.root.joinpath(*path.parts[last + 1:]))
        root = self.root.resolve()
        for candidate in candidates:
            try:
                rel = candidate.resolve().relative_to(root)
            except ValueError:
                continue
            if candidate.exists():
                return rel.as_posix()
        return None


def walk_files(root: Path, suffix: str) -> list[Path]:
    """Files under ``root`` ending with ``suffix``, sorted, skipping ``notebooks/`` and Zarr."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.endswith(".zarr")
                         and not (Path(folder) == root and d in _SKIPPED_DIRS))
        found.extend(Path(folder) / f for f in files if f.endswith(suffix))
    return sorted(found)


def size_of(path: Path) -> int | None:
    """Bytes of a file, or of every file under a folder (a Zarr store); None if missing."""
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return None
    return sum((Path(folder) / f).stat().st_size
               for folder, _, files in os.walk(path) for f in files)


def newest_first(paths: list[Path]) -> list[Path]:
    """Newest first by modification time, then by name (``unet-2`` after ``unet``)."""
    return sorted(paths, key=lambda p: (p.stat().st_mtime, _suffix_number(p.parent.name)),
                  reverse=True)


def _suffix_number(name: str) -> int:
    match = re.search(r"-(\d+)$", name)
    return int(match.group(1)) if match else 1


# ---------------------------------------------------------------- header and notebooks


def _data_sentence(data: dict[str, Any] | None) -> str:
    if not data:
        return "no data prepared yet (notebook 01)"
    shape = "volumes" if data.get("ndim") == 3 else "images"
    split = "/".join(str(data.get(k, "?")) for k in ("n_train", "n_val", "n_test"))
    return (f"{data.get('n_images', '?')} {data.get('ndim', '?')}D {shape}, "
            f"{data.get('task', '?')} task, split {split} (train/val/test)")


def run_header(reader: RunReader, notebooks: list[NotebookEntry]) -> RunHeader:
    data = reader.json(reader.root / "data" / "summary.json") or {}
    environment = reader.json(reader.root / "environment.json") or {}
    source = ("built-in synthetic data" if data.get("synthetic")
              else data.get("data_dir") if data else None)
    starts = sorted(n.started for n in notebooks if n.started)
    seconds = [n.seconds for n in notebooks if n.seconds is not None]
    return RunHeader(
        experiment=reader.root.resolve().name, data=_data_sentence(data), source=source,
        ndim=data.get("ndim"), task=data.get("task"), started=starts[0] if starts else None,
        version=(environment.get("packages") or {}).get("microseg"),
        device=environment.get("device"), total_seconds=sum(seconds) if seconds else None,
        written=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))


CHAIN_PLAN = "chain.json"
"""``run_dir/notebooks/chain.json``: the notebooks a chain run will execute, in order (written
by :func:`microseg.notebook.chain.run_chain`); those not started yet are shown as "next"."""


def notebook_entries(reader: RunReader) -> tuple[list[NotebookEntry], list[Problem]]:
    folder = reader.root / "notebooks"
    if not folder.is_dir():
        return [], []
    names = sorted({p.name.split(".")[0] for p in folder.glob("[0-9][0-9]_*.*")
                    if p.suffix in (".ipynb", ".json")})
    plan = reader.json(folder / CHAIN_PLAN) if (folder / CHAIN_PLAN).is_file() else None
    planned = [n for n in (plan or {}).get("notebooks", []) if isinstance(n, str)]
    entries, problems = [], []
    for name in names:
        params = reader.json(folder / f"{name}.params.json") or {}
        executed = reader.json(folder / f"{name}.ipynb")
        entries.append(_notebook_entry(reader, name, params, executed))
        if executed is not None:
            problems.extend(notebook_problems(executed, name, entries[-1].link))
    failed = any(e.status == "failed" for e in entries)
    entries += [NotebookEntry(name, "not run (an earlier one failed)" if failed else "next",
                              None, None, None)
                for name in planned if name not in names]
    order = {name: k for k, name in enumerate(planned)}
    entries.sort(key=lambda e: (order.get(e.name, len(order)), e.name))
    return entries, problems


def _notebook_entry(reader: RunReader, name: str, params: dict[str, Any],
                    executed: dict[str, Any] | None) -> NotebookEntry:
    folder = reader.root / "notebooks"
    link = reader.rel(folder / f"{name}.html") or reader.rel(folder / f"{name}.ipynb")
    values = params.get("parameters") or {}
    given = {k: values.get(k) for k in params.get("given") or () if k != "run_dir"}
    finished = bool(params.get("finished"))
    if executed is None:
        status = "done in JupyterLab" if finished else "started in JupyterLab"
        return NotebookEntry(name, status, None, params.get("started"), link, given)
    papermill = executed.get("metadata", {}).get("papermill", {})
    # papermill saves the executed copy's end time only after the last cell; a notebook that
    # wrote its summary (finish_notebook) is done even while that copy is being saved.
    status = ("failed" if papermill.get("exception") else
              "done" if papermill.get("end_time") or finished else _running(executed))
    started = params.get("started") or papermill.get("start_time")
    return NotebookEntry(name, status, papermill.get("duration"), started, link, given)


def _running(executed: dict[str, Any]) -> str:
    """"running (cell k of n)": the code cell papermill is executing, from its cell records."""
    cells = [c for c in executed.get("cells", []) if c.get("cell_type") == "code"]
    states = [(c.get("metadata", {}).get("papermill") or {}).get("status") for c in cells]
    if not cells or not any(states):
        return "running"
    done = sum(state == "completed" for state in states)
    return f"running (cell {min(done + 1, len(cells))} of {len(cells)})"


def notebook_problems(notebook: dict[str, Any], name: str,
                      link: str | None = None) -> list[Problem]:
    """Errors and warnings in an executed notebook's outputs (a notebook as a JSON dict).

    Error outputs (the exception of a failing cell), and lines of text outputs that start with
    a log level (``WARNING microseg...``, ``ERROR ...``) or hold ``SomethingWarning:`` or
    ``SomethingError:`` (Python warnings, messages on stderr). Repeated messages are kept once.
    """
    problems, seen = [], set()
    for index, cell in enumerate(notebook.get("cells", [])):
        where = f"{name}, cell {cell.get('execution_count') or index}"
        for output in cell.get("outputs", []):
            for level, message in _output_problems(output):
                if (level, message) not in seen:
                    seen.add((level, message))
                    problems.append(Problem(level, where, message[:600], link))
    return problems


def _output_problems(output: dict[str, Any]) -> list[tuple[str, str]]:
    if output.get("output_type") == "error":
        return [("error", f"{output.get('ename')}: {output.get('evalue')}")]
    if output.get("output_type") != "stream":
        return []
    text = output.get("text", "")
    lines = text if isinstance(text, list) else text.splitlines()
    found = []
    for line in (raw.strip() for raw in lines):
        match = _PROBLEM_LINE.search(line)
        if match:
            words = (match.group(1) or match.group(2) or "").lower()
            found.append(("error" if words in ("error", "critical") else "warning", line))
    return found
