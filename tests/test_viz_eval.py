"""Evaluation figures: the right panels, and error colours that match the error codes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from microseg.metrics.instance import match_instances
from microseg.reports import evaluation_figures as viz_eval


@pytest.fixture(autouse=True)
def _close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def instance_result(ndim: int = 2):
    shape = (5, 12, 12) if ndim == 3 else (12, 12)
    label = np.zeros(shape, np.int32)
    label[..., 1:5, 1:5] = 1
    label[..., 7:11, 7:11] = 2
    instances = np.zeros_like(label)
    instances[..., 1:5, 1:5] = 4
    instances[..., 0:2, 8:12] = 9
    if ndim == 3:
        label[0] = 0
    matching = match_instances(instances, label, (0.5,))
    image = np.random.default_rng(0).random((1, *shape)).astype(np.float32)
    return SimpleNamespace(stem="img", image=image, label=label, target=(label > 0).astype(int),
                           prediction=(instances > 0).astype(int), instances=instances,
                           matching=matching, caption="f1@0.5 = 0.500")


@pytest.mark.parametrize("ndim", [2, 3])
def test_overlay_error_panel_colours_match_object_outcomes(ndim):
    result = instance_result(ndim)
    figure = viz_eval.plot_overlays([result], "instance", threshold=0.5)
    errors = figure.axes[3].images[0].get_array()
    at = (2,) if ndim == 3 else ()
    matched, false_positive, missed = (to_rgb(c) for c in viz_eval.ERROR_COLOURS)
    assert np.allclose(errors[2, 2], matched)
    assert np.allclose(errors[0, 10], false_positive)
    assert np.allclose(errors[9, 9], missed)
    assert len(figure.axes) == 4 and result.label[at].shape == errors.shape[:2]


def test_display_plane_is_the_one_with_most_truth():
    weights = np.zeros((4, 3, 3))
    weights[2, :2] = 1
    assert viz_eval.display_plane(weights, weights) == 2
    assert viz_eval.display_plane(np.zeros((3, 3))) is None


def test_semantic_overlay_marks_pixels():
    truth = np.array([[0, 1], [1, 1]])
    prediction = np.array([[1, 1], [0, 0]])
    result = SimpleNamespace(stem="s", image=np.zeros((1, 2, 2), np.float32), target=truth,
                             prediction=prediction, caption="x")
    errors = viz_eval.plot_overlays([result], "binary").axes[3].images[0].get_array()
    assert np.allclose(errors[0, 1], to_rgb(viz_eval.ERROR_COLOURS[0]))
    assert np.allclose(errors[0, 0], to_rgb(viz_eval.ERROR_COLOURS[1]))
    assert np.allclose(errors[1, 0], to_rgb(viz_eval.ERROR_COLOURS[2]))


def test_summary_and_table_figures_have_one_panel_per_metric():
    summary = {"instance": {"thresholds": [0.5, 0.75], "precision": [0.9, 0.5],
                            "recall": [0.8, None], "f1": [0.85, 0.4], "ap": [0.7, 0.3],
                            "panoptic_quality": [0.6, 0.2]},
               "pixel": {"background": {"iou": 0.9, "dice": 0.95, "precision": 0.9,
                                        "recall": None}}}
    curves = viz_eval.plot_metric_vs_threshold({"a": summary, "b": summary})
    assert len(curves.axes) == 5 and len(curves.axes[0].lines) == 2
    assert list(curves.axes[2].lines[0].get_ydata()) == [0.85, 0.4]
    assert len(viz_eval.plot_pixel_metrics({"a": summary}).axes) == 4
    table = pd.DataFrame({"f1@0.5": [0.2, np.nan, 0.9], "object_dice": [0.5, 0.6, 0.7]})
    assert len(viz_eval.plot_metric_distribution({"a": table}, ["f1@0.5", "object_dice"]).axes) == 2
    history = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [1.1, 0.7],
                            "val_dice": [0.3, 0.6]})
    curves = viz_eval.plot_training_curves({"a": history})
    assert len(curves.axes[0].lines) == 2 and len(curves.axes[1].lines) == 1


def test_save_figure_writes_a_png(tmp_path):
    figure = viz_eval.plot_training_curves({})
    path = viz_eval.save_figure(figure, tmp_path / "sub" / "curves.png")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_long_image_names_fit_their_panels():
    result = instance_result(3)
    result.stem = "2026-12-03_HeLa-H2B-GFP_confocal-63x_plate01_wellB07_field003_z0"
    figure = viz_eval.plot_overlays([result, result], "instance")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    for axis in figure.axes:
        assert axis.title.get_window_extent(renderer).width <= \
            axis.get_window_extent(renderer).width
    assert "…" in figure.axes[0].get_title() and figure.axes[0].get_title().endswith(")")
