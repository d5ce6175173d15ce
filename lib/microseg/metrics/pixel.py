"""Pixel-level segmentation metrics per class, from one confusion matrix.

Definitions, for class ``c`` of a hard prediction (class map) against the truth (class map):

- TP (true positives): pixels predicted ``c`` whose truth is ``c``;
- FP (false positives): pixels predicted ``c`` whose truth is another class;
- FN (false negatives): pixels whose truth is ``c`` predicted as another class;
- IoU (intersection over union, Jaccard index) = TP / (TP + FP + FN);
- Dice (F1 score) = 2·TP / (2·TP + FP + FN);
- precision = TP / (TP + FP): the share of pixels predicted ``c`` that are right;
- recall = TP / (TP + FN): the share of the truth's ``c`` pixels that are found.

A class that appears in neither prediction nor truth is *absent*: its ratios are None and
``absent`` is True (a perfect score of 1 or a failure of 0 would both be invented). Precision is
None when nothing is predicted as the class, recall when the truth has none of it; ``notes`` says
why. Ratios over a data set are either *pooled* (counts summed over images, then divided) or the
*mean over images* (each image's ratio, averaged over the images where it is defined);
:func:`aggregate_pixel` reports both, labelled.

Example
-------
>>> import numpy as np
>>> truth = np.array([[0, 1, 1], [0, 1, 1]])
>>> pred = np.array([[0, 0, 1], [0, 1, 1]])
>>> [round(m.iou, 3) for m in pixel_metrics(pred, truth, n_classes=2)]
[0.667, 0.75]
>>> pixel_metrics(pred, truth, n_classes=3)[2].absent
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from microseg.errors import DataError

__all__ = [
    "ClassMetrics",
    "aggregate_pixel",
    "check_class_map",
    "check_same_shape",
    "class_metrics",
    "confusion_matrix",
    "pixel_error_map",
    "pixel_metrics",
    "pixel_metrics_from_confusion",
]

PIXEL_TRUE_POSITIVE = 1
PIXEL_FALSE_POSITIVE = 2
PIXEL_FALSE_NEGATIVE = 3


@dataclass(frozen=True)
class ClassMetrics:
    """Pixel metrics of one class (definitions in the module docstring).

    ``iou``, ``dice``, ``precision`` and ``recall`` are floats in [0, 1], or None where undefined;
    ``notes`` gives the reason for each None.
    """

    class_id: int
    tp: int
    fp: int
    fn: int
    iou: float | None
    dice: float | None
    precision: float | None
    recall: float | None
    absent: bool
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field (``notes`` as a list)."""
        return {
            "class_id": self.class_id, "tp": self.tp, "fp": self.fp, "fn": self.fn,
            "iou": self.iou, "dice": self.dice, "precision": self.precision,
            "recall": self.recall, "absent": self.absent, "notes": list(self.notes),
        }


def check_class_map(array: Any, name: str) -> np.ndarray:
    """``array`` as an integer NumPy array; :class:`DataError` for non-integer or negative values.

    Boolean maps become 0/1; floating-point maps are accepted only when every value is a whole
    number (as when a label TIFF was saved as float).
    """
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(np.mod(array, 1) == 0):
            raise DataError(
                f"{name} must hold whole numbers (class or object ids), found dtype {array.dtype}"
                f"{_example_values(array)}: pass a hard prediction (argmax over classes) or a "
                f"label image, not probabilities"
            )
        array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise DataError(f"{name} holds negative values (smallest {array.min()}); ids must be >= 0 "
                        f"with 0 for background")
    return array


def _example_values(array: np.ndarray) -> str:
    if not np.issubdtype(array.dtype, np.number):
        return ""
    odd = array[np.mod(array, 1) != 0].ravel()[:3] if array.size else array.ravel()
    return f" with values such as {', '.join(f'{v:g}' for v in odd)}" if odd.size else ""


def check_same_shape(pred: np.ndarray, truth: np.ndarray) -> None:
    """:class:`DataError` (a ValueError) naming both shapes when they differ."""
    if pred.shape != truth.shape:
        raise DataError(
            f"prediction shape {pred.shape} differs from truth shape {truth.shape}: both must "
            f"cover the same pixels (spatial axes only, no channel axis)"
        )


def confusion_matrix(pred: Any, truth: Any, n_classes: int) -> np.ndarray:
    """Counts ``cm[t, p]`` of pixels with truth class ``t`` predicted as class ``p``.

    Parameters
    ----------
    pred, truth : integer class maps of the same shape (any number of axes), values in
        ``[0, n_classes)``.
    n_classes : K, including background 0.

    Returns
    -------
    (K, K) int64 array.

    Raises
    ------
    DataError
        Different shapes, non-integer or negative values, or a class id >= ``n_classes``.
    """
    pred, truth = check_class_map(pred, "prediction"), check_class_map(truth, "truth")
    check_same_shape(pred, truth)
    for name, values in (("prediction", pred), ("truth", truth)):
        if values.size and values.max() >= n_classes:
            raise DataError(f"{name} holds class {values.max()}, but n_classes is {n_classes} "
                            f"(ids 0..{n_classes - 1}); pass the task's number of classes")
    pairs = truth.ravel().astype(np.int64) * n_classes + pred.ravel()
    return np.bincount(pairs, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def class_metrics(class_id: int, tp: int, fp: int, fn: int) -> ClassMetrics:
    """:class:`ClassMetrics` from the counts of one class, with undefined ratios as None."""
    tp, fp, fn = int(tp), int(fp), int(fn)
    if tp + fp + fn == 0:
        note = f"class {class_id} is absent from both prediction and truth"
        return ClassMetrics(class_id, 0, 0, 0, None, None, None, None, True, (note,))
    notes = []
    precision = recall = None
    if tp + fp:
        precision = tp / (tp + fp)
    else:
        notes.append(f"precision undefined: nothing predicted as class {class_id}")
    if tp + fn:
        recall = tp / (tp + fn)
    else:
        notes.append(f"recall undefined: class {class_id} is absent from the truth")
    return ClassMetrics(class_id, tp, fp, fn, tp / (tp + fp + fn), 2 * tp / (2 * tp + fp + fn),
                        precision, recall, False, tuple(notes))


def pixel_metrics_from_confusion(confusion: np.ndarray) -> list[ClassMetrics]:
    """Per-class :class:`ClassMetrics` from a (K, K) confusion matrix ``cm[truth, pred]``."""
    confusion = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(confusion)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    return [class_metrics(c, tp[c], fp[c], fn[c]) for c in range(len(tp))]


def pixel_metrics(pred: Any, truth: Any, n_classes: int) -> list[ClassMetrics]:
    """TP, FP, FN, IoU, Dice, precision and recall of every class (see the module docstring).

    Parameters
    ----------
    pred : hard prediction, integer class map, e.g. ``probabilities.argmax(0)``; "YX" or "ZYX".
    truth : integer class map of the same shape (the task's target, not instance ids).
    n_classes : K, including background 0; one entry per class is returned.

    Returns
    -------
    list of K :class:`ClassMetrics`, index = class id.

    Raises
    ------
    DataError (a ValueError)
        If the shapes differ (naming both), values are not whole numbers or negative, or a class
        id is >= ``n_classes``.
    """
    return pixel_metrics_from_confusion(confusion_matrix(pred, truth, n_classes))


def aggregate_pixel(per_image: Sequence[Sequence[ClassMetrics]]) -> dict[str, Any]:
    """Data-set pixel metrics per class, pooled and as the mean over images, each labelled.

    Parameters
    ----------
    per_image : one :func:`pixel_metrics` result per image, all with the same classes.

    Returns
    -------
    ``{"pooled": [dict per class], "mean_over_images": [dict per class], "n_images": N,
    "definitions": {...}}``. Pooled entries are :meth:`ClassMetrics.to_dict` of the summed counts;
    mean entries hold ``iou``, ``dice``, ``precision``, ``recall`` (None where no image defines
    the value) and ``n_images_defined`` per metric.
    """
    if not per_image:
        raise DataError("no images to aggregate: evaluate at least one image")
    n_classes = len(per_image[0])
    pooled, means = [], []
    for c in range(n_classes):
        rows = [image[c] for image in per_image]
        counts = [sum(getattr(r, key) for r in rows) for key in ("tp", "fp", "fn")]
        pooled.append(class_metrics(c, *counts).to_dict())
        means.append(_mean_of_defined(c, rows, ("iou", "dice", "precision", "recall")))
    return {
        "pooled": pooled,
        "mean_over_images": means,
        "n_images": len(per_image),
        "definitions": {
            "pooled": "TP, FP and FN summed over all images, then the ratios",
            "mean_over_images": "each image's ratio, averaged over the images where it is defined",
        },
    }


def _mean_of_defined(class_id: int, rows: Sequence[Any], keys: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"class_id": class_id}
    defined = {}
    for key in keys:
        values = [getattr(r, key) for r in rows if getattr(r, key) is not None]
        out[key] = float(np.mean(values)) if values else None
        defined[key] = len(values)
    out["n_images_defined"] = defined
    return out


def pixel_error_map(pred: Any, truth: Any, class_id: int = 1) -> np.ndarray:
    """Per-pixel outcome for one class: 0 true negative, 1 TP, 2 FP, 3 FN (uint8, same shape).

    Semantic tasks colour these codes in the overlays; pass ``class_id`` of the class shown.
    """
    pred, truth = check_class_map(pred, "prediction"), check_class_map(truth, "truth")
    check_same_shape(pred, truth)
    predicted, actual = pred == class_id, truth == class_id
    codes = np.zeros(pred.shape, np.uint8)
    codes[predicted & actual] = PIXEL_TRUE_POSITIVE
    codes[predicted & ~actual] = PIXEL_FALSE_POSITIVE
    codes[~predicted & actual] = PIXEL_FALSE_NEGATIVE
    return codes
