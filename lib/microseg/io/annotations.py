"""Annotations made in other tools, turned into label images: which format, and one call to import.

Every importer reads the annotations (and, where the format holds them, the images), checks
everything, then writes into a new output folder — never beside the user's files::

    out_dir/labels/<stem>.tif        instance labels: 0 background, objects 1, 2, ...
    out_dir/class_labels/<stem>.tif  class ids (formats with classes: QuPath, COCO)
    out_dir/images/<name>            copies of the images (formats that hold them)
    out_dir/import.json              what was imported, from where, and the notes below

Notes report what a person should know: overlapping objects (the overlap goes to the smaller
object, as in :mod:`microseg.io.roi`), objects skipped (no area), partial annotations.

========  ==================================================================================
format    what :func:`guess_annotation_format` recognizes
========  ==================================================================================
fiji      ``<stem>.zip``, ``<stem>.roi`` or ``RoiSet_<stem>.zip`` per image (needs images_dir)
qupath    ``<stem>.geojson`` per image, QuPath's GeoJSON export (needs images_dir)
cellpose  ``<stem>_seg.npy`` (Cellpose GUI) or ``<stem>_masks.tif`` / ``_cp_masks.png`` beside
          the images
masks     one binary mask per object: ``<id>/images/<id>.png`` and ``<id>/masks/*.png``
          (Kaggle Data Science Bowl 2018)
ctc       Cell Tracking Challenge: ``01/t000.tif`` with ``01_GT/SEG/man_seg000.tif``
coco      a COCO instance JSON (polygons or RLE) and its images
========  ==================================================================================

Example
-------
>>> guess_annotation_format("exports/")                     # doctest: +SKIP
'qupath'
>>> result = import_annotations("exports/", "runs/demo/data/import", images_dir="data/images")
...                                                          # doctest: +SKIP
>>> result.labels_dir, result.n_objects                      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError, OutputExistsError

__all__ = [
    "ANNOTATION_FORMATS",
    "ImportedAnnotations",
    "check_output_dir",
    "copy_image",
    "count_objects",
    "guess_annotation_format",
    "import_annotations",
    "notes_for_overlaps",
    "paint_objects",
    "write_label_file",
]

log = logging.getLogger(__name__)

ANNOTATION_FORMATS = {
    "fiji": "Fiji ROI sets: <stem>.zip, <stem>.roi or RoiSet_<stem>.zip per image",
    "qupath": "QuPath GeoJSON exports: <stem>.geojson per image",
    "cellpose": "Cellpose: <stem>_seg.npy or <stem>_masks.tif beside the images <stem>.tif",
    "masks": "one mask per object (Kaggle DSB): <id>/images/<id>.png and <id>/masks/*.png",
    "ctc": "Cell Tracking Challenge: 01/t000.tif and 01_GT/SEG/man_seg000.tif",
    "coco": "COCO instance JSON (polygons or RLE) with its images",
}
"""Every annotation format :func:`import_annotations` reads, with what it looks like."""

NEEDS_IMAGES_DIR = frozenset({"fiji", "qupath"})
"""Formats that hold only shapes: the images come from ``images_dir``."""

_SEQUENCE = re.compile(r"^\d{2,}$")


@dataclasses.dataclass(frozen=True)
class ImportedAnnotations:
    """What an import wrote.

    format: one of :data:`ANNOTATION_FORMATS`. data_dir: the folder whose ``images/`` pair with
    ``labels_dir`` (the import folder when images were copied, else the user's data folder).
    labels_dir: instance labels, one ``<stem>.tif`` per image. n_images, n_objects: counts.
    class_labels_dir: class ids per pixel (None when the format has no classes).
    class_names: the name of class id k at position k-1. notes: what a person should know.
    """

    format: str
    data_dir: Path
    labels_dir: Path
    n_images: int
    n_objects: int
    class_labels_dir: Path | None = None
    class_names: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings)."""
        data = dataclasses.asdict(self)
        return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
                for k, v in data.items()}


def guess_annotation_format(path: str | Path) -> str:
    """The annotation format of a file or folder, from its names and (for JSON) its keys.

    Returns one of :data:`ANNOTATION_FORMATS`. Raises :class:`DataError` naming the path when
    nothing matches (listing what each format looks like) or when several formats match
    (listing the evidence for each, and asking for ``annotation_format=...``).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; expected a folder (or file) of annotations")
    evidence = _json_evidence(path) if path.is_file() else _folder_evidence(path)
    found = {fmt: why for fmt, why in evidence.items() if why}
    if len(found) == 1:
        return next(iter(found))
    if not found:
        raise DataError(f"{path}: no annotation format recognized; expected one of:",
                        [f"{fmt}: {what}" for fmt, what in ANNOTATION_FORMATS.items()])
    raise DataError(f"{path}: looks like several annotation formats; pass annotation_format= "
                    f"one of {', '.join(repr(f) for f in found)}",
                    [f"{fmt}: {why}" for fmt, why in found.items()])


def _json_evidence(path: Path) -> dict[str, str]:
    kind = _json_kind(path)
    return {"coco": "a COCO JSON file" if kind == "coco" else "",
            "qupath": "a GeoJSON file" if kind == "geojson" else ""}


def _json_kind(path: Path) -> str | None:
    if path.suffix.lower() not in (".json", ".geojson"):
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and {"images", "annotations"} <= set(data):
        return "coco"
    if isinstance(data, list) or (isinstance(data, dict) and data.get("type") in (
            "FeatureCollection", "Feature", "Polygon", "MultiPolygon")):
        return "geojson"
    return None


def _folder_evidence(folder: Path) -> dict[str, str]:
    entries = [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]
    names = [p.name.lower() for p in entries if p.is_file()]
    jsons = [_json_kind(p) for p in entries if p.is_file()]
    subfolders = [p for p in entries if p.is_dir()]
    return {
        "fiji": _count([n for n in names if n.endswith((".zip", ".roi"))], "ROI file"),
        "qupath": _count([k for k in jsons if k == "geojson"], "GeoJSON file"),
        "cellpose": _count([n for n in names if n.endswith("_seg.npy")
                            or re.search(r"_(cp_)?masks\.(tif|tiff|png)$", n)],
                           "Cellpose mask file"),
        "masks": _count([p for p in subfolders if (p / "masks").is_dir()
                         and (p / "images").is_dir()], "folder with images/ and masks/"),
        "ctc": _count([p for p in subfolders if _SEQUENCE.match(p.name)
                       and (folder / f"{p.name}_GT").is_dir()], "sequence with a _GT folder"),
        "coco": _count([k for k in jsons if k == "coco"], "COCO JSON file"),
    }


def _count(items: Sequence[Any], what: str) -> str:
    return f"{len(items)} {what}{'s' if len(items) > 1 else ''}" if items else ""


def import_annotations(source: str | Path, out_dir: str | Path, annotation_format: str = "auto",
                       images_dir: str | Path | None = None, ndim: int | None = None,
                       axes: str | None = None) -> ImportedAnnotations:
    """Turn annotations of any :data:`ANNOTATION_FORMATS` into label images in ``out_dir``.

    Parameters
    ----------
    source: the annotation folder (or, for COCO and QuPath, one JSON file).
    out_dir: a new folder for the results (see the module docstring); never inside ``source``
        or ``images_dir``.
    annotation_format: a key of :data:`ANNOTATION_FORMATS`, or ``"auto"``
        (:func:`guess_annotation_format`).
    images_dir: the images the annotations belong to: required for ``fiji`` and ``qupath``;
        for ``coco`` where the file names point (default: beside the JSON); else unused.
    ndim, axes: how to read the images (see :func:`microseg.io.read_image`).

    Returns :class:`ImportedAnnotations`. Raises :class:`ConfigError` for an unknown format, a
    missing ``images_dir`` or an output folder inside an input; :class:`OutputExistsError` when
    ``out_dir`` already holds files; :class:`DataError` listing every problem with the files.
    """
    fmt = guess_annotation_format(source) if annotation_format == "auto" else annotation_format
    if fmt not in ANNOTATION_FORMATS:
        raise ConfigError(f"annotation_format = {annotation_format!r}; choose 'auto' or one of "
                          f"{', '.join(ANNOTATION_FORMATS)}")
    if fmt in NEEDS_IMAGES_DIR and images_dir is None:
        raise ConfigError(f"{fmt} annotations hold shapes only: give images_dir, the folder of "
                          f"the images they were drawn on")
    result = _importer(fmt)(Path(source), Path(out_dir), images_dir=images_dir, ndim=ndim,
                            axes=axes)
    from microseg.runs import atomic_write_json

    atomic_write_json(Path(out_dir) / "import.json", {"source": str(Path(source).resolve()),
                                                      **result.to_dict()})
    for note in result.notes:
        log.warning("%s: %s", source, note)
    return result


def _importer(fmt: str) -> Callable[..., ImportedAnnotations]:
    from importlib import import_module

    module, name = {
        "fiji": ("microseg.io.roi_export", "import_fiji_folder"),
        "qupath": ("microseg.io.qupath", "import_qupath_folder"),
        "cellpose": ("microseg.io.cellpose", "import_cellpose_folder"),
        "masks": ("microseg.io.masks", "import_mask_folders"),
        "ctc": ("microseg.io.ctc", "import_ctc_folder"),
        "coco": ("microseg.io.coco", "import_coco"),
    }[fmt]
    return getattr(import_module(module), name)


def check_output_dir(out_dir: Path, inputs: Sequence[Path | None]) -> None:
    """Refuse an output folder inside an input folder, or one that already holds files."""
    out = out_dir.resolve()
    for folder in (Path(f) for f in inputs if f is not None):
        inside = folder.resolve() if folder.is_dir() else folder.resolve().parent
        if out == inside or inside in out.parents:
            raise ConfigError(f"output folder {out_dir} is inside the input folder {inside}, "
                              f"which is never written to; choose an output folder elsewhere, "
                              f"e.g. in the run folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise OutputExistsError(f"{out_dir} already holds files; choose a new output folder")


def write_label_file(path: Path, labels: np.ndarray) -> Path:
    """Write labels as a zlib-compressed TIFF (uint16 when the ids fit, else int32)."""
    from microseg.io.images import write_image

    stored = labels.astype(np.uint16) if labels.max(initial=0) <= 65535 else labels
    return write_image(path, stored, axes="ZYX" if labels.ndim == 3 else "YX",
                       compression="zlib", overwrite=True)


def copy_image(source: Path, images_out: Path, name: str | None = None) -> Path:
    """Copy one image file (or ``.zarr`` folder) into ``images_out``; never a link."""
    images_out.mkdir(parents=True, exist_ok=True)
    target = images_out / (name or source.name)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
    return target


def paint_objects(objects: Sequence[tuple[tuple[slice, ...], np.ndarray]],
                  shape: Sequence[int]) -> tuple[np.ndarray, int]:
    """Objects (box, mask within the box) into an int32 label image; ids 1..n in given order.

    Where objects overlap the smaller one (fewer pixels) keeps the pixels; between equal sizes
    the later one. Returns ``(labels, n_overlapping)``: the number of objects that overlap
    another one.
    """
    labels = np.zeros(tuple(int(s) for s in shape), np.int32)
    coverage = np.zeros(labels.shape, np.uint16)
    areas = [int(mask.sum()) for _, mask in objects]
    for index in sorted(range(len(objects)), key=lambda i: -areas[i]):
        box, mask = objects[index]
        labels[box][mask] = index + 1
        coverage[box] += mask.astype(np.uint16)
    overlapping = sum(bool(np.any(coverage[box][mask] > 1)) for box, mask in objects)
    return labels, int(overlapping)


def notes_for_overlaps(counts: dict[str, int]) -> list[str]:
    """One note per image where objects overlap."""
    return [f"{stem}: {n} overlapping objects; each overlap went to the smaller object"
            for stem, n in counts.items() if n]


def count_objects(labels: np.ndarray) -> int:
    """The number of distinct object ids (> 0) in a label image."""
    labels = np.asarray(labels)
    return int(np.unique(labels[labels > 0]).size)
