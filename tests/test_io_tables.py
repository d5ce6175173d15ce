"""microseg.io.tables and label_export: object tables against scikit-image's regionprops_table,
slab by slab, from files; label exports that read back to the same objects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.measure import regionprops_table

import microseg.io.tables as tables
from microseg.errors import DataError, OutputExistsError
from microseg.io import write_image
from microseg.io.label_export import export_labels, export_prediction_labels
from microseg.io.ngff import read_ngff_labels
from microseg.io.ome import write_ome_tiff
from microseg.io.qupath import geojson_to_labels
from microseg.io.roi import rois_to_labels
from microseg.io.tables import object_table, write_object_tables, write_prediction_tables
from test_io_outlines import hard_labels, same_objects, volume_labels


def reference(labels, image):
    found = regionprops_table(labels, np.moveaxis(image, 0, -1), properties=(
        "label", "area", "centroid", "bbox", "intensity_mean"))
    return pd.DataFrame(found)


@pytest.mark.parametrize("labels", [hard_labels(), volume_labels()], ids=["2d", "3d"])
def test_table_matches_regionprops_with_objects_split_between_slabs(labels, rng, monkeypatch):
    monkeypatch.setattr(tables, "SLAB_PIXELS", 7)            # slabs of one row (or plane)
    image = rng.random((2, *labels.shape))
    size = (2.0, 0.5, 0.25)[-labels.ndim:]
    table = object_table(labels, image, size, ["DAPI", "GFP 488"])
    expected = reference(labels, image)
    axes = "zyx"[-labels.ndim:]
    kind = "area" if labels.ndim == 2 else "volume"
    np.testing.assert_array_equal(table["label"], expected["label"])
    np.testing.assert_array_equal(table[f"{kind}_px"], expected["area"])
    np.testing.assert_allclose(table[f"{kind}_{'um2' if labels.ndim == 2 else 'um3'}"],
                               expected["area"] * np.prod(size))
    for k, axis in enumerate(axes):
        np.testing.assert_allclose(table[f"centroid_{axis}"], expected[f"centroid-{k}"])
        np.testing.assert_allclose(table[f"centroid_{axis}_um"], expected[f"centroid-{k}"] * size[k])
        np.testing.assert_array_equal(table[f"bbox_min_{axis}"], expected[f"bbox-{k}"])
        np.testing.assert_array_equal(table[f"bbox_max_{axis}"],
                                      expected[f"bbox-{k + labels.ndim}"])
    np.testing.assert_allclose(table["mean_DAPI"], expected["intensity_mean-0"])
    np.testing.assert_allclose(table["mean_GFP_488"], expected["intensity_mean-1"])


def test_empty_labels_and_mismatches():
    empty = object_table(np.zeros((4, 5), np.int32))
    assert len(empty) == 0 and list(empty.columns)[:2] == ["label", "area_px"]
    with pytest.raises(DataError, match="does not fit the labels"):
        object_table(np.zeros((4, 5), np.int32), np.zeros((1, 4, 6)))
    with pytest.raises(ValueError, match="one value per spatial axis"):
        object_table(np.zeros((4, 5), np.int32), pixel_size=(1.0,))


def test_tables_from_folders_take_pixel_size_and_names_from_the_images(tmp_path, rng):
    labels = hard_labels()
    image = rng.integers(0, 1000, size=(1, *labels.shape)).astype(np.uint16)
    write_ome_tiff(tmp_path / "images" / "a.ome.tif", image, (0.5, 0.5), ["DAPI"])
    write_image(tmp_path / "images" / "b.tif", image, axes="CYX")
    for stem in ("a", "b"):
        write_image(tmp_path / "labels" / f"{stem}.tif", labels.astype(np.uint16), axes="YX")
    records = write_object_tables(tmp_path / "labels", tmp_path / "images", tmp_path / "out")
    assert [(r["stem"], r["n_objects"], r["pixel_size"], r["pixel_size_source"])
            for r in records] == [("a", 9, [0.5, 0.5], "OME-XML"), ("b", 9, None, None)]
    first = pd.read_csv(tmp_path / "out" / "a.csv")
    assert "area_um2" in first and "mean_DAPI" in first
    np.testing.assert_allclose(first["mean_DAPI"], reference(labels, image)["intensity_mean-0"])
    combined = pd.read_csv(tmp_path / "out" / "objects.csv")
    assert list(combined["stem"]) == ["a"] * 9 + ["b"] * 9 and combined.columns[0] == "stem"
    given = write_object_tables(tmp_path / "labels", None, tmp_path / "given", pixel_size=(2, 2))
    assert given[0]["pixel_size_source"] == "given" and given[0]["image"] is None
    (tmp_path / "images" / "b.tif").unlink()
    with pytest.raises(DataError, match="label images without their image"):
        write_object_tables(tmp_path / "labels", tmp_path / "images", tmp_path / "x")


def test_prediction_tables_and_exports_from_zarr_labels(tmp_path, rng):
    volume = volume_labels()
    image = rng.integers(0, 200, size=(1, *volume.shape)).astype(np.uint8)
    write_image(tmp_path / "in" / "v.tif", image, axes="CZYX")
    write_image(tmp_path / "pred" / "labels.zarr", volume, axes="ZYX")
    predictions = [{"input": str(tmp_path / "in" / "v.tif"),
                    "labels": str(tmp_path / "pred" / "labels.zarr"), "object_diameter": 41.5,
                    "diameter_confidence": "high", "scale_factor": 0.5},
                   {"input": "other.tif", "labels": None}]
    records = write_prediction_tables(predictions, tmp_path / "objects")
    assert len(records) == 1 and records[0]["n_objects"] == 4
    combined = pd.read_csv(tmp_path / "objects" / "objects.csv")
    assert list(combined.columns[:4]) == ["stem", "image_object_diameter",
                                          "image_diameter_confidence", "image_scale_factor"]
    assert list(combined["image_scale_factor"]) == [0.5] * 4
    assert list(combined["label"]) == [1, 2, 3, 4]
    assert list(pd.read_csv(tmp_path / "objects" / "v.csv")["volume_px"]) == [
        int((volume == k).sum()) for k in range(1, 5)]
    written = export_prediction_labels(predictions, tmp_path / "export")
    assert sorted(written[0]) == ["geojson", "input", "labels", "ome-zarr", "roiset"]
    assert same_objects(rois_to_labels(written[0]["roiset"], volume.shape, group_by_name=True),
                        volume)
    assert same_objects(geojson_to_labels(written[0]["geojson"], volume.shape).labels, volume)
    np.testing.assert_array_equal(read_ngff_labels(written[0]["ome-zarr"]), volume)
    with pytest.raises(OutputExistsError):
        export_labels(predictions[0]["labels"], predictions[0]["input"], tmp_path / "export",
                      ["geojson"])
    with pytest.raises(ValueError, match="unknown label export"):
        export_labels(predictions[0]["labels"], None, tmp_path / "e2", ["png"])
    with pytest.raises(DataError, match="give the image"):
        export_labels(predictions[0]["labels"], None, tmp_path / "e2", ["ome-zarr"])
