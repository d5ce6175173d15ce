"""Figures for the notebooks (matplotlib). Each function returns the Figure; the notebook shows
it and saves it into the run folder with :func:`save_figure`.

Volumes are shown by their middle Z plane, multi-channel images by their first channel, each
with the contrast stretched between its 1st and 99.8th percentile.

Organised by figure:

- data (notebook 01): :func:`show_samples`, :func:`show_pairs`, :func:`show_split`,
  :func:`show_normalization`, :func:`show_augmentations`, :func:`show_initial_labels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from microseg.logs import shorten_middle
from microseg.runs import save_figure

__all__ = [
    "SUBSET_COLOURS",
    "display_plane",
    "save_figure",
    "shorten_middle",
    "show_augmentations",
    "show_initial_labels",
    "show_normalization",
    "show_object_sizes",
    "show_pairs",
    "show_samples",
    "show_split",
]

SUBSET_COLOURS = MappingProxyType({"train": "tab:blue", "val": "tab:orange", "test": "tab:green"})


# ---------------------------------------------------------------- shared helpers


def display_plane(array: np.ndarray, channels: bool = True) -> np.ndarray:
    """The 2D plane shown for an array: first channel (if ``channels``), middle Z for volumes."""
    array = np.asarray(array)
    if channels:
        array = array[0]
    while array.ndim > 2:
        array = array[array.shape[0] // 2]
    return array


def _stretched(plane: np.ndarray) -> np.ndarray:
    low, high = np.percentile(plane, (1.0, 99.8))
    return np.clip((plane - low) / (high - low if high > low else 1.0), 0.0, 1.0)


def _overlay(axis: Any, plane: np.ndarray, label: np.ndarray) -> None:
    """The image in grey with every object in its own colour, outlined."""
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    grey = _stretched(plane)
    coloured = label2rgb(label, image=grey, alpha=0.3, bg_label=0, image_alpha=1.0)
    coloured[find_boundaries(label, mode="inner")] = (1.0, 1.0, 0.0)
    axis.imshow(coloured, interpolation="nearest")


def _grid(n_rows: int, n_cols: int, size: float = 2.6) -> tuple[Any, np.ndarray]:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows),
                                squeeze=False, layout="constrained")
    for axis in axes.flat:
        axis.set_axis_off()
    return figure, axes


# ---------------------------------------------------------------- data (notebook 01)


def show_samples(samples: Sequence[Any], n: int = 4) -> Any:
    """The first ``n`` samples: image, image with coloured labels, target class map.

    ``samples`` are :class:`microseg.data.dataset.Sample` objects (or anything with ``stem``,
    ``image`` (C, *spatial), ``label`` and ``target``, the last two possibly None).
    """
    shown = list(samples)[:n]
    has_label = any(s.label is not None for s in shown)
    has_target = any(s.target is not None for s in shown)
    figure, axes = _grid(1 + has_label + has_target, max(1, len(shown)))
    for column, sample in enumerate(shown):
        plane = display_plane(sample.image)
        axes[0, column].imshow(_stretched(plane), cmap="gray")
        axes[0, column].set_title(shorten_middle(sample.stem), fontsize=9)
        if sample.label is not None:
            _overlay(axes[1, column], plane, display_plane(sample.label, channels=False))
        if sample.target is not None:
            axes[-1, column].imshow(display_plane(sample.target, channels=False),
                                    cmap="viridis", interpolation="nearest")
    _row_titles(axes, ["image"] + ["labels"] * has_label + ["target classes"] * has_target)
    return figure


def _row_titles(axes: np.ndarray, titles: list[str]) -> None:
    for row, title in enumerate(titles):
        axes[row, 0].text(-0.08, 0.5, title, transform=axes[row, 0].transAxes, rotation=90,
                          ha="right", va="center", fontsize=9)


def show_pairs(pairs: Sequence[Any], n: int = 4, axes: str | None = None) -> Any:
    """The first ``n`` raw image/label pairs (:class:`microseg.io.ImagePair`), as read."""
    from types import SimpleNamespace

    from microseg.io import read_image, read_label

    samples = []
    for pair in list(pairs)[:n]:
        image = read_image(pair.image, axes=axes, ndim=pair.ndim)
        label = read_label(pair.label, ndim=pair.ndim) if pair.label is not None else None
        samples.append(SimpleNamespace(stem=pair.stem, image=image, label=label, target=None))
    return show_samples(samples, n=n)


def show_object_sizes(summary: dict[str, Any], canonical_diameter: float | None = None) -> Any:
    """The median object diameter of every image (sorted bars), the data set's median and, when
    given, the canonical diameter training resamples to: how far images differ in magnification.

    ``summary`` is notebook 01's data summary (``object_diameter_per_image``,
    ``object_diameter``). Returns a matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    per_image = sorted((summary.get("object_diameter_per_image") or {}).values())
    figure, axis = plt.subplots(figsize=(8, 3))
    axis.bar(range(len(per_image)), per_image, color="#4c72b0")
    if summary.get("object_diameter"):
        axis.axhline(summary["object_diameter"], color="k", label="median of all objects")
    if canonical_diameter:
        axis.axhline(canonical_diameter, color="#dd8452", linestyle="--",
                     label="canonical diameter (training shrinks larger objects to it)")
    shown = [*per_image, summary.get("object_diameter") or 0.0, canonical_diameter or 0.0]
    axis.set_ylim(0, 1.35 * max(shown))  # room for the legend above the lines
    axis.set_xlabel("images, by their median object diameter")
    axis.set_ylabel("diameter (pixels)")
    axis.set_xticks([])
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return figure


def show_split(manifest: Any) -> Any:
    """How many images (or regions) each subset holds, with their names."""
    import matplotlib.pyplot as plt

    from microseg.data.split import SUBSETS

    figure, axis = plt.subplots(figsize=(7, 2.4), layout="constrained")
    for row, subset in enumerate(SUBSETS):
        stems = manifest.stems(subset)
        axis.barh(row, len(stems), color=SUBSET_COLOURS[subset])
        names = ", ".join(stems[:4]) + (f" … (+{len(stems) - 4})" if len(stems) > 4 else "")
        axis.text(len(stems), row, f"  {len(stems)}: {names}", va="center", fontsize=8)
    axis.set_yticks(range(len(SUBSETS)), SUBSETS)
    axis.invert_yaxis()
    axis.set_xlabel("images (regions for a region split)")
    axis.set_xlim(0, 2.2 * max(1, *(len(manifest.stems(s)) for s in SUBSETS)))
    axis.set_title(f"split per {'region' if manifest.train[0]['region'] else 'image'}")
    return figure


def show_normalization(manifest: Any, channel: int = 0) -> Any:
    """Each image's low and high percentile (one channel), coloured by subset.

    Images far from the others point at a different acquisition setting (or a problem).
    """
    import matplotlib.pyplot as plt

    from microseg.data.split import SUBSETS

    config = manifest.normalization_config()
    figure, axis = plt.subplots(figsize=(5, 4), layout="constrained")
    for subset in SUBSETS:
        entries = manifest.entries(subset)
        axis.scatter([e["norm_low"][channel] for e in entries],
                     [e["norm_high"][channel] for e in entries],
                     color=SUBSET_COLOURS[subset], label=subset, s=20)
    axis.set_xlabel(f"percentile {config.low:g} (mapped to 0)")
    axis.set_ylabel(f"percentile {config.high:g} (mapped to 1)")
    axis.set_title(f"normalization statistics per image, channel {channel}")
    axis.legend()
    return figure


def show_augmentations(image: np.ndarray, target: np.ndarray, augmenter: Any, n: int = 6,
                       patch: int | None = 128) -> Any:
    """The original (left) and ``n`` random augmentations of one patch and its target.

    ``image`` float32 (C, *spatial), ``target`` (*spatial); ``augmenter`` a
    :class:`microseg.transforms.augment.Augmenter` (called ``n`` times). The patch is the
    centre of the image, at most ``patch`` pixels per side (None: the whole image).
    """
    if patch is not None:
        centre = tuple(slice(max(0, (side - patch) // 2), max(0, (side - patch) // 2) + patch)
                       for side in target.shape)
        image, target = image[(slice(None), *centre)], target[centre]
    versions = [(image, target)] + [augmenter(image, target) for _ in range(n)]
    figure, axes = _grid(2, n + 1, size=2.0)
    for column, (new_image, new_target) in enumerate(versions):
        axes[0, column].imshow(display_plane(new_image), cmap="gray")
        axes[1, column].imshow(display_plane(new_target, channels=False), cmap="viridis",
                               interpolation="nearest", vmin=0, vmax=max(2, int(target.max())))
        axes[0, column].set_title("original" if column == 0 else f"random {column}", fontsize=9)
    _row_titles(axes, ["image", "target"])
    return figure


def show_initial_labels(image: np.ndarray, initial: np.ndarray,
                        truth: np.ndarray | None = None, title: str = "") -> Any:
    """An image with its automatic initial labels, beside the true labels when known."""
    plane = display_plane(image)
    figure, axes = _grid(1, 2 + (truth is not None), size=3.2)
    axes[0, 0].imshow(_stretched(plane), cmap="gray")
    axes[0, 0].set_title(shorten_middle(title or "image", 32), fontsize=9)
    _overlay(axes[0, 1], plane, display_plane(initial, channels=False))
    axes[0, 1].set_title(f"initial labels ({int(initial.max())} objects)", fontsize=9)
    if truth is not None:
        _overlay(axes[0, 2], plane, display_plane(truth, channels=False))
        axes[0, 2].set_title(f"annotation ({int(truth.max())} objects)", fontsize=9)
    return figure
