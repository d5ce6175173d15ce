"""Object-level metrics: one-to-one matching of predicted and true objects at IoU thresholds.

Definitions
-----------
Two label images ("YX" or "ZYX", 0 = background, every other id one object; gaps in ids allowed)
are compared object by object. The IoU of a true object T and a predicted object P is
|T ∩ P| / |T ∪ P|. At threshold τ a pair is a *candidate* when IoU ≥ τ; the matching pairs each
object with at most one other and maximises the number of matched pairs (ties: the largest sum of
IoU), as StarDist does. Then, with N_true and N_pred objects:

- TP = matched pairs; FP = N_pred − TP (predicted objects without a partner);
  FN = N_true − TP (true objects missed);
- precision = TP / (TP + FP); recall = TP / (TP + FN);
- F1 = 2·TP / (2·TP + FP + FN);
- average precision (AP, as in the Data Science Bowl and StarDist) = TP / (TP + FP + FN);
- mean matched IoU = mean IoU of the matched pairs (segmentation quality);
- panoptic quality (PQ) = Σ IoU of matched pairs / (TP + FP/2 + FN/2) = mean matched IoU × F1.

A value whose denominator is 0 is None (e.g. precision when nothing is predicted; every ratio
for an image with no objects in prediction or truth), never 0 or 1.

How it is computed
------------------
The IoU of every overlapping pair comes from one count over the pixels (ids are mapped to dense
indices and pairs counted with ``np.bincount``, or ``np.unique`` when that table would be large):
no Python loop over objects. For τ > 0.5 every object has at most one candidate (two objects
cannot both cover more than half of a third), so the candidates are the matching. Otherwise the
candidate graph is split into connected components and only components with a choice are solved
with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``).

Example
-------
>>> import numpy as np
>>> truth = np.zeros((8, 8), np.int32); truth[:4, :4] = 1; truth[5:, 5:] = 7
>>> pred = np.zeros((8, 8), np.int32); pred[:4, :3] = 2
>>> scores = match_instances(pred, truth, thresholds=(0.5,)).at(0.5)
>>> scores.tp, scores.fp, scores.fn, scores.f1, scores.mean_matched_iou
(1, 0, 1, 0.6666666666666666, 0.75)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from microseg.errors import DataError
from microseg.metrics.pixel import check_class_map, check_same_shape

__all__ = [
    "DEFAULT_IOU_THRESHOLDS",
    "DSB_THRESHOLDS",
    "InstanceMatching",
    "OverlapTable",
    "ThresholdScores",
    "aggregate",
    "dsb_score",
    "match_instances",
    "object_error_map",
    "overlap_table",
    "threshold_scores",
]

DEFAULT_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 + 0.05 * k, 2) for k in range(18))
"""0.1, 0.15, ..., 0.95."""

DSB_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
"""0.5, 0.55, ..., 0.95: the IoU thresholds of the Data Science Bowl 2018 score."""

OBJECT_MATCHED = 1
OBJECT_FALSE_POSITIVE = 2
OBJECT_MISSED = 3

_MAX_DENSE_PAIRS = 1 << 23
_SCORE_NAMES = ("precision", "recall", "f1", "average_precision", "mean_matched_iou",
                "panoptic_quality")


@dataclass(frozen=True, eq=False)
class OverlapTable:
    """Every overlapping (true, predicted) pair of two label images, as flat arrays.

    ``true_ids`` (n_true,) and ``pred_ids`` (n_pred,) are the object ids, sorted; ``true_areas``
    and ``pred_areas`` their pixel counts. Pair k joins ``true_ids[true_index[k]]`` and
    ``pred_ids[pred_index[k]]``, which share ``intersection[k]`` pixels, with IoU ``iou[k]``.
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    true_areas: np.ndarray
    pred_areas: np.ndarray
    true_index: np.ndarray
    pred_index: np.ndarray
    intersection: np.ndarray
    iou: np.ndarray

    def dense_iou(self) -> np.ndarray:
        """(n_true, n_pred) float64 IoU matrix, rows and columns in id order (0 where disjoint)."""
        matrix = np.zeros((len(self.true_ids), len(self.pred_ids)))
        matrix[self.true_index, self.pred_index] = self.iou
        return matrix


@dataclass(frozen=True)
class ThresholdScores:
    """Matching result at one IoU threshold (definitions in the module docstring)."""

    threshold: float
    tp: int
    fp: int
    fn: int
    n_true: int
    n_pred: int
    sum_matched_iou: float
    precision: float | None
    recall: float | None
    f1: float | None
    average_precision: float | None
    mean_matched_iou: float | None
    panoptic_quality: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field."""
        return asdict(self)


@dataclass(frozen=True, eq=False)
class InstanceMatching:
    """Result of :func:`match_instances`: scores and matched pairs at every threshold.

    ``scores[k]`` and ``matched[k]`` belong to ``thresholds[k]``; ``matched[k]`` is an (M, 2)
    int64 array of ``[true_id, pred_id]`` rows.
    """

    thresholds: tuple[float, ...]
    scores: tuple[ThresholdScores, ...]
    matched: tuple[np.ndarray, ...]
    table: OverlapTable = field(repr=False)

    @property
    def n_true(self) -> int:
        """Number of true objects."""
        return len(self.table.true_ids)

    @property
    def n_pred(self) -> int:
        """Number of predicted objects."""
        return len(self.table.pred_ids)

    def _index(self, threshold: float) -> int:
        for k, t in enumerate(self.thresholds):
            if math.isclose(t, threshold, abs_tol=1e-9):
                return k
        raise KeyError(f"IoU threshold {threshold} was not evaluated; evaluated: "
                       f"{', '.join(f'{t:g}' for t in self.thresholds)}")

    def at(self, threshold: float) -> ThresholdScores:
        """Scores at ``threshold`` (one of ``thresholds``; KeyError listing them otherwise)."""
        return self.scores[self._index(threshold)]

    def matched_ids(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """(true ids, predicted ids) of the pairs matched at ``threshold``, row-aligned."""
        pairs = self.matched[self._index(threshold)]
        return pairs[:, 0], pairs[:, 1]

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per threshold (:meth:`ThresholdScores.to_dict`), e.g. for a DataFrame."""
        return [s.to_dict() for s in self.scores]


def _check_labels(labels: Any, name: str) -> np.ndarray:
    labels = check_class_map(labels, name)
    if labels.ndim not in (2, 3):
        raise DataError(f"{name} must be a label image with axes YX or ZYX, found {labels.ndim} "
                        f"axes with shape {labels.shape}; drop the channel axis first")
    return labels


def _dense_index(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(object ids, per-pixel index 0..n with 0 = background, object areas) of a label image."""
    flat = labels.ravel()
    top = int(flat.max()) if flat.size else 0
    if top <= max(4 * flat.size, 1 << 20):
        flat = flat.astype(np.int64, copy=False)
        counts = np.bincount(flat, minlength=top + 1)
        ids = np.flatnonzero(counts[1:]) + 1
        lookup = np.zeros(top + 1, np.int64)
        lookup[ids] = np.arange(1, len(ids) + 1)
        return ids, lookup[flat], counts[ids]
    values, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if values[0] != 0:
        return values, inverse.ravel() + 1, counts
    return values[1:], inverse.ravel(), counts[1:]


def _pair_counts(true_index: np.ndarray, pred_index: np.ndarray, n_pred: int,
                 n_true: int) -> tuple[np.ndarray, np.ndarray]:
    """(pair keys t·(n_pred+1)+p, pixel counts) of every pair of overlapping objects."""
    both = (true_index > 0) & (pred_index > 0)
    keys = true_index[both] * (n_pred + 1) + pred_index[both]
    if (n_true + 1) * (n_pred + 1) <= _MAX_DENSE_PAIRS:
        counts = np.bincount(keys, minlength=(n_true + 1) * (n_pred + 1))
        present = np.flatnonzero(counts)
        return present, counts[present]
    return np.unique(keys, return_counts=True)


def overlap_table(pred_labels: Any, true_labels: Any) -> OverlapTable:
    """Pixel overlap and IoU of every pair of overlapping objects, without per-object loops.

    Parameters
    ----------
    pred_labels, true_labels : label images of the same shape, "YX" or "ZYX", non-negative whole
        numbers (any integer dtype; whole-valued floats accepted), 0 = background.

    Raises
    ------
    DataError (a ValueError)
        Different shapes (naming both), non-integer or negative labels, or not 2 or 3 axes.
    """
    pred = _check_labels(pred_labels, "predicted labels")
    truth = _check_labels(true_labels, "true labels")
    check_same_shape(pred, truth)
    true_ids, true_pixels, true_areas = _dense_index(truth)
    pred_ids, pred_pixels, pred_areas = _dense_index(pred)
    keys, intersection = _pair_counts(true_pixels, pred_pixels, len(pred_ids), len(true_ids))
    true_index, pred_index = keys // (len(pred_ids) + 1) - 1, keys % (len(pred_ids) + 1) - 1
    union = true_areas[true_index] + pred_areas[pred_index] - intersection
    return OverlapTable(true_ids, pred_ids, true_areas, pred_areas, true_index, pred_index,
                        intersection, intersection / union)


def _is_one_to_one(true_index: np.ndarray, pred_index: np.ndarray) -> bool:
    return (np.bincount(true_index).max() <= 1) and (np.bincount(pred_index).max() <= 1)


def _matching(table: OverlapTable, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true index, pred index, IoU) of the maximum matching among pairs with IoU ≥ threshold."""
    keep = table.iou >= threshold
    t, p, iou = table.true_index[keep], table.pred_index[keep], table.iou[keep]
    if t.size == 0 or _is_one_to_one(t, p):
        return t, p, iou
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_true = len(table.true_ids)
    nodes = n_true + len(table.pred_ids)
    graph = coo_matrix((np.ones(t.size), (t, n_true + p)), shape=(nodes, nodes))
    _, node_component = connected_components(graph, directed=False)
    component = node_component[t]
    sizes = np.bincount(component)
    single = sizes[component] == 1
    chosen = [np.flatnonzero(single)]
    for c in np.flatnonzero(sizes > 1):
        edges = np.flatnonzero(component == c)
        chosen.append(edges[_hungarian(t[edges], p[edges], iou[edges])])
    picked = np.sort(np.concatenate(chosen))
    return t[picked], p[picked], iou[picked]


def _hungarian(t: np.ndarray, p: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """Indices of the edges in the assignment with the most edges, then the largest IoU sum."""
    from scipy.optimize import linear_sum_assignment

    rows, t_local = np.unique(t, return_inverse=True)
    cols, p_local = np.unique(p, return_inverse=True)
    edge_of = np.full((len(rows), len(cols)), -1)
    edge_of[t_local, p_local] = np.arange(t.size)
    cost = np.zeros(edge_of.shape)
    # each matched edge gains 1; IoU / (2·min side) in total stays below 1, so it only breaks ties
    cost[t_local, p_local] = -1.0 - iou / (2 * min(edge_of.shape))
    r, c = linear_sum_assignment(cost)
    edges = edge_of[r, c]
    return edges[edges >= 0]


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator > 0 else None


def threshold_scores(threshold: float, tp: int, n_true: int, n_pred: int,
                     sum_matched_iou: float) -> ThresholdScores:
    """:class:`ThresholdScores` from counts (one image, or counts summed over images)."""
    tp, n_true, n_pred = int(tp), int(n_true), int(n_pred)
    fp, fn = n_pred - tp, n_true - tp
    return ThresholdScores(
        threshold=float(threshold), tp=tp, fp=fp, fn=fn, n_true=n_true, n_pred=n_pred,
        sum_matched_iou=float(sum_matched_iou),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        average_precision=_ratio(tp, tp + fp + fn),
        mean_matched_iou=_ratio(sum_matched_iou, tp),
        panoptic_quality=_ratio(sum_matched_iou, tp + fp / 2 + fn / 2),
    )


def _checked_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(t) for t in np.atleast_1d(np.asarray(thresholds, dtype=float)))
    if not values or any(not 0 < t <= 1 for t in values):
        raise DataError(f"IoU thresholds must be in (0, 1], found {list(values)}; e.g. "
                        f"(0.5,) or the default 0.1, 0.15, ..., 0.95")
    return values


def match_instances(pred_labels: Any, true_labels: Any,
                    thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS) -> InstanceMatching:
    """Match predicted objects to true objects one to one at every IoU threshold.

    Parameters
    ----------
    pred_labels : predicted label image, "YX" or "ZYX", 0 = background; ids need not be
        contiguous.
    true_labels : true label image of the same shape.
    thresholds : IoU thresholds in (0, 1]; a pair qualifies at τ when IoU ≥ τ.

    Returns
    -------
    InstanceMatching with TP, FP, FN, precision, recall, F1, AP, mean matched IoU and panoptic
    quality per threshold (module docstring), and the matched id pairs.

    Raises
    ------
    DataError (a ValueError)
        Different shapes, labels that are not whole numbers or are negative, bad thresholds.

    Example
    -------
    >>> import numpy as np
    >>> labels = np.array([[1, 1, 0, 5], [1, 1, 0, 5]])
    >>> match_instances(labels, labels, thresholds=(0.5, 0.9)).at(0.9).f1
    1.0
    """
    thresholds = _checked_thresholds(thresholds)
    table = overlap_table(pred_labels, true_labels)
    scores, matched = [], []
    for threshold in thresholds:
        t, p, iou = _matching(table, threshold)
        scores.append(threshold_scores(threshold, t.size, len(table.true_ids),
                                       len(table.pred_ids), iou.sum()))
        matched.append(np.stack([table.true_ids[t], table.pred_ids[p]], axis=1).astype(np.int64))
    return InstanceMatching(thresholds, tuple(scores), tuple(matched), table)


def aggregate(matchings: Sequence[InstanceMatching]) -> dict[str, Any]:
    """Data-set instance metrics per threshold, pooled and as the mean over images, labelled.

    Parameters
    ----------
    matchings : one :func:`match_instances` result per image, all at the same thresholds.

    Returns
    -------
    ``{"thresholds": [...], "pooled": {name: [value per threshold]}, "mean_over_images":
    {name: [...]}, "n_images": N, "definitions": {...}}``. Pooled: TP, FP, FN, object counts and
    matched IoU summed over images, then the ratios (every object counts once). Mean over images:
    each image's ratio averaged over the images where it is defined (every image counts once);
    None where no image defines it.

    Raises
    ------
    DataError
        No matchings, or matchings at different thresholds.
    """
    if not matchings:
        raise DataError("no images to aggregate: evaluate at least one image")
    thresholds = matchings[0].thresholds
    if any(m.thresholds != thresholds for m in matchings):
        raise DataError("every image must be matched at the same IoU thresholds to aggregate")
    pooled_scores = [
        threshold_scores(t, *(sum(getattr(m.scores[k], key) for m in matchings)
                              for key in ("tp", "n_true", "n_pred", "sum_matched_iou")))
        for k, t in enumerate(thresholds)
    ]
    keys = ("tp", "fp", "fn", "n_true", "n_pred") + _SCORE_NAMES
    pooled = {key: [getattr(s, key) for s in pooled_scores] for key in keys}
    means = {key: [_mean_defined([getattr(m.scores[k], key) for m in matchings])
                   for k in range(len(thresholds))] for key in _SCORE_NAMES}
    return {
        "thresholds": list(thresholds),
        "pooled": pooled,
        "mean_over_images": means,
        "n_images": len(matchings),
        "definitions": {
            "pooled": "TP, FP, FN and matched IoU summed over all images, then the ratios",
            "mean_over_images": "each image's value, averaged over the images where it is defined",
        },
    }


def dsb_score(matchings: Sequence[InstanceMatching]) -> float | None:
    """The Data Science Bowl 2018 score: per image, the mean over IoU 0.5, 0.55, …, 0.95 of
    ``TP / (TP + FP + FN)``; then the mean over images.

    Images with neither true nor predicted objects (where the ratio is undefined) are left out;
    None when no image is left. Raises :class:`DataError` if a matching lacks one of
    :data:`DSB_THRESHOLDS`.
    """
    per_image = []
    for matching in matchings:
        missing = [t for t in DSB_THRESHOLDS
                   if not any(abs(t - m) < 1e-9 for m in matching.thresholds)]
        if missing:
            raise DataError(f"the DSB score needs matchings at IoU {list(DSB_THRESHOLDS)}; "
                            f"missing {missing}")
        values = [matching.at(t).average_precision for t in DSB_THRESHOLDS]
        if all(v is not None for v in values):
            per_image.append(float(np.mean(values)))
    return float(np.mean(per_image)) if per_image else None


def _mean_defined(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def object_error_map(pred_labels: Any, true_labels: Any, matching: InstanceMatching,
                     threshold: float = 0.5) -> np.ndarray:
    """Per-pixel object outcome at ``threshold``, uint8, same shape as the labels.

    1: pixel of a matched predicted object; 2: pixel of a predicted object without a partner
    (false positive); 3: pixel of a missed true object (false negative) not covered by any
    predicted object; 0 elsewhere.
    """
    pred = _check_labels(pred_labels, "predicted labels")
    truth = _check_labels(true_labels, "true labels")
    check_same_shape(pred, truth)
    true_matched, pred_matched = matching.matched_ids(threshold)
    codes = np.zeros(pred.shape, np.uint8)
    codes[pred > 0] = OBJECT_FALSE_POSITIVE
    codes[np.isin(pred, pred_matched) & (pred > 0)] = OBJECT_MATCHED
    missed = (truth > 0) & ~np.isin(truth, true_matched)
    codes[missed & (pred == 0)] = OBJECT_MISSED
    return codes
