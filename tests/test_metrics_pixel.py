"""Pixel metrics against hand-computed cases and a brute-force per-pixel loop in float64."""

from __future__ import annotations

import numpy as np
import pytest

from microseg.errors import DataError
from microseg.metrics.pixel import (
    aggregate_pixel,
    confusion_matrix,
    pixel_error_map,
    pixel_metrics,
)


def brute_force(pred: np.ndarray, truth: np.ndarray, class_id: int) -> dict[str, float | None]:
    tp = fp = fn = 0
    for p, t in zip(pred.ravel().tolist(), truth.ravel().tolist(), strict=True):
        tp += p == class_id and t == class_id
        fp += p == class_id and t != class_id
        fn += p != class_id and t == class_id
    tp, fp, fn = float(tp), float(fp), float(fn)
    return {
        "tp": tp, "fp": fp, "fn": fn,
        "iou": tp / (tp + fp + fn) if tp + fp + fn else None,
        "dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
    }


def test_hand_computed_binary_case():
    truth = np.array([[0, 1, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[1, 1, 1, 0], [0, 0, 1, 1]])
    background, foreground = pixel_metrics(pred, truth, n_classes=2)
    assert (foreground.tp, foreground.fp, foreground.fn) == (4, 1, 1)
    assert foreground.iou == pytest.approx(4 / 6)
    assert foreground.dice == pytest.approx(8 / 10)
    assert foreground.precision == pytest.approx(4 / 5)
    assert foreground.recall == pytest.approx(4 / 5)
    assert (background.tp, background.fp, background.fn) == (2, 1, 1)
    assert background.iou == pytest.approx(2 / 4)


@pytest.mark.parametrize("shape", [(17, 23), (5, 9, 11)])
def test_matches_brute_force_loop_2d_and_3d(rng, shape):
    truth = rng.integers(0, 4, size=shape)
    pred = np.where(rng.random(shape) < 0.7, truth, rng.integers(0, 4, size=shape))
    for metrics in pixel_metrics(pred, truth, n_classes=4):
        expected = brute_force(pred, truth, metrics.class_id)
        for key, value in expected.items():
            assert getattr(metrics, key) == pytest.approx(value, rel=1e-12)


def test_class_absent_from_both_is_reported_absent_not_zero_or_one():
    truth = np.array([[0, 1], [1, 0]])
    result = pixel_metrics(truth, truth, n_classes=3)
    assert result[1].iou == 1.0 and not result[1].absent
    absent = result[2]
    assert absent.absent
    assert (absent.iou, absent.dice, absent.precision, absent.recall) == (None, None, None, None)
    assert "absent" in absent.notes[0]


def test_precision_undefined_when_nothing_predicted_recall_when_absent_from_truth():
    truth = np.array([[0, 2, 2], [0, 0, 0]])
    pred = np.array([[0, 0, 0], [0, 1, 0]])
    _, one, two = pixel_metrics(pred, truth, n_classes=3)
    assert two.precision is None and two.recall == 0.0 and two.iou == 0.0
    assert any("nothing predicted" in n for n in two.notes)
    assert one.recall is None and one.precision == 0.0
    assert any("absent from the truth" in n for n in one.notes)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)"):
        pixel_metrics(np.zeros((3, 4), int), np.zeros((4, 3), int), n_classes=2)


@pytest.mark.parametrize(
    ("pred", "message"),
    [
        (np.full((2, 2), 0.4), "whole numbers.*0.4"),
        (np.full((2, 2), -1), "negative"),
        (np.full((2, 2), 5), "class 5.*n_classes is 2"),
    ],
)
def test_bad_values_are_explained(pred, message):
    with pytest.raises(DataError, match=message):
        pixel_metrics(pred, np.zeros((2, 2), int), n_classes=2)


def test_whole_valued_floats_and_booleans_are_accepted():
    truth = np.array([[0, 1], [1, 1]])
    as_float = pixel_metrics(truth.astype(np.float32), truth, 2)
    as_bool = pixel_metrics(truth.astype(bool), truth, 2)
    assert as_float[1].iou == as_bool[1].iou == 1.0


def test_confusion_matrix_rows_are_truth_columns_prediction():
    truth = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 0, 2])
    expected = np.zeros((3, 3), int)
    for t, p in zip(truth, pred, strict=True):
        expected[t, p] += 1
    np.testing.assert_array_equal(confusion_matrix(pred, truth, 3), expected)


def test_aggregate_pooled_equals_metrics_of_all_pixels_together(rng):
    truths = [rng.integers(0, 3, size=(8, 9)) for _ in range(3)]
    truths[1][truths[1] == 2] = 0
    preds = [np.where(rng.random(t.shape) < 0.6, t, 0) for t in truths]
    per_image = [pixel_metrics(p, t, 3) for p, t in zip(preds, truths, strict=True)]
    result = aggregate_pixel(per_image)
    together = pixel_metrics(np.concatenate(preds), np.concatenate(truths), 3)
    for pooled, direct in zip(result["pooled"], together, strict=True):
        assert pooled["iou"] == pytest.approx(direct.iou)
        assert pooled["tp"] == direct.tp
    class_two = [m[2].iou for m in per_image if m[2].iou is not None]
    assert result["mean_over_images"][2]["iou"] == pytest.approx(np.mean(class_two))
    assert result["mean_over_images"][2]["n_images_defined"]["iou"] == len(class_two)
    assert result["n_images"] == 3 and "summed" in result["definitions"]["pooled"]


def test_pixel_error_map_codes(rng):
    truth = rng.integers(0, 2, size=(6, 7))
    pred = rng.integers(0, 2, size=(6, 7))
    codes = pixel_error_map(pred, truth, class_id=1)
    for p, t, c in zip(pred.ravel(), truth.ravel(), codes.ravel(), strict=True):
        assert c == {(1, 1): 1, (1, 0): 2, (0, 1): 3, (0, 0): 0}[(int(p), int(t))]
