"""OME-Zarr (OME-NGFF 0.4) images with their label images in a ``labels/`` group.

The layout napari (with napari-ome-zarr), Fiji's MoBIE/BigDataViewer readers and other NGFF
viewers open::

    result.ome.zarr/            the image: one resolution level "0", axes c(z)yx
      0/                        channel-first array, chunked
      labels/                   {"labels": ["cells", ...]}
        cells/                  {"image-label": {...}, "multiscales": [...]}
          0/                    the label image, axes (z)yx, same pixel size as the image

Zarr format 2 with "/" chunk separators, as NGFF 0.4 asks. The pixel size (µm, ZYX order)
becomes each level's ``scale`` with the unit ``micrometer``; without one the scale is 1 and no
unit is written. Arrays are copied slab by slab, so an image larger than memory (a Zarr array
or memory map) can be written.

Example
-------
>>> import tempfile
>>> labels = np.zeros((32, 32), np.int32)
>>> labels[4:12, 4:14], labels[18:28, 8:20] = 1, 2
>>> image = np.zeros((1, 32, 32), np.uint16)
>>> with tempfile.TemporaryDirectory() as folder:
...     path = write_ome_zarr(Path(folder) / "cell_01.ome.zarr", image, {"cells": labels},
...                           pixel_size=(0.65, 0.65))
...     np.array_equal(read_ngff_labels(path, "cells"), labels)
True
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError, OutputExistsError

__all__ = ["add_ngff_labels", "ngff_label_names", "read_ngff_labels", "write_ome_zarr"]

NGFF_VERSION = "0.4"
SLAB_BYTES = 64 * 2**20
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def write_ome_zarr(path: str | Path, image: Any, labels: Mapping[str, Any] | None = None,
                   pixel_size: Sequence[float] | None = None,
                   channel_names: Sequence[str] | None = None, overwrite: bool = False) -> Path:
    """Write a canonical ``"CYX"``/``"CZYX"`` image and its label images as OME-Zarr.

    image: any array-like with ``shape``, ``dtype`` and slicing (NumPy, Zarr, memory map).
    labels: name → label image ``(Y, X)``/``(Z, Y, X)`` of the image's spatial shape.
    pixel_size: µm per pixel, one per spatial axis (ZYX order); channel_names: one per channel.
    Returns the path. Raises :class:`OutputExistsError` for an existing path unless
    ``overwrite`` (then it is replaced), :class:`DataError` for shapes or channel names that do
    not fit, :class:`ConfigError` for a pixel size that does not.
    """
    import zarr

    path = Path(path)
    shape = tuple(int(s) for s in image.shape)
    if len(shape) not in (3, 4):
        raise DataError(f"image must be channel-first (C, Y, X) or (C, Z, Y, X), got {shape}")
    _check_pixel_size(pixel_size, len(shape) - 1)
    if channel_names is not None and len(channel_names) != shape[0]:
        raise DataError(f"{len(channel_names)} channel names for {shape[0]} channels; give one "
                        f"name per channel, or None")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass overwrite=True to replace it")
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    axes = [{"name": "c", "type": "channel"}] + _space_axes(len(shape) - 1, pixel_size)
    _copy(image, _create(group, "0", shape, image.dtype), channel_first=True)
    group.attrs.update({
        "multiscales": [_multiscale(path.name, axes, [1.0, *_scale(pixel_size, len(shape) - 1)])],
        "omero": _omero(path.name, np.dtype(image.dtype), shape[0], channel_names)})
    for name, values in (labels or {}).items():
        add_ngff_labels(path, name, values, pixel_size)
    return path


def add_ngff_labels(path: str | Path, name: str, labels: Any,
                    pixel_size: Sequence[float] | None = None, overwrite: bool = False) -> Path:
    """Add a label image as ``labels/<name>`` of an OME-Zarr image written by this module
    (or any NGFF 0.4 image). Returns the label group's path.

    Raises :class:`DataError` when ``path`` is not an OME-Zarr image or the labels do not have
    its spatial shape, :class:`OutputExistsError` for an existing label image of that name
    unless ``overwrite``, :class:`ConfigError` for a name other than letters, digits, ``_.-``.
    """
    import zarr

    path = Path(path)
    if not _NAME.match(name):
        raise ConfigError(f"label name {name!r}: use letters, digits, '_', '.' or '-'")
    spatial = _image_spatial_shape(path)
    shape = tuple(int(s) for s in labels.shape)
    if shape != spatial:
        raise DataError(f"labels {name!r} of shape {shape} do not fit the image {path} of "
                        f"spatial shape {spatial}")
    _check_pixel_size(pixel_size, len(shape))
    root = zarr.open_group(str(path), mode="a", zarr_format=2)
    group = root.require_group("labels")
    listed = list(group.attrs.get("labels", []))
    if name in listed and not overwrite:
        raise OutputExistsError(f"{path}/labels/{name} already exists; pass overwrite=True")
    target = group.create_group(name, overwrite=True)
    dtype = np.dtype(labels.dtype) if np.dtype(labels.dtype).kind in "iu" else np.dtype(np.int32)
    _copy(labels, _create(target, "0", shape, dtype))
    target.attrs.update({
        "multiscales": [_multiscale(name, _space_axes(len(shape), pixel_size),
                                    _scale(pixel_size, len(shape)))],
        "image-label": {"version": NGFF_VERSION, "source": {"image": "../../"}}})
    group.attrs["labels"] = [*[n for n in listed if n != name], name]
    return path / "labels" / name


def ngff_label_names(path: str | Path) -> list[str]:
    """The label images listed in an OME-Zarr image's ``labels/`` group ([] when none)."""
    import zarr

    root = zarr.open_group(str(path), mode="r")
    return list(root["labels"].attrs.get("labels", [])) if "labels" in root else []


def read_ngff_labels(path: str | Path, name: str | None = None) -> np.ndarray:
    """The full-resolution label image ``labels/<name>`` (the first listed when None) as a
    NumPy array. Raises :class:`DataError` naming the labels found when there is none."""
    import zarr

    names = ngff_label_names(path)
    chosen = name or (names[0] if names else None)
    if chosen not in names:
        raise DataError(f"{path}: no label image {chosen!r}; found {names or 'none'}")
    group = zarr.open_group(str(Path(path) / "labels" / chosen), mode="r")
    level = group.attrs["multiscales"][0]["datasets"][0]["path"]
    return np.asarray(group[level][...])


def _image_spatial_shape(path: Path) -> tuple[int, ...]:
    import zarr

    try:
        root = zarr.open_group(str(path), mode="r")
        multiscale = root.attrs["multiscales"][0]
        array = root[multiscale["datasets"][0]["path"]]
    except (KeyError, FileNotFoundError, ValueError, TypeError) as err:
        raise DataError(f"{path} is not an OME-Zarr image ({type(err).__name__}: {err}); write "
                        f"it with write_ome_zarr first") from None
    kinds = [a.get("type") if isinstance(a, dict) else None for a in multiscale.get("axes", [])]
    return tuple(int(s) for s, kind in zip(array.shape, kinds, strict=False) if kind == "space") \
        or tuple(int(s) for s in array.shape[-2:])


def _check_pixel_size(pixel_size: Sequence[float] | None, spatial: int) -> None:
    if pixel_size is not None and (len(pixel_size) != spatial or min(pixel_size) <= 0):
        raise ConfigError(f"pixel_size {tuple(pixel_size)}: give {spatial} positive values in µm "
                          f"(ZYX order), or None")


def _space_axes(spatial: int, pixel_size: Sequence[float] | None) -> list[dict[str, str]]:
    unit = {} if pixel_size is None else {"unit": "micrometer"}
    return [{"name": axis, "type": "space", **unit} for axis in "zyx"[-spatial:]]


def _scale(pixel_size: Sequence[float] | None, spatial: int) -> list[float]:
    return [float(v) for v in pixel_size] if pixel_size is not None else [1.0] * spatial


def _multiscale(name: str, axes: list[dict[str, str]], scale: list[float]) -> dict[str, Any]:
    return {"version": NGFF_VERSION, "name": name, "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}


def _omero(name: str, dtype: np.dtype, channels: int,
           names: Sequence[str] | None) -> dict[str, Any]:
    low, high = (np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype.kind in "iu" else (0.0, 1.0)
    colours = ["FFFFFF"] if channels == 1 else ["00FF00", "FF00FF", "00FFFF", "FFFF00", "FF0000",
                                               "0000FF"]
    return {"name": name, "version": NGFF_VERSION, "channels": [
        {"label": str(names[k]) if names else f"channel {k}", "color": colours[k % len(colours)],
         "active": True, "window": {"min": float(low), "max": float(high), "start": float(low),
                                    "end": float(high)}} for k in range(channels)],
        "rdefs": {"model": "greyscale" if channels == 1 else "color"}}


def _create(group: Any, name: str, shape: tuple[int, ...], dtype: Any) -> Any:
    chunks = tuple(1 if k < len(shape) - 3 else min(s, 64 if len(shape) - k == 3 else 512)
                   for k, s in enumerate(shape))
    return group.create_array(name, shape=shape, dtype=dtype, chunks=chunks,
                              chunk_key_encoding={"name": "v2", "separator": "/"})


def _copy(source: Any, target: Any, channel_first: bool = False) -> None:
    """Copy slab by slab along the first spatial axis (per channel), bounded in memory."""
    shape = tuple(int(s) for s in source.shape)
    spatial = shape[1:] if channel_first else shape
    row_bytes = np.dtype(source.dtype).itemsize * math.prod(spatial[1:])
    step = max(1, SLAB_BYTES // max(1, row_bytes))
    for channel in range(shape[0]) if channel_first else [None]:
        for start in range(0, spatial[0], step):
            where = slice(start, start + step)
            key = where if channel is None else (channel, where)
            target[key] = np.asarray(source[key]).astype(target.dtype, copy=False)
