"""What every notebook calls first and last: check its parameters, record them and the
environment; write its summary with the parameters it ran with.

The notebooks pass work to each other only through the run folder. ``start_notebook`` checks the
parameters at the boundary — a name the notebook does not declare stops it with the closest
declared names (:mod:`microseg.notebook.parameters`), each value has a declared type
(:data:`PARAMETER_TYPES`), and text that
reads as that type is converted, as papermill's ``-r`` or a YAML file may give it — refuses a run
folder inside an input folder, then makes the run folder, saves the parameters the notebook ran
with (so a re-opened notebook, a widget form or a colleague can see them) and the environment it
ran on, and sets up readable log messages. Nothing is written before every check has passed.

Example
-------
>>> coerce_parameter("train_fraction", "0.7")
0.7
>>> coerce_parameter("tile_shape", "64, 64")
[64, 64]
>>> coerce_parameter("ndim", "two")
Traceback (most recent call last):
...
microseg.errors.ConfigError: parameter ndim = 'two' (text): expected a whole number, e.g. ndim = 2
"""

from __future__ import annotations

import ast
import datetime as _dt
import json
import logging
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from microseg.errors import ConfigError
from microseg.notebook.parameters import (
    check_parameter_names,
    declared_defaults,
    given_parameters,
)
from microseg.runs import (
    RunFolder,
    atomic_write_json,
    check_outside_inputs,
    environment_record,
    read_json,
    require_folder,
    write_summary,
    writing,
)

__all__ = ["INPUT_PARAMETERS", "MULTIPLE_CHOICES", "PARAMETER_CHOICES", "PARAMETER_LIMITS",
           "PARAMETER_TYPES", "arguments_for", "coerce_parameter", "coerce_parameters",
           "finish_notebook", "notebook_parameters", "passed_parameters", "saved_parameters",
           "start_notebook"]

_NUMBERS = int | list[int] | None
PARAMETER_TYPES: dict[str, Any] = {
    # folders and files
    "run_dir": str, "data_dir": str | None, "roi_dir": str | None, "split_dir": str | None,
    "target_data_dir": str | None, "unlabelled_dir": str | None, "input_path": str | None,
    "output_path": str | None, "pretrained_path": str | None,
    "annotation_dir": str | None,
    # names and choices
    "model_name": str | None, "model_names": list[str] | None, "architecture": str, "norm": str,
    "task": str, "axes": str | None, "subset": str, "device": str, "freeze": str,
    "comparison_data": str, "scheduler": str | None, "export_formats": list[str],
    "label_export_formats": list[str], "annotation_format": str, "instance_head": str,
    # whole numbers
    "ndim": int, "seed": int, "grad_accumulation": int, "search_trials": int,
    "n_target_train": int, "n_target_val": int, "rounds": int, "images_per_round": int,
    "epochs": int | None, "patience": int | None, "keep_last": int | None,
    "unfreeze_every": int | None, "batch_size": int | str | None,
    "patch_size": _NUMBERS, "tile_shape": _NUMBERS, "halo": _NUMBERS, "n_classes": int | None,
    # numbers
    "train_fraction": float, "val_fraction": float, "test_fraction": float,
    "learning_rate": float | None, "encoder_learning_rate": float | None,
    "iou_thresholds": list[float], "pixel_size": float | list[float] | None,
    "max_minutes": float | None, "object_diameter": float | str | None,
    # switches
    "quick": bool, "overwrite": bool, "resume": bool, "run_search": bool,
    "make_initial_labels": bool, "allow_empty_labels": bool, "allow_torchscript": bool,
    "simulate_corrections": bool, "compare_norms": bool | None, "tta": bool,
}
"""The declared type of every notebook parameter, by name (the same name means the same thing
in every notebook). A test checks that every parameters cell is covered and its defaults fit."""

def _at_least(low: float) -> tuple[Any, str]:
    return (lambda v: v >= low), f"at least {low}"


def _between(low: float, high: float, above_low: bool = False) -> tuple[Any, str]:
    if above_low:
        return (lambda v: low < v <= high), f"above {low} and at most {high}"
    return (lambda v: low <= v <= high), f"from {low} to {high}"


_POSITIVE = ((lambda v: v > 0), "above 0")
PARAMETER_LIMITS: dict[str, tuple[Any, str]] = {
    "seed": _between(0, 2**32 - 1), "ndim": _between(2, 3), "n_classes": _at_least(2),
    "grad_accumulation": _at_least(1), "search_trials": _at_least(1), "epochs": _at_least(1),
    "n_target_train": _at_least(1), "n_target_val": _at_least(1), "rounds": _at_least(0),
    "images_per_round": _at_least(1), "patience": _at_least(0), "keep_last": _at_least(0),
    "unfreeze_every": _at_least(1), "batch_size": _at_least(1), "patch_size": _at_least(1),
    "tile_shape": _at_least(1), "halo": _at_least(0), "train_fraction": _between(0, 1),
    "val_fraction": _between(0, 1), "test_fraction": _between(0, 1),
    "learning_rate": _POSITIVE, "encoder_learning_rate": _POSITIVE, "pixel_size": _POSITIVE,
    "iou_thresholds": _between(0, 1, above_low=True), "max_minutes": _POSITIVE,
}
"""Allowed values of numeric parameters (each number of a list too): a test and the words."""

PARAMETER_CHOICES: dict[str, list[Any]] = {
    "ndim": [2, 3], "task": ["instance", "binary", "semantic"],
    "architecture": ["unet", "classic_unet", "unetr"],
    "norm": ["batchrenorm", "batch", "instance", "group", "none"],
    "instance_head": ["auto", "distance", "three_class"], "device": ["auto", "cpu", "cuda"],
    "subset": ["test", "val"], "comparison_data": ["synthetic", "run"],
    "object_diameter": ["auto", None, 10.0, 20.0, 30.0, 50.0],
    "batch_size": [None, "auto", 1, 2, 4, 8, 16, 32],
    "annotation_format": ["auto", "fiji", "qupath", "cellpose", "masks", "ctc", "coco"],
    "compare_norms": [None, True, False],
    "scheduler": [None, "local-cluster", "synchronous", "processes"],
}
"""Choices a notebook's form offers for a parameter (a value not among them is kept too)."""

MULTIPLE_CHOICES: dict[str, tuple[str, ...]] = {
    "export_formats": ("torchscript", "onnx", "bioimageio"),
    "label_export_formats": ("roiset", "geojson", "ome-zarr"),
}
"""List-valued parameters: any of these, one tick box each."""

INPUT_PARAMETERS = ("data_dir", "roi_dir", "annotation_dir", "target_data_dir", "unlabelled_dir",
                    "input_path")
"""Parameters naming the user's input folders: only read, so the run folder may not be inside."""

_TRUE, _FALSE = ("true", "yes", "on"), ("false", "no", "off")


def start_notebook(name: str, namespace: dict[str, Any]) -> RunFolder:
    """Check the parameters, prepare the run folder for notebook ``name`` and record the run.

    The parameters are the ones notebook ``name`` declares
    (:data:`microseg.notebook.parameters.NOTEBOOK_PARAMETERS`) found in ``namespace`` — the
    notebook's ``globals()`` after its parameters cell — so no notebook lists them twice. First
    the names: a name set in the parameters cell or passed by papermill that the notebook does
    not declare stops it (:func:`passed_parameters`), with the closest declared names. Then
    every value is checked against its type (text that reads as the declared type is
    converted, in ``namespace`` too), and ``run_dir`` must not lie inside an input folder
    (:data:`INPUT_PARAMETERS`). Only then it writes ``run_dir/notebooks/<name>.params.json``
    (the latest parameters and which were given), appends the same record to
    ``run_dir/notebooks/params_history.jsonl`` (earlier runs are kept), writes
    ``run_dir/environment.json`` and the front page (``run_dir/index.html``, which shows the
    notebook as started).

    Returns
    -------
    RunFolder for ``run_dir``.

    Raises
    ------
    ConfigError
        A name the notebook does not declare (with the closest declared ones), a value that is
        not of its parameter's type (naming parameter, value and type) or out of its range, no
        ``run_dir``, a run folder inside an input folder, or one that is a file.
    WriteError
        The run folder cannot be written (read-only, full disk), naming it and the fix.

    Example
    -------
    >>> run_dir, quick = "runs/demo", True                          # the parameters cell
    >>> run = start_notebook("01_prepare_data", globals())          # doctest: +SKIP
    """
    set_here, injected = passed_parameters(namespace)
    check_parameter_names(name, set_here)
    namespace["_microseg_notebook"] = {"name": name, "passed": injected}
    params = coerce_parameters(notebook_parameters(namespace))
    namespace.update(params)
    if "run_dir" not in params:
        raise ConfigError(f"notebook {name}: its parameters cell sets no run_dir; add "
                          f"run_dir = 'runs/<experiment>'")
    run_dir = require_folder(params["run_dir"])
    check_outside_inputs(run_dir, {key: params.get(key) for key in INPUT_PARAMETERS})
    run = RunFolder(run_dir)
    record = {
        "notebook": name,
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "parameters": params,
        "given": given_parameters(name, params, injected),
    }
    record_dir = run.root / "notebooks"
    atomic_write_json(record_dir / f"{name}.params.json", record)
    history = record_dir / "params_history.jsonl"
    with writing(history), open(history, "a") as handle:
        handle.write(json.dumps(record, default=str) + "\n")
    atomic_write_json(run.root / "environment.json", environment_record())
    _configure_logging()
    _summarise_notes_per_cell(run.root)
    from microseg.reports.run_report import write_run_report

    write_run_report(run.root)  # the front page shows this notebook as started
    return run


_cell_hooks: list[tuple[str, Any]] = []


def _summarise_notes_per_cell(record_dir: Path) -> None:
    """In a notebook kernel, the notes about single files that a cell's calls make
    (:func:`microseg.logs.file_note`) end the cell as one line per kind, every file listed in
    ``record_dir/file_notes.json``."""
    from microseg.logs import close_notes, open_notes

    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    for event, callback in _cell_hooks:
        shell.events.unregister(event, callback)
    _cell_hooks.clear()
    open_cell: list[Any] = []

    def before(*_: Any) -> None:
        open_cell.append(open_notes())

    def after(*_: Any) -> None:
        while open_cell:
            close_notes(*open_cell.pop(), record_dir=record_dir)

    for event, callback in (("pre_run_cell", before), ("post_run_cell", after)):
        shell.events.register(event, callback)
        _cell_hooks.append((event, callback))


def finish_notebook(namespace: dict[str, Any], out_dir: str | Path,
                    summary: Mapping[str, Any], figures: Any = None) -> Path:
    """End a notebook: write ``out_dir/summary.json`` with the parameters it ran with, mark it
    finished in ``run_dir/notebooks/<name>.params.json`` and write the run's front page.

    ``summary`` is the step's result (a recipe's result or a dict); ``figures``, when given (the
    saved figures' paths, a list or name → path), is written under ``"figures"``.

    ``summary["notebook_parameters"]`` becomes ``{"notebook", "values", "given"}``: every
    declared parameter's value as used (after type conversion, and after the form, which may
    change values after :func:`start_notebook`), and the names given rather than left at their
    defaults (passed by papermill, or a value other than the parameters cell's default).

    Returns the path of the front page (``run_dir/index.html``).

    Raises
    ------
    ConfigError
        When :func:`start_notebook` has not run in ``namespace``.
    """
    from microseg.reports.run_report import write_run_report

    state = namespace.get("_microseg_notebook")
    if not isinstance(state, dict):
        raise ConfigError("finish_notebook: run the cell that calls start_notebook(...) first")
    name = state["name"]
    params = coerce_parameters(notebook_parameters(namespace))
    given = given_parameters(name, params, state["passed"])
    written = summary.to_dict() if hasattr(summary, "to_dict") else dict(summary)
    if figures is not None:
        written["figures"] = figures
    write_summary(out_dir, {**written, "notebook_parameters": {
        "notebook": name, "values": params, "given": given}})
    run = RunFolder(params["run_dir"])
    path = run.root / "notebooks" / f"{name}.params.json"
    record = read_json(path) if path.is_file() else {}
    finished = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    atomic_write_json(path, {**(record if isinstance(record, dict) else {}), "notebook": name,
                             "parameters": params, "given": given, "finished": finished})
    return write_run_report(run.root)


def passed_parameters(namespace: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The names the parameters were given under: (every name set in the parameters cell or
    passed in by papermill, the names papermill passed).

    In a notebook kernel the cells run just before the current one that only assign literal
    values (the parameters cell, papermill's injected ``# Parameters`` cell, an edited copy) are
    read from IPython's input history (``In``). Elsewhere (``namespace`` a plain dict) every
    public name holding a plain value (None, bool, number, text or a list of them) counts.

    >>> passed_parameters({"run_dir": "runs/a", "epoch": 5, "np": None, "_private": 1})
    (['run_dir', 'epoch', 'np'], [])
    """
    history = namespace.get("In")
    if not isinstance(history, list) or not history:
        return [k for k, v in namespace.items() if not k.startswith("_") and _plain(v)], []
    set_here: list[str] = []
    injected: list[str] = []
    for source in reversed(history[:-1]):
        names = _literal_assignments(source)
        if names is None:
            break
        set_here = names + set_here
        if source.lstrip().startswith("# Parameters"):
            injected = names + injected
    return list(dict.fromkeys(set_here)), list(dict.fromkeys(injected))


def _literal_assignments(source: str) -> list[str] | None:
    """Names a cell assigns when it only assigns literal values (comments and text allowed);
    None for any other cell."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) and node.value else None)
        if not targets or not all(isinstance(t, ast.Name) for t in targets):
            return None
        try:
            ast.literal_eval(node.value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
        names += [t.id for t in targets]
    return names


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    return isinstance(value, list | tuple) and all(_plain(v) for v in value)


def notebook_parameters(namespace: dict[str, Any]) -> dict[str, Any]:
    """The parameters ``namespace`` holds, by name, in the order they were set (the parameters
    cell's order): after :func:`start_notebook`, the ones its notebook declares; before, every
    name with a declared type (:data:`PARAMETER_TYPES`).

    >>> notebook_parameters({"run_dir": "runs/a", "quick": True, "sys": None})
    {'run_dir': 'runs/a', 'quick': True}
    """
    state = namespace.get("_microseg_notebook")
    declared = declared_defaults(state["name"]) if isinstance(state, dict) else PARAMETER_TYPES
    return {name: value for name, value in namespace.items() if name in declared}


def arguments_for(namespace: dict[str, Any], *functions: Any,
                  exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The notebook's parameters that ``functions`` take, by name (but ``exclude``): what a
    cell passes on to a recipe without naming every parameter again.

    >>> def train(run_dir, epochs=None, device="auto"): ...
    >>> arguments_for({"run_dir": "runs/a", "epochs": 3, "quick": True}, train)
    {'run_dir': 'runs/a', 'epochs': 3}
    """
    import inspect

    names = {n for f in functions for n, p in inspect.signature(f).parameters.items()
             if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - set(exclude)
    return {k: v for k, v in notebook_parameters(namespace).items() if k in names}


def coerce_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with every value of a declared parameter checked by :func:`coerce_parameter`.

    Parameters without a declared type are passed through unchanged.
    """
    return {key: coerce_parameter(key, value) if key in PARAMETER_TYPES else value
            for key, value in params.items()}


def coerce_parameter(name: str, value: Any, kind: Any = None) -> Any:
    """``value`` as parameter ``name``'s declared type ``kind`` (default: from
    :data:`PARAMETER_TYPES`).

    A value of that type is returned as it is (an int where a number is expected becomes a
    float, a tuple a list, a path text). Text is first read as a Python literal (``"0.7"``, ``"2"``,
    ``"[64, 64]"``, ``"None"``, ``"True"``), as ``true``/``false``/``none``, or as numbers or
    names separated by commas; the first reading of the declared type is taken, else the text
    itself when text is allowed. A whole-number float (``2.0``) counts as an int.

    Raises
    ------
    ConfigError
        Naming the parameter, the value, its type and the type expected, with an example; or,
        for a number outside :data:`PARAMETER_LIMITS` (e.g. ``seed = -1``), the range allowed.
    """
    kind = PARAMETER_TYPES.get(name) if kind is None else kind
    if kind is None:
        return value
    # Text is read first, so that "8" for an ``int | str`` parameter becomes 8.
    readings = _readings(value)
    for candidate in [*readings, value] if isinstance(value, str) else [value, *readings]:
        converted = _as_type(candidate, kind)
        if converted is not _NO:
            return _within_limits(name, converted)
    found = "text" if isinstance(value, str) else type(value).__name__
    raise ConfigError(f"parameter {name} = {value!r} ({found}): expected {_describe(kind)}, "
                      f"e.g. {name} = {_example(kind)!r}")


_NO = object()


def _within_limits(name: str, value: Any) -> Any:
    """``value`` when every number in it is allowed for ``name`` (:data:`PARAMETER_LIMITS`)."""
    if name not in PARAMETER_LIMITS:
        return value
    allowed, words = PARAMETER_LIMITS[name]
    numbers = value if isinstance(value, list) else [value]
    wrong = [v for v in numbers if isinstance(v, int | float) and not allowed(v)]
    if wrong:
        raise ConfigError(f"parameter {name} = {value!r}: {wrong[0]!r} is out of range; "
                          f"expected {words}")
    return value


def _readings(value: Any) -> list[Any]:
    """What text may mean, in order of preference."""
    if isinstance(value, float) and value.is_integer():
        return [int(value)]
    if not isinstance(value, str):
        return []
    text = value.strip()
    readings = []
    try:
        readings.append(ast.literal_eval(text))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    lower = text.lower()
    if lower in _TRUE + _FALSE:
        readings.append(lower in _TRUE)
    if lower in ("none", "null", ""):
        readings.append(None)
    parts = [p for p in re.split(r"[,\s]+", text.strip("[]()")) if p]
    readings.append([_number_or_text(p.strip("'\"")) for p in parts])
    return readings + [int(r) for r in readings if isinstance(r, float) and r.is_integer()]


def _number_or_text(part: str) -> Any:
    for number in (int, float):
        try:
            return number(part)
        except ValueError:
            pass
    return part


def _as_type(value: Any, kind: Any) -> Any:
    """``value`` converted to ``kind`` when it is of that type (loosely), else ``_NO``."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        for member in typing.get_args(kind):
            converted = _as_type(value, member)
            if converted is not _NO:
                return converted
        return _NO
    if typing.get_origin(kind) is list:
        if not isinstance(value, list | tuple):
            return _NO
        (item,) = typing.get_args(kind)
        items = [_as_type(v, item) for v in value]
        return _NO if any(i is _NO for i in items) else items
    return _as_plain_type(value, kind)


def _as_plain_type(value: Any, kind: Any) -> Any:
    if kind is type(None):
        return None if value is None else _NO
    if kind is bool:
        return value if isinstance(value, bool) else _NO
    if isinstance(value, bool):
        return _NO
    if kind is int:
        return value if isinstance(value, int) else _NO
    if kind is float:
        return float(value) if isinstance(value, int | float) else _NO
    if kind is str:
        return os.fspath(value) if isinstance(value, str | os.PathLike) else _NO
    return _NO


def _describe(kind: Any) -> str:
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return " or ".join(_describe(member) for member in typing.get_args(kind))
    if typing.get_origin(kind) is list:
        return f"a list of {_describe(typing.get_args(kind)[0]).removeprefix('a ')}s"
    return {type(None): "None", bool: "True or False", int: "a whole number",
            float: "a number", str: "a text"}.get(kind, str(kind))


def _example(kind: Any) -> Any:
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return _example(typing.get_args(kind)[0])
    if typing.get_origin(kind) is list:
        return [_example(typing.get_args(kind)[0])]
    return {type(None): None, bool: True, int: 2, float: 0.5, str: "..."}.get(kind)


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
