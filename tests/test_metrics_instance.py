"""Instance matching against hand-computed cases, a brute-force reference and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from skimage.metrics import contingency_table
from skimage.segmentation import expand_labels

import microseg.metrics.instance as instance_module
from microseg.errors import DataError
from microseg.metrics.instance import (
    DEFAULT_IOU_THRESHOLDS,
    aggregate,
    match_instances,
    object_error_map,
    overlap_table,
)


def brute_force_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, list, list]:
    """IoU matrix by looping over every pair of objects with boolean masks."""
    true_ids = [i for i in np.unique(truth) if i]
    pred_ids = [i for i in np.unique(pred) if i]
    iou = np.zeros((len(true_ids), len(pred_ids)))
    for a, i in enumerate(true_ids):
        true_mask = truth == i
        for j in np.unique(pred[true_mask]):
            if j:
                pred_mask = pred == j
                union = np.logical_or(true_mask, pred_mask).sum()
                iou[a, pred_ids.index(j)] = np.logical_and(true_mask, pred_mask).sum() / union
    return iou, true_ids, pred_ids


def brute_force_scores(iou: np.ndarray, threshold: float) -> dict[str, float | None]:
    """Most matches with IoU >= threshold (ties: largest IoU sum), by dense Hungarian."""
    n_true, n_pred = iou.shape
    tp, total = 0, 0.0
    if iou.size:
        candidate = iou >= threshold
        cost = -candidate.astype(float) - candidate * iou / (2 * max(1, min(iou.shape)))
        rows, cols = linear_sum_assignment(cost)
        ok = candidate[rows, cols]
        tp, total = int(ok.sum()), float(iou[rows, cols][ok].sum())
    fp, fn = n_pred - tp, n_true - tp

    def ratio(a, b):
        return a / b if b else None

    return {
        "tp": tp, "fp": fp, "fn": fn, "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "average_precision": ratio(tp, tp + fp + fn), "mean_matched_iou": ratio(total, tp),
        "panoptic_quality": ratio(total, tp + fp / 2 + fn / 2),
    }


def random_labels(rng, shape, n_objects, radius):
    seeds = np.zeros(shape, np.int32)
    points = tuple(rng.integers(0, s, n_objects) for s in shape)
    seeds[points] = rng.choice(np.arange(1, 20 * n_objects), n_objects, replace=False)
    return expand_labels(seeds, radius)


def perturbed(rng, truth):
    """Shifted, partly dropped, with merged and split objects: ambiguous matches at low IoU."""
    pred = np.roll(truth, 2, axis=-1)
    ids = np.unique(pred[pred > 0])
    dropped = rng.choice(ids, len(ids) // 10, replace=False)
    pred[np.isin(pred, dropped)] = 0
    merge_from, merge_to = rng.choice(ids, (2, len(ids) // 8), replace=False)
    for a, b in zip(merge_from, merge_to, strict=True):
        pred[pred == a] = b
    half = pred.shape[-1] // 2
    split = pred[..., half:]
    split[split > 0] += 100_000
    return pred


def assert_same_scores(result, iou, thresholds):
    for threshold in thresholds:
        expected = brute_force_scores(iou, threshold)
        got = result.at(threshold).to_dict()
        for key, value in expected.items():
            if value is None:
                assert got[key] is None, (threshold, key)
            else:
                assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (threshold, key)


def test_hand_computed_case_with_gaps_in_ids():
    truth = np.zeros((10, 10), np.int32)
    truth[0:4, 0:4] = 3
    truth[6:10, 6:10] = 90
    pred = np.zeros_like(truth)
    pred[0:4, 0:2] = 11
    pred[6:10, 6:10] = 12
    pred[5, 0:3] = 40
    result = match_instances(pred, truth, thresholds=(0.5, 0.6))
    at_half = result.at(0.5)
    assert (at_half.tp, at_half.fp, at_half.fn, at_half.n_true, at_half.n_pred) == (2, 1, 0, 2, 3)
    assert at_half.precision == pytest.approx(2 / 3)
    assert at_half.recall == 1.0
    assert at_half.f1 == pytest.approx(4 / 5)
    assert at_half.average_precision == pytest.approx(2 / 3)
    assert at_half.mean_matched_iou == pytest.approx(0.75)
    assert at_half.panoptic_quality == pytest.approx(1.5 / 2.5)
    at_six = result.at(0.6)
    assert (at_six.tp, at_six.fp, at_six.fn) == (1, 2, 1)
    true_ids, pred_ids = result.matched_ids(0.5)
    assert sorted(zip(true_ids.tolist(), pred_ids.tolist(), strict=True)) == [(3, 11), (90, 12)]


def test_matching_maximises_the_number_of_matches_not_greedy_iou():
    # truth A = cols 0-9, B = 10-19; P1 = 3-14 (IoU 7/15 with A, 5/17 with B); P2 = 0-2 (0.3 with A)
    truth = np.array([[1] * 10 + [2] * 10])
    pred = np.array([[5] * 3 + [6] * 12 + [0] * 5])
    result = match_instances(pred, truth, thresholds=(0.29, 0.4))
    assert result.at(0.29).tp == 2
    assert sorted(zip(*(a.tolist() for a in result.matched_ids(0.29)), strict=True)) == [(1, 5), (2, 6)]
    assert result.at(0.4).tp == 1


@pytest.mark.parametrize("shape", [(96, 128), (24, 40, 36)])
def test_matches_brute_force_reference_2d_and_3d(rng, shape):
    truth = random_labels(rng, shape, n_objects=60, radius=6 if len(shape) == 2 else 4)
    pred = perturbed(rng, truth)
    result = match_instances(pred, truth)
    iou, true_ids, pred_ids = brute_force_iou(pred, truth)
    np.testing.assert_allclose(result.table.dense_iou(), iou, rtol=1e-12)
    assert result.table.true_ids.tolist() == true_ids
    assert result.table.pred_ids.tolist() == pred_ids
    assert_same_scores(result, iou, DEFAULT_IOU_THRESHOLDS)
    assert result.at(0.1).tp > result.at(0.9).tp


def test_thousands_of_objects_match_brute_force(rng):
    truth = random_labels(rng, (200, 300), n_objects=1500, radius=3)
    pred = perturbed(rng, truth)
    assert len(np.unique(truth)) > 1000
    result = match_instances(pred, truth, thresholds=(0.1, 0.3, 0.5, 0.75))
    iou, _, _ = brute_force_iou(pred, truth)
    assert_same_scores(result, iou, (0.1, 0.3, 0.5, 0.75))


def test_overlaps_agree_with_scikit_image_contingency_table(rng):
    truth = random_labels(rng, (64, 80), n_objects=30, radius=6)
    pred = perturbed(rng, truth)
    table = overlap_table(pred, truth)
    counts = contingency_table(truth, pred).tocsr()
    expected = counts[table.true_ids[table.true_index], table.pred_ids[table.pred_index]]
    np.testing.assert_array_equal(table.intersection, np.asarray(expected).ravel())
    true_area = np.asarray(counts.sum(axis=1)).ravel()[table.true_ids]
    np.testing.assert_array_equal(table.true_areas, true_area)
    both = counts[1:, 1:]
    assert both.nnz == len(table.iou)


def test_large_ids_and_the_sparse_pair_count_give_the_same_result(rng, monkeypatch):
    truth = random_labels(rng, (48, 48), n_objects=25, radius=5)
    pred = perturbed(rng, truth)
    reference = match_instances(pred, truth)
    big_truth = np.where(truth > 0, truth.astype(np.uint64) + 2**40, 0).astype(np.uint64)
    monkeypatch.setattr(instance_module, "_MAX_DENSE_PAIRS", 0)
    sparse = match_instances(pred, big_truth)
    assert [s.tp for s in sparse.scores] == [s.tp for s in reference.scores]
    assert [s.sum_matched_iou for s in sparse.scores] == pytest.approx(
        [s.sum_matched_iou for s in reference.scores])


def test_above_half_iou_matches_are_unique_and_pq_is_sq_times_rq(rng):
    truth = random_labels(rng, (80, 80), n_objects=40, radius=6)
    pred = perturbed(rng, truth)
    result = match_instances(pred, truth)
    for threshold in (0.55, 0.75, 0.95):
        true_ids, pred_ids = result.matched_ids(threshold)
        assert len(set(true_ids.tolist())) == len(true_ids) == len(set(pred_ids.tolist()))
    for s in result.scores:
        if s.tp:
            assert s.panoptic_quality == pytest.approx(s.mean_matched_iou * s.f1)


def test_empty_images_give_undefined_not_perfect_scores():
    empty = np.zeros((5, 5), np.int32)
    nothing = match_instances(empty, empty, thresholds=(0.5,)).at(0.5)
    assert (nothing.tp, nothing.fp, nothing.fn) == (0, 0, 0)
    assert nothing.precision is nothing.recall is nothing.f1 is nothing.panoptic_quality is None
    truth = empty.copy()
    truth[1:3, 1:3] = 4
    missed = match_instances(empty, truth, thresholds=(0.5,)).at(0.5)
    assert missed.precision is None and missed.recall == 0.0 and missed.f1 == 0.0
    assert missed.mean_matched_iou is None and missed.panoptic_quality == 0.0


@pytest.mark.parametrize(
    ("pred", "truth", "message"),
    [
        (np.zeros((4, 5), int), np.zeros((5, 4), int), r"\(4, 5\).*\(5, 4\)"),
        (np.full((4, 4), 0.5), np.zeros((4, 4), int), "whole numbers"),
        (np.full((4, 4), -2), np.zeros((4, 4), int), "negative"),
        (np.zeros((1, 4, 4, 4), int), np.zeros((1, 4, 4, 4), int), "YX or ZYX"),
    ],
)
def test_bad_labels_are_explained(pred, truth, message):
    with pytest.raises(DataError, match=message):
        match_instances(pred, truth)


def test_bad_thresholds_and_unknown_threshold_lookup():
    labels = np.ones((3, 3), int)
    with pytest.raises(DataError, match=r"\(0, 1\]"):
        match_instances(labels, labels, thresholds=(0.0,))
    with pytest.raises(KeyError, match="0.5"):
        match_instances(labels, labels, thresholds=(0.5,)).at(0.7)


def test_aggregate_pooled_equals_one_image_holding_all_objects(rng):
    truths = [random_labels(rng, (40, 40), n, 5) for n in (10, 3, 15)]
    preds = [perturbed(rng, t) for t in truths]
    preds[1][:] = 0
    matchings = [match_instances(p, t) for p, t in zip(preds, truths, strict=True)]
    result = aggregate(matchings)
    offset = [k * 10**6 for k in range(3)]
    together = match_instances(
        np.concatenate([np.where(p > 0, p + o, 0) for p, o in zip(preds, offset, strict=True)]),
        np.concatenate([np.where(t > 0, t + o, 0) for t, o in zip(truths, offset, strict=True)]),
    )
    for k, s in enumerate(together.scores):
        assert result["pooled"]["tp"][k] == s.tp
        assert result["pooled"]["f1"][k] == pytest.approx(s.f1)
        assert result["pooled"]["panoptic_quality"][k] == pytest.approx(s.panoptic_quality)
    precision = [m.at(0.5).precision for m in matchings if m.at(0.5).precision is not None]
    assert len(precision) == 2
    index = result["thresholds"].index(0.5)
    assert result["mean_over_images"]["precision"][index] == pytest.approx(np.mean(precision))
    f1 = [m.at(0.5).f1 for m in matchings]
    assert result["mean_over_images"]["f1"][index] == pytest.approx(np.mean(f1))
    assert result["n_images"] == 3


def test_aggregate_refuses_mixed_thresholds():
    labels = np.ones((3, 3), int)
    mixed = [match_instances(labels, labels, (0.5,)), match_instances(labels, labels, (0.7,))]
    with pytest.raises(DataError, match="same IoU thresholds"):
        aggregate(mixed)


def test_object_error_map_marks_matched_false_positive_and_missed_objects():
    truth = np.zeros((6, 8), np.int32)
    truth[0:3, 0:3] = 1
    truth[4:6, 5:8] = 2
    pred = np.zeros_like(truth)
    pred[0:3, 0:3] = 7
    pred[0:2, 6:8] = 8
    matching = match_instances(pred, truth, thresholds=(0.5,))
    codes = object_error_map(pred, truth, matching, 0.5)
    assert set(codes[pred == 7].tolist()) == {1}
    assert set(codes[pred == 8].tolist()) == {2}
    assert set(codes[truth == 2].tolist()) == {3}
    assert codes[(pred == 0) & (truth == 0)].max() == 0


def test_dsb_score_is_the_mean_over_images_of_the_mean_over_thresholds():
    from microseg.metrics.instance import DSB_THRESHOLDS, dsb_score

    rng = np.random.default_rng(7)
    matchings, expected = [], []
    for _ in range(3):
        truth = np.zeros((40, 40), np.int32)
        pred = np.zeros((40, 40), np.int32)
        for k in range(1, 5):
            y, x = rng.integers(0, 30, 2)
            truth[y:y + 8, x:x + 8] = k
            dy, dx = rng.integers(-3, 4, 2)
            pred[max(0, y + dy):y + dy + 8, max(0, x + dx):x + dx + 8] = k
        matching = match_instances(pred, truth, DEFAULT_IOU_THRESHOLDS)
        matchings.append(matching)
        per_threshold = []
        for t in DSB_THRESHOLDS:
            scores = matching.at(t)
            per_threshold.append(scores.tp / (scores.tp + scores.fp + scores.fn))
        expected.append(np.mean(per_threshold))
    assert dsb_score(matchings) == pytest.approx(float(np.mean(expected)), abs=1e-12)
    empty = match_instances(np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32),
                            DEFAULT_IOU_THRESHOLDS)
    assert dsb_score([empty]) is None
