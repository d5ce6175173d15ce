"""microseg.notebook.parameters: a name a notebook does not declare is refused, with the closest."""

from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest

from microseg.errors import ConfigError
from microseg.notebook import passed_parameters, start_notebook
from microseg.notebook.chain import check_chain_parameters, list_notebooks, run_chain, run_notebook
from microseg.notebook.parameters import (
    NOTEBOOK_PARAMETERS,
    check_parameter_names,
    closest_parameters,
    given_parameters,
)
from test_notebook import parameters_cell

NOTEBOOKS = list_notebooks()

# A misspelling per notebook, as users make them, and the parameter it must point to.
MISSPELT = {
    "01_prepare_data": ("data_dri", "data_dir"),
    "02_train_from_scratch": ("epoch", "epochs"),
    "03_transfer_learning": ("pretrained_model", "pretrained_path"),
    "04_fine_tune": ("round", "rounds"),
    "05_evaluate": ("model_dirs", "model_names"),
    "06_normalization_diagnostics": ("halo_size", "halo"),
    "07_deploy": ("model_dir", "model_name"),
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_declared_parameters_are_the_parameters_cell(path):
    cell = parameters_cell(path)
    declared = NOTEBOOK_PARAMETERS[path.stem]
    assert list(declared) == list(cell), "same names in the same order"
    assert declared == cell, "same defaults"


def test_every_notebook_has_a_misspelling_case():
    assert set(MISSPELT) == {p.stem for p in NOTEBOOKS} == set(NOTEBOOK_PARAMETERS)


@pytest.mark.parametrize(("name", "notebook", "expected"), [
    ("object_diamter", "07_deploy", ["object_diameter"]),
    ("epoch", "02_train_from_scratch", ["epochs"]),
    ("model_dir", "07_deploy", ["model_name"]),
    ("model_dir", "05_evaluate", ["model_names"]),
    ("lr", "02_train_from_scratch", ["learning_rate"]),
    ("Quick", "01_prepare_data", ["quick"]),
    ("zzz", "01_prepare_data", []),
])
def test_the_closest_declared_names_are_suggested(name, notebook, expected):
    assert closest_parameters(name, NOTEBOOK_PARAMETERS[notebook])[:1] == expected


def test_a_refusal_names_every_unknown_name_its_suggestion_and_the_full_list():
    with pytest.raises(ConfigError) as caught:
        check_parameter_names("07_deploy", ["run_dir", "model_dir", "object_diamter", "zzz"])
    text = str(caught.value)
    assert "model_dir: did you mean model_name?" in text
    assert "object_diamter: did you mean object_diameter?" in text
    assert "zzz (no declared name is close)" in text
    assert "run_dir: " not in text
    assert ", ".join(NOTEBOOK_PARAMETERS["07_deploy"]) in text and "docs/parameters.md" in text


def test_colab_settings_are_not_refused_and_declared_names_pass():
    check_parameter_names("07_deploy", [*NOTEBOOK_PARAMETERS["07_deploy"], "use_google_drive"])


def test_a_parameter_of_another_notebook_is_refused_here():
    # ``epochs`` is a parameter of 02, not of 07: passing it to 07 would be ignored.
    with pytest.raises(ConfigError, match="07_deploy has no parameter epochs"):
        check_parameter_names("07_deploy", ["epochs"])


def test_given_parameters_are_the_passed_and_the_changed_ones():
    values = {**NOTEBOOK_PARAMETERS["02_train_from_scratch"], "epochs": 5, "norm": "batchrenorm"}
    assert given_parameters("02_train_from_scratch", values) == ["epochs"]
    assert given_parameters("02_train_from_scratch", values, passed=["norm", "quick"]) == [
        "norm", "epochs", "quick"]


def test_names_are_read_from_the_cells_run_just_before_in_a_kernel():
    history = ["",
               "import sys\nuse_google_drive = False\nif use_google_drive:\n    pass",
               'run_dir = "runs/demo"  # comment\nepochs = None\nquick = False',
               '# Parameters\nrun_dir = "runs/x"\nepoch = 50\n',
               "from microseg.notebook import start_notebook\nrun = start_notebook(...)"]
    set_here, injected = passed_parameters({"In": history})
    assert set_here == ["run_dir", "epochs", "quick", "epoch"]
    assert injected == ["run_dir", "epoch"]
    # JupyterLab, the start cell run again after other cells: nothing is read as a parameter.
    later = [*history, "summary = train(run_dir)", "n = 3", history[-1]]
    assert passed_parameters({"In": later}) == (["n"], [])
    later = [*history, "summary = train(run_dir)", history[-1]]
    assert passed_parameters({"In": later}) == ([], [])


def test_start_refuses_an_unknown_name_before_anything_is_written(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match="did you mean epochs"):
        start_notebook("02_train_from_scratch", {"run_dir": str(run_dir), "epoch": 50})
    assert not run_dir.exists()


def test_the_chain_refuses_a_name_no_notebook_declares_before_running(tmp_path):
    with pytest.raises(ConfigError, match="epoch: did you mean epochs"):
        run_chain(tmp_path / "run", quick=True, parameters={"epoch": 3})
    assert not (tmp_path / "run").exists()
    check_chain_parameters(NOTEBOOKS, {"epochs": 3, "model_name": "x", "run_dir": "r"})
    with pytest.raises(ConfigError, match="model_dir: did you mean model_name"):
        run_notebook(NOTEBOOKS[-1], tmp_path / "out.ipynb", {"model_dir": "x"})
    assert not (tmp_path / "out.ipynb").exists()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_with_a_misspelt_parameter_stops_with_the_suggestion(path, tmp_path):
    """What a user types: the papermill command line, with one name misspelt."""
    wrong, right = MISSPELT[path.stem]
    run_dir, output = tmp_path / "run", tmp_path / path.name
    result = subprocess.run(
        [sys.executable, "-m", "papermill", str(path), str(output), "-k", "python3",
         "--cwd", str(path.parent), "-p", "run_dir", str(run_dir), "-p", "quick", "True",
         "-p", wrong, "3"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"has no parameter {wrong}: did you mean {right}" in result.stdout + result.stderr
    assert not run_dir.exists(), "nothing is written into the run folder"
    executed = nbformat.read(output, as_version=4)
    ran = [c for c in executed.cells if c.cell_type == "code" and c.get("execution_count")]
    assert "start_notebook(" in ran[-1].source, "it stops at the first cell after the parameters"


def test_docs_list_every_notebook_parameter_as_the_notebooks_declare_them():
    from pathlib import Path

    from microseg.notebook.chain import parameters_markdown

    page = Path(__file__).resolve().parents[1] / "docs" / "parameters.md"
    assert page.read_text() == parameters_markdown() + "\n", (
        "run: .venv/bin/python -m microseg parameters --markdown > docs/parameters.md")


def test_the_command_line_refuses_a_misspelt_name_and_runs_nothing(tmp_path, capsys):
    from microseg.__main__ import main

    assert main(["run", "02", "07", "--run-dir", str(tmp_path / "run"), "-p", "epoch", "3"]) == 1
    assert "epoch: did you mean epochs?" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["run", "99", "--run-dir", str(tmp_path / "run")]) == 1
    assert "no notebook '99'" in capsys.readouterr().err


def test_the_command_line_lists_what_a_notebook_accepts(capsys):
    from microseg.__main__ import main

    assert main(["parameters", "07"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert names == list(NOTEBOOK_PARAMETERS["07_deploy"])


def test_every_typed_parameter_is_declared_by_a_notebook():
    from microseg.notebook import PARAMETER_TYPES

    declared = {name for names in NOTEBOOK_PARAMETERS.values() for name in names}
    assert set(PARAMETER_TYPES) == declared
