"""Physical pixel size and channel names from image metadata, and OME-TIFF with them.

:func:`pixel_size` answers "how many micrometres is one pixel?" for an image file, so that
object sizes can be given in µm. It reads, in this order:

- OME-TIFF: the OME-XML ``Pixels`` element (``PhysicalSizeX/Y/Z`` and their units; channel
  names from ``Channel Name``);
- ImageJ TIFF: the X/Y resolution tags with ImageJ's ``unit`` (``micron``, ``µm``, ``nm``...)
  and ``spacing`` (Z);
- other TIFFs: the resolution tags when their unit is centimetre, millimetre or micrometre
  (an inch unit is a print resolution such as 72 dpi, not a pixel size: ignored);
- OME-Zarr: the ``scale`` of the first resolution level (times the multiscale-wide scale)
  with the axes' ``unit``; channel names from ``omero.channels[].label``.

Sizes come back in µm along the spatial axes in ZYX order: ``(y, x)`` for a 2D image,
``(z, y, x)`` for a volume; None when the file does not say (PNG, NumPy, uncalibrated TIFF,
a scale without unit), or says it only for some axes (:func:`image_metadata` keeps the notes).

Example
-------
>>> import tempfile
>>> image = np.zeros((1, 32, 32), np.uint16)
>>> with tempfile.TemporaryDirectory() as folder:
...     path = write_ome_tiff(Path(folder) / "cell_01.ome.tif", image, pixel_size=(0.65, 0.65),
...                           channel_names=["DAPI"])
...     pixel_size(path)
(0.65, 0.65)
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError, OutputExistsError

__all__ = ["ImageMetadata", "UNITS_IN_UM", "image_metadata", "pixel_size", "to_micrometres",
           "write_ome_tiff"]

UNITS_IN_UM = {
    "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometre": 1.0, "\\u00b5m": 1.0, "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3, "cm": 1e4, "centimeter": 1e4,
    "centimetre": 1e4, "m": 1e6, "meter": 1e6, "metre": 1e6, "å": 1e-4, "angstrom": 1e-4,
    "pm": 1e-6, "picometer": 1e-6,
}
"""Length units found in OME-XML, ImageJ and OME-Zarr metadata, in micrometres."""

_TIFF_UNITS_IN_UM = {3: 1e4, 4: 1e3, 5: 1.0}   # TIFF ResolutionUnit: centimetre, mm, µm


@dataclasses.dataclass(frozen=True)
class ImageMetadata:
    """What an image file says about itself.

    pixel_size: µm per pixel along the spatial axes in ZYX order (2 or 3 values), or None.
    channel_names: one name per channel, or () when the file has none.
    source: where the pixel size came from (``"OME-XML"``, ``"ImageJ"``, ``"TIFF resolution"``,
    ``"OME-Zarr"``, ``"bioio:<reader>"``), None when not found. notes: what was found but not
    used, e.g. a Z spacing missing.
    """

    path: Path
    pixel_size: tuple[float, ...] | None
    channel_names: tuple[str, ...] = ()
    source: str | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"path": str(self.path), "pixel_size": None if self.pixel_size is None else
                list(self.pixel_size), "unit": "µm", "channel_names": list(self.channel_names),
                "source": self.source, "notes": list(self.notes)}


def to_micrometres(value: float, unit: str | None) -> float | None:
    """``value`` in ``unit`` as micrometres; None for an unknown or missing unit."""
    if unit is None:
        return None
    factor = UNITS_IN_UM.get(str(unit).strip().lower())
    return None if factor is None else float(value) * factor


def pixel_size(path: str | Path, axes: str | None = None,
               ndim: int | None = None) -> tuple[float, ...] | None:
    """µm per pixel of an image file along its spatial axes (ZYX order), or None.

    ``axes``/``ndim`` as for :func:`microseg.io.read_image` (they decide which axes are
    spatial). Raises :class:`DataError` for a missing or unreadable file.
    """
    return image_metadata(path, axes, ndim).pixel_size


def image_metadata(path: str | Path, axes: str | None = None,
                   ndim: int | None = None) -> ImageMetadata:
    """Pixel size, channel names and their source for an image file (see the module docstring).

    Reads headers only. Raises :class:`DataError` for a missing or unreadable file.
    """
    from microseg.io.images import read_header

    path = Path(path)
    spatial = len(read_header(path, axes=axes, ndim=ndim).spatial_shape)
    name = path.name.lower()
    if name.endswith((".tif", ".tiff")):
        found = _tiff_metadata(path)
    elif name.endswith(".zarr"):
        found = _zarr_metadata(path)
    else:
        found = {}
    return _assemble(path, found, spatial)


def _assemble(path: Path, found: dict[str, Any], spatial: int) -> ImageMetadata:
    sizes: dict[str, float | None] = found.get("sizes", {})
    wanted = "ZYX"[-spatial:]
    notes = list(found.get("notes", []))
    values = tuple(sizes.get(axis) for axis in wanted)
    if sizes and any(v is None for v in values):
        missing = [axis for axis, v in zip(wanted, values, strict=True) if v is None]
        notes.append(f"pixel size known along {''.join(a for a in wanted if a not in missing)} "
                     f"only, not {''.join(missing)}")
        values = ()
    complete = bool(values) and all(v is not None and v > 0 for v in values)
    # rationals and unit conversions leave float noise such as 0.30000000000000004
    return ImageMetadata(path, tuple(float(f"{v:.10g}") for v in values) if complete else None,
                         tuple(found.get("channels", ())), found.get("source") if complete
                         else None, tuple(notes))


def _tiff_metadata(path: Path) -> dict[str, Any]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome and tif.ome_metadata:
                return _ome_xml(tif.ome_metadata)
            page = tif.pages.first
            if tif.is_imagej:
                return _imagej(tif.imagej_metadata or {}, page)
            return _resolution_tags(page)
    # tifffile raises many unrelated types for one cause, a damaged file
    except Exception as err:
        raise DataError(f"{path}: cannot read its TIFF metadata ({type(err).__name__}: {err})") \
            from err


def _ome_xml(xml: str) -> dict[str, Any]:
    root = ElementTree.fromstring(xml)
    pixels = next((e for e in root.iter() if e.tag.endswith("}Pixels") or e.tag == "Pixels"),
                  None)
    if pixels is None:
        return {"notes": ["OME-XML without a Pixels element"]}
    sizes = {axis: _ome_size(pixels.attrib, axis) for axis in "XYZ"}
    channels = [c.attrib.get("Name", "") for c in pixels if c.tag.endswith("Channel")]
    return {"sizes": {k: v for k, v in sizes.items() if v is not None}, "source": "OME-XML",
            "channels": channels if any(channels) else []}


def _ome_size(attributes: dict[str, str], axis: str) -> float | None:
    value = attributes.get(f"PhysicalSize{axis}")
    if value is None:
        return None
    return to_micrometres(float(value), attributes.get(f"PhysicalSize{axis}Unit", "µm"))


def _imagej(metadata: dict[str, Any], page: Any) -> dict[str, Any]:
    unit = metadata.get("unit")
    factor = UNITS_IN_UM.get(str(unit).strip().lower()) if unit else None
    if factor is None:
        note = f"ImageJ unit {unit!r} is not a length" if unit else "ImageJ image not calibrated"
        return {"notes": [note]}
    sizes = {axis: _per_pixel(page, f"{axis}Resolution", factor) for axis in "XY"}
    if metadata.get("spacing"):
        sizes["Z"] = float(metadata["spacing"]) * factor
    return {"sizes": {k: v for k, v in sizes.items() if v is not None}, "source": "ImageJ"}


def _resolution_tags(page: Any) -> dict[str, Any]:
    unit = page.tags.get("ResolutionUnit")
    factor = _TIFF_UNITS_IN_UM.get(int(unit.value)) if unit is not None else None
    if factor is None:
        # inches: a print resolution (72 dpi ...); no unit: often tifffile's default 1/1
        return {"notes": ["TIFF resolution in inches: a print resolution, not a pixel size"]} \
            if unit is not None and int(unit.value) == 2 else {}
    sizes = {axis: _per_pixel(page, f"{axis}Resolution", factor) for axis in "XY"}
    return {"sizes": {k: v for k, v in sizes.items() if v is not None},
            "source": "TIFF resolution"}


def _per_pixel(page: Any, tag: str, factor: float) -> float | None:
    found = page.tags.get(tag)
    if found is None:
        return None
    numerator, denominator = found.value if isinstance(found.value, tuple) else (found.value, 1)
    return None if not numerator else float(denominator) / float(numerator) * factor


def _zarr_metadata(path: Path) -> dict[str, Any]:
    import zarr

    node = zarr.open(str(path), mode="r")
    attrs = dict(node.attrs)
    attrs = attrs.get("ome", attrs)
    multiscales = attrs.get("multiscales")
    if not multiscales:
        return {}
    first = multiscales[0]
    scale = np.asarray(_scale(first["datasets"][0].get("coordinateTransformations")), float)
    overall = _scale(first.get("coordinateTransformations"))
    if overall is not None and scale.size:
        scale = scale * np.asarray(overall, float)
    sizes, notes = {}, []
    for index, axis in enumerate(first.get("axes") or []):
        name = (axis.get("name") if isinstance(axis, dict) else str(axis)).upper()
        if name in "ZYX" and index < scale.size:
            unit = axis.get("unit") if isinstance(axis, dict) else None
            sizes[name] = to_micrometres(scale[index], unit)
            if unit is None:
                notes.append(f"axis {name.lower()}: scale {scale[index]:g} without a unit")
    channels = [c.get("label", "") for c in (attrs.get("omero") or {}).get("channels", [])]
    return {"sizes": sizes, "source": "OME-Zarr", "notes": sorted(set(notes)),
            "channels": channels if any(channels) else []}


def _scale(transformations: Any) -> list[float] | None:
    for transformation in transformations or []:
        if transformation.get("type") == "scale" and "scale" in transformation:
            return [float(v) for v in transformation["scale"]]
    return None


def write_ome_tiff(path: str | Path, image: np.ndarray, pixel_size: Sequence[float] | None = None,
                   channel_names: Sequence[str] | None = None, overwrite: bool = False,
                   compression: str | None = "zlib") -> Path:
    """Write a canonical ``"CYX"``/``"CZYX"`` image as OME-TIFF with its pixel size (µm, ZYX
    order, one per spatial axis) and channel names. Returns the path.

    Raises :class:`ConfigError` for a pixel size, :class:`DataError` for channel names that do
    not fit the image, and
    :class:`OutputExistsError` for an existing file unless ``overwrite``.
    """
    import tifffile

    from microseg.io.images import canonical_axes

    path = Path(path)
    image = np.asarray(image)
    axes = canonical_axes(image)
    metadata: dict[str, Any] = {"axes": axes}
    if pixel_size is not None:
        if len(pixel_size) != image.ndim - 1:
            raise ConfigError(f"pixel_size {tuple(pixel_size)} needs one value per spatial axis "
                              f"of an image of shape {image.shape} ({axes})")
        for axis, value in zip(axes[1:], pixel_size, strict=True):
            metadata[f"PhysicalSize{axis}"] = float(value)
            metadata[f"PhysicalSize{axis}Unit"] = "µm"
    if channel_names:
        if len(channel_names) != image.shape[0]:
            raise DataError(f"{len(channel_names)} channel names for {image.shape[0]} channels; "
                            f"give one name per channel, or None")
        metadata["Channel"] = {"Name": [str(n) for n in channel_names]}
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, image, ome=True, metadata=metadata, photometric="minisblack",
                     compression=compression)
    return path
