"""microseg.io.ngff: OME-Zarr images with NGFF labels, written slab by slab and read back.

The layout was also checked outside the tests with ome-zarr-py 0.18 (its reader finds the image
and the label image) and ome-zarr-models 1.7 (both validate as NGFF 0.4).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import microseg.io.ngff as ngff
from microseg.errors import DataError, OutputExistsError
from microseg.io import read_image
from microseg.io.ngff import add_ngff_labels, ngff_label_names, read_ngff_labels, write_ome_zarr
from test_io_outlines import hard_labels, volume_labels


def test_2d_and_3d_images_with_labels_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(ngff, "SLAB_BYTES", 100)        # many slabs, one row or plane each
    labels = hard_labels()
    image = np.stack([labels * 3, labels * 5]).astype(np.uint16)
    path = write_ome_zarr(tmp_path / "a.ome.zarr", image, {"cells": labels}, (0.5, 0.25),
                          ["DAPI", "GFP"])
    np.testing.assert_array_equal(read_image(path), image)
    np.testing.assert_array_equal(read_ngff_labels(path), labels)
    attrs = json.loads((path / ".zattrs").read_text())
    assert [a["name"] for a in attrs["multiscales"][0]["axes"]] == ["c", "y", "x"]
    assert attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"] == [
        {"type": "scale", "scale": [1.0, 0.5, 0.25]}]
    assert [c["label"] for c in attrs["omero"]["channels"]] == ["DAPI", "GFP"]
    assert json.loads((path / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    label_attrs = json.loads((path / "labels" / "cells" / ".zattrs").read_text())
    assert label_attrs["image-label"]["source"] == {"image": "../../"}
    volume = volume_labels()
    path = write_ome_zarr(tmp_path / "v.ome.zarr", volume[None].astype(np.uint8), {"n": volume})
    np.testing.assert_array_equal(read_ngff_labels(path, "n"), volume)
    axes = json.loads((path / "labels" / "n" / ".zattrs").read_text())["multiscales"][0]["axes"]
    assert axes == [{"name": a, "type": "space"} for a in "zyx"]


def test_adding_and_replacing_labels(tmp_path):
    labels = hard_labels()
    path = write_ome_zarr(tmp_path / "a.ome.zarr", labels[None].astype(np.uint8))
    assert ngff_label_names(path) == []
    add_ngff_labels(path, "first", labels)
    add_ngff_labels(path, "second", labels * 2)
    assert ngff_label_names(path) == ["first", "second"]
    with pytest.raises(OutputExistsError):
        add_ngff_labels(path, "first", labels)
    add_ngff_labels(path, "first", labels + 1, overwrite=True)
    np.testing.assert_array_equal(read_ngff_labels(path, "first"), labels + 1)
    assert ngff_label_names(path) == ["second", "first"]
    with pytest.raises(DataError, match=r"do not fit the image .* of spatial shape \(20, 24\)"):
        add_ngff_labels(path, "bad", labels[:5])
    with pytest.raises(ValueError, match="label name"):
        add_ngff_labels(path, "a/b", labels)
    with pytest.raises(DataError, match=r"no label image 'gone'; found \['second', 'first'\]"):
        read_ngff_labels(path, "gone")
    with pytest.raises(OutputExistsError):
        write_ome_zarr(path, labels[None])
    with pytest.raises(DataError, match="is not an OME-Zarr image"):
        add_ngff_labels(tmp_path / "nothing.zarr", "x", labels)
