"""microseg.notebook: parameters checked at the boundary, nothing written before the checks."""

from __future__ import annotations

import ast
import errno
import json
import sys

import nbformat
import pytest

from microseg.errors import ConfigError, WriteError
from microseg.notebook import PARAMETER_TYPES, coerce_parameter, start_notebook
from microseg.notebook.chain import list_notebooks, run_notebook


def parameters_cell(path) -> dict:
    """The defaults of a notebook's parameters cell, read without running anything else."""
    nb = nbformat.read(path, as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    tree = ast.parse(cell.source)
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body}


@pytest.mark.parametrize("path", list_notebooks(), ids=lambda p: p.stem)
def test_every_notebook_parameter_has_a_declared_type_and_its_default_fits(path):
    defaults = parameters_cell(path)
    undeclared = sorted(set(defaults) - set(PARAMETER_TYPES))
    assert not undeclared, f"add {undeclared} to microseg.notebook.PARAMETER_TYPES"
    for name, value in defaults.items():
        assert coerce_parameter(name, value) == value, name


@pytest.mark.parametrize(("name", "text", "value"), [
    ("train_fraction", "0.7", 0.7), ("ndim", "2", 2), ("ndim", 3.0, 3), ("quick", "True", True),
    ("overwrite", "false", False), ("epochs", "None", None), ("epochs", "12", 12),
    ("learning_rate", "1e-3", 0.001), ("learning_rate", 1, 1.0), ("batch_size", "8", 8),
    ("batch_size", "auto", "auto"), ("tile_shape", "32, 64, 64", [32, 64, 64]),
    ("tile_shape", "[64, 64]", [64, 64]), ("halo", "16", 16), ("model_name", "2", "2"),
    ("model_names", "unet", ["unet"]), ("model_names", "unet,finetune", ["unet", "finetune"]),
    ("export_formats", "", []), ("iou_thresholds", "0.5, 0.75", [0.5, 0.75]),
    ("data_dir", "None", None), ("freeze", "encoder,bottleneck", "encoder,bottleneck"),
])
def test_numbers_given_as_text_are_read_as_numbers(name, text, value):
    converted = coerce_parameter(name, text)
    assert converted == value and type(converted) is type(value)


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("ndim", "two", "parameter ndim = 'two' (text): expected a whole number, e.g. ndim = 2"),
    ("ndim", True, "parameter ndim = True (bool): expected a whole number"),
    ("epochs", 2.5, "parameter epochs = 2.5 (float): expected a whole number or None"),
    ("quick", "maybe", "parameter quick = 'maybe' (text): expected True or False"),
    ("train_fraction", [0.7], "expected a number, e.g. train_fraction = 0.5"),
    ("iou_thresholds", "a, b", "expected a list of numbers"),
])
def test_a_value_of_the_wrong_type_names_parameter_value_and_type(name, value, expected):
    with pytest.raises(ConfigError) as caught:
        coerce_parameter(name, value)
    assert expected in str(caught.value)


def test_start_notebook_converts_text_in_the_notebook_and_the_record(tmp_path):
    run_dir = tmp_path / "run"
    namespace = {"run_dir": str(run_dir), "train_fraction": "0.7", "ndim": "2", "quick": "True",
                 "sys": sys, "use_google_drive": False}
    start_notebook("01_prepare_data", namespace)
    assert {k: v for k, v in namespace.items() if not k.startswith("_")} == {
        "run_dir": str(run_dir), "train_fraction": 0.7, "ndim": 2, "quick": True, "sys": sys,
        "use_google_drive": False}
    record = json.loads((run_dir / "notebooks" / "01_prepare_data.params.json").read_text())
    assert record["parameters"] == {"run_dir": str(run_dir), "train_fraction": 0.7, "ndim": 2,
                                    "quick": True}, "only the declared parameters are recorded"


def test_a_wrong_parameter_stops_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="parameter ndim = 'x'"):
        start_notebook("01_prepare_data", {"run_dir": str(tmp_path / "run"), "ndim": "x"})
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("notebook", "parameter"), [
    ("01_prepare_data", "data_dir"), ("01_prepare_data", "roi_dir"), ("07_deploy", "input_path")])
def test_a_run_folder_inside_an_input_folder_is_refused_before_anything_is_written(
        tmp_path, notebook, parameter):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    run_dir = data / "runs" / "exp"
    with pytest.raises(ConfigError, match=f"{run_dir} is inside {parameter} = "):
        start_notebook(notebook, {"run_dir": str(run_dir), parameter: str(data)})
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*")) == ["images"]


def test_a_read_only_run_folder_stops_with_the_folder_named(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(WriteError, match="read-only for this user .*choose a run_dir"):
        start_notebook("02_train_from_scratch", {"run_dir": str(tmp_path / "run"),
                                                 "quick": True})


@pytest.mark.slow
def test_prepare_notebook_reads_numbers_that_papermill_passes_as_text(tmp_path):
    """What ``papermill -r train_fraction 0.7 -r ndim 2`` does: every value arrives as text."""
    first = list_notebooks()[0]
    run_dir = tmp_path / "run"
    run_notebook(first, tmp_path / "out.ipynb",
                 {"run_dir": str(run_dir), "quick": "True", "ndim": "2", "seed": "0",
                  "train_fraction": "0.7", "val_fraction": "0.15", "test_fraction": "0.15"},
                 cwd=first.parent)
    summary = json.loads((run_dir / "data" / "summary.json").read_text())
    assert summary["ndim"] == 2 and summary["parameters"]["fractions"] == [0.7, 0.15, 0.15]
    assert (summary["n_train"], summary["n_val"], summary["n_test"]) == (6, 1, 1)


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("seed", "-1", "parameter seed = -1: -1 is out of range; expected from 0 to 4294967295"),
    ("ndim", 4, "parameter ndim = 4: 4 is out of range; expected from 2 to 3"),
    ("train_fraction", "1.5", "expected from 0 to 1"),
    ("epochs", 0, "parameter epochs = 0: 0 is out of range; expected at least 1"),
    ("learning_rate", "0", "expected above 0"),
    ("tile_shape", "64, 0", "parameter tile_shape = [64, 0]: 0 is out of range"),
    ("iou_thresholds", [0.5, 0.0], "expected above 0 and at most 1"),
])
def test_numbers_out_of_range_name_the_range(name, value, expected):
    with pytest.raises(ConfigError) as caught:
        coerce_parameter(name, value)
    assert expected in str(caught.value)


def test_a_run_folder_that_is_a_file_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "run").write_text("notes")
    with pytest.raises(ConfigError, match="run/ is a file|run is a file, not a folder"):
        start_notebook("01_prepare_data", {"run_dir": str(tmp_path / "run" / "sub")})
    assert (tmp_path / "run").read_text() == "notes"


def test_a_notebook_without_run_dir_is_told_to_set_one():
    with pytest.raises(ConfigError, match="sets no run_dir"):
        start_notebook("01_prepare_data", {"quick": True})


def test_recipes_get_the_parameters_they_take_and_forms_their_widgets():
    from microseg.notebook import arguments_for
    from microseg.notebook.forms import AnyOf, form_fields
    from microseg.recipes.evaluate import evaluate_models

    namespace = {"run_dir": "runs/a", "model_names": None, "tta": True, "quick": True,
                 "export_formats": ["onnx"], "object_diameter": "auto", "seed": 3, "sys": 1}
    assert arguments_for(namespace, evaluate_models) == {
        "run_dir": "runs/a", "model_names": None, "tta": True, "quick": True,
        "object_diameter": "auto"}
    fields = form_fields(namespace, seed=(0, 10))
    assert list(fields) == ["model_names", "tta", "quick", "export_formats", "object_diameter",
                            "seed"]
    assert fields["seed"] == (0, 10) and fields["tta"] is bool
    assert isinstance(fields["export_formats"], AnyOf) and "auto" in fields["object_diameter"]


@pytest.mark.parametrize(("stem", "recipes"), [
    ("02_train_from_scratch", ("microseg.recipes.train:prepare_training",
                               "microseg.recipes.train:train_model")),
    ("05_evaluate", ("microseg.recipes.evaluate:evaluate_models",)),
    ("07_deploy", ("microseg.recipes.deploy:DeployConfig",)),
])
def test_notebook_defaults_are_the_library_defaults(stem, recipes):
    """A notebook run with its defaults does what the library does with its defaults (what
    the benchmarks measure): every parameter the stage function also takes has the same
    default in both."""
    import importlib
    import inspect

    defaults = parameters_cell(next(p for p in list_notebooks() if p.stem == stem))
    compared = set()
    for recipe in recipes:
        module, name = recipe.split(":")
        function = getattr(importlib.import_module(module), name)
        for parameter in inspect.signature(function).parameters.values():
            if parameter.name in defaults and parameter.default is not inspect.Parameter.empty:
                library = parameter.default
                library = list(library) if isinstance(library, tuple) else library
                assert defaults[parameter.name] == library, (stem, parameter.name)
                compared.add(parameter.name)
    assert {"quick"} < compared
