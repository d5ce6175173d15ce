"""microseg.io.ome: pixel size and channel names from OME-TIFF, ImageJ, TIFF tags and OME-Zarr.

The one real file an installed package ships, scikit-image's ``data/multipage.tif``, carries a
print resolution (an inch unit), which must not be taken for a pixel size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage
import tifffile
import zarr

from microseg.errors import DataError, OutputExistsError
from microseg.io import read_image, write_image
from microseg.io.ome import image_metadata, pixel_size, to_micrometres, write_ome_tiff

VOLUME = np.arange(2 * 5 * 6 * 7, dtype=np.uint16).reshape(2, 5, 6, 7)


def test_ome_tiff_round_trip_with_units_and_channel_names(tmp_path):
    path = write_ome_tiff(tmp_path / "a.ome.tif", VOLUME, (2.0, 0.5, 0.25), ["DAPI", "GFP"])
    found = image_metadata(path)
    assert (found.pixel_size, found.channel_names, found.source) == (
        (2.0, 0.5, 0.25), ("DAPI", "GFP"), "OME-XML")
    np.testing.assert_array_equal(read_image(path), VOLUME)
    assert pixel_size(path) == (2.0, 0.5, 0.25)
    with pytest.raises(OutputExistsError):
        write_ome_tiff(path, VOLUME)
    with pytest.raises(ValueError, match="one value per spatial axis"):
        write_ome_tiff(tmp_path / "b.ome.tif", VOLUME, (0.5, 0.5))
    tifffile.imwrite(tmp_path / "nm.ome.tif", VOLUME[0, 0], ome=True, metadata={
        "axes": "YX", "PhysicalSizeX": 130.0, "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 0.13, "PhysicalSizeYUnit": "µm"})
    assert pixel_size(tmp_path / "nm.ome.tif") == (0.13, 0.13)


def test_imagej_calibration_and_missing_z(tmp_path):
    tifffile.imwrite(tmp_path / "ij.tif", VOLUME[0], imagej=True, resolution=(1 / 0.3, 1 / 0.3),
                     metadata={"unit": "micron", "spacing": 1.5, "axes": "ZYX"})
    assert image_metadata(tmp_path / "ij.tif").pixel_size == (1.5, 0.3, 0.3)
    tifffile.imwrite(tmp_path / "mu.tif", VOLUME[0, 0], imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "\\u00B5m"})
    assert pixel_size(tmp_path / "mu.tif") == (0.5, 0.5)
    tifffile.imwrite(tmp_path / "noz.tif", VOLUME[0], imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "um", "axes": "ZYX"})
    found = image_metadata(tmp_path / "noz.tif")
    assert found.pixel_size is None and found.notes == ("pixel size known along YX only, not Z",)
    tifffile.imwrite(tmp_path / "px.tif", VOLUME[0, 0], imagej=True)
    assert image_metadata(tmp_path / "px.tif").notes == ("ImageJ image not calibrated",)


def test_plain_tiff_resolution_units(tmp_path):
    tifffile.imwrite(tmp_path / "cm.tif", VOLUME[0, 0], resolution=(5000, 4000),
                     resolutionunit="CENTIMETER")
    assert pixel_size(tmp_path / "cm.tif") == (2.5, 2.0)
    tifffile.imwrite(tmp_path / "dpi.tif", VOLUME[0, 0], resolution=(72, 72))
    assert pixel_size(tmp_path / "dpi.tif") is None


def test_skimage_multipage_tiff_has_no_pixel_size():
    path = Path(skimage.__file__).parent / "data" / "multipage.tif"
    found = image_metadata(path)
    assert found.pixel_size is None and "print resolution" in found.notes[0]


def test_ome_zarr_scale_units_and_channel_labels(tmp_path):
    from microseg.io.ngff import write_ome_zarr

    path = write_ome_zarr(tmp_path / "a.ome.zarr", VOLUME, pixel_size=(2.0, 0.5, 0.5),
                          channel_names=["DAPI", "GFP"])
    found = image_metadata(path)
    assert (found.pixel_size, found.channel_names, found.source) == (
        (2.0, 0.5, 0.5), ("DAPI", "GFP"), "OME-Zarr")
    group = zarr.open_group(str(path), mode="r+")
    multiscales = group.attrs["multiscales"]
    for axis in multiscales[0]["axes"][1:]:
        axis["unit"] = "nanometer"
    multiscales[0]["coordinateTransformations"] = [{"type": "scale", "scale": [1, 2, 2, 2]}]
    group.attrs["multiscales"] = multiscales
    assert pixel_size(path) == (0.004, 0.001, 0.001)
    write_image(tmp_path / "plain.ome.zarr", VOLUME[0, 0], axes="YX")
    found = image_metadata(tmp_path / "plain.ome.zarr")
    assert found.pixel_size is None and "without a unit" in found.notes[0]


def test_formats_without_metadata_and_errors(tmp_path):
    write_image(tmp_path / "a.png", VOLUME[0, 0].astype(np.uint8), axes="YX")
    assert pixel_size(tmp_path / "a.png") is None
    with pytest.raises(DataError, match="does not exist"):
        pixel_size(tmp_path / "missing.tif")
    assert to_micrometres(3, "mm") == 3000.0 and to_micrometres(3, "parsec") is None
