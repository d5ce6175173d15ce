"""Object tables: one row per object of a label image, as CSV for spreadsheets, R or pandas.

Columns (2D; volumes add ``z`` columns and say ``volume`` instead of ``area``)::

    label                         the object's id in the label image
    area_px                       its pixels (volume_px: voxels)
    area_um2                      the same in µm² (volume_um3: µm³) when the pixel size is known
    centroid_y, centroid_x        mean pixel position (row, column), in pixels
    centroid_y_um, centroid_x_um  the same in µm when the pixel size is known
    bbox_min_y, bbox_min_x,       bounding box in pixels, ``max`` exclusive (as slices and
    bbox_max_y, bbox_max_x        scikit-image's ``regionprops`` give it)
    mean_<channel>                mean intensity per image channel (channel names when the
                                  image file has them, else ``mean_c0``, ``mean_c1``, ...)

The same quantities as scikit-image's ``regionprops_table`` (``area``, ``centroid``, ``bbox``,
``intensity_mean``), computed slab by slab so that a label volume larger than memory (a Zarr
array from out-of-core prediction) can be measured; objects split between slabs are summed.

Example
-------
>>> labels = np.zeros((32, 32), np.int32)
>>> labels[4:12, 4:14], labels[18:28, 8:20] = 1, 2
>>> image = np.ones((1, 32, 32), np.uint16)
>>> image[0, 18:28, 8:20] = 5
>>> table = object_table(labels, image, pixel_size=(0.65, 0.65))
>>> table[["label", "area_px", "area_um2", "centroid_y", "mean_c0"]]
   label  area_px  area_um2  centroid_y  mean_c0
0      1       80      33.8         7.5      1.0
1      2      120      50.7        22.5      5.0
>>> write_object_tables("predictions/labels", "new_images", "predictions/objects")
...                                                                    # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError

__all__ = ["object_table", "open_canonical", "write_object_table", "write_object_tables",
           "write_prediction_tables"]

SLAB_PIXELS = 2**21


def object_table(labels: Any, image: Any = None, pixel_size: Sequence[float] | None = None,
                 channel_names: Sequence[str] | None = None) -> Any:
    """A ``pandas.DataFrame`` with one row per object (columns in the module docstring).

    labels: integer ``(Y, X)`` or ``(Z, Y, X)`` array-like (NumPy, Zarr, memory map).
    image: optional canonical ``"CYX"``/``"CZYX"`` array-like of the same spatial shape, for
    the mean intensities. pixel_size: µm per pixel along the spatial axes (ZYX order).
    Rows are sorted by label. Raises :class:`DataError` for shapes that do not fit and
    :class:`ConfigError` for a pixel size of the wrong length.
    """
    import pandas as pd

    shape = tuple(int(s) for s in labels.shape)
    _check_inputs(shape, image, pixel_size, channel_names)
    names = _channel_columns(image, channel_names)
    partial = [_slab_sums(labels, image, start, stop, names)
               for start, stop in _slabs(shape)]
    sums = pd.concat([p for p in partial if len(p)]) if any(len(p) for p in partial) else None
    axes = "ZYX"[-len(shape):]
    if sums is None:
        return pd.DataFrame(columns=_columns(axes, names, pixel_size))
    return _finish(sums, axes, names, pixel_size)


def _check_inputs(shape: tuple[int, ...], image: Any, pixel_size: Sequence[float] | None,
                  channel_names: Sequence[str] | None) -> None:
    if len(shape) not in (2, 3):
        raise DataError(f"labels must be (Y, X) or (Z, Y, X), found shape {shape}")
    if image is not None and tuple(int(s) for s in image.shape[1:]) != shape:
        raise DataError(f"the image (shape {tuple(image.shape)}, channels first) does not fit "
                        f"the labels of shape {shape}")
    if pixel_size is not None and len(pixel_size) != len(shape):
        raise ConfigError(f"pixel_size {tuple(pixel_size)}: give one value per spatial axis "
                          f"({len(shape)}, ZYX order)")
    if channel_names and image is not None and len(channel_names) != image.shape[0]:
        raise DataError(f"{len(channel_names)} channel names for {image.shape[0]} channels")


def _channel_columns(image: Any, channel_names: Sequence[str] | None) -> list[str]:
    if image is None:
        return []
    if channel_names:
        return [f"mean_{_column_safe(n)}" for n in channel_names]
    return [f"mean_c{k}" for k in range(int(image.shape[0]))]


def _column_safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in str(name)).strip("_") or "channel"


def _slabs(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    step = max(1, SLAB_PIXELS // max(1, math.prod(shape[1:])))
    return [(start, min(start + step, shape[0])) for start in range(0, shape[0], step)]


def _slab_sums(labels: Any, image: Any, start: int, stop: int, names: list[str]) -> Any:
    import pandas as pd

    block = np.asarray(labels[start:stop])
    where = np.nonzero(block)
    if not len(where[0]):
        return pd.DataFrame()
    columns: dict[str, Any] = {"label": block[where].astype(np.int64)}
    axes = "ZYX"[-block.ndim:]
    for axis, index in zip(axes, where, strict=True):
        columns[axis] = index + (start if axis == axes[0] else 0)
    if image is not None:
        pixels = np.asarray(image[:, start:stop])
        for k, name in enumerate(names):
            columns[name] = pixels[k][where].astype(np.float64)
    frame = pd.DataFrame(columns).groupby("label")
    aggregated = {"n": frame[axes[0]].count()}
    for axis in axes:
        aggregated.update({f"sum_{axis}": frame[axis].sum(), f"min_{axis}": frame[axis].min(),
                           f"max_{axis}": frame[axis].max()})
    aggregated.update({f"sum_{name}": frame[name].sum() for name in names})
    return pd.DataFrame(aggregated)


def _finish(sums: Any, axes: str, names: list[str], pixel_size: Sequence[float] | None) -> Any:
    import pandas as pd

    grouped = sums.groupby(level=0)
    totals = grouped[[c for c in sums.columns if c.startswith(("n", "sum_"))]].sum()
    lows = grouped[[f"min_{a}" for a in axes]].min()
    highs = grouped[[f"max_{a}" for a in axes]].max()
    size = "area" if len(axes) == 2 else "volume"
    table = {"label": totals.index.to_numpy(), f"{size}_px": totals["n"].to_numpy()}
    if pixel_size is not None:
        unit = "um2" if len(axes) == 2 else "um3"
        table[f"{size}_{unit}"] = totals["n"].to_numpy() * float(np.prod(pixel_size))
    for axis in axes:
        table[f"centroid_{axis.lower()}"] = totals[f"sum_{axis}"].to_numpy() / totals["n"]
    if pixel_size is not None:
        for axis, size_um in zip(axes, pixel_size, strict=True):
            table[f"centroid_{axis.lower()}_um"] = table[f"centroid_{axis.lower()}"] * size_um
    for axis in axes:
        table[f"bbox_min_{axis.lower()}"] = lows[f"min_{axis}"].to_numpy()
    for axis in axes:
        table[f"bbox_max_{axis.lower()}"] = highs[f"max_{axis}"].to_numpy() + 1
    for name in names:
        table[name] = totals[f"sum_{name}"].to_numpy() / totals["n"].to_numpy()
    frame = pd.DataFrame({k: np.asarray(v) for k, v in table.items()})
    return frame.reset_index(drop=True)


def _columns(axes: str, names: list[str], pixel_size: Sequence[float] | None) -> list[str]:
    size = "area" if len(axes) == 2 else "volume"
    known = pixel_size is not None
    columns = ["label", f"{size}_px"] + ([f"{size}_{'um2' if len(axes) == 2 else 'um3'}"]
                                         if known else [])
    columns += [f"centroid_{a.lower()}" for a in axes]
    columns += [f"centroid_{a.lower()}_um" for a in axes] if known else []
    columns += [f"bbox_min_{a.lower()}" for a in axes] + [f"bbox_max_{a.lower()}" for a in axes]
    return columns + names


def write_object_table(labels_path: str | Path, image_path: str | Path | None,
                       out_csv: str | Path, pixel_size: Sequence[float] | None = None,
                       axes: str | None = None) -> dict[str, Any]:
    """Measure the objects of one label file (TIFF, Zarr, ...) and write the table as CSV.

    image_path: the image the labels belong to (None: no intensities); its pixel size and
    channel names are read from its metadata unless ``pixel_size`` is given. ``axes``: the
    image's axes as stored (see :func:`microseg.io.read_image`). Returns ``{"table" (path),
    "labels", "image", "n_objects", "pixel_size", "pixel_size_source"}``. Raises
    :class:`DataError` for unreadable or mismatched files.
    """
    from microseg.runs import atomic_write_text

    labels, spatial = _open_labels(Path(labels_path))
    image, names, found_size, source = _open_intensities(image_path, axes, len(spatial))
    size = tuple(pixel_size) if pixel_size is not None else found_size
    table = object_table(labels, image, size, names)
    atomic_write_text(out_csv, table.to_csv(index=False))
    return {"table": str(out_csv), "labels": str(labels_path),
            "image": None if image_path is None else str(image_path), "n_objects": len(table),
            "pixel_size": None if size is None else list(size),
            "pixel_size_source": "given" if pixel_size is not None else source}


def open_canonical(path: str | Path, axes: str | None = None, ndim: int | None = None,
                   labels: bool = False) -> Any:
    """A lazily read view of an image file: channel-first ``(C, *spatial)``, or for
    ``labels`` ``(*spatial)`` (one channel required). Slicing reads only the slab asked for
    along the first spatial axis. Raises :class:`DataError` for unreadable files and label
    files with several channels."""
    from microseg.io.images import canonical_shape, open_image

    stored, found_axes = open_image(path, axes=axes, ndim=ndim)
    channels, _ = canonical_shape(stored.shape, found_axes)
    if labels and channels != 1:
        raise DataError(f"{path}: a label image has one channel, found {channels}")
    return _CanonicalView(stored, found_axes, single=labels)


def _open_labels(path: Path) -> tuple[Any, tuple[int, ...]]:
    view = open_canonical(path, labels=True)
    return view, tuple(view.shape)


def _open_intensities(image_path: str | Path | None, axes: str | None,
                      ndim: int) -> tuple[Any, list[str] | None, Any, str | None]:
    from microseg.io.ome import image_metadata

    if image_path is None:
        return None, None, None, None
    metadata = image_metadata(image_path, axes=axes, ndim=ndim)
    return (open_canonical(image_path, axes, ndim), list(metadata.channel_names) or None,
            metadata.pixel_size, metadata.source)


class _CanonicalView:
    """Channel-first (or, for labels, channel-less) slabs of an array stored in any axes."""

    def __init__(self, stored: Any, axes: str, single: bool = False):
        from microseg.io.images import canonical_shape

        self.stored, self.axes, self.single = stored, axes, single
        channels, spatial = canonical_shape(stored.shape, axes)
        self.shape = spatial if single else (channels, *spatial)
        self.dtype = stored.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        from microseg.io.images import to_canonical

        key = key if isinstance(key, tuple) else (key,)
        spatial = key if self.single else key[1:]
        first = spatial[0] if spatial else slice(None)
        lead = "ZYX"[-(len(self.shape) - (0 if self.single else 1))]
        index = tuple(first if a == lead else slice(0, 1) if a == "T" else slice(None)
                      for a in self.axes)
        block = to_canonical(np.asarray(self.stored[index]), self.axes)
        return block[0] if self.single else block[key[0]]


def write_object_tables(labels_dir: str | Path, images_dir: str | Path | None,
                        out_dir: str | Path, pixel_size: Sequence[float] | None = None,
                        axes: str | None = None) -> list[dict[str, Any]]:
    """One CSV per label image of ``labels_dir`` (``out_dir/<stem>.csv``), with the image of
    the same stem from ``images_dir`` (None: no intensities), plus ``out_dir/objects.csv``
    with every object and a ``stem`` column. Returns :func:`write_object_table`'s records.
    Raises :class:`DataError` listing labels without an image."""
    from microseg.io.images import image_stem
    from microseg.io.pairing import list_images

    images = {image_stem(p): p for p in list_images(images_dir)} if images_dir else {}
    labels = list_images(labels_dir)
    missing = [f"{p}: no image named {image_stem(p)}.* in {images_dir}" for p in labels
               if images_dir and image_stem(p) not in images]
    if missing:
        raise DataError(f"{labels_dir}: label images without their image", missing)
    pairs = [(p, images.get(image_stem(p))) for p in labels]
    return _write_all(pairs, Path(out_dir), pixel_size, axes)


def write_prediction_tables(predictions: Sequence[dict[str, Any]], out_dir: str | Path,
                            pixel_size: Sequence[float] | None = None,
                            axes: str | None = None) -> list[dict[str, Any]]:
    """Object tables of a deployment's predictions (``[{"input", "labels"}, ...]`` as
    :func:`microseg.recipes.deploy.predict_input` returns them): ``out_dir/<stem>.csv`` per
    input and ``out_dir/objects.csv`` with all. Inputs without labels are skipped.

    ``objects.csv`` also has, per image, how it was predicted: ``image_object_diameter``
    (pixels), ``image_diameter_confidence`` and ``image_scale_factor``, when the predictions
    record them (models trained at a canonical object size)."""
    chosen = [p for p in predictions if p.get("labels")]
    pairs = [(Path(p["labels"]), Path(p["input"])) for p in chosen]
    per_image = [{f"image_{key}": p[key] for key in IMAGE_SCALE_KEYS
                  if p.get("object_diameter") is not None and key in p} for p in chosen]
    return _write_all(pairs, Path(out_dir), pixel_size, axes, per_image)


IMAGE_SCALE_KEYS = ("object_diameter", "diameter_confidence", "scale_factor")


def _write_all(pairs: Sequence[tuple[Path, Path | None]], out_dir: Path,
               pixel_size: Sequence[float] | None, axes: str | None,
               per_image: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    import pandas as pd

    from microseg.io.images import image_stem
    from microseg.runs import atomic_write_text

    records, tables = [], []
    for k, (labels, image) in enumerate(pairs):
        stem = image_stem(image if image is not None else labels)
        record = write_object_table(labels, image, out_dir / f"{stem}.csv", pixel_size, axes)
        records.append({"stem": stem, **record})
        tables.append(pd.read_csv(record["table"]).assign(
            stem=stem, **(per_image[k] if per_image else {})))
    if tables:
        combined = pd.concat(tables, ignore_index=True)
        front = ["stem", *(c for c in combined.columns if c.startswith("image_"))]
        atomic_write_text(out_dir / "objects.csv", combined[
            [*front, *(c for c in combined.columns if c not in front)]].to_csv(index=False))
    return records
