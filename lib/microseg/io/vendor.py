"""Microscope vendor files (CZI, ND2, LIF, ...) read through bioio, converted to OME-TIFF.

bioio and its reader plugins are an optional extra: ``pip install 'microseg[formats]'``
(bioio-czi for Zeiss CZI, bioio-nd2 for Nikon ND2, bioio-lif for Leica LIF, bioio-ome-tiff).
:func:`convert_vendor_images` writes every scene (and time point) of each vendor file as an
OME-TIFF with its pixel size and channel names, which the rest of microseg reads like any TIFF;
the bioio reader that read each file is recorded. Conversion reads one scene and time point
into memory at a time; for files larger than memory convert with bioformats2raw instead.

Example
-------
>>> records = convert_vendor_images("raw/", "runs/demo/data/vendor_import/images")  # doctest: +SKIP
>>> records[0]["reader"], records[0]["pixel_size"]                                 # doctest: +SKIP
('bioio_czi', [0.65, 0.65])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import DataError, MicrosegError

__all__ = [
    "FORMATS_EXTRA",
    "FormatsExtraMissing",
    "VENDOR_EXTENSIONS",
    "convert_vendor_images",
    "is_vendor_file",
    "read_vendor_image",
    "vendor_files",
]

VENDOR_EXTENSIONS = (".czi", ".nd2", ".lif", ".lsm", ".oib", ".oir", ".vsi", ".ims", ".dv")
"""File types read through bioio (each needs its plugin, installed with the extra)."""

FORMATS_EXTRA = "pip install 'microseg[formats]'"


class FormatsExtraMissing(MicrosegError, ImportError):
    """bioio (or the plugin for a file type) is not installed; the message says what to run."""


def is_vendor_file(path: str | Path) -> bool:
    """Whether ``path`` has one of :data:`VENDOR_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in VENDOR_EXTENSIONS


def vendor_files(folder: str | Path) -> list[Path]:
    """The vendor files directly in ``folder``, sorted ([] for a missing folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and is_vendor_file(p)
                  and not p.name.startswith("."))


def _bioimage(path: Path) -> Any:
    try:
        from bioio import BioImage
    except ImportError:
        raise FormatsExtraMissing(
            f"{path}: reading {path.suffix} files needs bioio and its readers, which are not "
            f"installed: run {FORMATS_EXTRA} (or convert the file to OME-TIFF in Fiji: "
            f"File > Save As > OME-TIFF...)") from None
    try:
        return BioImage(path)
    # bioio raises its own exception types per plugin; the message names the plugin to install
    except Exception as err:
        hint = f" Install the readers with {FORMATS_EXTRA}." if "install" in str(err).lower() \
            or "unsupported" in type(err).__name__.lower() else ""
        raise DataError(f"{path}: bioio cannot read it ({type(err).__name__}: {err}).{hint}") \
            from err


def read_vendor_image(path: str | Path, scene: int = 0, time: int = 0) -> dict[str, Any]:
    """One scene and time point of a vendor file, in canonical axes.

    Returns ``{"image": ndarray "CYX" (one z-plane) or "CZYX", "pixel_size": tuple of µm per
    pixel (ZYX order) or None, "channel_names": tuple, "reader": bioio plugin name, "scenes":
    scene names, "n_times": time points}``. Raises :class:`FormatsExtraMissing` without bioio,
    :class:`DataError` for a file bioio cannot read or a scene or time point it lacks.
    """
    path = Path(path)
    bio = _bioimage(path)
    scenes = tuple(str(s) for s in bio.scenes)
    if not 0 <= scene < len(scenes):
        raise DataError(f"{path}: scene {scene} does not exist; it has {len(scenes)}")
    bio.set_scene(scene)
    n_times = int(bio.dims.T)
    if not 0 <= time < n_times:
        raise DataError(f"{path}: time point {time} does not exist; it has {n_times}")
    image = np.asarray(bio.get_image_data("CZYX", T=time))
    if image.shape[1] == 1:
        image = image[:, 0]
    return {"image": image, "pixel_size": _pixel_size(bio, image.ndim - 1),
            "channel_names": tuple(str(c) for c in (bio.channel_names or [])),
            "reader": type(bio.reader).__module__.split(".")[0], "scenes": scenes,
            "n_times": n_times}


def _pixel_size(bio: Any, spatial: int) -> tuple[float, ...] | None:
    sizes = bio.physical_pixel_sizes
    values = (sizes.Z, sizes.Y, sizes.X)[-spatial:]
    if any(v is None or not np.isfinite(v) or v <= 0 for v in values):
        return None
    return tuple(float(v) for v in values)


def convert_vendor_images(source: str | Path, out_dir: str | Path) -> list[dict[str, Any]]:
    """Write every scene and time point of each vendor file in ``source`` as OME-TIFF.

    ``source`` is a folder (its vendor files) or one file. Names: ``<stem>.ome.tif``, with
    ``_s<k>`` per scene and ``_t<k>`` per time point when there are several. Returns one record
    per written file: ``source``, ``image``, ``scene``, ``time``, ``reader``, ``pixel_size``,
    ``channel_names``, ``shape``. Raises :class:`FormatsExtraMissing` without bioio,
    :class:`DataError` for a source without vendor files, and
    :class:`~microseg.errors.OutputExistsError` for an existing output file.
    """
    from microseg.io.ome import write_ome_tiff

    source = Path(source)
    files = [source] if source.is_file() else vendor_files(source)
    if not files:
        raise DataError(f"{source}: no vendor files ({', '.join(VENDOR_EXTENSIONS)})")
    records = []
    for path in files:
        first = read_vendor_image(path)
        for scene, time in _planes(first):
            found = first if (scene, time) == (0, 0) else read_vendor_image(path, scene, time)
            name = path.stem + (f"_s{scene}" if len(first["scenes"]) > 1 else "") + (
                f"_t{time}" if first["n_times"] > 1 else "")
            written = write_ome_tiff(Path(out_dir) / f"{name}.ome.tif", found["image"],
                                     found["pixel_size"], found["channel_names"] or None)
            records.append({"source": str(path), "image": str(written), "scene": scene,
                            "time": time, "reader": found["reader"],
                            "pixel_size": None if found["pixel_size"] is None else
                            list(found["pixel_size"]), "channel_names":
                            list(found["channel_names"]), "shape": list(found["image"].shape)})
    return records


def _planes(first: dict[str, Any]) -> list[tuple[int, int]]:
    return [(scene, time) for scene in range(len(first["scenes"]))
            for time in range(first["n_times"])]
