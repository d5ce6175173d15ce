"""microseg.io.vendor: vendor files through bioio, without bioio installed.

The tests replace the ``bioio`` module with a stand-in that answers as bioio 3 does
(``BioImage(path)``: ``scenes``, ``set_scene``, ``dims``, ``get_image_data``,
``physical_pixel_sizes``, ``channel_names``, ``reader``). Outside the tests, a real Zeiss CZI
file (2 channels × 3 planes, written with pylibCZIrw 6.1) was converted with bioio 3.6 and
bioio-czi 3.0: same pixels, pixel size (1.5, 0.325, 0.325) µm, channel names, reader bioio_czi.
"""

from __future__ import annotations

import sys
import types
from collections import namedtuple

import numpy as np
import pytest

from microseg.errors import DataError
from microseg.io import read_image
from microseg.io.ome import image_metadata
from microseg.io.vendor import (
    FORMATS_EXTRA,
    FormatsExtraMissing,
    convert_vendor_images,
    is_vendor_file,
    read_vendor_image,
    vendor_files,
)

Sizes = namedtuple("Sizes", "Z Y X")
Dims = namedtuple("Dims", "T C Z Y X")


def fake_bioio(files):
    """A ``bioio`` module whose BioImage serves ``files[name] = (scenes TCZYX, sizes, names)``."""
    class Reader:
        pass

    Reader.__module__ = "bioio_fake.reader"

    class BioImage:
        def __init__(self, path):
            if path.name not in files:
                raise ValueError(f"no reader plugin installed for {path.suffix}")
            self.data, self.physical_pixel_sizes, self.channel_names = files[path.name]
            self.scenes = [f"scene-{k}" for k in range(len(self.data))]
            self.reader, self.scene = Reader(), 0

        def set_scene(self, scene):
            self.scene = scene

        @property
        def dims(self):
            return Dims(*self.data[self.scene].shape)

        def get_image_data(self, order, T=0):
            assert order == "CZYX"
            return self.data[self.scene][T]

    return types.SimpleNamespace(BioImage=BioImage)


@pytest.fixture
def raw(tmp_path, monkeypatch, rng):
    stack = rng.integers(0, 4000, size=(1, 2, 3, 8, 9)).astype(np.uint16)
    plane = rng.integers(0, 255, size=(2, 1, 1, 6, 7)).astype(np.uint8)
    files = {"stack.czi": ([stack], Sizes(1.5, 0.325, 0.325), ["DAPI", "GFP"]),
             "tiles.nd2": ([plane, plane + 1], Sizes(None, 0.1, 0.1), [])}
    for name in [*files, "notes.txt", "broken.lif"]:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setitem(sys.modules, "bioio", fake_bioio(files))
    return tmp_path, stack, plane


def test_without_bioio_the_message_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bioio", None)
    (tmp_path / "a.czi").write_bytes(b"")
    with pytest.raises(FormatsExtraMissing) as caught:
        read_vendor_image(tmp_path / "a.czi")
    assert str(tmp_path / "a.czi") in str(caught.value)
    assert "pip install 'microseg[formats]'" in str(caught.value)
    assert FORMATS_EXTRA == "pip install 'microseg[formats]'"
    assert isinstance(caught.value, ImportError)


def test_vendor_files_are_recognized():
    assert is_vendor_file("a.CZI") and is_vendor_file("b.nd2") and not is_vendor_file("c.tif")


def test_conversion_keeps_pixels_sizes_names_scenes_and_time_points(raw):
    folder, stack, plane = raw
    assert [p.name for p in vendor_files(folder)] == ["broken.lif", "stack.czi", "tiles.nd2"]
    with pytest.raises(DataError, match=r"broken\.lif: bioio cannot read it .*no reader plugin "
                                        r"installed.*pip install 'microseg\[formats\]'"):
        convert_vendor_images(folder, folder / "out")
    (folder / "broken.lif").unlink()
    records = convert_vendor_images(folder, folder / "out")
    assert [(r["image"].split("/")[-1], r["scene"], r["time"]) for r in records] == [
        ("stack.ome.tif", 0, 0), ("tiles_s0_t0.ome.tif", 0, 0), ("tiles_s0_t1.ome.tif", 0, 1),
        ("tiles_s1_t0.ome.tif", 1, 0), ("tiles_s1_t1.ome.tif", 1, 1)]
    assert {r["reader"] for r in records} == {"bioio_fake"}
    np.testing.assert_array_equal(read_image(records[0]["image"]), stack[0])
    found = image_metadata(records[0]["image"])
    assert found.pixel_size == (1.5, 0.325, 0.325) and found.channel_names == ("DAPI", "GFP")
    np.testing.assert_array_equal(read_image(records[4]["image"]), (plane + 1)[1][:, 0])
    assert records[1]["pixel_size"] == [0.1, 0.1] and records[1]["shape"] == [1, 6, 7]
    with pytest.raises(DataError, match="scene 5 does not exist; it has 2"):
        read_vendor_image(folder / "tiles.nd2", scene=5)
