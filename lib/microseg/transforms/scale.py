"""Object scale: measure how large objects are, and resample images to a canonical object size.

A network sees a fixed neighbourhood of pixels (its receptive field). Objects much larger than
that neighbourhood are cut into pieces, much smaller ones merge; and a network trained on
objects of one size does poorly on another. So, as Cellpose does with its cell diameter
(Stringer et al., Nature Methods 2021), microseg can train and predict at a *canonical object
diameter*: every image is resampled by ``factor = canonical_diameter / object_diameter`` before
the network sees it, and predictions are resampled back to the image's own pixel grid.

The **object diameter** of a label image is the median over its objects of the equivalent
diameter — the diameter of a disc (sphere in 3D) of the same area (volume): ``2·√(A/π)``
(``∛(6V/π)``). :func:`object_diameters` gives one value per object, :func:`median_diameter`
the median over one or several label images.

Objects larger than the canonical size are shrunk to it in training; at prediction, objects
larger than the largest trained size are shrunk to the training median, objects smaller than
the training objects are enlarged (at most :data:`MAX_FACTOR` times); sizes in between keep
their pixels (:func:`scale_factor`). Resampling
(:func:`rescale_image`, :func:`rescale_labels`, :func:`resize_to`) keeps the pixel
grid's extent: a pixel of the output covers ``1 / factor`` input pixels, the output shape is the
input shape times the factor, rounded, at least 1. Images are interpolated linearly (with
Gaussian smoothing first when shrinking, against aliasing), labels by nearest neighbour.

Example
-------
>>> import numpy as np
>>> label = np.zeros((40, 40), np.int32)
>>> label[5:15, 5:15] = 1; label[20:36, 20:36] = 2
>>> np.round(object_diameters(label), 2).tolist()
[11.28, 18.05]
>>> rescale_labels(label, 0.5).shape
(20, 20)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError

__all__ = [
    "MAX_FACTOR",
    "MIN_FACTOR",
    "SOLIDITY_MIN_AREA",
    "median_diameter",
    "median_solidity",
    "object_diameters",
    "resample",
    "resample_region",
    "rescale_image",
    "rescale_labels",
    "resize_to",
    "scale_factor",
    "scaled_shape",
]

MIN_FACTOR = 0.1
"""Images are never shrunk more than this (objects 10× larger than the canonical size)."""
MAX_FACTOR = 4.0
"""Images are never enlarged more than this. Only prediction enlarges, and only objects smaller
than the model's training objects (their median: ``TrainedModel.scale_factor``); training
never does: enlarging every training image to the canonical size was measured to cost
accuracy on nuclei (BENCHMARKS.md)."""


def object_diameters(label: np.ndarray) -> np.ndarray:
    """Equivalent diameter of every object of an instance label image (``"YX"``/``"ZYX"``).

    Returns float64 (n_objects,), in the order of the ids present; empty for no objects.
    """
    label = np.asarray(label)
    if label.ndim not in (2, 3) or label.dtype.kind not in "iub":
        raise DataError(f"object sizes need an integer label image (Y, X) or (Z, Y, X), found "
                        f"shape {label.shape} and dtype {label.dtype}")
    sizes = np.bincount(label.ravel().astype(np.int64))[1:]
    sizes = sizes[sizes > 0].astype(np.float64)
    if label.ndim == 2:
        return 2.0 * np.sqrt(sizes / math.pi)
    return np.cbrt(6.0 * sizes / math.pi)


def median_diameter(labels: np.ndarray | Iterable[np.ndarray]) -> float | None:
    """Median equivalent diameter over every object of one or several label images; None when
    there are no objects."""
    arrays = [labels] if isinstance(labels, np.ndarray) else list(labels)
    diameters = np.concatenate([object_diameters(a) for a in arrays]) if arrays else np.zeros(0)
    return float(np.median(diameters)) if diameters.size else None


SOLIDITY_MIN_AREA = 10
"""Objects smaller than this (pixels) have no meaningful solidity and are left out of it."""


def median_solidity(label: np.ndarray) -> float | None:
    """Median solidity (area over the area of the convex hull) of the objects of a 2D label
    image of at least :data:`SOLIDITY_MIN_AREA` pixels; None for a volume (not measured) or
    when there are none. Whole nuclei and cells are close to 1; merged clusters and ragged
    pieces lower (:mod:`microseg.inference.scale_search`).

    >>> label = np.zeros((20, 20), np.int32)
    >>> label[2:8, 2:8] = 1                      # a square: solidity 1
    >>> label[10:18, 10:18] = 2
    >>> label[10:14, 14:18] = 0                  # an L: 48 pixels, its hull 54
    >>> round(median_solidity(label), 3)          # the median of 1 and 48/54
    0.944
    """
    from skimage.measure import regionprops

    label = np.asarray(label)
    if label.ndim != 2:
        return None
    values = [region.solidity for region in regionprops(label)
              if region.area >= SOLIDITY_MIN_AREA]
    return float(np.median(values)) if values else None


def scale_factor(object_diameter: float | None, canonical_diameter: float | None,
                 smallest_diameter: float | None = None, tolerance: float = 1.0,
                 shrink_to: float | None = None) -> float:
    """How to resample an image whose objects have ``object_diameter`` pixels.

    Objects larger than ``canonical_diameter`` (times ``tolerance``) are shrunk to
    ``shrink_to`` (None: to ``canonical_diameter``; ``shrink_to / object``, at least
    :data:`MIN_FACTOR`); objects smaller than
    ``smallest_diameter`` (divided by ``tolerance``), if given, are enlarged to it
    (``smallest / object``, at most :data:`MAX_FACTOR`); others are not resampled (1.0), nor is
    anything when ``object_diameter`` or ``canonical_diameter`` is None.

    Raises :class:`ConfigError` for a diameter that is not positive.

    >>> scale_factor(60, 30), scale_factor(20, 30), scale_factor(5, 30, smallest_diameter=10)
    (0.5, 1.0, 2.0)
    >>> scale_factor(33, 30, tolerance=1.15), scale_factor(36, 30, tolerance=1.15)
    (1.0, 0.8333333333333334)
    >>> scale_factor(100, 30, smallest_diameter=20, tolerance=1.15, shrink_to=20)
    0.2
    """
    if object_diameter is None or canonical_diameter is None:
        return 1.0
    if object_diameter <= 0 or canonical_diameter <= 0 or any(
            d is not None and d <= 0 for d in (smallest_diameter, shrink_to)):
        raise ConfigError(f"object diameters must be positive, found {object_diameter}, "
                          f"{canonical_diameter}, {smallest_diameter} and {shrink_to} (pixels)")
    if object_diameter > canonical_diameter * tolerance:
        target = canonical_diameter if shrink_to is None else shrink_to
        return float(max(MIN_FACTOR, target / object_diameter))
    if smallest_diameter is not None and object_diameter * tolerance < smallest_diameter:
        return float(min(MAX_FACTOR, smallest_diameter / object_diameter))
    return 1.0


def scaled_shape(shape: Sequence[int], factor: float) -> tuple[int, ...]:
    """The spatial shape after resampling by ``factor``: each side rounded, at least 1."""
    return tuple(max(1, int(round(side * factor))) for side in shape)


def rescale_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Resample every channel of ``image`` (C, *spatial) by ``factor``: float32 (C, *scaled).

    Linear interpolation; shrinking first smooths with a Gaussian of sigma ``(1/factor − 1)/2``
    per axis so fine texture does not alias (:func:`resample`).
    """
    image = np.asarray(image)
    if factor == 1.0:
        return image.astype(np.float32, copy=False)
    return resample(image, scaled_shape(image.shape[1:], factor), order=1, smooth=factor < 1.0)


def rescale_labels(label: np.ndarray, factor: float) -> np.ndarray:
    """Resample a label image (*spatial) by ``factor`` with nearest-neighbour interpolation
    (ids are kept, never mixed); same dtype. Objects that become smaller than a pixel vanish.
    """
    label = np.asarray(label)
    if factor == 1.0:
        return label
    return resample(label[None], scaled_shape(label.shape, factor), order=0)[0]


def resize_to(array: np.ndarray, spatial_shape: Sequence[int], smooth: bool = False
              ) -> np.ndarray:
    """Resample every channel of ``array`` (C, *spatial) linearly to ``spatial_shape``:
    float32 (C, *spatial_shape). ``smooth``: Gaussian anti-aliasing (for shrinking images).

    Used to bring probabilities predicted on a resampled image back to the image's own grid.
    """
    array = np.asarray(array)
    if tuple(array.shape[1:]) == tuple(int(s) for s in spatial_shape):
        return array.astype(np.float32, copy=False)
    return resample(array, spatial_shape, order=1, smooth=smooth)


def resample(array: Any, spatial_shape: Sequence[int], order: int = 1, smooth: bool = False
             ) -> np.ndarray:
    """Resample ``array`` (C, *spatial) to ``spatial_shape`` (module docstring): the whole
    array as one :func:`resample_region`. float32 for ``order=1``, the input dtype for 0."""
    shape = tuple(int(s) for s in spatial_shape)
    return resample_region(array, shape, tuple(slice(0, s) for s in shape), order, smooth)


def resample_region(source: Any, spatial_shape: Sequence[int], region: Sequence[slice],
                    order: int = 1, smooth: bool = False) -> np.ndarray:
    """One region of ``source`` (C, *spatial; NumPy, Zarr...) resampled to ``spatial_shape``.

    Output pixel ``i`` of an axis samples the input at ``(i + ½)·n_in/n_out − ½`` (pixel
    centres aligned, as the whole field of view is kept), linearly (``order=1``) or from the
    nearest pixel (``order=0``); with ``smooth`` the input is first blurred with a Gaussian of
    sigma ``(n_in/n_out − 1)/2`` per shrunk axis (nearest-value edges). Only the input the
    region needs is read (its footprint plus the blur's reach), so resampling an array block
    by block gives exactly the values of resampling it whole.

    Returns (C, *region shape): float32 for ``order=1``, the source's dtype for ``order=0``.

    Raises :class:`ConfigError` for an order other than 0 or 1.
    """
    from scipy import ndimage

    if order not in (0, 1):
        raise ConfigError(f"resampling order {order}: use 0 (nearest) or 1 (linear)")
    in_shape = tuple(int(s) for s in source.shape[1:])
    ratios = [n / int(m) for n, m in zip(in_shape, spatial_shape, strict=True)]
    sigmas = [max(0.0, (r - 1.0) / 2.0) if smooth else 0.0 for r in ratios]
    reads, grids = [], []
    for box, n, ratio, sigma in zip(region, in_shape, ratios, sigmas, strict=True):
        coords = (np.arange(box.start, box.stop) + 0.5) * ratio - 0.5
        reach = int(4.0 * sigma + 0.5) + 1
        low = max(0, int(np.floor(coords.min())) - reach)
        high = min(n, int(np.ceil(coords.max())) + reach + 1)
        reads.append(slice(low, high))
        grids.append(np.clip(coords, 0, n - 1) - low)
    block = np.asarray(source[(slice(None), *reads)])
    values = block.astype(np.float32) if order == 1 else block
    if any(sigmas):
        values = np.stack([ndimage.gaussian_filter(c, sigmas, mode="nearest") for c in values])
    mesh = np.meshgrid(*grids, indexing="ij")
    return np.stack([ndimage.map_coordinates(c, mesh, order=order, mode="nearest")
                     for c in values])
