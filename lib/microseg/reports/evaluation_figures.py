"""Figures of an evaluation: metrics against IoU threshold, distributions, overlays, curves.

Every function returns a Matplotlib Figure (shown inline by a notebook, saved with
:func:`save_figure`, embedded in the QC report). Matplotlib is imported inside the functions.

Overlay colours, the same in every figure and in the report: green = correct (TP pixels, or
matched predicted objects), red = false positive (pixels, or predicted objects without a
partner), blue = missed (FN pixels, or true objects no prediction matched).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from microseg.runs import save_figure

__all__ = [
    "ERROR_COLOURS",
    "display_plane",
    "plot_metric_distribution",
    "plot_metric_vs_threshold",
    "plot_overlays",
    "plot_pixel_metrics",
    "plot_training_curves",
    "save_figure",
]

ERROR_COLOURS = ("#2ca02c", "#d62728", "#1f77b4")
"""Colours of codes 1 (correct), 2 (false positive), 3 (missed)."""

INSTANCE_CURVES = ("precision", "recall", "f1", "ap", "panoptic_quality")


def plot_metric_vs_threshold(summaries: Mapping[str, Mapping[str, Any]],
                             metrics: Sequence[str] = INSTANCE_CURVES) -> Any:
    """Object metrics (pooled) against the IoU threshold, one panel per metric, a line per model.

    ``summaries``: model name → evaluation summary holding ``instance`` with ``thresholds`` and
    one list per metric name in ``metrics``.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3), squeeze=False,
                             sharey=True)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for name, summary in summaries.items():
            instance = summary.get("instance") or {}
            values = [np.nan if v is None else v for v in instance.get(metric, [])]
            if values:
                ax.plot(instance["thresholds"], values, marker="o", markersize=3, label=name)
        ax.set(title=metric.replace("_", " "), xlabel="IoU threshold", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("pooled over images")
    axes[0][-1].legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_pixel_metrics(summaries: Mapping[str, Mapping[str, Any]],
                       metrics: Sequence[str] = ("iou", "dice", "precision", "recall")) -> Any:
    """Pooled pixel metrics per class as grouped bars, one panel per metric, a bar per model."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3), squeeze=False,
                             sharey=True)
    names = list(summaries)
    width = 0.8 / max(1, len(names))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for k, name in enumerate(names):
            classes = summaries[name].get("pixel", {})
            values = [np.nan if c.get(metric) is None else c[metric] for c in classes.values()]
            ax.bar(np.arange(len(values)) + k * width, values, width, label=name)
            ax.set_xticks(np.arange(len(values)) + width * (len(names) - 1) / 2,
                          list(classes), rotation=30, fontsize="small")
        ax.set(title=metric, ylim=(0, 1.02))
    axes[0][-1].legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_metric_distribution(tables: Mapping[str, Any], columns: Sequence[str]) -> Any:
    """Per-image values as a box plot with every image as a dot, one panel per column.

    ``tables``: model name → per-image DataFrame (one row per image). Missing values (a metric
    undefined for an image) are left out.
    """
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(1, len(columns), figsize=(max(3.0, 1.4 * len(tables)) * len(columns),
                                                       3.2), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        data = [t[column].dropna().to_numpy(float) if column in t else np.array([])
                for t in tables.values()]
        ax.boxplot(data, showfliers=False)
        for k, values in enumerate(data, start=1):
            ax.scatter(k + rng.uniform(-0.12, 0.12, len(values)), values, s=12, alpha=0.7)
        ax.set_xticks(range(1, len(data) + 1), list(tables), rotation=20, fontsize="small")
        ax.set(title=column, ylim=(-0.02, 1.02))
    fig.tight_layout()
    return fig


def display_plane(array: np.ndarray, weights: np.ndarray | None = None) -> int | None:
    """Index of the Z plane to show for a 3D (…, Z, Y, X) array (the one where ``weights`` has
    the most non-zero pixels, else the middle); None for 2D."""
    if array.ndim < 3 or (weights is not None and weights.ndim < 3):
        return None
    if weights is not None and np.any(weights):
        return int(np.argmax(np.count_nonzero(weights.reshape(weights.shape[0], -1), axis=1)))
    return array.shape[-3] // 2


def _grey(image: np.ndarray, plane: int | None) -> np.ndarray:
    channel = np.asarray(image[0], dtype=np.float64)
    if plane is not None:
        channel = channel[plane]
    low, high = np.percentile(channel, (1, 99.8))
    return np.clip((channel - low) / (high - low if high > low else 1.0), 0, 1)


def _label_rgb(labels: np.ndarray, grey: np.ndarray) -> np.ndarray:
    from skimage.color import label2rgb

    return label2rgb(labels, image=grey, bg_label=0, alpha=0.45, image_alpha=1.0)


def _error_rgb(codes: np.ndarray, grey: np.ndarray) -> np.ndarray:
    from matplotlib.colors import to_rgb

    rgb = np.repeat(grey[..., None] * 0.6, 3, axis=-1)
    for code, colour in enumerate(ERROR_COLOURS, start=1):
        rgb[codes == code] = to_rgb(colour)
    return rgb


def _error_codes(result: Any, task: str, threshold: float, class_id: int) -> np.ndarray:
    from microseg.metrics.instance import object_error_map
    from microseg.metrics.pixel import pixel_error_map

    if task == "instance":
        return object_error_map(result.instances, result.label, result.matching, threshold)
    return pixel_error_map(result.prediction, result.target, class_id)


def plot_overlays(results: Sequence[Any], task: str, n: int = 4, threshold: float = 0.5,
                  class_id: int = 1) -> Any:
    """Image, truth, prediction and error map for the first ``n`` results, one row each.

    Parameters
    ----------
    results : per image, objects with ``stem``, ``image`` (C, *spatial), ``target`` and
        ``prediction`` (class maps), ``caption`` (a short metric text) and, for instance tasks,
        ``label`` (true ids), ``instances`` (predicted ids) and ``matching``
        (:class:`~microseg.metrics.instance.InstanceMatching`). Pass them worst first.
    task : ``"binary"``, ``"semantic"`` or ``"instance"``. Instance tasks colour objects
        (matched / false positive / missed at ``threshold``); others colour pixels of
        ``class_id`` (TP / FP / FN). 3D images show the Z plane with the most truth.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from microseg.logs import shorten_middle

    shown = list(results)[:n]
    fig, axes = plt.subplots(max(1, len(shown)), 4, figsize=(12, 3.1 * max(1, len(shown))),
                             squeeze=False)
    for row, result in zip(axes, shown, strict=False):
        truth = result.label if task == "instance" else result.target
        predicted = result.instances if task == "instance" else result.prediction
        plane = display_plane(truth, truth)
        at = () if plane is None else (plane,)
        grey = _grey(result.image, plane)
        codes = _error_codes(result, task, threshold, class_id)
        panels = (grey, _label_rgb(truth[at], grey), _label_rgb(predicted[at], grey),
                  _error_rgb(codes[at], grey))
        titles = (shorten_middle(result.stem, 30) + ("" if plane is None else f" (z={plane})"),
                  "truth", "prediction", getattr(result, "caption", "errors"))
        for ax, panel, title in zip(row, panels, titles, strict=True):
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, interpolation="nearest")
            ax.set_title(title, fontsize="small")
            ax.axis("off")
    words = (("matched", "false positive", "missed") if task == "instance"
             else ("true positive", "false positive", "false negative"))
    fig.legend(handles=[Patch(color=c, label=w) for c, w in zip(ERROR_COLOURS, words, strict=True)],
               loc="lower center", ncol=3, fontsize="small")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def plot_training_curves(histories: Mapping[str, Any]) -> Any:
    """Training and validation loss, and validation Dice, against epoch, per model.

    ``histories``: model name → DataFrame of ``history.csv`` (columns ``epoch``, ``train_loss``,
    ``val_loss``, ``val_dice``; missing columns are skipped).
    """
    import matplotlib.pyplot as plt

    fig, (loss_ax, dice_ax) = plt.subplots(1, 2, figsize=(10, 3.2))
    for k, (name, history) in enumerate(histories.items()):
        colour = f"C{k}"
        epochs = history["epoch"] if "epoch" in history else np.arange(1, len(history) + 1)
        if "train_loss" in history:
            loss_ax.plot(epochs, history["train_loss"], color=colour, label=f"{name} train")
        if "val_loss" in history:
            loss_ax.plot(epochs, history["val_loss"], "--", color=colour, label=f"{name} val")
        if "val_dice" in history:
            dice_ax.plot(epochs, history["val_dice"], color=colour, label=name)
    loss_ax.set(title="loss", xlabel="epoch")
    dice_ax.set(title="validation Dice (foreground)", xlabel="epoch", ylim=(0, 1.02))
    for ax in (loss_ax, dice_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
