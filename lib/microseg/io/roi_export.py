"""Label images to Fiji/ImageJ ROI sets (``RoiSet.zip``), the reverse of :mod:`microseg.io.roi`.

Each object becomes one ROI named ``object <id>``, its exact outline along pixel edges: a traced
polygon for an object in one piece without holes, else a composite ROI (holes and separate parts
kept). In a volume each object gets one ROI per slice it appears on, named
``object <id> z<slice>`` (names in a ROI set must differ) with ``position`` = slice (1-based,
as for a plain stack); reading the set back with ``group_by_name=True`` joins them again.
Open the set in Fiji with *File > Open* (or drag it onto the image), edit the ROIs in the ROI
Manager, and save it with *More > Save...*.

Example
-------
>>> import tempfile
>>> from microseg.io.roi import rois_to_labels
>>> labels = np.zeros((32, 32), np.int32)
>>> labels[4:12, 4:14], labels[18:28, 8:20] = 1, 2
>>> with tempfile.TemporaryDirectory() as folder:
...     path = write_roiset(Path(folder) / "RoiSet_cell_01.zip", labels)
...     np.array_equal(rois_to_labels(path, labels.shape), labels)
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError, OutputExistsError
from microseg.io.annotations import ImportedAnnotations, check_output_dir, count_objects

__all__ = ["import_fiji_folder", "labels_to_rois", "write_roiset"]

_MOVETO, _LINETO, _CLOSE = 0, 1, 4


def labels_to_rois(labels: np.ndarray) -> list[Any]:
    """``roifile.ImagejRoi`` objects for a label image ``(Y, X)`` or ``(Z, Y, X)``.

    Ordered by slice, then object id; ROIs are named ``object <id>`` (``object <id> z<k>`` in a
    volume, k the 1-based slice). Raises
    :class:`DataError` for other shapes.
    """
    from microseg.io.outlines import object_polygons

    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise DataError(f"labels must be (Y, X) or (Z, Y, X), got shape {labels.shape}; pass "
                        f"a label image without channel or time axis")
    planes = [labels] if labels.ndim == 2 else list(labels)
    rois = []
    for z, plane in enumerate(planes):
        for label, polygons in object_polygons(plane).items():
            roi = _roi(polygons)
            roi.name = f"object {label}"
            if labels.ndim == 3:
                roi.name += f" z{z + 1}"
                roi.position = z + 1
            rois.append(roi)
    return rois


def _roi(polygons: list[list[np.ndarray]]) -> Any:
    from roifile import ROI_TYPE, ImagejRoi

    if len(polygons) == 1 and len(polygons[0]) == 1:
        roi = ImagejRoi.frompoints(polygons[0][0].astype(np.int64))
        roi.roitype = ROI_TYPE.TRACED
        return roi
    rings = [ring for polygon in polygons for ring in polygon]
    path = np.concatenate([_path(ring) for ring in rings]).astype(np.float32)
    corners = np.concatenate(rings)
    roi = ImagejRoi()
    roi.roitype = ROI_TYPE.RECT
    roi.left, roi.top = (int(v) for v in corners.min(axis=0))
    roi.right, roi.bottom = (int(v) for v in corners.max(axis=0))
    roi.shape_roi_size, roi.multi_coordinates = len(path), path
    return roi


def _path(ring: np.ndarray) -> np.ndarray:
    """One closed ring as ImageJ shape segments: MOVETO x y, LINETO x y ..., CLOSE."""
    ops = np.full((len(ring), 1), _LINETO, np.float64)
    ops[0] = _MOVETO
    return np.concatenate([np.concatenate([ops, ring], axis=1).ravel(), [_CLOSE]])


def write_roiset(path: str | Path, labels: np.ndarray, overwrite: bool = False) -> Path:
    """Write :func:`labels_to_rois` of ``labels`` as a ROI set ``.zip``; returns the path.

    An existing file raises :class:`OutputExistsError` unless ``overwrite`` (roifile would add
    to an existing zip, so it is replaced as a whole, atomically).
    """
    from roifile import roiwrite

    from microseg.runs import atomic_write

    path = Path(path)
    if path.suffix.lower() != ".zip":
        raise ConfigError(f"{path}: a ROI set is a .zip file; name it e.g. RoiSet_<stem>.zip")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass overwrite=True to replace it")
    rois = labels_to_rois(labels)

    def write(tmp: Path) -> None:
        tmp.unlink()
        zipped = tmp.with_name(tmp.name + ".zip")
        roiwrite(zipped, rois)
        zipped.replace(tmp)

    return atomic_write(path, write)


def import_fiji_folder(source: Path, out_dir: Path, images_dir: str | Path | None = None,
                       ndim: int | None = None, axes: str | None = None) -> ImportedAnnotations:
    """Fiji ROI sets, one per image, into ``out_dir/labels`` (see
    :func:`microseg.io.roi.import_roi_folder`); :class:`ImportedAnnotations` for the import."""
    from microseg.io.images import read_label
    from microseg.io.roi import import_roi_folder

    if images_dir is None:
        raise DataError(f"{source}: Fiji ROIs hold shapes only; give images_dir, the folder of "
                        f"the images they were drawn on")
    check_output_dir(out_dir, [source, Path(images_dir)])
    written = import_roi_folder(source, images_dir, out_dir / "labels", ndim=ndim, axes=axes)
    n_objects = sum(count_objects(read_label(p, ndim=ndim)) for p in written)
    return ImportedAnnotations("fiji", Path(images_dir).parent, out_dir / "labels",
                               len(written), n_objects)
