"""Which parameters each notebook declares, and refusing a name it does not declare.

papermill passes any ``-p name value`` into a notebook, declared or not, and only logs "Passed
unknown parameter"; a misspelt name (``model_dir`` for ``model_name``, ``epoch`` for
``epochs``) would leave the real parameter at its default and the run would go on with a model
or a schedule nobody asked for. Every way into a notebook checks the names it was given against
:data:`NOTEBOOK_PARAMETERS` first — :func:`microseg.notebook.start_notebook` (papermill's
injected cell or an edited parameters cell), the chain runner (``make demo``,
``python -m microseg run``) — and stops with :func:`check_parameter_names`'s error, which names
the closest declared parameters.

:data:`NOTEBOOK_PARAMETERS` holds each notebook's parameters with the defaults of its cell
tagged ``parameters``; a test keeps the two equal, and ``docs/parameters.md`` lists them with
their explanations.

>>> check_parameter_names("07_deploy", ["run_dir", "model_name"])
>>> check_parameter_names("07_deploy", ["model_dir"])
Traceback (most recent call last):
...
microseg.errors.ConfigError: notebook 07_deploy has no parameter model_dir: did you mean model_name? ...
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

from microseg.errors import ConfigError

__all__ = ["ALIASES", "NOTEBOOK_PARAMETERS", "NOTEBOOK_SETTINGS", "check_parameter_names",
           "closest_parameters", "declared_defaults", "given_parameters", "unknown_names_error"]

NOTEBOOK_PARAMETERS: dict[str, dict[str, Any]] = {
    "01_prepare_data": {
        "data_dir": None, "run_dir": "runs/demo", "ndim": 2, "task": "instance", "n_classes": None,
        "axes": None, "train_fraction": 0.7, "val_fraction": 0.15, "test_fraction": 0.15,
        "seed": 0, "roi_dir": None, "annotation_dir": None, "annotation_format": "auto",
        "pixel_size": None, "allow_empty_labels": False, "make_initial_labels": False,
        "overwrite": False, "quick": False,
    },
    "02_train_from_scratch": {
        "run_dir": "runs/demo", "model_name": "unet", "architecture": "unet",
        "norm": "batchrenorm", "patch_size": None, "batch_size": None, "epochs": None,
        "learning_rate": None, "patience": None, "grad_accumulation": 1, "max_minutes": None,
        "instance_head": "auto", "object_diameter": "auto", "seed": 0, "device": "auto",
        "run_search": False, "search_trials": 20, "overwrite": False, "resume": False,
        "quick": False,
    },
    "03_transfer_learning": {
        "run_dir": "runs/demo", "pretrained_path": None, "allow_torchscript": False,
        "target_data_dir": None, "n_target_train": 4, "n_target_val": 2, "freeze": "encoder",
        "keep_last": None, "unfreeze_every": None, "learning_rate": None, "epochs": None,
        "model_name": "transfer", "seed": 0, "device": "auto", "overwrite": False, "quick": False,
    },
    "04_fine_tune": {
        "run_dir": "runs/demo", "pretrained_path": None, "allow_torchscript": False,
        "target_data_dir": None, "n_target_train": 4, "n_target_val": 2, "learning_rate": None,
        "encoder_learning_rate": None, "epochs": None, "rounds": 1, "images_per_round": 2,
        "unlabelled_dir": None, "simulate_corrections": True, "model_name": "finetune", "seed": 0,
        "device": "auto", "overwrite": False, "quick": False,
    },
    "05_evaluate": {
        "run_dir": "runs/demo", "model_names": None, "data_dir": None, "subset": "test",
        "split_dir": None,
        "iou_thresholds": [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95],
        "tile_shape": None, "object_diameter": "auto", "tta": True, "device": "auto",
        "overwrite": False, "quick": False,
    },
    "06_normalization_diagnostics": {
        "run_dir": "runs/demo", "model_name": None, "tile_shape": None, "halo": None,
        "compare_norms": None, "comparison_data": "synthetic", "device": "auto",
        "overwrite": False, "quick": False,
    },
    "07_deploy": {
        "run_dir": "runs/demo", "model_name": None, "input_path": None, "output_path": None,
        "tile_shape": None, "halo": None, "object_diameter": "auto", "tta": True,
        "scheduler": None, "export_formats": ["torchscript", "onnx", "bioimageio"],
        "label_export_formats": ["roiset", "geojson", "ome-zarr"], "overwrite": False,
        "quick": False,
    },
}
"""Notebook stem → its parameters (name → default), in the order of its parameters cell."""

NOTEBOOK_SETTINGS = ("use_google_drive",)
"""Names that the Colab cells above the parameters cell set; not parameters, not refused."""

ALIASES: dict[str, str] = {
    "model_dir": "model_name", "model": "model_name", "model_path": "model_name",
    "model_dirs": "model_names", "models": "model_names", "pretrained": "pretrained_path",
    "pretrained_model": "pretrained_path", "pretrained_dir": "pretrained_path",
    "data": "data_dir", "data_path": "data_dir", "images": "data_dir", "input_dir": "input_path",
    "input": "input_path", "output_dir": "output_path", "output": "output_path",
    "run": "run_dir", "run_path": "run_dir", "diameter": "object_diameter",
    "lr": "learning_rate", "epoch": "epochs", "n_epochs": "epochs", "tile_size": "tile_shape",
    "tile": "tile_shape", "patch_shape": "patch_size", "head": "instance_head",
    "normalization": "norm", "minutes": "max_minutes", "gpu": "device",
}
"""Names users try for a parameter of another name (the suggestion when it is declared)."""


def declared_defaults(notebook: str) -> dict[str, Any]:
    """The parameters notebook ``notebook`` (a stem, e.g. ``"07_deploy"``) declares, with their
    defaults.

    Raises
    ------
    ConfigError
        An unknown notebook, naming the known ones.
    """
    if notebook not in NOTEBOOK_PARAMETERS:
        raise ConfigError(f"no notebook named {notebook!r}; expected one of "
                          f"{', '.join(NOTEBOOK_PARAMETERS)}")
    return NOTEBOOK_PARAMETERS[notebook]


def closest_parameters(name: str, declared: Iterable[str], n: int = 3) -> list[str]:
    """The declared names closest to ``name``, best first: its usual alias (:data:`ALIASES`)
    when declared, then the most similar spellings.

    >>> closest_parameters("object_diamter", NOTEBOOK_PARAMETERS["07_deploy"])
    ['object_diameter']
    >>> closest_parameters("model_dir", NOTEBOOK_PARAMETERS["05_evaluate"])
    ['model_names']
    """
    declared = list(declared)
    found = [ALIASES[name]] if ALIASES.get(name) in declared else []
    found += difflib.get_close_matches(name, declared, n=n, cutoff=0.6)
    return list(dict.fromkeys(found))[:n]


def check_parameter_names(notebook: str, names: Iterable[str]) -> None:
    """Stop when ``names`` (given to notebook ``notebook``) holds a name it does not declare.

    Raises
    ------
    ConfigError
        Naming every unknown name, the closest declared ones ("did you mean ...?") and where
        the full list is (the notebook's parameters cell, ``docs/parameters.md``).
    """
    declared = declared_defaults(notebook)
    unknown = [n for n in dict.fromkeys(names) if n not in declared and n not in NOTEBOOK_SETTINGS]
    if unknown:
        raise unknown_names_error(
            f"notebook {notebook} has no", unknown, declared,
            f"Its parameters are {', '.join(declared)} (each explained in the notebook's "
            f"parameters cell and in docs/parameters.md).")


def unknown_names_error(subject: str, unknown: Sequence[str], declared: Iterable[str],
                        listing: str) -> ConfigError:
    """The error for parameter names nothing declares: ``subject`` ("notebook 07_deploy has
    no"), each unknown name with the closest declared ones, that nothing was run, ``listing``.

    >>> print(unknown_names_error("notebook 07_deploy has no", ["epoch"], ["epochs"], "..."))
    notebook 07_deploy has no parameter epoch: did you mean epochs? Nothing was run. ...
    """
    declared = list(declared)
    parts = []
    for name in unknown:
        close = closest_parameters(name, declared)
        parts.append(f"{name}: did you mean {' or '.join(close)}?" if close
                     else f"{name} (no declared name is close).")
    what = "parameter" if len(unknown) == 1 else "parameters"
    return ConfigError(f"{subject} {what} {' '.join(parts)} Nothing was run. {listing}")


def given_parameters(notebook: str, values: dict[str, Any],
                     passed: Iterable[str] = ()) -> list[str]:
    """The parameters of ``values`` that were given rather than left at their defaults: those
    ``passed`` explicitly (e.g. by papermill, even with the default value) and those whose value
    differs from the notebook's default (an edited parameters cell, the form).

    >>> given_parameters("07_deploy", {"run_dir": "runs/x", "tta": True}, passed=["tta"])
    ['run_dir', 'tta']
    """
    defaults, passed = declared_defaults(notebook), set(passed)
    return [name for name, value in values.items()
            if name in passed or (name in defaults and value != defaults[name])]
