"""Load one subset of a split manifest: read, crop to the region, normalize, build targets.

Example
-------
>>> from microseg.data.split import load_manifest
>>> train = load_subset(load_manifest("runs/demo"), "train")         # doctest: +SKIP
>>> train[0].image.shape, train[0].image.dtype, train[0].target.dtype  # doctest: +SKIP
((1, 256, 256), dtype('float32'), dtype('uint8'))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from microseg.data.split import SplitManifest, region_slices
from microseg.errors import DataError

__all__ = [
    "Sample",
    "load_entry",
    "load_subset",
]


@dataclass
class Sample:
    """One image of a subset, ready for training or evaluation.

    stem: the image's name.
    image: float32 (C, Y, X) or (C, Z, Y, X), normalized with the image's stored statistics.
    label: int32 (Y, X) or (Z, Y, X) instance or class ids, None for unlabelled images.
    target: the class map for the manifest's task (see
        :func:`microseg.transforms.targets.labels_to_target`), None without labels.
    """

    stem: str
    image: np.ndarray
    label: np.ndarray | None
    target: np.ndarray | None


def load_subset(manifest: SplitManifest, subset: str) -> list[Sample]:
    """Every image of ``"train"``, ``"val"`` or ``"test"``, in manifest order.

    Each image is read with :func:`microseg.io.read_image` (axes as recorded in the manifest),
    cropped to its region, normalized with its stored per-channel percentiles (global
    normalization: the same numbers for every patch of the image), and paired with its label
    and target. Raises :class:`~microseg.errors.DataError` naming the file when an image or
    label is missing or unreadable or an image has NaN or infinite pixels, and
    :class:`~microseg.errors.ConfigError` for an unknown subset.
    """
    clip = manifest.normalization_config().clip
    return [load_entry(entry, manifest, clip) for entry in manifest.entries(subset)]


def load_entry(entry: dict[str, Any], manifest: SplitManifest, clip: bool = False) -> Sample:
    """One manifest entry as a :class:`Sample` (see :func:`load_subset`).

    Raises :class:`~microseg.errors.DataError` naming the file when the image has NaN or
    infinite pixels, or the entry's normalization statistics are not finite numbers.
    """
    from microseg.data.checks import require_finite
    from microseg.io import read_image, read_label
    from microseg.transforms.normalization import normalize
    from microseg.transforms.targets import labels_to_target

    region = region_slices(entry["region"]) or ()
    image = read_image(entry["image"], axes=manifest.input_axes, ndim=manifest.ndim)
    require_finite(image, entry["image"])
    _require_finite_statistics(entry)
    image = normalize(image[(slice(None), *region)], entry["norm_low"], entry["norm_high"], clip)
    label = target = None
    if entry["label"] is not None:
        label = np.ascontiguousarray(read_label(entry["label"], ndim=manifest.ndim)[region])
        target = labels_to_target(label, manifest.task)
    return Sample(entry["stem"], image, label, target)


def _require_finite_statistics(entry: dict[str, Any]) -> None:
    values = np.asarray([*entry["norm_low"], *entry["norm_high"]], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise DataError(f"{entry['image']}: its normalization statistics in the split manifest "
                        f"are not finite (low {entry['norm_low']}, high {entry['norm_high']}); "
                        f"prepare the data again (notebooks/01_prepare_data.ipynb with "
                        f"overwrite=True), which names the images to fix")
