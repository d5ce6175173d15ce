"""microseg.io.qupath: label images ↔ QuPath GeoJSON, folder import, clear errors.

No installed package ships a QuPath GeoJSON export; the files below are written by hand in the
layout QuPath 0.2 (a list of features, ``colorRGB``) and 0.4+ (a FeatureCollection, ``color``,
``objectType``, ``nucleusGeometry``, ``plane``) export.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from microseg.errors import ConfigError, DataError
from microseg.io import read_label, write_image
from microseg.io.annotations import import_annotations
from microseg.io.qupath import geojson_to_labels, labels_to_geojson, read_geojson, write_geojson
from test_io_outlines import hard_labels, same_objects, volume_labels


def box(left, top, right, bottom):
    return [[left, top], [right, top], [right, bottom], [left, bottom], [left, top]]


def feature(geometry, properties=None, **extra):
    return {"type": "Feature", "geometry": geometry, "properties": properties or {}, **extra}


QUPATH_04 = {"type": "FeatureCollection", "features": [
    feature({"type": "Polygon", "coordinates": [box(2, 2, 8, 7)]},
            {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}},
            id="0c3b57a4-2a5e-4f0e-9a58-1a9e2d1c0f11"),
    feature({"type": "Polygon", "coordinates": [box(10, 3, 16, 9)]},
            {"objectType": "cell", "classification": {"names": ["Immune", "Positive"],
                                                      "color": [0, 0, 200]}},
            nucleusGeometry={"type": "Polygon", "coordinates": [box(12, 5, 14, 7)]}),
    feature({"type": "Point", "coordinates": [5, 5]}, {"objectType": "annotation"}),
    feature({"type": "Polygon", "coordinates": [box(0, 0, 20, 12)]},
            {"objectType": "annotation", "classification": {"name": "Region*"}}),
    feature({"type": "MultiPolygon", "coordinates": [[box(1, 9, 4, 12), box(2, 10, 3, 11)],
                                                     [[[18, 1], [20, 1], [20, 4], [18, 1]]]]},
            {"objectType": "detection"}),
]}


def test_round_trip_2d_keeps_holes_touching_and_border_objects(tmp_path):
    labels = hard_labels()
    path = write_geojson(tmp_path / "a.geojson", labels)
    read = geojson_to_labels(path, labels.shape)
    assert same_objects(read.labels, labels)
    assert read.skipped == () and read.n_overlapping == 0
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 9
    kinds = {f["properties"]["name"]: f["geometry"]["type"] for f in collection["features"]}
    assert kinds["object 7"] == "MultiPolygon" and kinds["object 1"] == "Polygon"
    ring = collection["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and all(isinstance(v, int) for v in ring[0])


def test_round_trip_3d_joins_planes_by_name(tmp_path):
    labels = volume_labels()
    path = write_geojson(tmp_path / "v.geojson", labels)
    features = read_geojson(path)
    assert {f["geometry"]["plane"]["z"] for f in features} == {0, 1, 2, 3}
    read = geojson_to_labels(path, labels.shape)
    assert same_objects(read.labels, labels)
    assert read.labels.max() == 4


def test_classes_round_trip(tmp_path):
    labels = hard_labels()
    names = {1: "nucleus", 2: "mitosis", 3: "nucleus"}
    write_geojson(tmp_path / "c.geojson", labels, class_names=names)
    read = geojson_to_labels(tmp_path / "c.geojson", labels.shape)
    expected = np.select([labels == 2, np.isin(labels, [1, 3])], [1, 2], 0)
    np.testing.assert_array_equal(read.classes, expected)
    assert read.object_classes[:3] == ("nucleus", "mitosis", "nucleus")


def test_a_qupath_export_with_cells_points_regions_and_multipolygons(tmp_path):
    path = tmp_path / "export.geojson"
    path.write_text(json.dumps(QUPATH_04))
    read = geojson_to_labels(path, (12, 20))
    expected = np.zeros((12, 20), np.int32)
    expected[2:7, 2:8] = 1
    expected[3:9, 10:16] = 2
    expected[9:12, 1:4] = 3
    expected[10, 2] = 0
    expected[1, 18:20] = expected[2, 19] = 3  # centres inside the triangle (18,1)-(20,1)-(20,4)
    np.testing.assert_array_equal(read.labels, expected)
    assert read.object_classes == ("Tumor", "Immune: Positive", None)
    assert np.array_equal(read.classes, np.select([expected == 1, expected == 2], [2, 1], 0))
    assert len(read.skipped) == 2 and "Region*" in read.skipped[1] and "Point" in read.skipped[0]
    nuclei = geojson_to_labels(path, (12, 20), nucleus=True)
    assert np.array_equal(np.argwhere(nuclei.labels == 2), np.argwhere(expected[5:7, 12:14] >= 0)
                          + [5, 12])


def test_qupath_02_list_export_and_overlaps(tmp_path):
    old = [feature({"type": "Polygon", "coordinates": [box(0, 0, 10, 10)]},
                   {"classification": {"name": "Other", "colorRGB": -3670016},
                    "isLocked": False, "measurements": []}),
           feature({"type": "Polygon", "coordinates": [box(2, 2, 4, 4)]})]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    read = geojson_to_labels(path, (10, 10))
    assert read.n_overlapping == 2
    assert (read.labels == 2).sum() == 4 and (read.labels == 1).sum() == 96


def test_errors_name_the_file_and_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_geojson(tmp_path / "missing.geojson")
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.geojson: not a JSON file"):
        read_geojson(tmp_path / "bad.geojson")
    (tmp_path / "other.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match=r"other\.json: no GeoJSON features \(found \['images'\]\)"):
        read_geojson(tmp_path / "other.json")
    on_plane = feature({"type": "Polygon", "coordinates": [box(0, 0, 2, 2)],
                        "plane": {"c": -1, "z": 5, "t": 0}}, {"name": "deep"})
    with pytest.raises(DataError) as caught:
        geojson_to_labels([on_plane], (3, 4, 4))
    assert caught.value.problems == ["feature #1 'deep': on plane z=5, outside the 3 planes of "
                                     "the volume"]
    with pytest.raises(DataError, match="the image is 2D"):
        geojson_to_labels([on_plane], (4, 4))


def test_labels_to_geojson_refuses_other_shapes():
    with pytest.raises(ValueError, match=r"\(Y, X\) or \(Z, Y, X\)"):
        labels_to_geojson(np.zeros(4, np.int32))


def test_folder_import_matches_names_and_shares_class_ids(tmp_path):
    images = tmp_path / "data" / "images"
    for stem in ("a", "b"):
        write_image(images / f"{stem}.tif", np.zeros((12, 20), np.uint8), axes="YX")
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "a.tif.geojson").write_text(json.dumps(QUPATH_04))
    write_geojson(exports / "b.geojson", hard_labels()[:12, :20], class_names={1: "Zebra"})
    before = sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*"))
    result = import_annotations(exports, tmp_path / "run" / "import", images_dir=images)
    assert result.format == "qupath" and result.n_images == 2
    assert result.data_dir == images.parent and result.class_names == ("Immune: Positive",
                                                                       "Tumor", "Zebra")
    assert [p.name for p in sorted(result.labels_dir.iterdir())] == ["a.tif", "b.tif"]
    classes = read_label(result.class_labels_dir / "b.tif")
    assert set(np.unique(classes)) == {0, 3}
    assert any("skipped 2 feature(s)" in note for note in result.notes)
    assert json.loads((tmp_path / "run" / "import" / "import.json").read_text())["format"] == \
        "qupath"
    assert sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*") if "run" not in p.parts) \
        == before


def test_folder_import_lists_problems_and_refuses_inputs(tmp_path):
    images = tmp_path / "images"
    write_image(images / "a.tif", np.zeros((8, 8), np.uint8), axes="YX")
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "zz.geojson").write_text(json.dumps(QUPATH_04))
    with pytest.raises(DataError) as caught:
        import_annotations(exports, tmp_path / "out", "qupath", images_dir=images)
    assert caught.value.problems == [f"{exports / 'zz.geojson'}: no image named zz.* in {images}"]
    with pytest.raises(ConfigError, match="inside the input folder"):
        import_annotations(exports, exports / "out", "qupath", images_dir=images)
    with pytest.raises(ConfigError, match="give images_dir"):
        import_annotations(exports, tmp_path / "out", "qupath")
