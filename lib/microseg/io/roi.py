"""Fiji/ImageJ ROIs (``RoiSet.zip``, ``.roi``) to label images.

Rasterization follows ImageJ: ROI coordinates are pixel corners (pixel ``(x, y)`` spans
``[x, x+1) × [y, y+1)``), and a pixel belongs to an ROI when its centre ``(x + 0.5, y + 0.5)``
lies inside the outline. A rectangle therefore covers exactly ``top:bottom, left:right``, an oval
the pixels whose centre is inside the ellipse inscribed in its bounding box, and a traced
outline exactly the pixels it traces.

Each area ROI (polygon, freehand, traced, rectangle, oval, and composite shapes, whose holes stay
background) becomes one object, numbered 1, 2, ... in file order. ROIs without area (points,
lines, angles, text) are skipped with a warning that lists them; a ROI set with no area ROI at
all, or with a ROI wholly outside the image (drawn on another image), stops with an error.

Overlaps: the overlap goes to the smaller object (fewer pixels), so that small objects drawn on
top of large ones are not swallowed; between objects of equal size the later ROI in the file wins.

In 3D (``shape`` is ``(Z, Y, X)``), each ROI is placed on its slice: ``z_position`` when set
(hyperstacks), else ``position`` (plain stacks), both 1-based as ImageJ stores them. Each ROI is
its own object, so an object outlined on several slices gets one id per slice — unless
``group_by_name``: then ROIs named ``object <n>`` or ``object <n> z<k>`` (as
:mod:`microseg.io.roi_export` writes them) are one object across slices.

Example
-------
>>> labels = rois_to_labels("annotations/RoiSet.zip", shape=(512, 512))   # doctest: +SKIP
>>> import_roi_folder("rois", "data/images", "runs/demo/data/roi_labels")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError, OutputExistsError
from microseg.io.images import image_stem, read_header, write_image
from microseg.io.pairing import list_images
from microseg.logs import file_note

__all__ = [
    "ROI_EXTENSIONS",
    "import_roi_folder",
    "read_rois",
    "rois_to_labels",
]

log = logging.getLogger(__name__)

ROI_EXTENSIONS = (".zip", ".roi")
_ROISET_PREFIX = "RoiSet_"
_AREA_TYPES = frozenset({"POLYGON", "RECT", "OVAL", "FREEHAND", "TRACED"})
_NOT_AREA_SUBTYPES = frozenset({"TEXT", "ARROW", "IMAGE"})
_OBJECT_NAME = re.compile(r"^object (\d+)(?: z\d+)?$")


def read_rois(source: Any) -> list[Any]:
    """A list of ``roifile.ImagejRoi`` from a ``.zip``/``.roi`` path, one ROI, or an iterable.

    Raises :class:`DataError` naming the file if it is missing or cannot be read, or is a zip
    that would unpack to more than a ROI set should (see :mod:`microseg.io.archives`).
    """
    import roifile

    if isinstance(source, roifile.ImagejRoi):
        return [source]
    if not isinstance(source, (str, Path)):
        return list(source)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path} does not exist; expected a Fiji RoiSet .zip or a .roi file")
    _refuse_zip_bomb(path)
    try:
        rois = roifile.roiread(path)
    # roifile raises struct, zip and value errors alike for a damaged or foreign file.
    except Exception as err:
        raise DataError(f"{path}: cannot be read as ImageJ ROIs ({type(err).__name__}: {err}); "
                        f"export the ROIs from Fiji's ROI Manager with More > Save...") from err
    return rois if isinstance(rois, list) else [rois]


def _refuse_zip_bomb(path: Path) -> None:
    import zipfile

    from microseg.io.archives import check_zip_size

    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        problems = check_zip_size(archive)
    if problems:
        raise DataError(f"{path}: not read, it is larger than a ROI set should be", problems)


def rois_to_labels(rois: Any, shape: tuple[int, ...], group_by_name: bool = False) -> np.ndarray:
    """Fill ImageJ ROIs into an int32 label image of ``shape`` (``(Y, X)`` or ``(Z, Y, X)``).

    ``rois``: a ``RoiSet.zip`` or ``.roi`` path, one ``roifile.ImagejRoi``, or a list of them.
    Object ids are 1..n over the filled ROIs in file order (with ``group_by_name``, over the
    objects, ROIs named ``object <n>`` or ``object <n> z<k>`` joined); rules for pixels, overlaps and 3D placement are
    in the module docstring. Parts outside the image are cut off. Warns
    (``UserWarning``) listing ROIs skipped for having no area (points, lines) or covering no
    pixel centre. Raises :class:`DataError` naming the ROIs that lie wholly outside the image
    (the ROI set belongs to another image), when no ROI gives an object (only points or lines),
    and, for a 3D ``shape``, the ROIs that have no slice position or one outside the volume.

    >>> from roifile import ImagejRoi
    >>> square = ImagejRoi.frompoints([[1, 1], [4, 1], [4, 3], [1, 3]])
    >>> rois_to_labels([square], (5, 6))
    array([[0, 0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0, 0],
           [0, 1, 1, 1, 0, 0],
           [0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 0, 0]], dtype=int32)
    """
    shape = tuple(int(size) for size in shape)
    if len(shape) not in (2, 3):
        raise ConfigError(f"shape must be (Y, X) or (Z, Y, X), got {shape}")
    source = str(rois) if isinstance(rois, (str, Path)) else "ROIs"
    placed, skipped = _placed_rois(read_rois(rois), shape, source)
    objects, keys, outside = [], [], []
    for name, roi, z in placed:
        region = _roi_region(roi, shape[-2:])
        if _outside(roi, shape[-2:]):
            outside.append(f"{name}: x {roi.left}..{roi.right}, y {roi.top}..{roi.bottom}")
        elif region is None:
            skipped.append(f"{name} (covers no pixel centre)")
        else:
            objects.append((z, *region))
            grouped = _OBJECT_NAME.match(roi.name or "") if group_by_name else None
            keys.append(("object", grouped.group(1)) if grouped else ("roi", len(keys)))
    _refuse_unusable(source, shape, outside, skipped, bool(objects))
    if skipped:
        warnings.warn(f"{source}: skipped {len(skipped)} ROI(s): {', '.join(skipped)}",
                      UserWarning, stacklevel=2)
    return _paint(objects, shape, keys)


def _outside(roi: Any, plane: tuple[int, ...]) -> bool:
    """Whether the ROI's bounding box misses the image plane (Y, X) entirely."""
    return (roi.right <= 0 or roi.bottom <= 0 or roi.left >= plane[1]
            or roi.top >= plane[0])


def _refuse_unusable(source: str, shape: tuple[int, ...], outside: list[str],
                     skipped: list[str], filled: bool) -> None:
    if outside:
        raise DataError(f"{source}: {len(outside)} ROI(s) lie outside the image of shape "
                        f"{shape}: the ROIs were drawn on another image, or on a scaled or "
                        f"cropped copy; export them again from the image they belong to",
                        outside)
    if not filled:
        found = ", ".join(skipped) or "no ROI"
        raise DataError(f"{source}: no ROI with an area, so no object ({found}); outline the "
                        f"objects as areas (polygon, freehand, oval, rectangle or wand) and "
                        f"save the ROI set again")


def import_roi_folder(roi_dir: str | Path, images_dir: str | Path, out_labels_dir: str | Path,
                      ndim: int | None = None, axes: str | None = None,
                      overwrite: bool = False) -> list[Path]:
    """Convert one ROI file per image into label TIFFs ``out_labels_dir/<stem>.tif``.

    For each image in ``images_dir``, the ROI file is ``<stem>.zip``, ``<stem>.roi`` or
    ``RoiSet_<stem>.zip`` in ``roi_dir``; images without one are left out. Each label image has
    its image's spatial shape (read from the header; ``ndim``/``axes`` as for
    :func:`microseg.io.images.read_image`). Returns the written paths, sorted.

    Everything is checked before anything is written: :class:`ConfigError` if ``out_labels_dir``
    is inside ``images_dir`` or ``roi_dir`` (input folders are never written to);
    :class:`DataError` listing ROI files without an image, several ROI files for one image,
    unreadable files, ROI files without any area ROI or with ROIs outside their image, and 3D
    ROIs without a slice; :class:`OutputExistsError` listing label files
    that already exist, unless ``overwrite``.
    """
    roi_dir, images_dir, out_dir = Path(roi_dir), Path(images_dir), Path(out_labels_dir)
    _refuse_inside(out_dir, [images_dir, roi_dir])
    jobs = _import_jobs(roi_dir, images_dir, out_dir, ndim, axes)
    existing = [out for *_, out in jobs if out.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{len(existing)} label file(s) already exist, e.g. {existing[0]}; "
                                f"choose another output folder or pass overwrite=True")
    written = []
    for shape, roi_file, out in jobs:
        labels = rois_to_labels(roi_file, shape)
        written.append(write_image(out, labels, axes="ZYX" if len(shape) == 3 else "YX",
                                   compression="zlib", overwrite=overwrite))
        file_note(log, "roi-import", out, f"{int(labels.max())} objects from {roi_file}",
                  "label images written from Fiji ROI files")
    return written


def _refuse_inside(out_dir: Path, inputs: list[Path]) -> None:
    out = out_dir.resolve()
    for folder in inputs:
        if out == folder.resolve() or folder.resolve() in out.parents:
            raise ConfigError(f"output folder {out_dir} is inside the input folder {folder}, which "
                              f"is never written to; choose an output folder elsewhere, e.g. in "
                              f"the run folder")


def _import_jobs(roi_dir: Path, images_dir: Path, out_dir: Path, ndim: int | None,
                 axes: str | None) -> list[tuple[tuple[int, ...], Path, Path]]:
    images = {image_stem(path): path for path in list_images(images_dir)}
    problems: list[str] = []
    jobs = []
    for stem, roi_files in sorted(_roi_files_by_stem(roi_dir, images).items()):
        if stem not in images:
            problems.append(f"{roi_files[0]}: no image named {stem}.* in {images_dir}")
        elif len(roi_files) > 1:
            problems.append(f"{', '.join(map(str, roi_files))}: several ROI files for the image "
                            f"{images[stem]}; keep one")
        else:
            job = _checked_job(images[stem], roi_files[0], out_dir / f"{stem}.tif", ndim, axes,
                               problems)
            jobs += [job] if job else []
    if not jobs and not problems:
        problems.append(f"{roi_dir} holds no ROI file for any image in {images_dir} (expected "
                        f"<stem>.zip, <stem>.roi or {_ROISET_PREFIX}<stem>.zip)")
    if problems:
        raise DataError(f"{roi_dir}: cannot import the ROIs", problems)
    return jobs


def _checked_job(image: Path, roi_file: Path, out: Path, ndim: int | None, axes: str | None,
                 problems: list[str]) -> tuple[tuple[int, ...], Path, Path] | None:
    try:
        shape = read_header(image, axes=axes, ndim=ndim).spatial_shape
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # warned again when written
            rois_to_labels(roi_file, shape)
    except DataError as err:
        problems.append("; ".join([err.summary, *err.problems]))
        return None
    return shape, roi_file, out


def _roi_files_by_stem(roi_dir: Path, image_stems: dict[str, Path]) -> dict[str, list[Path]]:
    if not roi_dir.is_dir():
        raise DataError(f"{roi_dir} is not a folder; expected a folder of Fiji ROI files")
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(roi_dir.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in ROI_EXTENSIONS:
            continue
        stem = path.name[: -len(path.suffix)]
        if stem not in image_stems and stem.startswith(_ROISET_PREFIX):
            stem = stem[len(_ROISET_PREFIX):]
        by_stem.setdefault(stem, []).append(path)
    return by_stem


def _roi_name(roi: Any, index: int) -> str:
    return f"#{index + 1} {roi.name!r}" if roi.name else f"#{index + 1}"


def _has_area(roi: Any) -> bool:
    if roi.composite:
        return True
    return roi.roitype.name in _AREA_TYPES and roi.subtype.name not in _NOT_AREA_SUBTYPES


def _placed_rois(rois: list[Any], shape: tuple[int, ...],
                 source: str) -> tuple[list[tuple[str, Any, int | None]], list[str]]:
    placed, skipped, problems = [], [], []
    for index, roi in enumerate(rois):
        name = _roi_name(roi, index)
        if not _has_area(roi):
            skipped.append(f"{name} ({roi.roitype.name.lower()}, no area)")
            continue
        z = _roi_slice(roi) if len(shape) == 3 else None
        if z is not None and not 0 <= z < shape[0]:
            problems.append(f"{name}: on slice {z + 1}, outside the {shape[0]} slices")
        elif len(shape) == 3 and z is None:
            problems.append(f"{name}: no slice position (z_position and position are 0)")
        placed.append((name, roi, z))
    if problems:
        raise DataError(f"{source}: ROIs cannot be placed in a volume of shape {shape}; add "
                        f"the ROIs in Fiji with the right slice shown (ROI Manager > Add)", problems)
    return placed, skipped


def _roi_slice(roi: Any) -> int | None:
    position = roi.z_position or roi.position
    return position - 1 if position > 0 else None


def _roi_region(roi: Any, plane: tuple[int, ...]) -> tuple[tuple[slice, slice], np.ndarray] | None:
    if roi.composite:
        region = _polygons_region(roi.coordinates(multi=True), plane)
    elif roi.roitype.name == "RECT" and roi.subpixelrect:
        x, y, w, h = roi.xd, roi.yd, roi.widthd, roi.heightd
        region = _polygons_region([np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])],
                                  plane)
    elif roi.roitype.name == "RECT":
        region = _box_region(roi.top, roi.bottom, roi.left, roi.right, plane, _full)
    elif roi.roitype.name == "OVAL":
        region = _box_region(roi.top, roi.bottom, roi.left, roi.right, plane, _ellipse(roi))
    else:
        region = _polygons_region([roi.coordinates()], plane)
    if region is None or not region[1].any():
        return None
    return region


def _box_region(top: float, bottom: float, left: float, right: float, plane: tuple[int, ...],
                fill: Any) -> tuple[tuple[slice, slice], np.ndarray] | None:
    rows = slice(max(int(np.floor(top)), 0), min(int(np.ceil(bottom)), plane[0]))
    cols = slice(max(int(np.floor(left)), 0), min(int(np.ceil(right)), plane[1]))
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return None
    return (rows, cols), fill(rows, cols)


def _full(rows: slice, cols: slice) -> np.ndarray:
    return np.ones((rows.stop - rows.start, cols.stop - cols.start), bool)


def _ellipse(roi: Any) -> Any:
    centre_x, centre_y = (roi.left + roi.right) / 2, (roi.top + roi.bottom) / 2
    radius_x, radius_y = (roi.right - roi.left) / 2, (roi.bottom - roi.top) / 2

    def fill(rows: slice, cols: slice) -> np.ndarray:
        if radius_x <= 0 or radius_y <= 0:
            return np.zeros((rows.stop - rows.start, cols.stop - cols.start), bool)
        y = (np.arange(rows.start, rows.stop)[:, None] + 0.5 - centre_y) / radius_y
        x = (np.arange(cols.start, cols.stop)[None, :] + 0.5 - centre_x) / radius_x
        return x**2 + y**2 <= 1.0

    return fill


def _polygons_region(outlines: Iterable[np.ndarray], plane: tuple[int, ...]
                     ) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Even-odd fill of one or more outlines (x, y corner coordinates): holes stay empty."""
    from skimage.draw import polygon

    outlines = [np.asarray(outline, np.float64) for outline in outlines if len(outline) >= 3]
    if not outlines:
        return None
    corners = np.concatenate(outlines)
    region = _box_region(corners[:, 1].min(), corners[:, 1].max(), corners[:, 0].min(),
                         corners[:, 0].max(), plane, _full)
    if region is None:
        return None
    (rows, cols), mask = region
    mask[:] = False
    for outline in outlines:
        # skimage tests pixel centres at integer coordinates; ImageJ's centres sit at +0.5.
        rr, cc = polygon(outline[:, 1] - 0.5 - rows.start, outline[:, 0] - 0.5 - cols.start,
                         shape=mask.shape)
        inside = np.zeros_like(mask)
        inside[rr, cc] = True
        mask ^= inside
    return (rows, cols), mask


def _paint(objects: list[tuple[int | None, tuple[slice, slice], np.ndarray]],
           shape: tuple[int, ...], keys: list[Any]) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    ids = {key: k for k, key in enumerate(dict.fromkeys(keys), start=1)}
    areas = [int(mask.sum()) for _, _, mask in objects]
    # Largest first, so that smaller objects painted later keep the overlap; the sort is stable,
    # so of two equal areas the later ROI is painted last and wins.
    for index in sorted(range(len(objects)), key=lambda i: -areas[i]):
        z, (rows, cols), mask = objects[index]
        target = labels[rows, cols] if z is None else labels[z, rows, cols]
        target[mask] = ids[keys[index]]
    return labels
