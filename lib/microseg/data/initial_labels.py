"""Automatic initial labels: a rough segmentation to correct instead of drawing from scratch.

A global threshold (Otsu by default) separates objects from background; connected components
become objects; touching objects are split by a watershed on the distance to the background.
The result is meant to be edited (e.g. in napari or Fiji), then used as labels — correcting is
much faster than drawing every object.

Example
-------
>>> from microseg.data.synthetic import synthetic_sample
>>> image, truth = synthetic_sample((128, 128), seed=0)
>>> labels = initial_labels(image)
>>> labels.dtype.name, labels.shape
('int32', (128, 128))
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from microseg.errors import ConfigError, DataError

__all__ = [
    "METHODS",
    "initial_labels",
    "write_initial_labels",
]

log = logging.getLogger(__name__)

METHODS = ("otsu", "li", "triangle", "yen")


def initial_labels(image: np.ndarray, method: str = "otsu", split_touching: bool = True,
                   min_size: int | None = None, smoothing: float = 1.0,
                   split_depth: float = 1.5) -> np.ndarray:
    """Instance labels from a threshold, connected components and a watershed split.

    Parameters
    ----------
    image: (C, Y, X) or (C, Z, Y, X) in canonical axes, any real dtype; channels are averaged.
    method: threshold method of ``skimage.filters``: ``"otsu"``, ``"li"``, ``"triangle"`` or
        ``"yen"``; objects are brighter than the threshold.
    split_touching: split touching objects: one seed per maximum of the distance to the
        background that stands out by at least ``split_depth`` pixels, then a watershed.
    min_size: objects with fewer pixels are dropped; None: 16 in 2D, 64 in 3D.
    smoothing: Gaussian sigma in pixels applied before thresholding (0: none).
    split_depth: see ``split_touching``; larger values split less.

    Returns int32 labels (Y, X) or (Z, Y, X), 0 background, objects 1..n. Holes inside objects
    are filled. Raises :class:`DataError` for an image without a channel axis and
    :class:`ConfigError` for an unknown method.
    """
    from scipy import ndimage

    values = _single_channel(image)
    if smoothing > 0:
        values = ndimage.gaussian_filter(values, smoothing)
    foreground = ndimage.binary_fill_holes(values > _threshold(values, method))
    if split_touching:
        labels = _watershed_split(foreground, split_depth)
    else:
        labels = ndimage.label(foreground)[0]
    size = (16 if values.ndim == 2 else 64) if min_size is None else min_size
    return _without_small_objects(labels, size)


def _single_channel(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (3, 4):
        raise DataError(f"initial labels need an image (C, Y, X) or (C, Z, Y, X); found shape "
                        f"{image.shape} (add a channel axis: image[None])")
    return image.astype(np.float64).mean(axis=0)


def _threshold(values: np.ndarray, method: str) -> float:
    from skimage import filters

    if method not in METHODS:
        raise ConfigError(f"unknown threshold method {method!r}; choose one of {METHODS}")
    if values.min() == values.max():
        return float(values.max())
    return float(getattr(filters, f"threshold_{method}")(values))


def _watershed_split(foreground: np.ndarray, split_depth: float) -> np.ndarray:
    from scipy import ndimage
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    distance = ndimage.distance_transform_edt(foreground)
    markers = ndimage.label(h_maxima(distance, split_depth))[0]
    # Objects thinner than split_depth have no such maximum; each still gets one seed.
    components, n_components = ndimage.label(foreground)
    seeded = np.unique(components[markers > 0])
    unseeded = np.isin(components, np.setdiff1d(np.arange(1, n_components + 1), seeded))
    markers[unseeded] = components[unseeded] + markers.max()
    return watershed(-distance, markers, mask=foreground)


def _without_small_objects(labels: np.ndarray, min_size: int) -> np.ndarray:
    from skimage.segmentation import relabel_sequential

    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    labels = np.where(small[labels], 0, labels)
    return relabel_sequential(labels)[0].astype(np.int32)


def write_initial_labels(images_dir: str | Path, out_dir: str | Path, ndim: int | None = None,
                         axes: str | None = None, method: str = "otsu",
                         split_touching: bool = True, min_size: int | None = None) -> list[Path]:
    """Write initial labels for every image of ``images_dir`` into the new folder ``out_dir``.

    Each label image is ``out_dir/<stem>.tif`` (uint16, or int32 beyond 65535 objects), ready
    to correct and use as the ``labels/`` folder. ``ndim`` and ``axes`` are passed to
    :func:`microseg.io.read_image`; ``method``, ``split_touching`` and ``min_size`` to
    :func:`initial_labels`. Returns the written paths, sorted.

    Raises :class:`ConfigError` when ``out_dir`` is ``images_dir`` or inside it (input folders
    are never written to) and :class:`~microseg.errors.OutputExistsError` when ``out_dir``
    already holds files.
    """
    from microseg.io import image_stem, list_images, read_image, write_image
    from microseg.runs import create_output_dir

    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if out_dir.resolve() == images_dir.resolve() or images_dir.resolve() in out_dir.resolve().parents:
        raise ConfigError(f"output folder {out_dir} is inside the image folder {images_dir}, "
                          f"which is never written to; choose a folder elsewhere, e.g. in the "
                          f"run folder")
    images = list_images(images_dir)
    create_output_dir(out_dir)
    written = []
    for path in images:
        labels = initial_labels(read_image(path, axes=axes, ndim=ndim), method=method,
                                split_touching=split_touching, min_size=min_size)
        stored = labels.astype(np.uint16) if labels.max() <= np.iinfo(np.uint16).max else labels
        written.append(write_image(out_dir / f"{image_stem(path)}.tif", stored,
                                   axes="ZYX" if labels.ndim == 3 else "YX"))
        log.debug("%s: %d objects", written[-1], int(labels.max()))
    log.info("wrote initial labels of %d images to %s", len(written), out_dir)
    return sorted(written)
