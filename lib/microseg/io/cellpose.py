"""Cellpose annotations: ``<stem>_seg.npy`` (the Cellpose GUI) and ``<stem>_masks.*`` images.

Cellpose keeps images and their annotations in one folder: the GUI saves ``<stem>_seg.npy`` (a
pickled dict whose ``"masks"`` is the label image), the command line and the GUI export
``<stem>_masks.tif`` / ``<stem>_masks.png``, and predictions are saved as
``<stem>_cp_masks.png``/``.tif``; ``_flows``, ``_outlines`` and ``_cp_output`` files are
pictures, not labels. A ``_seg.npy`` file is a Python pickle, which can run code when loaded
naively; :func:`read_seg_masks` unpickles it with only NumPy arrays, scalars and plain Python
containers allowed, and refuses anything else.

Example
-------
>>> import tempfile
>>> labels = np.zeros((32, 32), np.int32)
>>> labels[4:12, 4:14], labels[18:28, 8:20] = 1, 2
>>> with tempfile.TemporaryDirectory() as folder:
...     path = write_seg_file(Path(folder) / "img01_seg.npy", labels, image_name="img01.tif")
...     np.array_equal(read_seg_masks(path), labels)
True
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError
from microseg.io.annotations import (
    ImportedAnnotations,
    check_output_dir,
    copy_image,
    count_objects,
    write_label_file,
)

__all__ = [
    "import_cellpose_folder",
    "read_seg_file",
    "read_seg_masks",
    "write_seg_file",
]

SEG_SUFFIX = "_seg.npy"
MASK_SUFFIXES = ("_cp_masks", "_masks")
PICTURE_SUFFIXES = ("_flows", "_cp_outlines", "_outlines", "_cp_output", "_dP", "_seg")
_ALLOWED = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype"),
}
_MOVED = {"numpy.core.multiarray": "numpy._core.multiarray", "numpy.core.numeric":
          "numpy._core.numeric"}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles NumPy arrays and scalars, dicts, lists, strings and numbers; nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        module = _MOVED.get(module, module)
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a _seg.npy file "
                                         f"holds only arrays and numbers")
        from importlib import import_module

        return getattr(import_module(module), name)


def read_seg_file(path: str | Path) -> dict[str, Any]:
    """The dict a Cellpose ``_seg.npy`` file holds (``"masks"``, ``"outlines"``, ...), safely.

    Raises :class:`DataError` naming the file when it is missing, not a ``.npy`` file, not a
    dict, or pickles anything but arrays, numbers, strings and containers.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; expected a Cellpose <stem>_seg.npy file")
    try:
        with path.open("rb") as handle:
            data = _load_npy(handle)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise DataError(f"{path}: cannot be read as a Cellpose _seg.npy file ({err}); save it "
                        f"again from the Cellpose GUI (File > Save masks, Ctrl+S)") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: holds {type(data).__name__}, expected the dict the Cellpose "
                        f"GUI saves (with 'masks')")
    return data


def _load_npy(handle: Any) -> Any:
    from numpy.lib import format as npy

    version = npy.read_magic(handle)
    readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f".npy format version {version}, expected 1.0 or 2.0")
    _, _, dtype = readers[version](handle)
    if dtype.hasobject:
        loaded = _ArraysOnly(handle).load()
        return loaded.item() if isinstance(loaded, np.ndarray) and loaded.shape == () else loaded
    handle.seek(0)
    return {"masks": np.load(handle, allow_pickle=False)}


def read_seg_masks(path: str | Path) -> np.ndarray:
    """The label image (``"masks"``) of a Cellpose ``_seg.npy`` file, int32 ``(Y, X)`` or
    ``(Z, Y, X)``; old files that count from -1 are shifted to 0. Raises :class:`DataError`
    naming the file when it holds no masks."""
    path = Path(path)
    masks = read_seg_file(path).get("masks")
    if not isinstance(masks, np.ndarray) or masks.ndim not in (2, 3) or masks.dtype.kind not in "iub":
        found = type(masks).__name__ if not isinstance(masks, np.ndarray) else \
            f"{masks.dtype} array of shape {masks.shape}"
        raise DataError(f"{path}: 'masks' should be a 2D or 3D integer label image, found "
                        f"{found}")
    masks = masks[0] if masks.ndim == 3 and masks.shape[0] == 1 else masks
    return (masks + 1 if masks.min(initial=0) == -1 else masks).astype(np.int32)


def write_seg_file(path: str | Path, labels: np.ndarray, image_name: str = "") -> Path:
    """Write ``labels`` as a Cellpose ``_seg.npy`` file the Cellpose GUI opens and edits.

    Holds ``masks``, ``outlines`` (each object's border pixels carry its id), ``filename``
    (``image_name``, looked up beside the file), ``ismanual`` and ``chan_choose``. Returns the
    path; ``path`` must end with ``_seg.npy``.
    """
    from scipy import ndimage

    from microseg.runs import atomic_write

    path = Path(path)
    if not path.name.endswith(SEG_SUFFIX):
        raise ConfigError(f"{path}: Cellpose looks for <image stem>_seg.npy; name it e.g. "
                          f"{path.name.split('.')[0]}_seg.npy")
    labels = np.asarray(labels)
    masks = labels.astype(np.uint16 if labels.max(initial=0) < 2**16 - 1 else np.uint32)
    # border pixels of each object, plane by plane (as Cellpose draws them), image edge included
    size = (1, 3, 3) if masks.ndim == 3 else (3, 3)
    low = ndimage.grey_erosion(masks, size=size, mode="constant", cval=0)
    high = ndimage.grey_dilation(masks, size=size, mode="nearest")
    outlines = np.where((masks > 0) & ((low != masks) | (high != masks)), masks, 0)
    data = {"masks": masks, "outlines": outlines.astype(masks.dtype), "filename": image_name,
            "ismanual": np.zeros(int(masks.max(initial=0)), bool), "chan_choose": [0, 0]}
    return atomic_write(path, lambda tmp: tmp.write_bytes(_npy_bytes(data)))


def _npy_bytes(data: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array(data, dtype=object), allow_pickle=True)
    return buffer.getvalue()


def _annotation_stem(path: Path) -> tuple[str, str] | None:
    """``(stem, kind)`` of a Cellpose annotation file name, kind ``"seg"`` or ``"masks"``;
    None for anything else (an image, a flow picture)."""
    from microseg.io.images import image_stem, is_supported

    if path.name.endswith(SEG_SUFFIX):
        return path.name[: -len(SEG_SUFFIX)], "seg"
    if not is_supported(path):
        return None
    found = re.match(rf"^(.*?)({'|'.join(MASK_SUFFIXES)})$", image_stem(path))
    return (found.group(1), "masks") if found else None


def import_cellpose_folder(source: Path, out_dir: Path, images_dir: str | Path | None = None,
                           ndim: int | None = None, axes: str | None = None) -> ImportedAnnotations:
    """Copy the images of a Cellpose folder and write their labels into ``out_dir``.

    ``source`` holds images with ``<stem>_seg.npy`` and/or ``<stem>_masks.*`` files (the images
    may instead be in ``images_dir``). Where both exist the ``_seg.npy`` file is used (it keeps
    the GUI's edits). Images without annotations are left out (noted). Checks every file before
    writing; raises :class:`DataError` listing annotations without an image and label images
    whose shape differs from their image's.
    """
    check_output_dir(out_dir, [source, Path(images_dir) if images_dir else None])
    images, annotations = _scan(source, Path(images_dir) if images_dir else source)
    labels, problems = {}, []
    for stem, found in sorted(annotations.items()):
        chosen = found.get("seg") or found["masks"]
        if stem not in images:
            problems.append(f"{chosen}: no image named {stem}.* beside it")
            continue
        try:
            labels[stem] = _checked_labels(chosen, images[stem], ndim, axes)
        except DataError as err:
            problems.append("; ".join([err.summary, *err.problems]))
    if not annotations:
        problems.append(f"{source} holds no <stem>_seg.npy or <stem>_masks.* files")
    if problems:
        raise DataError(f"{source}: cannot import the Cellpose annotations", problems)
    for stem, values in labels.items():
        copy_image(images[stem], out_dir / "images")
        write_label_file(out_dir / "labels" / f"{stem}.tif", values)
    notes = [f"{len(set(images) - set(labels))} image(s) without annotations left out: "
             f"{', '.join(sorted(set(images) - set(labels))[:5])}"] if set(images) - set(labels) \
        else []
    notes += [f"{stem}: both {SEG_SUFFIX} and _masks files; used {SEG_SUFFIX}"
              for stem, found in annotations.items() if len(found) == 2]
    return ImportedAnnotations("cellpose", out_dir, out_dir / "labels", len(labels),
                               sum(count_objects(v) for v in labels.values()), notes=tuple(notes))


def _scan(source: Path, images_dir: Path) -> tuple[dict[str, Path], dict[str, dict[str, Path]]]:
    from microseg.io.images import image_stem, is_supported

    if not source.is_dir():
        raise DataError(f"{source} is not a folder; expected a Cellpose folder with images and "
                        f"<stem>_seg.npy or <stem>_masks.* files")
    annotations: dict[str, dict[str, Path]] = {}
    for path in sorted(source.iterdir()):
        found = _annotation_stem(path)
        if found:
            annotations.setdefault(found[0], {}).setdefault(found[1], path)
    images = {image_stem(p): p for p in sorted(images_dir.iterdir())
              if is_supported(p) and not p.name.startswith(".") and _annotation_stem(p) is None
              and not image_stem(p).endswith(PICTURE_SUFFIXES)}
    return images, annotations


def _checked_labels(path: Path, image: Path, ndim: int | None, axes: str | None) -> np.ndarray:
    from microseg.io.images import read_header, read_label

    spatial = read_header(image, axes=axes, ndim=ndim).spatial_shape
    labels = read_seg_masks(path) if path.name.endswith(SEG_SUFFIX) else \
        read_label(path, ndim=len(spatial))
    if labels.shape != spatial:
        raise DataError(f"{path}: labels of shape {labels.shape}, but its image {image} has "
                        f"spatial shape {spatial}")
    return labels
