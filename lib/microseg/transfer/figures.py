"""Figures of notebooks 03 and 04: predictions side by side, the comparison, the rounds.

matplotlib and scikit-image are imported when a figure is drawn. Every function returns the
Figure; the notebooks show it and save it into the model folder.

Example
-------
>>> figure = show_predictions(setup.val, [zero.val])           # doctest: +SKIP
>>> figure = show_comparison(comparison_table(zero.test, adapted, scratch))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["show_comparison", "show_predictions", "show_rounds"]


def _plane(array: np.ndarray) -> np.ndarray:
    """The 2D plane shown: middle Z for volumes."""
    while array.ndim > 2:
        array = array[array.shape[0] // 2]
    return array


def _grey(image: np.ndarray) -> np.ndarray:
    plane = _plane(np.asarray(image)[0]).astype(np.float64)
    low, high = np.percentile(plane, (1.0, 99.8))
    return np.clip((plane - low) / (high - low if high > low else 1.0), 0.0, 1.0)


def _overlay(axis: Any, grey: np.ndarray, labels: np.ndarray) -> None:
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    labels = _plane(np.asarray(labels))
    coloured = label2rgb(labels, image=grey, alpha=0.3, bg_label=0, image_alpha=1.0)
    coloured[find_boundaries(labels, mode="inner")] = (1.0, 1.0, 0.0)
    axis.imshow(coloured, interpolation="nearest")


def show_predictions(samples: Sequence[Any], qualities: Sequence[Any], n: int = 3) -> Any:
    """Image, true labels and each model's prediction for the first ``n`` samples.

    ``samples``: Samples (``stem``, ``image`` (C, *S), ``label``); ``qualities``:
    :class:`~microseg.transfer.quality.Quality` results on these samples, in the same order, one
    column each, titled with the model and its foreground Dice on that image. Volumes show their
    middle plane.
    """
    import matplotlib.pyplot as plt

    shown = list(samples)[:n]
    columns = 2 + len(qualities)
    figure, axes = plt.subplots(len(shown), columns, figsize=(2.6 * columns, 2.6 * len(shown)),
                                squeeze=False, layout="constrained")
    for row, sample in enumerate(shown):
        grey = _grey(sample.image)
        axes[row, 0].imshow(grey, cmap="gray")
        axes[row, 0].set_title(sample.stem, fontsize=9)
        _overlay(axes[row, 1], grey, sample.label)
        axes[row, 1].set_title("truth", fontsize=9)
        for column, quality in enumerate(qualities, start=2):
            _overlay(axes[row, column], grey, quality.predictions[row])
            dice = quality.per_image[row]["foreground_dice"]
            axes[row, column].set_title(f"{quality.name}: Dice {dice:.2f}", fontsize=9)
    for axis in axes.flat:
        axis.set_axis_off()
    return figure


def show_comparison(table: Any) -> Any:
    """Bar chart of foreground Dice (and object F1 where defined) per model.

    ``table``: :func:`microseg.recipes.transfer.comparison_table`'s DataFrame.
    """
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(1.6 + 1.4 * len(table), 3.4), layout="constrained")
    positions = np.arange(len(table))
    has_f1 = table["object_f1"].notna().any()
    width = 0.4 if has_f1 else 0.6
    bars = axis.bar(positions - (width / 2 if has_f1 else 0), table["foreground_dice"], width,
                    label="foreground Dice")
    axis.bar_label(bars, fmt="%.2f", fontsize=8)
    if has_f1:
        f1 = axis.bar(positions + width / 2, table["object_f1"].fillna(0.0), width,
                      label="object F1 (IoU 0.5)")
        axis.bar_label(f1, fmt="%.2f", fontsize=8)
    axis.set_xticks(positions, table["model"], rotation=15)
    axis.set(ylim=(0, 1.05), ylabel="score on target test images")
    axis.legend(loc="lower right", fontsize=8)
    return figure


def show_rounds(records: Sequence[dict[str, Any]]) -> Any:
    """Foreground Dice before and after each human-in-the-loop round, and training images.

    ``records``: the rounds' dicts (``round``, ``dice_before``, ``dice_after``, ``n_train``).
    """
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2), layout="constrained")
    if records:
        rounds = [0] + [r["round"] for r in records]
        dice = [records[0]["dice_before"]] + [r["dice_after"] for r in records]
        axis.plot(rounds, dice, "o-")
        for x, y, record in zip(rounds[1:], dice[1:], records, strict=True):
            axis.annotate(f"{record['n_train']} train", (x, y), textcoords="offset points",
                          xytext=(0, 6), ha="center", fontsize=8)
        axis.set_xticks(rounds)
    axis.set(xlabel="correction round (0: before)", ylabel="foreground Dice (test)", ylim=(0, 1))
    return figure
