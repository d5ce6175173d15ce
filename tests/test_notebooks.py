"""The notebooks as users get them: committed clean, and executed headless in order."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from microseg.notebook.chain import list_notebooks, run_notebook
from microseg.notebook.parameters import NOTEBOOK_PARAMETERS
from microseg.recipes import results
from summary_schema import run_schemas

SCHEMA = Path(__file__).parent / "data" / "summary_schema.json"
# Each summary file of a run and the result type it is the dict of.
SUMMARY_TYPES = {
    "data/summary.json": results.DataSummary,
    "target/data/summary.json": results.DataSummary,
    "models/unet/summary.json": results.TrainingSummary,
    "models/transfer/summary.json": results.AdaptationSummary,
    "models/finetune/summary.json": results.AdaptationSummary,
    "eval/summary.json": results.EvaluationSummary,
    "eval/*/summary.json": results.ModelEvaluation,
    "diagnostics/unet/summary.json": results.DiagnosisSummary,
    "predictions/unet/summary.json": results.DeploymentSummary,
}

NOTEBOOKS = list_notebooks()

# Where each notebook writes its summary.json, and the keys it must hold.
EXPECTED_SUMMARIES = {
    "01_prepare_data": ("data/summary.json",
                        {"n_images", "n_train", "n_val", "n_test", "ndim", "task", "axes",
                         "split_manifest"}),
    "02_train_from_scratch": ("models/unet/summary.json",
                              {"best_val_loss", "best_val_dice", "epochs_run", "stopped_early",
                               "fit_diagnosis", "model_dir", "device", "seconds",
                               "instance_head", "object_diameter", "scale_factor",
                               "max_minutes"}),
    "03_transfer_learning": ("models/transfer/summary.json",
                             {"zero_shot_dice", "adapted_dice", "scratch_dice",
                              "trainable_params", "total_params"}),
    "04_fine_tune": ("models/finetune/summary.json",
                     {"zero_shot_dice", "adapted_dice", "scratch_dice", "trainable_params",
                      "total_params", "rounds"}),
    "05_evaluate": ("eval/summary.json", set()),
    "06_normalization_diagnostics": ("diagnostics/*/summary.json",
                                     {"trf", "recommended_halo", "tile_mismatch", "max_abs_diff",
                                      "train_eval_disparity", "tile_sweep", "norm_comparison"}),
    "07_deploy": ("predictions/*/summary.json",
                  {"n_inputs", "outputs", "voxels_per_second", "peak_memory_mb", "exports",
                   "tta"}),
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean_and_parametrised(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit without outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert "run_dir" in tagged[0].source and "quick" in tagged[0].source
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "start_notebook(" in "".join(c.source for c in code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_the_current_colab_cells(path, tmp_path):
    from microseg.notebook.colab import COLAB_CELL, refresh_colab_cells

    nb = nbformat.read(path, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code.source == COLAB_CELL
    copy = tmp_path / path.name
    copy.write_text(path.read_text())
    assert refresh_colab_cells(copy) is False, "run refresh_colab_cells on the notebook"


@pytest.mark.slow
def test_whole_chain_runs_headless_in_quick_mode(quick_chain):
    run_dir, results = quick_chain
    assert [r.name for r in results] == [p.stem for p in NOTEBOOKS]
    for r in results:
        assert r.output.is_file()
        params = json.loads((run_dir / "notebooks" / f"{r.name}.params.json").read_text())
        assert params["parameters"]["quick"] is True
    assert (run_dir / "environment.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_writes_its_summary(quick_chain, path):
    run_dir, _ = quick_chain
    pattern, keys = EXPECTED_SUMMARIES[path.stem]
    found = sorted(run_dir.glob(pattern))
    assert found, f"{path.name} wrote no {pattern}"
    summary = json.loads(found[0].read_text())
    assert keys <= set(summary), f"missing keys {sorted(keys - set(summary))}"
    ran_with = summary["notebook_parameters"]
    assert ran_with["notebook"] == path.stem
    assert list(ran_with["values"]) == list(NOTEBOOK_PARAMETERS[path.stem]), "every declared one"
    assert ran_with["values"]["quick"] is True and ran_with["values"]["run_dir"] == str(run_dir)
    # The chain passes run_dir and quick to every notebook (and nothing else here).
    assert ran_with["given"] == [k for k in NOTEBOOK_PARAMETERS[path.stem]
                                 if k in ("run_dir", "quick")]
    record = json.loads((run_dir / "notebooks" / f"{path.stem}.params.json").read_text())
    assert record["given"] == ran_with["given"] and record["finished"] >= record["started"]


@pytest.mark.slow
def test_summaries_keep_the_keys_they_had_before_the_typed_results(quick_chain):
    """Every summary.json of the chain against the structure recorded before the recipes
    returned typed results (tests/summary_schema.py): no key lost, added or of another kind."""
    run_dir, _ = quick_chain
    expected = json.loads(SCHEMA.read_text())
    found = run_schemas(run_dir)
    assert sorted(found) == sorted(expected), "the chain writes other summary files"
    for path, keys in expected.items():
        differences = {k: (keys.get(k), found[path].get(k))
                       for k in set(keys) | set(found[path]) if keys.get(k) != found[path].get(k)}
        assert not differences, f"{path}: key → (recorded, now): {differences}"


@pytest.mark.slow
def test_each_summary_is_a_typed_result_with_a_field_for_every_key(quick_chain):
    run_dir, _ = quick_chain
    written_by_the_notebook = {"notebook_parameters", "figures"}
    for pattern, cls in SUMMARY_TYPES.items():
        paths = [p for p in run_dir.glob(pattern) if pattern != "eval/*/summary.json"
                 or p.parent.name != "eval"]
        assert paths, pattern
        for path in paths:
            keys = set(json.loads(path.read_text())) - written_by_the_notebook
            loose = keys - set(cls.keys_of())
            assert not loose, f"{path.relative_to(run_dir)}: no field of {cls.__name__} for {loose}"


@pytest.mark.slow
def test_chain_ends_with_the_run_report(quick_chain):
    run_dir, results = quick_chain
    page = (run_dir / "index.html").read_text()
    for r in results:
        assert f">{r.name}<" in page
    assert "data/summary.json" in page and "class='model-row'" in page


@pytest.mark.slow
def test_prepare_notebook_runs_with_no_parameters(tmp_path):
    """The default (non-quick) data preparation: the built-in synthetic 2D data set."""
    first = NOTEBOOKS[0]
    assert first.stem == "01_prepare_data"
    run_dir = tmp_path / "run"
    run_notebook(first, tmp_path / "out.ipynb", {"run_dir": str(run_dir)}, cwd=first.parent)
    summary = json.loads((run_dir / "data" / "summary.json").read_text())
    assert summary["n_images"] == summary["n_train"] + summary["n_val"] + summary["n_test"]
    assert summary["ndim"] == 2 and summary["task"] == "instance"


@pytest.mark.slow
def test_every_notebook_runs_with_a_unetr(tmp_path):
    """The transformer architecture through the whole chain (quick mode, 2D): notebook 02
    trains a UNETR, which transfer learning, fine-tuning, evaluation, the diagnostics and the
    deployment then load and predict in windows of its fixed input shape."""
    from microseg.models import TrainedModel
    from microseg.notebook.chain import run_chain

    run_dir = tmp_path / "run"
    results = run_chain(run_dir, quick=True, parameters={"architecture": "unetr"},
                        html_export=False, log=lambda _: None)
    assert [r.name for r in results] == [p.stem for p in NOTEBOOKS]
    for name in ("unet", "transfer", "finetune"):
        model = TrainedModel.load(run_dir / "models" / name)
        assert model.config.architecture == "unetr" and model.config.img_size, name
    for path in NOTEBOOKS:
        pattern, keys = EXPECTED_SUMMARIES[path.stem]
        found = sorted(run_dir.glob(pattern))
        assert found, f"{path.name} wrote no {pattern}"
        assert keys <= set(json.loads(found[0].read_text())), path.name
    deployed = json.loads(next(run_dir.glob("predictions/*/summary.json")).read_text())
    assert deployed["n_inputs"] >= 1 and not deployed.get("errors")
