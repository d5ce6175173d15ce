"""What every notebook calls first: record its parameters and environment in the run folder.

The notebooks pass work to each other only through the run folder. ``start_notebook`` makes that
folder, saves the parameters the notebook ran with (so a re-opened notebook, a widget form or a
colleague can see them) and the environment it ran on, and sets up readable log messages.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
from pathlib import Path
from typing import Any

from microseg.runs import RunFolder, atomic_write_json, environment_record


def start_notebook(name: str, run_dir: str | Path, params: dict[str, Any]) -> RunFolder:
    """Prepare ``run_dir`` for notebook ``name`` and record how it was run.

    Writes ``run_dir/notebooks/<name>.params.json`` (the latest parameters), appends the same
    record to ``run_dir/notebooks/params_history.jsonl`` (earlier runs are kept), and writes
    ``run_dir/environment.json``.

    Parameters
    ----------
    name : notebook file stem, e.g. ``"01_prepare_data"``.
    run_dir : the experiment's run folder; created if missing.
    params : every value of the notebook's parameters cell, by name (JSON-serialisable).

    Returns
    -------
    RunFolder for ``run_dir``.

    Example
    -------
    >>> run = start_notebook("01_prepare_data", "runs/demo", dict(quick=True))  # doctest: +SKIP
    """
    run = RunFolder(run_dir)
    record_dir = run.root / "notebooks"
    record_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "notebook": name,
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "parameters": params,
    }
    atomic_write_json(record_dir / f"{name}.params.json", record)
    with open(record_dir / "params_history.jsonl", "a") as history:
        history.write(json.dumps(record, default=str) + "\n")
    atomic_write_json(run.root / "environment.json", environment_record())
    _configure_logging()
    return run


def saved_parameters(name: str, run_dir: str | Path) -> dict[str, Any] | None:
    """The parameters notebook ``name`` last ran with in ``run_dir``, or None if it never ran."""
    return RunFolder(run_dir).saved_parameters(name)


def _configure_logging() -> None:
    logger = logging.getLogger("microseg")
    if not any(getattr(h, "_microseg", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._microseg = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
