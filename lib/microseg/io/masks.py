"""One binary mask file per object, the layout of the Kaggle Data Science Bowl 2018::

    <root>/<id>/images/<id>.png        the image
    <root>/<id>/masks/<anything>.png   one file per object: non-zero pixels are the object

:func:`masks_to_labels` joins the masks of one image into a label image (objects numbered in
file-name order; where masks overlap the smaller object keeps the pixels, and the overlap is
reported); :func:`write_mask_folder` writes a label image in this layout. Volumes work the
same way with TIFF files.

Example
-------
>>> import tempfile
>>> labels = np.zeros((32, 32), np.int32)
>>> labels[4:12, 4:14], labels[18:28, 8:20] = 1, 2
>>> image = np.zeros((1, 32, 32), np.uint8)
>>> with tempfile.TemporaryDirectory() as folder:
...     sample = write_mask_folder(folder, "abc", image, labels)
...     read, overlapping = masks_to_labels(sorted((sample / "masks").iterdir()))
>>> np.array_equal(read, labels), overlapping
(True, 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from microseg.errors import DataError
from microseg.io.annotations import (
    ImportedAnnotations,
    check_output_dir,
    copy_image,
    count_objects,
    notes_for_overlaps,
    paint_objects,
    write_label_file,
)

__all__ = ["import_mask_folders", "masks_to_labels", "write_mask_folder"]


def masks_to_labels(mask_files: Sequence[str | Path],
                    shape: Sequence[int] | None = None) -> tuple[np.ndarray, int]:
    """Join one binary mask file per object into an int32 label image.

    Objects are numbered 1..n in the order given (empty masks are skipped, ids stay
    consecutive). ``shape``: the expected spatial shape (the image's); None: the first mask's.
    Returns ``(labels, n_overlapping)``, the number of objects overlapping another. Raises
    :class:`DataError` naming every mask that cannot be read or differs in shape.
    """
    from scipy import ndimage

    from microseg.io.images import read_label

    objects, problems = [], []
    for path in map(Path, mask_files):
        try:
            mask = read_label(path, ndim=len(shape) if shape else None) > 0
        except DataError as err:
            problems.append("; ".join([err.summary, *err.problems]))
            continue
        shape = tuple(shape or mask.shape)
        if mask.shape != shape:
            problems.append(f"{path}: shape {mask.shape}, expected {shape} (the image's)")
        elif mask.any():
            box = ndimage.find_objects(mask.astype(np.uint8))[0]
            objects.append((box, mask[box]))
    if problems:
        raise DataError("object masks that cannot be used", problems)
    if shape is None:
        raise DataError("no object mask files given")
    return paint_objects(objects, shape)


def write_mask_folder(root: str | Path, stem: str, image: np.ndarray,
                      labels: np.ndarray) -> Path:
    """Write ``root/<stem>/images/<stem>`` and one mask per object in ``root/<stem>/masks/``.

    ``image`` is canonical ``"CYX"`` (or ``"CZYX"``), ``labels`` ``(Y, X)`` (or ``(Z, Y, X)``).
    2D images are PNG (uint8/uint16, 1, 3 or 4 channels), volumes TIFF; masks are 0/255 uint8
    named ``<stem>_<id>``. Returns ``root/<stem>``; an existing one raises
    :class:`~microseg.errors.OutputExistsError`.
    """
    from microseg.io.images import canonical_axes, write_image
    from microseg.runs import create_output_dir

    folder = create_output_dir(Path(root) / stem)
    labels = np.asarray(labels)
    two_d = labels.ndim == 2 and image.dtype in (np.uint8, np.uint16) and image.shape[0] in (1, 3, 4)
    extension = ".png" if two_d else ".tif"
    write_image(folder / "images" / f"{stem}{extension}", image, axes=canonical_axes(image))
    width = len(str(int(labels.max(initial=0))))
    for label in np.unique(labels[labels > 0]):
        write_image(folder / "masks" / f"{stem}_{label:0{width}d}{extension}",
                    np.where(labels == label, 255, 0).astype(np.uint8),
                    axes="YX" if labels.ndim == 2 else "ZYX")
    return folder


def import_mask_folders(source: Path, out_dir: Path, images_dir: str | Path | None = None,
                        ndim: int | None = None, axes: str | None = None) -> ImportedAnnotations:
    """Copy the image of every ``<id>/`` folder of ``source`` and join its masks into labels.

    Writes ``out_dir/images/<image file>`` and ``out_dir/labels/<stem>.tif``. Checks every folder
    before writing; raises :class:`DataError` listing folders without exactly one image, and
    unreadable or misshapen masks. Overlapping and empty masks are noted.
    """
    check_output_dir(out_dir, [source])
    found, problems, overlaps = {}, [], {}
    for folder in _sample_folders(source):
        try:
            image, labels, overlaps[folder.name] = _one_sample(folder, ndim, axes)
            found[folder.name] = (image, labels)
        except DataError as err:
            problems.append("; ".join([err.summary, *err.problems]))
    if not found and not problems:
        problems.append(f"{source} holds no <id>/ folder with images/ and masks/")
    if problems:
        raise DataError(f"{source}: cannot import the object masks", problems)
    for image, labels in found.values():
        written = copy_image(image, out_dir / "images")
        write_label_file(out_dir / "labels" / f"{_stem(written)}.tif", labels)
    return ImportedAnnotations("masks", out_dir, out_dir / "labels", len(found),
                               sum(count_objects(labels) for _, labels in found.values()),
                               notes=tuple(notes_for_overlaps(overlaps)))


def _sample_folders(source: Path) -> list[Path]:
    if not source.is_dir():
        raise DataError(f"{source} is not a folder; expected <id>/images/ and <id>/masks/ "
                        f"folders (the Kaggle Data Science Bowl layout)")
    return [p for p in sorted(source.iterdir())
            if p.is_dir() and not p.name.startswith(".") and (p / "masks").is_dir()]


def _one_sample(folder: Path, ndim: int | None, axes: str | None) -> tuple[Path, np.ndarray, int]:
    from microseg.io.images import read_header
    from microseg.io.pairing import list_images

    images = list_images(folder / "images") if (folder / "images").is_dir() else []
    if len(images) != 1:
        raise DataError(f"{folder / 'images'}: found {len(images)} image(s), expected one "
                        f"(<id>/images/<id>.png)")
    shape = read_header(images[0], axes=axes, ndim=ndim).spatial_shape
    masks = list_images(folder / "masks")
    try:
        labels, overlapping = masks_to_labels(masks, shape)
    except DataError as err:
        raise DataError(f"{folder / 'masks'}: {err.summary}", err.problems) from None
    return images[0], labels, overlapping


def _stem(path: Path) -> str:
    from microseg.io.images import image_stem

    return image_stem(path)
