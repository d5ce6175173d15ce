"""What validation predicts, and how its hard Dice is counted.

Validation images whose every side is at most ``TrainConfig.val_tile`` are predicted whole; larger
ones are cut into a fixed set of windows (a grid covering the image, at most
``val_max_patches`` of them chosen once with the run's seed), so every epoch validates on the
same pixels. Networks that accept only one input shape (UNETR) always get windows of that shape.

Example
-------
>>> import numpy as np
>>> dice_from_confusion(np.array([[5, 1], [1, 3]]))["val_dice"]
0.75
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from microseg.errors import DataError
from microseg.training.config import TrainConfig
from microseg.training.sampling import as_pairs, pad_to_patch

__all__ = ["ValidationItem", "dice_from_confusion", "validation_items"]


@dataclasses.dataclass
class ValidationItem:
    """One validated region: image (C, *S) float32 and target (*S) class map."""

    image: np.ndarray
    target: np.ndarray


def validation_items(val_data: Sequence[Any], config: TrainConfig, divisor: int,
                      model_config: Any) -> list[ValidationItem]:
    """The regions validated every epoch (see the module docstring).

    Parameters
    ----------
    val_data : Samples or (image, target) pairs.
    config : for ``val_tile``, ``val_max_patches`` and ``seed``.
    divisor : the model's size divisor (windows are multiples of it).
    model_config : the ModelConfig (a fixed input shape forces windows of that shape), or None.

    Raises
    ------
    DataError
        If there are no validation images.
    """
    pairs = as_pairs(val_data)
    if not pairs:
        raise DataError("there are no validation images",
                        ["the split needs at least one validation image (notebook 01)"])
    fixed = _fixed_input_shape(model_config)
    side = max(divisor, config.val_tile // divisor * divisor)
    items = []
    for number, (image, target) in enumerate(pairs):
        if fixed is None and max(target.shape) <= config.val_tile:
            items.append(ValidationItem(image, target))
            continue
        window = fixed or tuple(min(side, s) for s in target.shape)
        image, target = pad_to_patch(image, target, window)
        rng = np.random.default_rng([config.seed, number])
        for start in _window_starts(target.shape, window, config.val_max_patches, rng):
            region = tuple(slice(a, a + w) for a, w in zip(start, window, strict=True))
            items.append(ValidationItem(image[(slice(None), *region)], target[region]))
    return items


def _fixed_input_shape(model_config: Any) -> tuple[int, ...] | None:
    if model_config is None:
        return None
    from microseg.models import required_input_shape

    shape = required_input_shape(model_config)
    return None if shape is None else tuple(shape)


def _window_starts(shape: Sequence[int], window: Sequence[int], limit: int,
                   rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Starts of a grid of windows covering ``shape`` (the last flush with the end), at most
    ``limit`` of them chosen at random (fixed by ``rng``)."""
    axes = []
    for size, w in zip(shape, window, strict=True):
        starts = list(range(0, size - w + 1, w))
        if starts[-1] != size - w:
            starts.append(size - w)
        axes.append(starts)
    grid = [tuple(int(a) for a in start) for start in np.stack(
        np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))]
    if len(grid) <= limit:
        return grid
    chosen = sorted(rng.choice(len(grid), size=limit, replace=False))
    return [grid[i] for i in chosen]


def dice_from_confusion(confusion: np.ndarray) -> dict[str, float]:
    """Hard Dice per class from a confusion matrix (rows: truth, columns: prediction).

    Returns ``val_dice`` (mean over classes 1 .. K-1 present in truth or prediction; NaN if
    none), ``val_foreground_dice`` (classes 1 .. K-1 merged into one) and ``val_dice_class<k>``.

    Example
    -------
    >>> dice_from_confusion(np.array([[5, 1], [1, 3]]))["val_dice"]
    0.75
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    true, predicted = confusion.sum(1), confusion.sum(0)
    per_class = {}
    for k in range(1, len(confusion)):
        denominator = true[k] + predicted[k]
        per_class[f"val_dice_class{k}"] = (float(2 * confusion[k, k] / denominator)
                                           if denominator else math.nan)
    present = [d for d in per_class.values() if not math.isnan(d)]
    merged = true[1:].sum() + predicted[1:].sum()
    return {
        "val_dice": float(np.mean(present)) if present else math.nan,
        "val_foreground_dice": (float(2 * confusion[1:, 1:].sum() / merged) if merged
                                else math.nan),
        **per_class,
    }
