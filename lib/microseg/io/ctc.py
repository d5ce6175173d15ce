"""Cell Tracking Challenge folders: time-lapse frames and their segmentation annotations.

The layout (celltrackingchallenge.net, "Naming and file content conventions")::

    <root>/01/t000.tif                    frame 0 of sequence 01 (2D: Y×X, 3D: Z×Y×X)
    <root>/01_GT/SEG/man_seg000.tif       its gold-truth labels (all of frame 0)
    <root>/01_GT/SEG/man_seg_000_012.tif  3D data: labels of slice 12 of frame 0 only
    <root>/01_ST/SEG/man_seg000.tif       silver truth (computer-made), where provided

Every annotated frame becomes one image/label pair named ``<sequence>_t<frame>``; a slice
annotation becomes a 2D pair ``<sequence>_t<frame>_z<slice>`` with that slice of the frame.
The gold truth (``_GT``) is used where it exists, else the silver truth (``_ST``). The gold
segmentation truth annotates only some frames, and in them often not every cell: unannotated
cells become background, which the import notes.

Example
-------
>>> import tempfile
>>> labels = np.zeros((32, 32), np.int32)
>>> labels[4:12, 4:14], labels[18:28, 8:20] = 1, 2
>>> frames = [np.full((32, 32), t, np.uint16) for t in range(6)]
>>> with tempfile.TemporaryDirectory() as folder:
...     root = write_ctc_sequence(Path(folder) / "ctc", "01", frames, {0: labels, 5: labels})
...     result = import_ctc_folder(root, Path(folder) / "import")
...     names = sorted(p.name for p in result.labels_dir.iterdir())
>>> result.n_images, result.n_objects, names
(2, 4, ['01_t000.tif', '01_t005.tif'])
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import DataError
from microseg.io.annotations import (
    ImportedAnnotations,
    check_output_dir,
    copy_image,
    count_objects,
    write_label_file,
)

__all__ = ["ctc_annotations", "import_ctc_folder", "write_ctc_sequence"]

TRUTHS = ("GT", "ST")
_FRAME = re.compile(r"^t(\d+)\.tiff?$")
_FULL = re.compile(r"^man_seg(\d+)\.tiff?$")
_SLICE = re.compile(r"^man_seg_?(\d+)_(\d+)\.tiff?$")
PARTIAL_NOTE = ("Cell Tracking Challenge gold truth annotates some frames only, and in them not "
                "always every cell: unannotated cells are background in these labels; check "
                "them, or prefer the silver truth (_ST) where provided")


def ctc_annotations(root: str | Path) -> list[dict[str, Any]]:
    """Every annotated frame (or slice) of a CTC folder, sorted by sequence, frame and slice.

    Each entry: ``sequence``, ``truth`` (``"GT"``/``"ST"``), ``frame`` (int), ``slice`` (int,
    or None for a whole frame), ``image`` and ``labels`` paths, ``stem``. Raises
    :class:`DataError` naming annotation files whose frame image is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; expected Cell Tracking Challenge sequences "
                        f"01/, 01_GT/SEG/, ...")
    found, problems = [], []
    for sequence in sorted(p.name for p in root.iterdir() if re.match(r"^\d{2,}$", p.name)):
        truth, folder = _truth_folder(root, sequence)
        if folder is None:
            continue
        frames = _frames(root / sequence)
        for path in sorted(folder.iterdir()):
            entry = _entry(path, sequence, truth, frames)
            if entry is None:
                continue
            if entry["image"] is None:
                problems.append(f"{path}: no frame t{entry['frame']:03d}.tif in {root / sequence}")
            else:
                found.append(entry)
    if problems:
        raise DataError(f"{root}: annotations without their frames", problems)
    return sorted(found, key=lambda e: (e["sequence"], e["frame"], e["slice"] or -1))


def _truth_folder(root: Path, sequence: str) -> tuple[str, Path | None]:
    for truth in TRUTHS:
        folder = root / f"{sequence}_{truth}" / "SEG"
        if folder.is_dir():
            return truth, folder
    return "", None


def _frames(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    return {int(m.group(1)): p for p in folder.iterdir() if (m := _FRAME.match(p.name.lower()))}


def _entry(path: Path, sequence: str, truth: str,
           frames: dict[int, Path]) -> dict[str, Any] | None:
    full, part = _FULL.match(path.name.lower()), _SLICE.match(path.name.lower())
    if not (full or part):
        return None
    frame = int((full or part).group(1))
    z = int(part.group(2)) if part else None
    image = frames.get(frame)
    stem = f"{sequence}_{image.stem if image else f't{frame:03d}'}" + (f"_z{z:03d}" if part else "")
    return {"sequence": sequence, "truth": truth, "frame": frame, "slice": z, "image": image,
            "labels": path, "stem": stem}


def import_ctc_folder(source: Path, out_dir: Path, images_dir: str | Path | None = None,
                      ndim: int | None = None, axes: str | None = None) -> ImportedAnnotations:
    """Annotated frames of a CTC folder as image/label pairs in ``out_dir``.

    Whole-frame annotations give ``images/<seq>_t<frame>.tif`` (a copy) and
    ``labels/<seq>_t<frame>.tif``; slice annotations of volumes give 2D pairs (the slice is
    cut out of its frame). Volumes with both kinds use the whole frames unless ``ndim=2``;
    ``ndim=3`` leaves slice annotations out. What was left out, and that the gold truth may
    be partial, is noted. Raises :class:`DataError` listing every unusable file.
    """
    check_output_dir(out_dir, [source])
    entries = _chosen(ctc_annotations(source), ndim)
    if not entries:
        raise DataError(f"{source}: no segmentation annotations found (expected "
                        f"<seq>_GT/SEG/man_seg<frame>.tif beside <seq>/t<frame>.tif)")
    loaded, problems = [], []
    for entry in entries:
        try:
            loaded.append((entry, _load(entry, axes)))
        except DataError as err:
            problems.append("; ".join([err.summary, *err.problems]))
    if problems:
        raise DataError(f"{source}: cannot import the annotations", problems)
    for entry, (image, labels) in loaded:
        _write_pair(out_dir, entry, image, labels)
    return ImportedAnnotations("ctc", out_dir, out_dir / "labels", len(loaded),
                               sum(count_objects(labels) for _, (_, labels) in loaded),
                               notes=tuple(_notes(source, entries, ndim)))


def _chosen(entries: list[dict[str, Any]], ndim: int | None) -> list[dict[str, Any]]:
    slices = [e for e in entries if e["slice"] is not None]
    whole = [e for e in entries if e["slice"] is None]
    if ndim == 2:
        return slices or whole
    return whole or ([] if ndim == 3 else slices)


def _load(entry: dict[str, Any], axes: str | None) -> tuple[np.ndarray | None, np.ndarray]:
    from microseg.io.images import read_header, read_image, read_label

    header = read_header(entry["image"], axes=axes)
    if entry["slice"] is None:
        labels = read_label(entry["labels"], ndim=len(header.spatial_shape))
        expected = header.spatial_shape
        image = None
    else:
        image = read_image(entry["image"], axes=axes, ndim=3)[:, entry["slice"]]
        labels, expected = read_label(entry["labels"], ndim=2), image.shape[1:]
    if labels.shape != tuple(expected):
        raise DataError(f"{entry['labels']}: labels of shape {labels.shape}, expected "
                        f"{tuple(expected)} from {entry['image']}")
    return image, labels


def _write_pair(out_dir: Path, entry: dict[str, Any], image: np.ndarray | None,
                labels: np.ndarray) -> None:
    from microseg.io.images import write_image

    if image is None:
        copy_image(entry["image"], out_dir / "images", f"{entry['stem']}.tif")
    else:
        write_image(out_dir / "images" / f"{entry['stem']}.tif", image, axes="CYX")
    write_label_file(out_dir / "labels" / f"{entry['stem']}.tif", labels)


def _notes(source: Path, used: list[dict[str, Any]], ndim: int | None) -> list[str]:
    every = ctc_annotations(source)
    notes = []
    left_out = len(every) - len(used)
    if left_out:
        kind = "slice" if any(e["slice"] is not None for e in every if e not in used) else "frame"
        notes.append(f"{left_out} {kind} annotation(s) left out (ndim={ndim}); "
                     f"pass ndim={'2' if kind == 'slice' else '3'} to use them instead")
    for sequence in sorted({e["sequence"] for e in used}):
        frames = len(_frames(source / sequence))
        annotated = len({e["frame"] for e in used if e["sequence"] == sequence})
        notes.append(f"sequence {sequence}: {annotated} of {frames} frames annotated")
    if any(e["truth"] == "GT" for e in used):
        notes.append(PARTIAL_NOTE)
    return notes


def write_ctc_sequence(root: str | Path, sequence: str, frames: Sequence[np.ndarray],
                       labels: Mapping[int | tuple[int, int], np.ndarray],
                       truth: str = "GT") -> Path:
    """Write frames ``(Y, X)``/``(Z, Y, X)`` and their annotations in the CTC layout.

    ``labels`` maps a frame index to its labels, or ``(frame, slice)`` to the 2D labels of one
    slice of a volume. Frames are named ``t000.tif`` ... (``t0000`` beyond 1000 frames), labels
    ``man_seg000.tif`` / ``man_seg_000_012.tif``, uint16. Returns ``root``; existing files raise
    :class:`~microseg.errors.OutputExistsError`.
    """
    from microseg.io.images import write_image

    root = Path(root)
    digits = 4 if len(frames) > 1000 else 3
    for t, frame in enumerate(frames):
        frame = np.asarray(frame)
        write_image(root / sequence / f"t{t:0{digits}d}.tif", frame,
                    axes="YX" if frame.ndim == 2 else "ZYX")
    folder = root / f"{sequence}_{truth}" / "SEG"
    for key, values in labels.items():
        name = f"man_seg{key:0{digits}d}" if isinstance(key, int) else \
            f"man_seg_{key[0]:0{digits}d}_{key[1]:03d}"
        write_image(folder / f"{name}.tif", np.asarray(values).astype(np.uint16),
                    axes="YX" if np.ndim(values) == 2 else "ZYX")
    return root
