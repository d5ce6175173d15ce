"""The run's front page: what is gathered from a run folder, and the page made of it."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from urllib.parse import unquote

import numpy as np
import pytest

from fake_runs import (
    EPOCHS,
    EVALUATIONS,
    TARGET_EVALUATION,
    THRESHOLDS,
    ZARR_CHUNKS,
    make_run,
    write_json,
    write_notebook,
)
from microseg.reports.front_page import models_chart
from microseg.reports.run_report import (
    gather_run_report,
    notebook_problems,
    render_run_report,
    score_50_95,
    seamless_verdict,
    write_run_report,
)

HERE = "test images of this run"


@pytest.fixture
def full_run(tmp_path):
    return make_run(tmp_path / "exp")


class _Links(HTMLParser):
    """Every href and src of a page, and the rows of the models table."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.model_rows: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("href", "src"):
            if attrs.get(key):
                self.targets.append(attrs[key])
        if tag == "tr" and "model-row" in (attrs.get("class") or ""):
            self.model_rows.append(attrs["data-model"])


def _parse(page: str) -> _Links:
    links = _Links()
    links.feed(page)
    return links


def _row(report, model, on=HERE):
    return next(r for r in report.models if r.model == model and r.evaluated_on == on)


def test_one_row_per_trained_model_and_set_of_images(full_run):
    report = gather_run_report(full_run)
    pairs = sorted((r.model, r.evaluated_on) for r in report.models)
    expected = sorted([(m, HERE) for m in EVALUATIONS] + [("finetune", "test images of target")])
    assert pairs == expected
    for model, (dice, f1, pq, _) in EVALUATIONS.items():
        row = _row(report, model)
        assert (row.object_dice, row.f1, row.panoptic_quality, row.n_images) == (dice, f1, pq, 3)
        assert row.report == f"eval/{model}/report.html"
    target = _row(report, "finetune", "test images of target")
    assert (target.object_dice, target.f1, target.panoptic_quality) == TARGET_EVALUATION[1:]
    assert target.score_50_95 is None and target.report == "eval/finetune-2/report.html"


def test_how_each_model_was_trained_in_the_order_of_the_chain(full_run):
    models = gather_run_report(full_run).models
    assert [r.model for r in models if r.evaluated_on == HERE] == [
        "unet", "transfer", "transfer_scratch", "finetune", "finetune_scratch", "finetune_round1"]
    kinds = {r.model: r.kind for r in models}
    assert kinds == {"unet": "from scratch", "transfer": "transfer learning",
                     "transfer_scratch": "from scratch, same budget as transfer",
                     "finetune": "fine-tuning",
                     "finetune_scratch": "from scratch, same budget as finetune",
                     "finetune_round1": "correction round 1 of finetune"}


def test_a_model_without_summary_is_not_guessed(tmp_path):
    root = make_run(tmp_path / "exp", complete=False)
    (root / "models" / "half").mkdir()
    (root / "models" / "half" / "best.pt").write_bytes(b"weights")
    kinds = {r.model: r.kind for r in gather_run_report(root).models}
    assert kinds == {"unet": "from scratch", "half": "not recorded (no summary.json yet)"}


def test_training_time_epochs_and_fit_come_from_the_history(full_run):
    report = gather_run_report(full_run)
    for model, (epochs, seconds) in EPOCHS.items():
        row = _row(report, model)
        assert row.epochs == epochs
        assert row.train_seconds == pytest.approx(epochs * seconds)
        assert row.fit == "too short to tell"  # fewer than 5 epochs


def test_best_value_marked_per_column_among_the_same_images(full_run):
    report = gather_run_report(full_run)
    here = [r for r in report.models if r.evaluated_on == HERE]
    for key, index in (("object_dice", 0), ("f1", 1), ("panoptic_quality", 2)):
        best = max(EVALUATIONS, key=lambda m, i=index: EVALUATIONS[m][i])
        assert [r.model for r in here if key in r.best] == [best]
    scores = {m: np.mean(v[3][THRESHOLDS.index(0.5):]) for m, v in EVALUATIONS.items()}
    assert [r.model for r in here if "score_50_95" in r.best] == [max(scores, key=scores.get)]
    fastest = min(EPOCHS, key=lambda m: EPOCHS[m][0] * EPOCHS[m][1])
    assert [r.model for r in here if "train_seconds" in r.best] == [fastest]
    target = _row(report, "finetune", "test images of target")
    assert target.best == frozenset(), "a set of images with one model has nothing to compare"


def test_equal_values_are_not_marked(tmp_path):
    root = make_run(tmp_path / "exp")
    for model in EVALUATIONS:
        path = root / "eval" / model / "summary.json"
        summary = json.loads(path.read_text())
        summary["object_dice"] = 0.5
        path.write_text(json.dumps(summary))
    assert all("object_dice" not in r.best for r in gather_run_report(root).models)


def test_score_50_95_is_the_mean_over_thresholds_of_the_per_image_mean():
    ap = np.random.default_rng(3).random(18)
    summary = {"instance": {"thresholds": THRESHOLDS, "mean_over_images": {"ap": list(ap)}}}
    expected = np.mean([a for t, a in zip(THRESHOLDS, ap, strict=True) if t >= 0.5 - 1e-9])
    assert score_50_95(summary) == pytest.approx(expected, abs=1e-12)
    few = {"instance": {"thresholds": [0.5, 0.75], "mean_over_images": {"ap": [0.5, 0.4]}}}
    assert score_50_95(few) is None
    assert score_50_95({"instance": None}) is None
    assert score_50_95({**summary, "dsb_score": 0.25}) == 0.25  # written by the evaluation


def test_partial_run_only_data_and_one_model(tmp_path):
    root = make_run(tmp_path / "exp", ndim=3, complete=False)
    report = gather_run_report(root)
    assert [(r.model, r.evaluated_on, r.object_dice) for r in report.models] == [
        ("unet", None, None)]
    assert report.models[0].epochs == 3
    assert not report.diagnoses and not report.deployments
    assert [t.stage[:2] for t in report.thumbnails] == ["01", "02"]
    assert report.header.data.startswith("8 3D volumes, instance task")
    assert report.header.total_seconds == pytest.approx(30.0)
    page = render_run_report(report)
    for number in ("06", "07"):
        assert f"Not run yet: notebook {number}" in page
    assert "No evaluation yet" in page and _parse(page).model_rows == ["unet"]


def test_header_of_a_complete_run(full_run):
    header = gather_run_report(full_run).header
    assert header.experiment == "exp" and header.source == "built-in synthetic data"
    assert header.data == "8 2D images, instance task, split 6/1/1 (train/val/test)"
    assert (header.version, header.device) == ("0.1.0", "cpu")
    assert header.total_seconds == pytest.approx(10 + 20 + 30 + 40 + 50 + 60 + 70)
    assert header.started == "2026-12-03T10:01:00+00:00"


def test_every_link_and_image_of_the_page_exists(full_run):
    page = write_run_report(full_run).read_text()
    links = _parse(page)
    files = [t for t in links.targets if not t.startswith(("data:", "#"))]
    assert len(files) > 20
    missing = [t for t in files if not (full_run / unquote(t)).exists()]
    assert not missing
    assert "http://" not in page and "https://" not in page
    assert sorted(links.model_rows) == sorted(list(EVALUATIONS) + ["finetune"])


def test_links_still_resolve_after_the_run_folder_moved(tmp_path):
    moved = tmp_path / "elsewhere" / "exp"
    shutil.move(make_run(tmp_path / "exp"), moved)
    report = gather_run_report(moved)
    export = report.deployments[0].exports[0]
    assert export.path == "predictions/unet/export/model.torchscript.pt"
    assert report.deployments[0].outputs[0][0] == "predictions/unet/prediction/labels.zarr"


def test_deployment_outputs_sizes_and_export_checks(full_run):
    (deployment,) = gather_run_report(full_run).deployments
    assert deployment.outputs == [("predictions/unet/prediction/labels.zarr", None,
                                   sum(ZARR_CHUNKS))]
    assert (deployment.voxels_per_second, deployment.peak_memory_mb) == (2.5e5, 512.0)
    checks = {e.format: e for e in deployment.exports}
    assert checks["torchscript"].passed and checks["torchscript"].size_bytes == 1234
    assert not checks["onnx"].passed and "onnx is not installed" in checks["onnx"].note
    assert deployment.inputs == [("predictions/unet/input.zarr", 600)]


def test_diagnosis_of_the_deployed_model(full_run):
    (diagnosis,) = gather_run_report(full_run).diagnoses
    assert diagnosis.deployed and diagnosis.seamless is True
    assert diagnosis.halo == [16, 16] and diagnosis.receptive_field == [27, 27]
    assert diagnosis.verdict.startswith("Seamless") and "16 × 16 pixels" in diagnosis.verdict
    assert diagnosis.disparity_verdict.startswith("No train/eval disparity")
    assert [r["configuration"] for r in diagnosis.comparison] == ["batch/global",
                                                                  "instance/global"]
    assert diagnosis.comparison[0]["Dice (eval, object classes)"] == pytest.approx(0.4)
    assert diagnosis.comparison[1]["seams"] == "yes"
    assert diagnosis.comparison_figure == "diagnostics/unet/figures/norm_comparison.png"
    assert diagnosis.figures == ["diagnostics/unet/figures/tile_mismatch.png"]


@pytest.mark.parametrize(("changes", "seamless", "words"), [
    ({}, True, "Seamless"),
    ({"trf": {"whole_input": True}}, False, "whole tile"),
    ({"tile_mismatch": {"n_pairs": 2, "any": True, "mean": 0.05}}, False, "disagree"),
    ({"tile_mismatch": {"n_pairs": 0, "note": "images too small"}}, None, "images too small"),
    ({"halo_sufficient": False, "halo": 4}, True, "smaller than the recommended"),
])
def test_seamless_verdict(changes, seamless, words):
    summary = {"trf": {"whole_input": False}, "halo": 16, "recommended_halo": [16, 16],
               "halo_sufficient": True, "max_abs_diff": 1e-8,
               "tile_mismatch": {"n_pairs": 3, "any": False, "mean": 0.0}, **changes}
    found, text = seamless_verdict(summary)
    assert found is seamless and words in text


def test_errors_and_warnings_from_notebooks_and_summaries(full_run):
    error = {"output_type": "error", "ename": "ValueError", "evalue": "bad patch size",
             "traceback": []}
    write_notebook("05_evaluate", full_run, [error], 3.0, failed=True)
    report = gather_run_report(full_run)
    found = {(p.level, p.source, p.message) for p in report.problems}
    assert ("error", "05_evaluate, cell 1", "ValueError: bad patch size") in found
    assert ("warning", "02_train_from_scratch, cell 1",
            "/x/y.py:3: UserWarning: the learning rate is high") in found
    assert ("warning", "07_deploy, cell 1",
            "WARNING microseg.inference: no tuned post-processing") in found
    assert ("warning", "models/unet/summary.json", "few objects in image 3") in found
    assert any(p.source.endswith("onnx export") for p in report.problems)
    assert len(report.problems) == 5
    status = {n.name: n.status for n in report.notebooks}
    assert status["05_evaluate"] == "failed" and status["01_prepare_data"] == "done"
    page = render_run_report(report)
    assert "1 error(s), 4 warning(s)" in page and "bad patch size" in page


def test_notebook_problems_keep_each_message_once():
    line = {"output_type": "stream", "name": "stdout", "text": ["WARNING a: b\n", "fine\n"]}
    notebook = {"cells": [{"execution_count": 4, "outputs": [line, line]}]}
    assert [(p.source, p.message) for p in notebook_problems(notebook, "02_x")] == [
        ("02_x, cell 4", "WARNING a: b")]


def test_ordinary_output_is_not_a_problem():
    text = ("mean squared error: 0.3\nwarnings: none\nError: 0.1 (a column name)\n"
            "loss 0.2 -- RuntimeWarning avoided\n")
    notebook = {"cells": [{"outputs": [{"output_type": "stream", "name": "stdout",
                                        "text": text}]}]}
    assert notebook_problems(notebook, "02_x") == []


def test_unreadable_summary_is_reported_not_raised(full_run):
    (full_run / "eval" / "unet" / "summary.json").write_text("{not json")
    report = gather_run_report(full_run)
    assert _row(report, "unet", None).object_dice is None
    assert any(p.source == "eval/unet/summary.json" and "could not be read" in p.message
               for p in report.problems)


def test_models_chart_has_a_line_per_evaluated_row(full_run):
    import matplotlib.pyplot as plt

    report = gather_run_report(full_run)
    figure = models_chart(report.models)
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert len(labels) == len(report.models) == 7
    assert labels[0].startswith(report.models[0].model)
    plt.close(figure)
    assert models_chart([r for r in report.models if r.object_dice is None]) is None


def test_files_are_listed_folded(full_run):
    page = render_run_report(gather_run_report(full_run))
    assert page.count("<details>") == 4
    assert "eval/unet/summary.json" in page and "notebooks/07_deploy.ipynb" in page


def test_a_missing_run_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing"):
        gather_run_report(tmp_path / "nothing")


def test_chain_writes_the_report_also_when_a_notebook_fails(tmp_path):
    import nbformat

    from microseg.errors import MicrosegError
    from microseg.notebook.chain import run_chain

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    params = nbformat.v4.new_code_cell("run_dir = None\nquick = False")
    params.metadata["tags"] = ["parameters"]
    notebook.cells = [params, nbformat.v4.new_code_cell("raise ValueError('no images found')")]
    path = tmp_path / "01_broken.ipynb"
    nbformat.write(notebook, path)
    run_dir = tmp_path / "run"
    with pytest.raises(MicrosegError, match="no images found"):
        run_chain(run_dir, notebooks=[path], html_export=False, log=lambda _: None)
    page = (run_dir / "index.html").read_text()
    assert "ValueError: no images found" in page and "failed" in page


def test_the_parameters_given_to_each_notebook_and_a_finished_notebook_is_done(tmp_path):
    """A notebook that wrote its summary (finish_notebook) is done although papermill has not
    saved its end time yet; the page lists what was given, not the defaults."""
    run_dir = tmp_path / "run"
    write_notebook("02_train_from_scratch", run_dir, [], 5.0)
    executed = json.loads((run_dir / "notebooks" / "02_train_from_scratch.ipynb").read_text())
    executed["metadata"]["papermill"]["end_time"] = None
    write_json(run_dir / "notebooks" / "02_train_from_scratch.ipynb", executed)
    write_json(run_dir / "notebooks" / "02_train_from_scratch.params.json", {
        "notebook": "02_train_from_scratch", "started": "2026-12-03T10:00:00+00:00",
        "parameters": {"run_dir": str(run_dir), "epochs": 3, "norm": "batch", "quick": False},
        "given": ["run_dir", "epochs", "norm"]})
    (entry,) = gather_run_report(run_dir).notebooks
    assert entry.status == "running" and entry.given == {"epochs": 3, "norm": "batch"}
    record = json.loads((run_dir / "notebooks" / "02_train_from_scratch.params.json").read_text())
    write_json(run_dir / "notebooks" / "02_train_from_scratch.params.json",
               {**record, "finished": "2026-12-03T10:05:00+00:00"})
    (entry,) = gather_run_report(run_dir).notebooks
    assert entry.status == "done"
    page = write_run_report(run_dir).read_text()
    assert "epochs = 3" in page and "norm = &#x27;batch&#x27;" in page
    assert "run_dir = " not in page and "quick = " not in page


def test_a_notebook_run_in_jupyterlab_is_done_once_it_finished(tmp_path):
    run_dir = tmp_path / "run"
    record = {"notebook": "01_prepare_data", "started": "2026-12-03T10:00:00+00:00",
              "parameters": {"run_dir": str(run_dir)}, "given": []}
    write_json(run_dir / "notebooks" / "01_prepare_data.params.json", record)
    assert gather_run_report(run_dir).notebooks[0].status == "started in JupyterLab"
    write_json(run_dir / "notebooks" / "01_prepare_data.params.json",
               {**record, "finished": "2026-12-03T10:01:00+00:00"})
    (entry,) = gather_run_report(run_dir).notebooks
    assert entry.status == "done in JupyterLab" and entry.given == {}


def test_one_verdict_line_per_model_and_evaluation(full_run):
    from microseg.reports.run_report import model_verdicts

    report = gather_run_report(full_run)
    lines = model_verdicts(report)
    assert len(lines) == len(report.models)
    for row, line in zip(report.models, lines, strict=True):
        assert line.startswith(f"{row.model} ({row.kind} on built-in synthetic data)")
        if row.f1 is not None:
            assert f"F1@0.5 {row.f1:.3f} on {row.evaluated_on} ({row.n_images} image" in line


@pytest.mark.slow
def test_the_front_page_between_two_notebooks_of_a_chain(tmp_path):
    """A chain stopped after notebook 01: the page says 01 is done (not running) and what
    comes next."""
    from microseg.notebook.chain import list_notebooks, run_chain

    class Stop(Exception):
        pass

    def stop_after_the_first(line):
        if line.strip().startswith("done in"):
            raise Stop

    run_dir = tmp_path / "run"
    first, second = list_notebooks()[:2]
    with pytest.raises(Stop):
        run_chain(run_dir, quick=True, notebooks=[first, second], html_export=False,
                  log=stop_after_the_first)
    status = {n.name: n.status for n in gather_run_report(run_dir).notebooks}
    assert status == {first.stem: "done", second.stem: "next"}
    page = (run_dir / "index.html").read_text()
    assert f">{second.stem}<" in page and ">next<" in page
    assert "http-equiv='refresh'" in page, "an open page reloads while work is planned"


def test_a_running_notebook_shows_the_cell_it_runs(tmp_path):
    run_dir = tmp_path / "run"
    write_notebook("02_train_from_scratch", run_dir, [_stream_output()] * 3, 5.0)
    path = run_dir / "notebooks" / "02_train_from_scratch.ipynb"
    executed = json.loads(path.read_text())
    executed["metadata"]["papermill"]["end_time"] = None
    for cell, state in zip(executed["cells"], ("completed", "running", "pending"), strict=True):
        cell["metadata"]["papermill"] = {"status": state}
    write_json(path, executed)
    (entry,) = gather_run_report(run_dir).notebooks
    assert entry.status == "running (cell 2 of 3)"
    assert "http-equiv='refresh'" in write_run_report(run_dir).read_text()


def _stream_output():
    return {"output_type": "stream", "name": "stdout", "text": "x\n"}
