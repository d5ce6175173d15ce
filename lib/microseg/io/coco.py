"""COCO instance annotations (one JSON file: images, annotations, categories) ↔ label images.

Each annotation is one object of one image, with its ``segmentation`` as

- polygons: a list of flat ``[x1, y1, x2, y2, ...]`` lists whose union is the object (so a
  polygon cannot hold a hole). Coordinates are pixel corners and a pixel is inside when its
  centre is, as in QuPath and ImageJ (:mod:`microseg.io.outlines`); pycocotools rasterizes
  polygons its own way, which can differ by one pixel along edges;
- run-length encoding (RLE): ``{"size": [height, width], "counts": ...}`` over the pixels in
  column-major order, starting with a run of background; ``counts`` is a list of run lengths,
  or a string in pycocotools' compressed form. Decoded and encoded here with NumPy, exactly.

Annotations with ``iscrowd = 1`` mark a crowd of unseparated objects and are skipped. Category
ids become classes 1..K in the order of their ids. :func:`write_coco` writes RLE by default
(exact, holes kept); with ``encoding="polygon"`` objects without holes get polygons.

Example
-------
>>> import tempfile
>>> labels = np.zeros((32, 32), np.int32)
>>> labels[4:12, 4:14], labels[18:28, 8:20] = 1, 2
>>> with tempfile.TemporaryDirectory() as folder:
...     data = load_coco(write_coco(Path(folder) / "out.json", {"a.png": labels}))
>>> read, classes, notes = coco_to_labels(data, image_id=1)
>>> np.array_equal(read, labels), notes
(True, [])
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError
from microseg.io.annotations import (
    ImportedAnnotations,
    check_output_dir,
    copy_image,
    count_objects,
    notes_for_overlaps,
    paint_objects,
    write_label_file,
)

__all__ = [
    "category_ids",
    "coco_to_labels",
    "decode_rle",
    "encode_rle",
    "import_coco",
    "load_coco",
    "rle_from_string",
    "rle_to_string",
    "write_coco",
]


def rle_to_string(counts: Sequence[int]) -> str:
    """pycocotools' compressed form of RLE counts: 5 bits per character (offset 48), a
    continuation bit, and each count from the third on stored as its difference to the count
    two places before."""
    chars = []
    for i, count in enumerate(int(c) for c in counts):
        value = count - int(counts[i - 2]) if i > 2 else count
        more = True
        while more:
            chunk = value & 0x1F
            value >>= 5
            more = value != -1 if chunk & 0x10 else value != 0
            chars.append(chr((chunk | (0x20 if more else 0)) + 48))
    return "".join(chars)


def rle_from_string(text: str) -> list[int]:
    """The run lengths of a compressed RLE string (inverse of :func:`rle_to_string`)."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            chunk = ord(text[position]) - 48
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position += 1
            shift += 5
            if not more and chunk & 0x10:
                value |= -1 << shift
        counts.append(value + counts[-2] if len(counts) > 2 else value)
    return counts


def encode_rle(mask: np.ndarray, box: tuple[slice, slice] | None = None,
               size: Sequence[int] | None = None) -> dict[str, Any]:
    """COCO RLE ``{"size": [h, w], "counts": str}`` of a 2D mask.

    With ``box`` (rows, cols) and ``size`` (h, w), ``mask`` is the crop at ``box`` of an image
    of ``size``: memory follows the object, not the image.
    """
    mask = np.asarray(mask, bool)
    height, width = size or mask.shape
    rows0, cols0 = (box[0].start, box[1].start) if box else (0, 0)
    cols, rows = np.nonzero(mask.T)
    index = (cols + cols0).astype(np.int64) * height + rows + rows0
    if not len(index):
        return {"size": [int(height), int(width)], "counts": rle_to_string([height * width])}
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    starts, stops = index[np.r_[0, breaks]], index[np.r_[breaks - 1, len(index) - 1]] + 1
    edges = np.stack([starts, stops], axis=1).ravel()
    counts = np.diff(np.r_[0, edges, height * width]).tolist()
    return {"size": [int(height), int(width)], "counts": rle_to_string(counts)}


def decode_rle(rle: Mapping[str, Any]) -> tuple[tuple[slice, slice], np.ndarray]:
    """``(box, mask)``: the object of a COCO RLE cropped to its bounding box (rows, cols).

    ``counts`` may be a list or a compressed string. Raises :class:`DataError` when the run
    lengths do not add up to ``height * width``.
    """
    height, width = (int(s) for s in rle["size"])
    counts = rle["counts"]
    counts = np.asarray(rle_from_string(counts) if isinstance(counts, str) else counts, np.int64)
    if counts.sum() != height * width or (counts < 0).any():
        raise DataError(f"RLE run lengths add up to {counts.sum()}, expected {height}×{width} "
                        f"= {height * width} (or are negative)")
    ends = np.cumsum(counts)
    starts, lengths = (ends - counts)[1::2], counts[1::2]
    index = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(
        lengths.sum())
    rows, cols = index % height, index // height
    if not len(index):
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0), bool)
    box = (slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))
    mask = np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start), bool)
    mask[rows - box[0].start, cols - box[1].start] = True
    return box, mask


def load_coco(path: str | Path) -> dict[str, Any]:
    """A COCO JSON file, checked: ``images`` (with ``id``, ``file_name``, ``height``,
    ``width``) and ``annotations``. Raises :class:`DataError` naming the file and what is
    missing."""
    from microseg.runs import read_json

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; expected a COCO annotation JSON file")
    data = read_json(path)
    missing = [k for k in ("images", "annotations") if not isinstance(data, dict) or k not in data]
    if missing:
        found = sorted(data)[:6] if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: not a COCO annotation file: missing {missing} (found {found})")
    bad = [f"image entry #{k + 1}: missing {sorted({'id', 'file_name', 'height', 'width'} - set(i))}"
           for k, i in enumerate(data["images"]) if {"id", "file_name", "height", "width"} - set(i)]
    if bad:
        raise DataError(f"{path}: image entries without their size or name", bad)
    return data


def category_ids(data: Mapping[str, Any]) -> dict[int, tuple[int, str]]:
    """COCO category id → (class id 1..K in id order, name)."""
    categories = sorted(data.get("categories") or [], key=lambda c: c["id"])
    return {int(c["id"]): (k, str(c.get("name", c["id"]))) for k, c in enumerate(categories, 1)}


def coco_to_labels(data: Mapping[str, Any], image_id: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(labels, classes, notes)`` of one image of a loaded COCO file.

    labels: int32 ``(height, width)``, objects 1..n in annotation order (overlaps to the smaller
    object); classes: int32 class ids (see :func:`category_ids`; 0 background); notes: crowd
    annotations skipped, overlaps. Raises :class:`DataError` naming the annotations whose
    segmentation cannot be read.
    """
    image = next((i for i in data["images"] if i["id"] == image_id), None)
    if image is None:
        raise DataError(f"no image with id {image_id!r} in the COCO data")
    shape = (int(image["height"]), int(image["width"]))
    categories = category_ids(data)
    objects, kinds, notes, problems = [], [], [], []
    for annotation in (a for a in data["annotations"] if a.get("image_id") == image_id):
        if annotation.get("iscrowd"):
            notes.append(f"annotation {annotation.get('id')}: a crowd region (iscrowd=1), skipped")
            continue
        try:
            objects.append(_annotation_region(annotation["segmentation"], shape))
        except (KeyError, TypeError, ValueError) as err:
            problems.append(f"annotation {annotation.get('id')}: unreadable segmentation ({err})")
            continue
        kinds.append(categories.get(annotation.get("category_id"), (0, ""))[0])
    if problems:
        raise DataError(f"image {image['file_name']}: annotations that cannot be read", problems)
    labels, overlapping = paint_objects(objects, shape)
    lookup = np.array([0, *kinds], np.int32)
    return labels, lookup[labels], notes + notes_for_overlaps({image["file_name"]: overlapping})


def _annotation_region(segmentation: Any,
                       shape: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray]:
    from microseg.io.outlines import polygon_region

    if isinstance(segmentation, dict):
        if [int(s) for s in segmentation["size"]] != list(shape):
            raise ValueError(f"RLE size {segmentation['size']} differs from the image {shape}")
        return decode_rle(segmentation)
    rings = [np.asarray(flat, np.float64).reshape(-1, 2) for flat in segmentation]
    return polygon_region([[ring] for ring in rings], shape)


def write_coco(path: str | Path, labels_by_file: Mapping[str, np.ndarray],
               class_names: Mapping[str, Mapping[int, str]] | None = None,
               encoding: str = "rle") -> Path:
    """Write label images ``(Y, X)`` as one COCO JSON file (atomically); returns the path.

    labels_by_file: image file name → its labels. class_names: per file, object id → category
    name (objects without one: ``"object"``); categories are numbered in name order. encoding: ``"rle"`` (exact) or
    ``"polygon"`` (outlines along pixel edges; objects with holes still get RLE).
    """
    from microseg.runs import atomic_write_text

    if encoding not in ("rle", "polygon"):
        raise ConfigError(f"encoding = {encoding!r}; choose 'rle' or 'polygon'")
    images, annotations = [], []
    for image_id, (file_name, labels) in enumerate(labels_by_file.items(), start=1):
        labels = np.asarray(labels)
        images.append({"id": image_id, "file_name": file_name, "height": int(labels.shape[0]),
                       "width": int(labels.shape[1])})
        for label, segmentation, area, bbox in _objects(labels, encoding):
            name = (class_names or {}).get(file_name, {}).get(label, "object")
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": name, "segmentation": segmentation,
                                "area": area, "bbox": bbox, "iscrowd": 0})
    category = {n: k for k, n in enumerate(sorted({a["category_id"] for a in annotations}), 1)}
    for annotation in annotations:
        annotation["category_id"] = category[annotation["category_id"]]
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": k, "name": n} for n, k in category.items()]}
    return atomic_write_text(path, json.dumps(data))


def _objects(labels: np.ndarray, encoding: str) -> list[tuple[int, Any, int, list[int]]]:
    from scipy import ndimage

    from microseg.io.outlines import mask_polygons

    found = []
    for label, box in enumerate(ndimage.find_objects(labels.astype(np.int64)), start=1):
        if box is None:
            continue
        mask = labels[box] == label
        bbox = [box[1].start, box[0].start, box[1].stop - box[1].start, box[0].stop - box[0].start]
        polygons = mask_polygons(mask, (box[1].start, box[0].start)) if encoding == "polygon" else []
        if polygons and all(len(p) == 1 for p in polygons):
            segmentation: Any = [p[0].ravel().tolist() for p in polygons]
        else:
            segmentation = encode_rle(mask, box, labels.shape)
        found.append((label, segmentation, int(mask.sum()), bbox))
    return found


def import_coco(source: Path, out_dir: Path, images_dir: str | Path | None = None,
                ndim: int | None = None, axes: str | None = None) -> ImportedAnnotations:
    """Copy the images of a COCO file and write their labels and classes into ``out_dir``.

    ``source``: the JSON file, or a folder holding exactly one COCO JSON file. Image file
    names are looked up in ``images_dir``, else beside the JSON, else in ``images/`` beside it.
    Checks everything before writing; raises :class:`DataError` listing missing images, images
    whose size differs from the JSON, and unreadable annotations.
    """
    from microseg.io.images import image_stem

    json_path = _coco_file(source)
    data = load_coco(json_path)
    check_output_dir(out_dir, [json_path.parent, Path(images_dir) if images_dir else None])
    folders = [Path(images_dir)] if images_dir else [json_path.parent, json_path.parent / "images"]
    found, problems = _read_images(data, folders, axes)
    if problems:
        raise DataError(f"{json_path}: cannot import the COCO annotations", problems)
    notes: list[str] = []
    for _, image_path, (labels, classes, image_notes) in found:
        stem = image_stem(image_path)
        copy_image(image_path, out_dir / "images")
        write_label_file(out_dir / "labels" / f"{stem}.tif", labels)
        write_label_file(out_dir / "class_labels" / f"{stem}.tif", classes)
        notes += image_notes
    names = tuple(name for _, name in category_ids(data).values())
    return ImportedAnnotations("coco", out_dir, out_dir / "labels", len(found),
                               sum(count_objects(labels) for _, _, (labels, _, _) in found),
                               out_dir / "class_labels", names, tuple(notes))


def _coco_file(source: Path) -> Path:
    if source.is_file():
        return source
    from microseg.io.annotations import _json_kind

    candidates = [p for p in sorted(source.glob("*.json")) if _json_kind(p) == "coco"]
    if len(candidates) != 1:
        raise DataError(f"{source}: found {len(candidates)} COCO JSON files "
                        f"({', '.join(p.name for p in candidates) or 'none'}), expected one; "
                        f"give the file itself")
    return candidates[0]


def _read_images(data: dict[str, Any], folders: list[Path],
                 axes: str | None) -> tuple[list[Any], list[str]]:
    from microseg.io.images import image_stem, read_header

    found, problems, stems = [], [], set()
    for entry in data["images"]:
        path = _find_image(entry["file_name"], folders)
        if path is None:
            problems.append(f"{entry['file_name']}: not found in {', '.join(map(str, folders))}")
            continue
        shape = read_header(path, axes=axes, ndim=2).spatial_shape
        if shape != (int(entry["height"]), int(entry["width"])):
            problems.append(f"{path}: {shape[0]}×{shape[1]} pixels, but the COCO file says "
                            f"{entry['height']}×{entry['width']}")
        elif image_stem(path) in stems:
            problems.append(f"{path}: another image has the name {image_stem(path)!r}")
        else:
            stems.add(image_stem(path))
            try:
                found.append((entry, path, coco_to_labels(data, entry["id"])))
            except DataError as err:
                problems.append("; ".join([err.summary, *err.problems]))
    return found, problems


def _find_image(file_name: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        for candidate in (folder / file_name, folder / Path(file_name).name):
            if candidate.is_file():
                return candidate
    return None
