"""Read and write images and label images, with explicit axes.

In memory, every image is a NumPy array in canonical channel-first axes: ``"CYX"`` (2D) or
``"CZYX"`` (3D), with the channel axis present even for one channel; the dtype of the file is kept.
Label images are int32 ``"YX"`` or ``"ZYX"``: 0 is background, objects are 1, 2, ... (gaps allowed).

Files may be TIFF (also BigTIFF, ImageJ hyperstacks and OME-TIFF), PNG, JPEG, NumPy ``.npy``, or
Zarr (a plain array or an OME-Zarr image). Axes come from, in this order: the ``axes`` argument,
the file's own metadata (ImageJ, OME, tifffile's shaped TIFF, OME-Zarr, our Zarr ``axes``
attribute), a documented guess from the shape (:func:`guess_axes`).

Example
-------
>>> import tempfile
>>> image = np.arange(2 * 64 * 48, dtype=np.uint16).reshape(64, 48, 2)
>>> with tempfile.TemporaryDirectory() as folder:
...     path = write_image(Path(folder) / "cell_01.tif", image, axes="YXC")
...     read = read_image(path)
>>> read.shape, read.dtype, np.array_equal(read, np.moveaxis(image, -1, 0))
((2, 64, 48), dtype('uint16'), True)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError, OutputExistsError
from microseg.io.axes import (
    VALID_AXES,
    canonical_axes,
    canonical_shape,
    guess_axes,
    is_grey_rgb,
    normalize_letters,
    to_canonical,
    validate_axes,
)
from microseg.logs import file_note

__all__ = [
    "ImageHeader",
    "SUPPORTED_EXTENSIONS",
    "VALID_AXES",
    "WRITABLE_EXTENSIONS",
    "available_memory",
    "canonical_axes",
    "canonical_shape",
    "guess_axes",
    "image_stem",
    "is_grey_rgb",
    "is_supported",
    "open_image",
    "read_header",
    "read_image",
    "read_label",
    "to_canonical",
    "validate_axes",
    "write_image",
]

log = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy", ".zarr", ".ome.zarr")
WRITABLE_EXTENSIONS = (".tif", ".tiff", ".png", ".npy", ".zarr", ".ome.zarr")
_DOUBLE_EXTENSIONS = (".ome.tiff", ".ome.tif", ".ome.zarr")
_FORMATS = {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg",
            ".npy": "npy", ".zarr": "zarr"}
_FORMAT_NAMES = {"tiff": "TIFF", "png": "PNG", "jpeg": "JPEG", "npy": "NumPy .npy", "zarr": "Zarr"}

_BIGTIFF_BYTES = 2**31
_OME_AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}


def image_stem(path: str | Path) -> str:
    """The file name without its image extension, double extensions included.

    >>> image_stem("images/cell_01.ome.tif"), image_stem("cell_01.TIF"), image_stem("v.ome.zarr")
    ('cell_01', 'cell_01', 'v')
    """
    name = Path(path).name
    for extension in _DOUBLE_EXTENSIONS + SUPPORTED_EXTENSIONS:
        if name.lower().endswith(extension):
            return name[: -len(extension)]
    return Path(name).stem


def is_supported(path: str | Path) -> bool:
    """Whether ``path`` has one of :data:`SUPPORTED_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in _FORMATS


@dataclass(frozen=True)
class ImageHeader:
    """What a file holds, read without loading the pixels: stored ``shape``, ``axes``, ``dtype``."""

    path: Path
    shape: tuple[int, ...]
    axes: str
    dtype: str

    @property
    def n_channels(self) -> int:
        """Channels as stored (an RGB image that is really grey still counts 3 here)."""
        return canonical_shape(self.shape, self.axes)[0]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """``(Y, X)`` or ``(Z, Y, X)``."""
        return canonical_shape(self.shape, self.axes)[1]


def read_header(path: str | Path, axes: str | None = None, ndim: int | None = None) -> ImageHeader:
    """Shape, axes and dtype of an image file, reading only its header where the format allows.

    TIFF, NumPy and Zarr are not loaded; PNG and JPEG are decoded (they are small). ``axes`` and
    ``ndim`` as for :func:`read_image`. Raises :class:`DataError` naming the file on any problem.
    """
    path = Path(path)
    fmt = _format_of(path)
    reader = _tiff_header if fmt == "tiff" else _LAZY_READERS[fmt]
    array, stored = _read_guarded(path, fmt, reader)
    resolved = _resolve_axes(path, array.shape, stored, axes, ndim)
    return ImageHeader(path, tuple(int(s) for s in array.shape), resolved, str(array.dtype))


def read_image(path: str | Path, axes: str | None = None, ndim: int | None = None,
               collapse_grey_rgb: bool = True) -> np.ndarray:
    """Read an image file into canonical axes ``"CYX"`` or ``"CZYX"``, keeping its dtype.

    Parameters
    ----------
    path: a TIFF, PNG, JPEG, ``.npy`` or Zarr/OME-Zarr file (see :data:`SUPPORTED_EXTENSIONS`).
    axes: axes of the array as stored in the file (as :func:`open_image` returns it), e.g.
        ``"ZCYX"``; overrides the file's metadata. If None: metadata, else :func:`guess_axes`.
    ndim: 2 or 3 spatial dimensions if known: guides the guess, and a file of the other kind raises.
    collapse_grey_rgb: an RGB image whose three channels are identical becomes one channel.

    A TIFF holding several series (e.g. an OME-TIFF with several images) gives its first series.
    Palette PNGs give their index values (how label editors store labels). Raises
    :class:`DataError` naming the file for a missing, unsupported, damaged or mismatched file,
    and, before reading, for pixels that would not fit in the memory available (TIFF, NumPy
    and Zarr declare their size; :func:`open_image` reads such files piece by piece).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_image(Path(folder) / "cell_01.png", np.zeros((64, 48), np.uint8))
    ...     read_image(path).shape
    (1, 64, 48)
    """
    path = Path(path)
    fmt = _format_of(path)
    _refuse_larger_than_memory(path, fmt)
    array, stored = _read_guarded(path, fmt, _EAGER_READERS[fmt])
    resolved = _resolve_axes(path, array.shape, stored, axes, ndim)
    image = np.ascontiguousarray(to_canonical(array, resolved))
    if collapse_grey_rgb and is_grey_rgb(image, canonical_axes(image)):
        file_note(log, "grey-rgb", path, f"its {image.shape[0]} colour channels are identical "
                  f"(RGB that is really grey); keeping one channel",
                  "RGB images with identical colour channels (really grey; one channel kept)")
        image = np.ascontiguousarray(image[:1])
    return image


def _refuse_larger_than_memory(path: Path, fmt: str) -> None:
    if fmt in ("png", "jpeg"):  # no size without decoding; Pillow refuses decompression bombs
        return
    array, _ = _read_guarded(path, fmt, _tiff_header if fmt == "tiff" else _LAZY_READERS[fmt])
    needed = int(np.prod(array.shape, dtype=np.float64)) * np.dtype(array.dtype).itemsize
    available = available_memory()
    if available is not None and needed > available:
        from microseg.io.archives import size_text

        raise DataError(f"{path}: its pixels ({tuple(array.shape)} {array.dtype}, "
                        f"{size_text(needed)}) do not fit in the {size_text(available)} of "
                        f"memory available; predict it piece by piece (notebook 07 with "
                        f"input_path), or crop or bin it first")


def available_memory() -> int | None:
    """Bytes of memory available for new data (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def open_image(path: str | Path, axes: str | None = None,
               ndim: int | None = None) -> tuple[Any, str]:
    """Open an image without loading it, for images larger than memory.

    Returns ``(array, axes)``: the array as stored (not reordered) and its axes string. TIFF: a
    read-only ``numpy.memmap`` when the pixels are stored contiguously and uncompressed, else a
    read-only Zarr array over the TIFF (tifffile's ``aszarr``); ``.npy``: a read-only memmap;
    Zarr: the array itself (OME-Zarr: the full-resolution level 0); PNG/JPEG are decoded (small).
    Slicing any of them reads only that region. ``to_canonical(array[...], axes)`` equals
    :func:`read_image` (without the grey-RGB collapse). Raises :class:`DataError` as read_image.
    """
    path = Path(path)
    fmt = _format_of(path)
    array, stored = _read_guarded(path, fmt, _LAZY_READERS[fmt])
    return array, _resolve_axes(path, array.shape, stored, axes, ndim)


def read_label(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read a label image as int32 ``"YX"`` or ``"ZYX"`` (0 background, objects 1, 2, ...).

    Accepts any integer dtype, booleans, and floats holding whole numbers. Raises
    :class:`DataError` naming the file for values that are not whole numbers, negative values,
    values beyond the int32 range, more than one channel (RGB labels whose channels are
    identical are accepted), or a lossy format (JPEG, or a JPEG-compressed TIFF: compression
    changes label values). Pass ``ndim=3`` for a volume with few slices (else it may be read as
    channels).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_image(Path(folder) / "cell_01.tif", np.array([[0, 1], [2, 2]], np.uint8))
    ...     read_label(path)
    array([[0, 1],
           [2, 2]], dtype=int32)
    """
    path = Path(path)
    _refuse_lossy_labels(path)
    image = read_image(path, ndim=ndim)
    if image.shape[0] != 1:
        hint = " If it is a 3D volume with few slices, pass ndim=3." if ndim is None else ""
        raise DataError(
            f"{path}: a label image must have one channel, found {image.shape[0]} channels "
            f"(shape {image.shape} in axes {canonical_axes(image)!r}). Save the labels as a "
            f"single-channel integer image (in Fiji: Image > Type > 16-bit).{hint}"
        )
    return _labels_as_int32(path, image[0])


def _refuse_lossy_labels(path: Path) -> None:
    """Labels must be stored exactly: lossy compression turns object ids into other ids."""
    fmt = _format_of(path)
    lossy = fmt == "jpeg" or (fmt == "tiff" and _tiff_compression(path) in ("JPEG", "OJPEG"))
    if lossy:
        raise DataError(f"{path}: label images must not be saved as JPEG (or JPEG-compressed "
                        f"TIFF): its compression changes label values at object edges. Save "
                        f"the labels again from the original as TIFF or PNG (in Fiji: File > "
                        f"Save As > Tiff...)")


def _tiff_compression(path: Path) -> str | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return tif.pages.first.compression.name
    except Exception:  # an unreadable file is reported by the reader, with its details
        return None


def _labels_as_int32(path: Path, values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        not_whole = ~np.isfinite(values) | (values != np.floor(values))
        if np.any(not_whole):
            raise DataError(f"{path}: label values must be whole numbers ≥ 0; found float values "
                            f"such as {_examples(values[not_whole])}")
    if values.size and values.dtype.kind != "b":
        if values.min() < 0:
            raise DataError(f"{path}: label values must be whole numbers ≥ 0 (0 is background); "
                            f"found negative values such as {_examples(values[values < 0])}")
        if values.max() > np.iinfo(np.int32).max:
            raise DataError(f"{path}: label values must fit in int32; found values up to "
                            f"{values.max()}. Renumber the objects 1, 2, ...")
    return values.astype(np.int32, copy=False)


def _examples(values: np.ndarray, count: int = 3) -> str:
    return ", ".join(f"{value:g}" for value in np.unique(values)[:count])


def write_image(path: str | Path, array: Any, axes: str | None = None,
                compression: str | None = None, overwrite: bool = False) -> Path:
    """Write an image or label array; the format follows the extension. Returns the path.

    - ``.tif``/``.tiff``: tifffile, with ``metadata={'axes': axes}`` so the axes read back;
      BigTIFF when the data exceed 2 GB; ``compression`` is a tifffile codec name (e.g.
      ``"zlib"``). Channel-last arrays other than RGB(A) uint8/uint16 are stored channel-first.
    - ``.png``: 2D uint8/uint16, one channel or RGB(A); anything else raises ``ValueError``.
    - ``.npy``: the array as is (``.npy`` keeps no axes: pass them again when reading).
    - ``.zarr``: a Zarr array with an ``axes`` attribute; ``.ome.zarr``: a single-level OME-Zarr
      0.4 image in canonical axes (``axes`` required for more than 2 dims).

    Parent folders are created. An existing ``path`` raises :class:`OutputExistsError` unless
    ``overwrite`` is true. ``compression`` other than None raises ``ValueError`` except for TIFF.
    A failing write (full disk, read-only folder) raises :class:`~microseg.errors.WriteError`
    naming the file and the fix, and leaves no half-written new file.
    """
    path = Path(path)
    kind = _writable_kind(path)
    array = np.asarray(array)
    axes = validate_axes(axes, array.shape) if axes is not None else None
    if compression is not None and kind != "tiff":
        raise ConfigError(f"{path}: compression={compression!r} applies to TIFF files only")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another name or pass "
                                f"overwrite=True to replace it")
    from microseg.runs import writing

    existed = path.exists()
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            _WRITERS[kind](path, array, axes, compression)
        except BaseException:
            if not existed and path.is_file():  # no half-written file (full disk, interrupted)
                path.unlink()
            raise
    return path


def _writable_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".ome.zarr"):
        return "ome-zarr"
    if path.suffix.lower() in WRITABLE_EXTENSIONS:
        return _FORMATS[path.suffix.lower()]
    raise ConfigError(f"{path}: cannot write {path.suffix or 'files without extension'!r}; "
                      f"writable: {', '.join(WRITABLE_EXTENSIONS)}")


def _write_tiff(path: Path, array: np.ndarray, axes: str | None, compression: str | None) -> None:
    import tifffile

    rgb = bool(axes and axes.endswith("C") and array.shape[-1] in (3, 4)
               and array.dtype in (np.uint8, np.uint16))
    if axes and axes.endswith("C") and not rgb:
        array = to_canonical(array, axes)
        axes = canonical_axes(array)
    tifffile.imwrite(path, array, photometric="rgb" if rgb else "minisblack",
                     metadata={"axes": axes} if axes else {}, compression=compression,
                     bigtiff=array.nbytes > _BIGTIFF_BYTES)


def _write_png(path: Path, array: np.ndarray, axes: str | None, compression: str | None) -> None:
    import imagecodecs

    if array.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: PNG holds 8- or 16-bit unsigned integers only, found "
                        f"{array.dtype}; write a .tif instead")
    path.write_bytes(imagecodecs.png_encode(_png_layout(path, array, axes)))


def _png_layout(path: Path, array: np.ndarray, axes: str | None) -> np.ndarray:
    if axes is None:
        axes = {2: "YX", 3: "YXC"}.get(array.ndim, "")
        if axes == "YXC" and array.shape[2] not in (3, 4):
            axes = ""
    if not axes:
        raise DataError(f"{path}: PNG holds a 2D image (YX, or YXC with 3/4 channels); found "
                        f"shape {array.shape}; pass axes=..., or write a .tif instead")
    image = to_canonical(array, axes)
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise DataError(f"{path}: PNG holds 2D images with 1, 3 or 4 channels; found "
                        f"shape {array.shape} in axes {axes!r}; write a .tif instead")
    return np.ascontiguousarray(image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1))


def _write_npy(path: Path, array: np.ndarray, axes: str | None, compression: str | None) -> None:
    np.save(path, array, allow_pickle=False)


def _write_zarr(path: Path, array: np.ndarray, axes: str | None, compression: str | None) -> None:
    import zarr

    zarr.create_array(str(path), data=array, overwrite=True,
                      attributes={"axes": axes} if axes else None)


def _write_ome_zarr(path: Path, array: np.ndarray, axes: str | None,
                    compression: str | None) -> None:
    import zarr

    if axes is None and array.ndim > 2:
        raise ConfigError(f"{path}: pass axes=... to write a {array.ndim}-dim array as OME-Zarr")
    image = to_canonical(array, axes or "YX")
    names = canonical_axes(image)
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=np.ascontiguousarray(image))
    group.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": axis.lower(), "type": _OME_AXIS_TYPES[axis]} for axis in names],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0] * len(names)}]}],
    }]


_WRITERS: dict[str, Callable[[Path, np.ndarray, str | None, str | None], None]] = {
    "tiff": _write_tiff, "png": _write_png, "npy": _write_npy, "zarr": _write_zarr,
    "ome-zarr": _write_ome_zarr,
}


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(no extension)'!r}; supported: "
            f"{', '.join(SUPPORTED_EXTENSIONS)}. Convert it, e.g. in Fiji with File > Save As > "
            f"Tiff..."
        )
    if not path.exists():
        raise DataError(f"{path} does not exist; check the folder and the file name")
    return _FORMATS[suffix]


def _read_guarded(path: Path, fmt: str,
                  reader: Callable[[Path], tuple[Any, str | None]]) -> tuple[Any, str | None]:
    try:
        array, stored = reader(path)
    except DataError:
        raise
    # Decoders and stores raise many unrelated exception types for one cause, a damaged file.
    except Exception as err:
        raise DataError(
            f"{path}: cannot be read as {_FORMAT_NAMES[fmt]} ({type(err).__name__}: {err}). The "
            f"file may be damaged or not really a {_FORMAT_NAMES[fmt]} file; supported: "
            f"{', '.join(SUPPORTED_EXTENSIONS)}"
        ) from err
    if np.dtype(array.dtype).kind not in "biuf":
        raise DataError(f"{path}: holds {array.dtype} values; images and labels must hold "
                        f"integer or floating-point numbers")
    return array, stored


def _resolve_axes(path: Path, shape: tuple[int, ...], stored: str | None, axes: str | None,
                  ndim: int | None) -> str:
    shape = tuple(int(size) for size in shape)
    source = "given" if axes is not None else "from the file" if stored else "guessed"
    try:
        if axes is not None:
            resolved = validate_axes(axes, shape)
        else:
            resolved = validate_axes(stored, shape) if stored else guess_axes(shape, ndim)
    except ValueError as err:
        raise DataError(f"{path}: {err}") from None
    spatial = len(canonical_shape(shape, resolved)[1])
    if ndim is not None and spatial != ndim:
        raise DataError(
            f"{path}: expected a {ndim}D image, found a {spatial}D one (shape {shape}, axes "
            f"{resolved!r} {source}); pass ndim={spatial}, or the right axes, e.g. "
            f"axes={'ZYX' if ndim == 3 else 'CYX'!r}"
        )
    return resolved


def _known_axes(axes: str | None) -> str | None:
    """Axes from file metadata if they are a layout microseg understands, else None (guess)."""
    if not axes:
        return None
    normalized = normalize_letters(axes)
    return normalized if normalized in VALID_AXES else None


@dataclass(frozen=True)
class _ShapeOnly:
    """Shape and dtype of an array that is not read."""

    shape: tuple[int, ...]
    dtype: np.dtype


def _tiff_header(path: Path) -> tuple[_ShapeOnly, str | None]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return _ShapeOnly(tuple(series.shape), np.dtype(series.dtype)), _known_axes(series.axes)


def _load_tiff(path: Path) -> tuple[np.ndarray, str | None]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return series.asarray(), _known_axes(series.axes)


def _open_tiff(path: Path) -> tuple[Any, str | None]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        contiguous, axes = series.dataoffset is not None, _known_axes(series.axes)
    if contiguous:
        return tifffile.memmap(path, series=0, mode="r"), axes
    import zarr

    node = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    return (node if isinstance(node, zarr.Array) else node["0"]), axes


def _load_png(path: Path) -> tuple[np.ndarray, str | None]:
    import imagecodecs
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image) if image.mode == "P" else None
    if pixels is None:
        pixels = imagecodecs.png_decode(path.read_bytes())
    return pixels, "YX" if pixels.ndim == 2 else "YXC"


def _load_jpeg(path: Path) -> tuple[np.ndarray, str | None]:
    import imagecodecs

    pixels = imagecodecs.jpeg8_decode(path.read_bytes())
    return pixels, "YX" if pixels.ndim == 2 else "YXC"


def _load_npy(path: Path) -> tuple[np.ndarray, str | None]:
    return np.load(path, allow_pickle=False), None


def _open_npy(path: Path) -> tuple[np.ndarray, str | None]:
    return np.load(path, mmap_mode="r", allow_pickle=False), None


def _load_zarr(path: Path) -> tuple[np.ndarray, str | None]:
    array, axes = _open_zarr(path)
    return np.asarray(array[...]), axes


def _open_zarr(path: Path) -> tuple[Any, str | None]:
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        axes = node.attrs.get("axes")
        return node, _known_axes(axes) if isinstance(axes, str) else None
    return _ome_zarr_level0(path, node)


def _ome_zarr_level0(path: Path, group: Any) -> tuple[Any, str | None]:
    attrs = dict(group.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        inside = ", ".join(sorted(group.array_keys())) or "none"
        raise DataError(
            f"{path}: a Zarr group without OME-Zarr 'multiscales' metadata (arrays inside: "
            f"{inside}); save the image as a single Zarr array or as OME-Zarr"
        )
    level0 = group[multiscales[0]["datasets"][0]["path"]]
    return level0, _ome_axes(multiscales[0].get("axes"))


def _ome_axes(entries: list[Any] | None) -> str | None:
    if not entries:
        return None
    names = [entry["name"] if isinstance(entry, dict) else entry for entry in entries]
    if not all(isinstance(name, str) and name.lower() in ("t", "c", "z", "y", "x")
               for name in names):
        return None
    return _known_axes("".join(names))


_EAGER_READERS: dict[str, Callable[[Path], tuple[Any, str | None]]] = {
    "tiff": _load_tiff, "png": _load_png, "jpeg": _load_jpeg, "npy": _load_npy,
    "zarr": _load_zarr,
}
_LAZY_READERS: dict[str, Callable[[Path], tuple[Any, str | None]]] = {
    "tiff": _open_tiff, "png": _load_png, "jpeg": _load_jpeg, "npy": _open_npy,
    "zarr": _open_zarr,
}
