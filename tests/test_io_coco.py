"""microseg.io.coco: RLE against pycocotools' known answers, polygons, round trips, import.

No installed package ships a COCO file (pycocotools is not installed). The compressed RLE strings
below were made with pycocotools 2.0.11 (``mask.encode`` of the arrays given), and its polygon
rasterization of the rectangle was recorded the same way.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from microseg.errors import DataError
from microseg.io import read_image, read_label, write_image
from microseg.io.annotations import guess_annotation_format, import_annotations
from microseg.io.coco import (
    coco_to_labels,
    decode_rle,
    encode_rle,
    load_coco,
    rle_from_string,
    rle_to_string,
    write_coco,
)
from test_io_outlines import hard_labels, same_objects

SMALL = np.array([[0, 0, 0, 0, 0, 0, 0, 0, 1], [0, 0, 1, 1, 1, 1, 0, 0, 0],
                  [0, 0, 1, 0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1, 0, 0, 0],
                  [0, 0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0, 0],
                  [1, 1, 0, 0, 0, 0, 0, 0, 0]], bool)
SMALL_RLE = "5250L13NM03200=NE"                     # pycocotools.mask.encode(SMALL)


def large_mask():
    mask = np.zeros((300, 400), bool)
    mask[10:250, 30:390] = True
    mask[100:120, 100:300] = False
    return mask


def full(box, mask, shape):
    out = np.zeros(shape, bool)
    out[box] = mask
    return out


def test_rle_matches_pycocotools():
    assert encode_rle(SMALL) == {"size": [7, 9], "counts": SMALL_RLE}
    np.testing.assert_array_equal(full(*decode_rle({"size": [7, 9], "counts": SMALL_RLE}),
                                       (7, 9)), SMALL)
    counts = encode_rle(large_mask())["counts"]
    assert len(counts) == 1928 and counts.startswith("bi8`7l1000") and counts.endswith("00^m2")


def test_rle_round_trips_and_crops(rng):
    for _ in range(100):
        mask = rng.random(tuple(rng.integers(1, 9, size=2))) < 0.4
        rle = encode_rle(mask)
        np.testing.assert_array_equal(full(*decode_rle(rle), mask.shape), mask)
        listed = {"size": rle["size"], "counts": rle_from_string(rle["counts"])}
        assert sum(listed["counts"]) == mask.size
        np.testing.assert_array_equal(full(*decode_rle(listed), mask.shape), mask)
    counts = [int(c) for c in rng.integers(0, 10**6, size=50)]
    assert rle_from_string(rle_to_string(counts)) == counts
    mask = large_mask()
    assert encode_rle(mask[5:260, 20:395], (slice(5, 260), slice(20, 395)), mask.shape) == \
        encode_rle(mask)
    with pytest.raises(ValueError, match="add up to 10, expected 3×4 = 12"):
        decode_rle({"size": [3, 4], "counts": [4, 6]})


@pytest.mark.parametrize("encoding", ["rle", "polygon"])
def test_label_images_round_trip(tmp_path, encoding):
    labels = hard_labels()
    path = write_coco(tmp_path / "c.json", {"a.png": labels, "b.png": labels[:, ::-1]},
                      class_names={"a.png": {1: "ring", 8: "ring", 2: "blob"}}, encoding=encoding)
    data = load_coco(path)
    assert [c["name"] for c in data["categories"]] == ["blob", "object", "ring"]
    kinds = [type(a["segmentation"]).__name__ for a in data["annotations"][:9]]
    assert kinds == (["dict"] * 9 if encoding == "rle" else
                     ["dict", "dict", "list", "list", "list", "list", "list", "dict", "list"])
    for image_id, expected in ((1, labels), (2, labels[:, ::-1])):
        read, classes, notes = coco_to_labels(data, image_id)
        assert same_objects(read, expected) and notes == []
    _, classes, _ = coco_to_labels(data, 1)
    np.testing.assert_array_equal(classes, np.select([np.isin(labels, [1, 8]), labels == 2],
                                                     [3, 1], np.where(labels > 0, 2, 0)))
    box = data["annotations"][2]["bbox"]
    assert box == [8, 10, 4, 6] and data["annotations"][2]["area"] == 24


def test_polygons_from_other_tools_and_crowds():
    data = {"images": [{"id": 7, "file_name": "x.png", "height": 6, "width": 8}],
            "categories": [{"id": 3, "name": "cell"}],
            "annotations": [
                {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0,
                 "segmentation": [[1.0, 1.0, 6.0, 1.0, 6.0, 4.0, 1.0, 4.0]]},
                {"id": 2, "image_id": 7, "category_id": 3, "iscrowd": 1,
                 "segmentation": {"size": [6, 8], "counts": [0, 48]}}]}
    labels, classes, notes = coco_to_labels(data, 7)
    # pycocotools 2.0.11 rasterizes this rectangle to the same pixels
    expected = np.zeros((6, 8), np.int32)
    expected[1:4, 1:6] = 1
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(classes, expected)
    assert notes == ["annotation 2: a crowd region (iscrowd=1), skipped"]
    data["annotations"][0]["segmentation"] = {"size": [5, 8], "counts": [0, 40]}
    with pytest.raises(DataError, match=r"annotation 1: unreadable segmentation \(RLE size"):
        coco_to_labels(data, 7)


def test_import_finds_images_and_names_problems(tmp_path):
    labels = hard_labels()
    folder = tmp_path / "coco"
    write_image(folder / "images" / "a.png", (labels * 9).astype(np.uint8), axes="YX")
    write_coco(folder / "train.json", {"a.png": labels})
    assert guess_annotation_format(folder) == "coco"
    assert guess_annotation_format(folder / "train.json") == "coco"
    result = import_annotations(folder / "train.json", tmp_path / "run" / "import")
    assert (result.n_images, result.n_objects, result.class_names) == (1, 9, ("object",))
    assert same_objects(read_label(result.labels_dir / "a.tif"), labels)
    np.testing.assert_array_equal(read_label(result.class_labels_dir / "a.tif"), labels > 0)
    np.testing.assert_array_equal(read_image(result.data_dir / "images" / "a.png")[0],
                                  labels * 9)
    data = json.loads((folder / "train.json").read_text())
    data["images"].append({"id": 5, "file_name": "gone.png", "height": 3, "width": 3})
    data["images"][0]["height"] = 21
    (folder / "bad.json").write_text(json.dumps(data))
    with pytest.raises(DataError) as caught:
        import_annotations(folder / "bad.json", tmp_path / "out", "coco")
    assert caught.value.problems == [
        f"{folder / 'images' / 'a.png'}: 20×24 pixels, but the COCO file says 21×24",
        f"gone.png: not found in {folder}, {folder / 'images'}"]
    with pytest.raises(DataError, match="found 2 COCO JSON files"):
        import_annotations(folder, tmp_path / "out", "coco")
    (folder / "bad.json").write_text(json.dumps({"info": {}}))
    with pytest.raises(DataError, match=r"bad\.json: not a COCO annotation file: missing "
                                        r"\['images', 'annotations'\]"):
        load_coco(folder / "bad.json")
