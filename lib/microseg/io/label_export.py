"""Predicted label images out to the tools people correct and view them in.

:func:`export_labels` writes one label image (and its image) as any of

- ``"roiset"``: a Fiji ROI set ``<stem>_RoiSet.zip`` (:mod:`microseg.io.roi_export`);
- ``"geojson"``: QuPath objects ``<stem>.geojson`` (:mod:`microseg.io.qupath`);
- ``"ome-zarr"``: ``<stem>.ome.zarr``, the image with the labels as an NGFF ``labels/``
  group, for napari (napari-ome-zarr) and other NGFF viewers (:mod:`microseg.io.ngff`).

ROI sets and GeoJSON hold one outline per object (per slice in a volume): fine for thousands of
objects, slow for millions. OME-Zarr is copied slab by slab and suits volumes of any size.

Example
-------
>>> export_labels("pred/labels/a.tif", "new/a.tif", "pred/export")       # doctest: +SKIP
{'roiset': '.../a_RoiSet.zip', 'geojson': '.../a.geojson', 'ome-zarr': '.../a.ome.zarr'}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError

__all__ = ["LABEL_EXPORT_FORMATS", "export_labels", "export_prediction_labels"]

LABEL_EXPORT_FORMATS = ("roiset", "geojson", "ome-zarr")


def export_labels(labels_path: str | Path, image_path: str | Path | None, out_dir: str | Path,
                  formats: Sequence[str] = LABEL_EXPORT_FORMATS,
                  pixel_size: Sequence[float] | None = None, axes: str | None = None,
                  overwrite: bool = False) -> dict[str, str]:
    """Write one label file in ``formats`` into ``out_dir``; returns ``{format: path}``.

    image_path: the image the labels belong to (needed for ``"ome-zarr"``; its pixel size and
    channel names are used unless ``pixel_size`` is given). Raises :class:`ConfigError` for an unknown
    format, :class:`DataError` for ``"ome-zarr"`` without an image or for mismatched shapes,
    :class:`~microseg.errors.OutputExistsError` for existing outputs unless ``overwrite``.
    """
    from microseg.io.images import image_stem

    unknown = [f for f in formats if f not in LABEL_EXPORT_FORMATS]
    if unknown:
        raise ConfigError(f"unknown label export format(s) {unknown}; choose from "
                          f"{', '.join(LABEL_EXPORT_FORMATS)}")
    out_dir = Path(out_dir)
    stem = image_stem(image_path if image_path is not None else labels_path)
    written = {}
    if {"roiset", "geojson"} & set(formats):
        labels = _load_labels(labels_path)
        written.update(_outlines(labels, out_dir, stem, formats, overwrite))
    if "ome-zarr" in formats:
        written["ome-zarr"] = str(_ome_zarr(labels_path, image_path, out_dir / f"{stem}.ome.zarr",
                                            pixel_size, axes, overwrite))
    return written


def _load_labels(path: str | Path) -> np.ndarray:
    from microseg.io.tables import open_canonical

    view = open_canonical(path, labels=True)
    return np.asarray(view[:]).astype(np.int32, copy=False)


def _outlines(labels: np.ndarray, out_dir: Path, stem: str, formats: Sequence[str],
              overwrite: bool) -> dict[str, str]:
    from microseg.errors import OutputExistsError
    from microseg.io.qupath import write_geojson
    from microseg.io.roi_export import write_roiset

    written = {}
    if "roiset" in formats:
        written["roiset"] = str(write_roiset(out_dir / f"{stem}_RoiSet.zip", labels, overwrite))
    if "geojson" in formats:
        path = out_dir / f"{stem}.geojson"
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} already exists; pass overwrite=True to replace it")
        written["geojson"] = str(write_geojson(path, labels))
    return written


def _ome_zarr(labels_path: str | Path, image_path: str | Path | None, target: Path,
              pixel_size: Sequence[float] | None, axes: str | None, overwrite: bool) -> Path:
    from microseg.io.ngff import write_ome_zarr
    from microseg.io.ome import image_metadata
    from microseg.io.tables import open_canonical

    if image_path is None:
        raise DataError(f"{labels_path}: an OME-Zarr export holds the image with its labels; "
                        f"give the image")
    labels = open_canonical(labels_path, labels=True)
    image = open_canonical(image_path, axes=axes, ndim=len(labels.shape))
    if tuple(image.shape[1:]) != tuple(labels.shape):
        raise DataError(f"{labels_path}: labels of shape {tuple(labels.shape)} do not fit the "
                        f"image {image_path} of spatial shape {tuple(image.shape[1:])}")
    metadata = image_metadata(image_path, axes=axes, ndim=len(labels.shape))
    size = tuple(pixel_size) if pixel_size is not None else metadata.pixel_size
    names = list(metadata.channel_names) or None
    return write_ome_zarr(target, image, {"labels": labels}, size, names, overwrite=overwrite)


def export_prediction_labels(predictions: Sequence[dict[str, Any]], out_dir: str | Path,
                             formats: Sequence[str] = LABEL_EXPORT_FORMATS,
                             pixel_size: Sequence[float] | None = None,
                             overwrite: bool = False) -> list[dict[str, Any]]:
    """:func:`export_labels` for each prediction ``{"input", "labels"}`` of a deployment;
    returns ``[{"input", "labels", **written}]``. Inputs without labels are skipped."""
    done = []
    for prediction in predictions:
        if prediction.get("labels"):
            written = export_labels(prediction["labels"], prediction["input"], out_dir, formats,
                                    pixel_size, overwrite=overwrite)
            done.append({"input": str(prediction["input"]), "labels": str(prediction["labels"]),
                         **written})
    return done
