"""Pair an ``images/`` folder with a ``labels/`` folder by file stem, checking everything first.

The layout is the one Fiji's ROI Map export gives: ``data/images/a.tif`` and
``data/labels/a.tif`` (or ``a.png``, ``a.npy``, ...; an image ``a.ome.tif`` pairs with a label
``a.tif``). :func:`pair_folder` reads image headers only (pixels stay on disk), reads every label
to check its values, writes nothing, and reports all problems at once in one
:class:`~microseg.errors.DataError`, so a folder is fixed in one pass.

Example
-------
>>> pairs = pair_folder("my_data")                          # doctest: +SKIP
>>> pairs[0].stem, pairs[0].spatial_shape, pairs[0].n_channels   # doctest: +SKIP
('cell_01', (512, 512), 1)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from microseg.errors import DataError
from microseg.io.images import (
    SUPPORTED_EXTENSIONS,
    ImageHeader,
    image_stem,
    is_supported,
    read_header,
    read_image,
    read_label,
)

__all__ = [
    "IGNORED_NAMES",
    "ImagePair",
    "list_images",
    "pair_folder",
]

log = logging.getLogger(__name__)

IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})
_NAMES_SHOWN = 5


@dataclass(frozen=True)
class ImagePair:
    """One image and its label image (None when labels are not required and missing).

    ``spatial_shape`` is ``(Y, X)`` or ``(Z, Y, X)``; ``n_channels`` counts channels after an RGB
    image that is really grey is collapsed to one; ``dtype`` is the image's stored dtype name.
    """

    stem: str
    image: Path
    label: Path | None
    spatial_shape: tuple[int, ...]
    n_channels: int
    dtype: str

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions: 2 or 3."""
        return len(self.spatial_shape)


def list_images(folder: str | Path) -> list[Path]:
    """Image files (and ``.zarr`` folders) in ``folder``, sorted by stem.

    Hidden files (``.DS_Store``, ...), ``Thumbs.db`` and ``desktop.ini`` are ignored; other files
    that are not images are skipped with a logged warning. Raises :class:`DataError` if ``folder``
    is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; expected a folder of images "
                        f"({', '.join(SUPPORTED_EXTENSIONS)})")
    undecodable = _undecodable_names(folder)
    if undecodable:
        raise DataError(f"{folder}: file names that are not valid UTF-8", undecodable)
    images, others = _scan(folder)
    if others:
        log.warning("%s: skipping %d entries that are not images: %s", folder, len(others),
                    _names(others))
    return images


def pair_folder(data_dir: str | Path, ndim: int | None = None, axes: str | None = None,
                require_labels: bool = True, images: str = "images",
                labels: str = "labels") -> list[ImagePair]:
    """Pair ``data_dir/images`` with ``data_dir/labels`` by stem; check every pair.

    Parameters
    ----------
    data_dir: folder holding the ``images`` and ``labels`` subfolders (names changeable).
    ndim: 2 or 3 if known: guides axes guessing, and images of the other kind are problems.
    axes: axes of the images as stored (see :func:`microseg.io.images.read_image`); labels
        never have channels.
    require_labels: if false, images without a label are kept with ``label=None``.

    Returns the pairs sorted by stem. Raises one :class:`DataError` listing every problem found,
    one line per problem naming the file: missing or empty folders; images without labels and
    labels without images; several files with one stem; unsupported or unreadable files; label
    values that are not whole numbers ≥ 0; image/label spatial shape mismatches; a mix of 2D and
    3D images; differing channel counts. Writes nothing.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist",
                        [f"expected {data_dir / images}/ and {data_dir / labels}/ holding images "
                         f"and label images with the same file names"])
    problems: list[str] = []
    image_files = _files_by_stem(data_dir / images, "images", True, problems)
    label_files = _files_by_stem(data_dir / labels, "label images", require_labels, problems)
    stems = _matched_stems(image_files, label_files, data_dir / images, data_dir / labels,
                           require_labels, problems)
    pairs = [pair for stem in stems
             if (pair := _checked_pair(stem, image_files[stem][0],
                                       label_files.get(stem, [None])[0], ndim, axes, problems))]
    problems += _folder_mix_problems(pairs)
    if problems:
        raise DataError(f"{data_dir}: {len(problems)} problem(s) with the images and labels; "
                        f"fix them all, then run again", problems)
    return pairs


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_ignored(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in IGNORED_NAMES


def _undecodable_names(folder: Path) -> list[str]:
    """One problem per file name in ``folder`` that is not valid UTF-8 (Python holds its bad
    bytes as surrogates, which printing, logging and most libraries refuse)."""
    problems = []
    for path in sorted(p for p in folder.iterdir() if not _is_utf8(p.name)):
        shown = path.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        problems.append(f"{folder / shown}: the file name is not valid UTF-8 (bytes "
                        f"{os.fsencode(path.name)!r}, perhaps from a system with another "
                        f"encoding); rename it, e.g. with convmv or by hand")
    return problems


def _scan(folder: Path) -> tuple[list[Path], list[Path]]:
    entries = sorted(path for path in folder.iterdir()
                     if not _is_ignored(path) and _is_utf8(path.name))
    images = [path for path in entries
              if is_supported(path) and (path.is_file() or path.suffix.lower() == ".zarr")]
    others = [path for path in entries if path not in images]
    return sorted(images, key=lambda path: (image_stem(path), path.name)), others


def _files_by_stem(folder: Path, what: str, required: bool,
                   problems: list[str]) -> dict[str, list[Path]]:
    if not folder.is_dir():
        if required:
            problems.append(f"{folder} does not exist: put the {what} there, one file per image")
        return {}
    problems += _undecodable_names(folder)
    files, others = _scan(folder)
    problems += [f"{path}: {'a folder' if path.is_dir() else 'unsupported file type'}, not an "
                 f"image; supported: {', '.join(SUPPORTED_EXTENSIONS)} (move it elsewhere)"
                 for path in others]
    if not files and required:
        problems.append(f"{folder} holds no {what} ({', '.join(SUPPORTED_EXTENSIONS)})")
    by_stem: dict[str, list[Path]] = {}
    for path in files:
        by_stem.setdefault(image_stem(path), []).append(path)
    problems += [f"{', '.join(str(p) for p in paths)}: {len(paths)} files share the stem "
                 f"{stem!r}; keep one of them" for stem, paths in by_stem.items() if len(paths) > 1]
    return by_stem


def _matched_stems(image_files: dict[str, list[Path]], label_files: dict[str, list[Path]],
                   images_dir: Path, labels_dir: Path, require_labels: bool,
                   problems: list[str]) -> list[str]:
    stems = []
    for stem in sorted(image_files):
        if len(image_files[stem]) > 1 or len(label_files.get(stem, [])) > 1:
            continue
        if stem not in label_files and require_labels:
            if label_files:
                problems.append(f"{image_files[stem][0]}: no label image named {stem}.* in "
                                f"{labels_dir}")
            continue
        stems.append(stem)
    problems += [f"{label_files[stem][0]}: a label image without an image named {stem}.* in "
                 f"{images_dir}" for stem in sorted(set(label_files) - set(image_files))]
    return stems


def _checked_pair(stem: str, image: Path, label: Path | None, ndim: int | None,
                  axes: str | None, problems: list[str]) -> ImagePair | None:
    try:
        header = read_header(image, axes=axes, ndim=ndim)
        n_channels = _channels_after_grey_collapse(header, axes, ndim)
    except DataError as err:
        problems.append(_one_line(err))
        return None
    if 0 in header.shape:
        problems.append(f"{image}: holds no pixels (shape {header.shape}, axes "
                        f"{header.axes!r}); export the image again")
        return None
    if label is not None and not _label_fits(label, header, problems):
        return None
    return ImagePair(stem, image, label, header.spatial_shape, n_channels, header.dtype)


def _channels_after_grey_collapse(header: ImageHeader, axes: str | None,
                                  ndim: int | None) -> int:
    if header.n_channels not in (3, 4):
        return header.n_channels
    return read_image(header.path, axes=axes, ndim=ndim).shape[0]


def _label_fits(label: Path, header: ImageHeader, problems: list[str]) -> bool:
    try:
        values = read_label(label, ndim=len(header.spatial_shape))
    except DataError as err:
        problems.append(f"{_one_line(err)} (its image {header.path} has spatial shape "
                        f"{header.spatial_shape})")
        return False
    if values.shape != header.spatial_shape:
        problems.append(f"{label}: spatial shape {values.shape} differs from its image "
                        f"{header.path}: {header.spatial_shape}; labels must cover the image "
                        f"pixel for pixel")
        return False
    return True


def _folder_mix_problems(pairs: list[ImagePair]) -> list[str]:
    problems = []
    by_ndim = _group(pairs, lambda pair: f"{pair.ndim}D")
    if len(by_ndim) > 1:
        problems.append("images mix 2D and 3D (" + "; ".join(
            f"{key}: {_names(paths)}" for key, paths in by_ndim.items())
            + "); keep one kind per folder")
    by_channels = _group(pairs, lambda pair: f"{pair.n_channels} channel(s)")
    if len(by_channels) > 1:
        problems.append("images have different channel counts (" + "; ".join(
            f"{key}: {_names(paths)}" for key, paths in by_channels.items())
            + "); every image needs the same channels in the same order")
    return problems


def _group(pairs: list[ImagePair], key: Callable[[ImagePair], str]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for pair in pairs:
        groups.setdefault(key(pair), []).append(pair.image)
    return dict(sorted(groups.items()))


def _names(paths: list[Path]) -> str:
    shown = ", ".join(str(path) for path in paths[:_NAMES_SHOWN])
    more = len(paths) - _NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _one_line(err: DataError) -> str:
    return "; ".join([err.summary, *err.problems])
