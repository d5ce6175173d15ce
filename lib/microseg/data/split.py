"""Split a dataset into training, validation and test sets per image — never per patch.

Patches of one image are correlated; if they land in both training and validation, the
validation loss stops warning about over-fitting. So whole images go to one set each
(:func:`split_pairs`). A dataset of only one or two large images is split into
non-overlapping regions instead (:func:`split_regions`).

The split is saved as ``run_dir/data/split.json`` (a :class:`SplitManifest`) with, per image, its
absolute paths, its region (if any) and its normalization statistics; every later notebook
reads it with :func:`load_manifest`.

Example
-------
>>> sets = split_pairs([f"img{i}" for i in range(10)], seed=0)
>>> [len(sets[s]) for s in SUBSETS]
[7, 2, 1]
>>> regions = split_regions((100, 400), (0.5, 0.25, 0.25))
>>> regions["val"]
[(slice(0, 100, None), slice(200, 300, None))]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError, RunOrderError

__all__ = [
    "MANIFEST_VERSION",
    "SUBSETS",
    "SplitManifest",
    "check_fractions",
    "load_manifest",
    "manifest_entry",
    "region_slices",
    "split_pairs",
    "split_regions",
    "subset_sizes",
]

SUBSETS = ("train", "val", "test")
MANIFEST_VERSION = 1


@dataclass
class SplitManifest:
    """The split of one run: which images train, validate and test, and how to read them.

    data_dir: the data folder the images came from (as given).
    ndim: 2 or 3 spatial dimensions.
    axes: canonical axes of the images in memory, ``"CYX"`` or ``"CZYX"``.
    n_channels: channels per image.
    task: ``"binary"``, ``"semantic"`` or ``"instance"``.
    n_classes: network output classes, background included.
    normalization: the :class:`~microseg.transforms.normalization.PercentileNormalization`
        used, as a dict (``to_dict()``).
    train, val, test: entries ``{"stem", "image", "label", "region", "norm_low", "norm_high"}``:
        absolute paths (``label`` None for unlabelled images), ``region`` None (whole image)
        or ``[[start, stop], ...]`` per spatial axis, and the per-channel normalization
        statistics of the whole image.
    input_axes: the axes given to read the files (``read_image(..., axes=input_axes)``), None
        when the files' metadata or the guess was used.
    pixel_size: µm per pixel along the spatial axes (ZYX order) when known (from the images'
        metadata or given), else None; manifests saved without it read as None.
    version: layout version of the file.
    """

    data_dir: str
    ndim: int
    axes: str
    n_channels: int
    task: str
    n_classes: int
    normalization: dict[str, Any]
    train: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    test: list[dict[str, Any]] = field(default_factory=list)
    input_axes: str | None = None
    pixel_size: list[float] | None = None
    version: int = MANIFEST_VERSION

    def entries(self, subset: str) -> list[dict[str, Any]]:
        """Copies of the entries of ``"train"``, ``"val"`` or ``"test"``."""
        if subset not in SUBSETS:
            raise ConfigError(f"unknown subset {subset!r}; choose one of {', '.join(SUBSETS)}")
        return [dict(entry) for entry in getattr(self, subset)]

    def stems(self, subset: str) -> list[str]:
        """The image stems of one subset, in manifest order."""
        return [entry["stem"] for entry in self.entries(subset)]

    def normalization_config(self) -> Any:
        """The normalization as a :class:`PercentileNormalization` object."""
        from microseg.transforms.normalization import PercentileNormalization

        return PercentileNormalization.from_dict(self.normalization)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (without ``pixel_size`` when it is unknown, so that such
        manifests stay readable by versions that predate the field)."""
        data = dataclasses.asdict(self)
        if data["pixel_size"] is None:
            del data["pixel_size"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "split manifest") -> SplitManifest:
        """Build from a dict; :class:`ConfigError` naming ``source`` for a wrong layout."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        unknown, missing = sorted(set(data) - names), sorted(required - set(data))
        if unknown or missing:
            raise ConfigError(f"{source}: not a split manifest (unknown keys {unknown}, missing "
                              f"keys {missing}); make it again with notebooks/01_prepare_data")
        if int(data.get("version", MANIFEST_VERSION)) > MANIFEST_VERSION:
            raise ConfigError(f"{source}: manifest version {data['version']} was written by a "
                              f"newer microseg (this one reads up to {MANIFEST_VERSION}); "
                              f"update microseg")
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        """Write the manifest as JSON, atomically; returns the path."""
        from microseg.runs import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> SplitManifest:
        """Read a manifest written by :meth:`save`."""
        from microseg.runs import read_json

        return cls.from_dict(read_json(path), source=str(path))

    def table(self) -> Any:
        """A ``pandas.DataFrame``, one row per entry: subset, stem, region, statistics, paths."""
        import pandas as pd

        rows = [{"subset": subset, "stem": e["stem"], "region": e["region"],
                 "norm_low": e["norm_low"], "norm_high": e["norm_high"], "image": e["image"],
                 "label": e["label"]} for subset in SUBSETS for e in getattr(self, subset)]
        return pd.DataFrame(rows, columns=["subset", "stem", "region", "norm_low", "norm_high",
                                           "image", "label"])


def manifest_entry(stem: str, image: str | Path, label: str | Path | None,
                   norm_low: Sequence[float], norm_high: Sequence[float],
                   region: Sequence[slice] | None = None) -> dict[str, Any]:
    """One manifest entry, with absolute paths and the region as ``[[start, stop], ...]``."""
    return {
        "stem": stem,
        "image": str(Path(image).resolve()),
        "label": None if label is None else str(Path(label).resolve()),
        "region": None if region is None else [[int(s.start), int(s.stop)] for s in region],
        "norm_low": [float(v) for v in norm_low],
        "norm_high": [float(v) for v in norm_high],
    }


def region_slices(region: Sequence[Sequence[int]] | None) -> tuple[slice, ...] | None:
    """The ``[[start, stop], ...]`` of a manifest entry as a tuple of slices (None stays None)."""
    if region is None:
        return None
    return tuple(slice(int(start), int(stop)) for start, stop in region)


def load_manifest(run_dir_or_path: str | Path) -> SplitManifest:
    """The split manifest of a run folder (``run_dir/data/split.json``) or a manifest file.

    Raises :class:`RunOrderError` naming notebook 01 when it does not exist, and
    :class:`ConfigError` for a file that is not a manifest.
    """
    from microseg.runs import RunFolder

    path = Path(run_dir_or_path)
    if path.suffix == ".json":
        if not path.is_file():
            raise RunOrderError(f"{path} does not exist: run notebooks/01_prepare_data.ipynb "
                                f"first (it writes the split manifest)")
        return SplitManifest.load(path)
    return SplitManifest.load(RunFolder(path).require_split())


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """``(train, val, test)`` fractions ≥ 0 summing to 1 with train > 0; else ConfigError."""
    values = tuple(float(f) for f in fractions)
    if (len(values) != 3 or min(values) < 0 or values[0] <= 0
            or not math.isclose(sum(values), 1.0, abs_tol=1e-6)):
        raise ConfigError(f"split fractions {tuple(fractions)}: expected three values (train, "
                          f"val, test) ≥ 0 that sum to 1, with train > 0, e.g. (0.7, 0.15, 0.15)")
    return values  # type: ignore[return-value]


def subset_sizes(n: int, fractions: Sequence[float]) -> dict[str, int]:
    """How many of ``n`` items go to each subset.

    Rounded by largest remainder (so the sizes sum to ``n`` and each is within 1 of
    ``n * fraction``); then every subset with a fraction above 0 gets at least one item, taken
    from the largest subset. Raises :class:`DataError` when ``n`` is smaller than the number of
    subsets with a fraction above 0.
    """
    fractions = check_fractions(fractions)
    wanted = sum(f > 0 for f in fractions)
    if n < wanted:
        raise DataError(f"cannot split {n} item(s) into {wanted} non-empty sets")
    exact = [n * f for f in fractions]
    sizes = [math.floor(x) for x in exact]
    by_remainder = sorted(range(3), key=lambda k: (sizes[k] - exact[k], k))
    for k in by_remainder[: n - sum(sizes)]:
        sizes[k] += 1
    for k in range(3):
        if fractions[k] > 0 and sizes[k] == 0:
            sizes[int(np.argmax(sizes))] -= 1
            sizes[k] = 1
    return dict(zip(SUBSETS, sizes, strict=True))


def split_pairs(stems: Sequence[str], fractions: Sequence[float] = (0.7, 0.15, 0.15),
                seed: int = 0) -> dict[str, list[str]]:
    """Assign whole images to ``"train"``, ``"val"`` and ``"test"`` at random.

    Parameters
    ----------
    stems: unique image names.
    fractions: (train, val, test), ≥ 0, summing to 1; a set with fraction 0 stays empty, every
        other set gets at least one image.
    seed: the same stems (in any order) and seed always give the same split.

    Returns ``{"train": [...], "val": [...], "test": [...]}``, each sorted; every stem is in
    exactly one set. Raises :class:`DataError` for repeated stems or too few images (fewer than
    3 with the default fractions; the message suggests a region split), :class:`ConfigError`
    for invalid fractions.
    """
    stems = sorted(stems)
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise DataError("every image needs a unique name to be split",
                        [f"{s!r} appears {stems.count(s)} times" for s in repeated])
    fractions = check_fractions(fractions)
    wanted = sum(f > 0 for f in fractions)
    if len(stems) < wanted:
        raise DataError(
            f"found {len(stems)} image(s); a split per image needs at least {wanted} (one per "
            f"set) so that no image is in two sets",
            ["add images, or split regions of the image(s) instead: "
             "prepare_data(..., split_by='region') cuts each image into non-overlapping "
             "training, validation and test regions"])
    shuffled = [stems[i] for i in np.random.default_rng(seed).permutation(len(stems))]
    sizes = subset_sizes(len(stems), fractions)
    bounds = np.cumsum([0] + [sizes[s] for s in SUBSETS])
    return {s: sorted(shuffled[bounds[k]:bounds[k + 1]]) for k, s in enumerate(SUBSETS)}


def split_regions(spatial_shape: Sequence[int], fractions: Sequence[float] = (0.7, 0.15, 0.15),
                  axis: int | None = None) -> dict[str, list[tuple[slice, ...]]]:
    """Cut one image into non-overlapping training, validation and test regions.

    Parameters
    ----------
    spatial_shape: ``(Y, X)`` or ``(Z, Y, X)``.
    fractions: (train, val, test) share of the length along ``axis``, as for
        :func:`split_pairs`.
    axis: spatial axis to cut along; None: the longest (the first of equally long ones).

    Returns ``{"train": [region], "val": [region], "test": [region]}``: each region a tuple of
    slices over the spatial axes; train first, then val, then test along ``axis``; a set with
    fraction 0 gets no region. Raises :class:`DataError` when the axis is too short.
    """
    shape = tuple(int(s) for s in spatial_shape)
    axis = int(np.argmax(shape)) if axis is None else axis
    if not -len(shape) <= axis < len(shape):
        raise ConfigError(f"axis {axis} does not exist in a {len(shape)}D image of shape {shape}")
    axis %= len(shape)
    try:
        sizes = subset_sizes(shape[axis], fractions)
    except DataError:
        raise DataError(f"cannot cut an image of shape {shape} into regions along axis {axis} "
                        f"(length {shape[axis]}); choose a longer axis") from None
    regions: dict[str, list[tuple[slice, ...]]] = {}
    start = 0
    for subset in SUBSETS:
        stop = start + sizes[subset]
        box = tuple(slice(start, stop) if k == axis else slice(0, side)
                    for k, side in enumerate(shape))
        regions[subset] = [box] if stop > start else []
        start = stop
    return regions
