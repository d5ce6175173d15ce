"""microseg.io.roi: ROI fills against independent references, overlaps, 3D, folder import."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from matplotlib.path import Path as OutlinePath
from roifile import ROI_TYPE, ImagejRoi, roiwrite
from skimage import draw

from microseg.errors import ConfigError, DataError, OutputExistsError
from microseg.io.images import read_label
from microseg.io.roi import import_roi_folder, read_rois, rois_to_labels


def box_roi(left, top, right, bottom, kind=ROI_TYPE.RECT, name="", z=None):
    roi = ImagejRoi()
    roi.roitype = kind
    roi.left, roi.top, roi.right, roi.bottom = left, top, right, bottom
    roi.name = name
    if z is not None:
        roi.z_position = z + 1
    return roi


def polygon_roi(points, name="", z=None):
    return ImagejRoi.frompoints(np.asarray(points), name=name or "poly", z=z)


def star(cx, cy, outer, inner, n=7, phase=0.3):
    angles = phase + np.arange(2 * n) * np.pi / n
    radii = np.where(np.arange(2 * n) % 2 == 0, outer, inner)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def pixel_centres_inside(points, shape):
    """Reference fill: matplotlib's point-in-polygon test at ImageJ pixel centres (x+0.5, y+0.5)."""
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    centres = np.stack([x.ravel() + 0.5, y.ravel() + 0.5], axis=1)
    return OutlinePath(points).contains_points(centres).reshape(shape)


# ---------------------------------------------------------------- single shapes

def test_float_polygon_matches_point_in_polygon_at_pixel_centres():
    points = star(17.3, 12.6, 10.4, 4.7)
    labels = rois_to_labels([polygon_roi(points)], (26, 34))
    expected = pixel_centres_inside(points, (26, 34))
    assert expected.sum() > 100
    np.testing.assert_array_equal(labels, expected.astype(np.int32))
    rr, cc = draw.polygon(points[:, 1] - 0.5, points[:, 0] - 0.5, shape=(26, 34))
    by_skimage = np.zeros((26, 34), np.int32)
    by_skimage[rr, cc] = 1
    np.testing.assert_array_equal(labels, by_skimage)


def test_integer_outline_rectangle_and_known_block_agree():
    block = np.zeros((12, 15), np.int32)
    block[3:9, 2:7] = 1
    outline = polygon_roi([[2, 3], [7, 3], [7, 9], [2, 9]])
    assert outline.subpixel_coordinates is None
    np.testing.assert_array_equal(rois_to_labels([outline], (12, 15)), block)
    np.testing.assert_array_equal(rois_to_labels([box_roi(2, 3, 7, 9)], (12, 15)), block)


def test_traced_roi_fills_the_traced_pixels():
    roi = polygon_roi([[1, 1], [4, 1], [4, 2], [3, 2], [3, 4], [1, 4]])
    roi.roitype = ROI_TYPE.TRACED
    expected = np.zeros((6, 6), np.int32)
    expected[1:2, 1:4] = 1
    expected[2:4, 1:3] = 1
    np.testing.assert_array_equal(rois_to_labels([roi], (6, 6)), expected)


def test_rectangle_partly_outside_is_cut_off():
    labels = rois_to_labels([box_roi(-3, 2, 5, 40)], (10, 8))
    expected = np.zeros((10, 8), np.int32)
    expected[2:, :5] = 1
    np.testing.assert_array_equal(labels, expected)


def test_oval_matches_brute_force_loop_and_skimage_ellipse():
    left, top, right, bottom = 3, 4, 17, 13
    labels = rois_to_labels([box_roi(left, top, right, bottom, ROI_TYPE.OVAL)], (18, 22))
    cx, cy, rx, ry = (left + right) / 2, (top + bottom) / 2, (right - left) / 2, (bottom - top) / 2
    expected = np.zeros((18, 22), np.int32)
    for y in range(18):
        for x in range(22):
            distance = ((x + 0.5 - cx) / rx) ** 2 + ((y + 0.5 - cy) / ry) ** 2
            assert distance != 1.0      # no pixel centre on the outline: the references agree
            expected[y, x] = distance <= 1.0
    np.testing.assert_array_equal(labels, expected)
    rr, cc = draw.ellipse(cy - 0.5, cx - 0.5, ry, rx, shape=(18, 22))
    by_skimage = np.zeros((18, 22), np.int32)
    by_skimage[rr, cc] = 1
    np.testing.assert_array_equal(labels, by_skimage)


def test_composite_roi_keeps_its_hole_as_background():
    path = np.array([0, 2, 2, 1, 12, 2, 1, 12, 12, 1, 2, 12, 4,
                     0, 5, 5, 1, 9, 5, 1, 9, 9, 1, 5, 9, 4], np.float32)
    roi = box_roi(2, 2, 12, 12)
    roi.shape_roi_size, roi.multi_coordinates = len(path), path
    expected = np.zeros((14, 14), np.int32)
    expected[2:12, 2:12] = 1
    expected[5:9, 5:9] = 0
    np.testing.assert_array_equal(rois_to_labels([roi], (14, 14)), expected)


# ---------------------------------------------------------------- several ROIs

def test_ids_follow_file_order_and_points_and_lines_are_skipped_with_a_warning():
    point = ImagejRoi.frompoints([[1, 1]], name="dot")
    point.roitype = ROI_TYPE.POINT
    line = ImagejRoi()
    line.roitype, line.name = ROI_TYPE.LINE, "cut"
    line.x1, line.y1, line.x2, line.y2 = 0.0, 0.0, 9.0, 9.0
    rois = [box_roi(6, 0, 9, 3, name="first"), point, box_roi(0, 5, 3, 9), line,
            polygon_roi([[5, 5], [9, 5], [9, 9]])]
    with pytest.warns(UserWarning, match="skipped 2 ROI.*'dot'.*point.*'cut'.*line"):
        labels = rois_to_labels(rois, (10, 10))
    assert sorted(np.unique(labels)) == [0, 1, 2, 3]
    assert np.all(labels[0:3, 6:9] == 1) and np.all(labels[5:9, 0:3] == 2)
    assert labels[5, 7] == 3 and labels[6, 8] == 3 and labels[8, 5] == 0


def test_a_roi_outside_the_image_stops_with_its_bounds_named():
    with pytest.raises(DataError, match="1 ROI.*outside the image of shape \\(8, 8\\)") as info:
        rois_to_labels([box_roi(50, 50, 60, 60, name="far"), box_roi(1, 1, 3, 3)], (8, 8))
    assert info.value.problems == ["#1 'far': x 50..60, y 50..60"]


def test_a_roi_set_of_only_points_and_lines_stops_instead_of_giving_no_object():
    point = ImagejRoi.frompoints([[1, 1]], name="dot")
    point.roitype = ROI_TYPE.POINT
    line = ImagejRoi()
    line.roitype, line.name = ROI_TYPE.LINE, "cut"
    line.x1, line.y1, line.x2, line.y2 = 0.0, 0.0, 9.0, 9.0
    with pytest.raises(DataError, match="no ROI with an area.*'dot' \\(point.*'cut' \\(line"):
        rois_to_labels([point, line], (10, 10))


@pytest.mark.parametrize("small_first", [False, True])
def test_overlap_goes_to_the_smaller_object_whatever_the_order(small_first):
    big, small = box_roi(0, 0, 10, 10), box_roi(2, 2, 5, 5)
    labels = rois_to_labels([small, big] if small_first else [big, small], (12, 12))
    small_id, big_id = (1, 2) if small_first else (2, 1)
    assert np.all(labels[2:5, 2:5] == small_id)
    assert (labels == big_id).sum() == 100 - 9 and (labels == small_id).sum() == 9


def test_partial_overlap_and_equal_sizes():
    labels = rois_to_labels([box_roi(0, 0, 6, 6), box_roi(4, 4, 8, 8)], (9, 9))
    assert np.all(labels[4:6, 4:6] == 2) and (labels == 1).sum() == 36 - 4
    labels = rois_to_labels([box_roi(0, 0, 4, 4), box_roi(2, 2, 6, 6)], (7, 7))
    assert np.all(labels[2:4, 2:4] == 2) and (labels == 1).sum() == 12   # later wins a tie


# ---------------------------------------------------------------- 3D

def test_3d_rois_land_on_their_slices():
    by_z = box_roi(1, 1, 4, 4, z=2)
    by_position = box_roi(5, 5, 8, 9)
    by_position.position = 4
    labels = rois_to_labels([by_z, by_position], (4, 10, 12))
    expected = np.zeros((4, 10, 12), np.int32)
    expected[2, 1:4, 1:4] = 1
    expected[3, 5:9, 5:8] = 2
    np.testing.assert_array_equal(labels, expected)


def test_3d_rois_without_or_beyond_a_slice_are_named():
    loose = box_roi(1, 1, 4, 4, name="loose")
    deep = box_roi(1, 1, 4, 4, name="deep", z=9)
    with pytest.raises(DataError) as info:
        rois_to_labels([loose, box_roi(1, 1, 2, 2, z=0), deep], (4, 10, 12))
    assert len(info.value.problems) == 2
    assert "'loose'" in info.value.problems[0] and "no slice position" in info.value.problems[0]
    assert "'deep'" in info.value.problems[1] and "slice 10" in info.value.problems[1]


def test_2d_shape_ignores_slice_positions():
    labels = rois_to_labels([box_roi(1, 1, 3, 3, z=5)], (4, 4))
    assert labels[1:3, 1:3].min() == 1 and labels.sum() == 4


# ---------------------------------------------------------------- files

def test_roiset_zip_and_single_roi_file_round_trip(tmp_path):
    rois = [polygon_roi(star(12.2, 9.7, 7.5, 3.1), name="star"), box_roi(2, 2, 6, 5, name="r"),
            box_roi(14, 1, 22, 8, ROI_TYPE.OVAL, name="o")]
    roiwrite(tmp_path / "RoiSet.zip", rois)
    from_zip = rois_to_labels(tmp_path / "RoiSet.zip", (20, 24))
    np.testing.assert_array_equal(from_zip, rois_to_labels(rois, (20, 24)))
    assert sorted(np.unique(from_zip)) == [0, 1, 2, 3]
    rois[0].tofile(tmp_path / "star.roi")
    np.testing.assert_array_equal(rois_to_labels(str(tmp_path / "star.roi"), (20, 24)),
                                  rois_to_labels(rois[:1], (20, 24)))
    assert [roi.name for roi in read_rois(tmp_path / "RoiSet.zip")] == ["star", "r", "o"]


def test_unreadable_roi_files(tmp_path):
    with pytest.raises(DataError, match="none.zip does not exist"):
        rois_to_labels(tmp_path / "none.zip", (4, 4))
    (tmp_path / "bad.zip").write_bytes(b"not a zip" * 10)
    with pytest.raises(DataError, match="bad.zip: cannot be read as ImageJ ROIs"):
        rois_to_labels(tmp_path / "bad.zip", (4, 4))


# ---------------------------------------------------------------- import_roi_folder

def snapshot(folder: Path) -> dict[str, int]:
    """Every path under ``folder`` (the folder included) with its modification time."""
    return {str(path): path.stat().st_mtime_ns for path in [folder, *folder.rglob("*")]}


@pytest.fixture
def annotated(tmp_path):
    images, rois = tmp_path / "images", tmp_path / "rois"
    images.mkdir()
    rois.mkdir()
    tifffile.imwrite(images / "a.tif", np.zeros((16, 24), np.uint16))
    tifffile.imwrite(images / "b.ome.tif", np.zeros((3, 16, 24), np.uint8),
                     metadata={"axes": "ZYX"}, photometric="minisblack")
    tifffile.imwrite(images / "c.tif", np.zeros((16, 24), np.uint16))
    np.save(images / "d.npy", np.zeros((16, 24), np.float32))
    roiwrite(rois / "a.zip", [box_roi(1, 1, 5, 5), polygon_roi(star(12.5, 8.5, 6.2, 2.9))])
    roiwrite(rois / "RoiSet_b.zip", [box_roi(2, 2, 6, 6, z=0), box_roi(3, 3, 9, 9, z=2)])
    box_roi(0, 0, 24, 16, ROI_TYPE.OVAL).tofile(rois / "d.roi")
    (rois / "notes.txt").write_text("not a roi")
    return images, rois, tmp_path / "run" / "labels"


def test_import_roi_folder_writes_one_label_per_annotated_image(annotated):
    images, rois, out = annotated
    inputs_before = snapshot(images) | snapshot(rois)
    written = import_roi_folder(rois, images, out)
    assert written == [out / "a.tif", out / "b.tif", out / "d.tif"]
    assert sorted(out.iterdir()) == written
    assert snapshot(images) | snapshot(rois) == inputs_before
    np.testing.assert_array_equal(read_label(out / "a.tif"),
                                  rois_to_labels(rois / "a.zip", (16, 24)))
    volume = read_label(out / "b.tif", ndim=3)
    assert volume.shape == (3, 16, 24)
    np.testing.assert_array_equal(volume, rois_to_labels(rois / "RoiSet_b.zip", (3, 16, 24)))
    assert volume[0, 2:6, 2:6].min() == 1 and volume[2, 3:9, 3:9].min() == 2
    np.testing.assert_array_equal(read_label(out / "d.tif"),
                                  rois_to_labels(rois / "d.roi", (16, 24)))


@pytest.mark.parametrize("where", ["images", "images/labels", "rois", "rois/x/y"])
def test_import_roi_folder_never_writes_into_input_folders(annotated, where):
    images, rois, _ = annotated
    before = snapshot(images.parent)
    with pytest.raises(ConfigError, match="never written to"):
        import_roi_folder(rois, images, images.parent / where)
    assert snapshot(images.parent) == before


def test_import_roi_folder_refuses_existing_outputs_before_writing_any(annotated):
    images, rois, out = annotated
    out.mkdir(parents=True)
    tifffile.imwrite(out / "b.tif", np.zeros((2, 2), np.int32))
    with pytest.raises(OutputExistsError, match="b.tif"):
        import_roi_folder(rois, images, out)
    assert sorted(p.name for p in out.iterdir()) == ["b.tif"]
    written = import_roi_folder(rois, images, out, overwrite=True)
    assert read_label(written[1], ndim=3).shape == (3, 16, 24)


def test_import_roi_folder_lists_all_problems_and_writes_nothing(annotated):
    images, rois, out = annotated
    roiwrite(rois / "zzz.zip", [box_roi(1, 1, 3, 3)])
    box_roi(1, 1, 3, 3).tofile(rois / "a.roi")
    roiwrite(rois / "c.zip", [box_roi(1, 1, 3, 3)])
    roiwrite(rois / "RoiSet_b.zip", [box_roi(1, 1, 3, 3, name="floating")], mode="w")
    with pytest.raises(DataError) as info:
        import_roi_folder(rois, images, out)
    problems = info.value.problems
    assert len(problems) == 3, problems
    assert "a.roi" in problems[0] and "a.zip" in problems[0] and "several ROI files" in problems[0]
    assert "RoiSet_b.zip" in problems[1] and "'floating'" in problems[1]
    assert "zzz.zip: no image named zzz" in problems[2]
    assert not out.exists()


def test_import_roi_folder_with_no_matching_roi_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "rois").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="holds no ROI file"):
        import_roi_folder(tmp_path / "rois", tmp_path / "images", tmp_path / "out")


@pytest.mark.parametrize("unusable", ["points_only", "outside"])
def test_import_roi_folder_stops_on_roi_files_that_give_no_object_or_miss_the_image(
        annotated, unusable):
    images, rois, out = annotated
    point = ImagejRoi.frompoints([[1, 1]], name="dot")
    point.roitype = ROI_TYPE.POINT
    bad = [point] if unusable == "points_only" else [box_roi(1, 1, 4, 4), box_roi(40, 30, 50, 40)]
    roiwrite(rois / "c.zip", bad)
    with pytest.raises(DataError) as info:
        import_roi_folder(rois, images, out)
    assert len(info.value.problems) == 1 and "c.zip" in info.value.problems[0]
    assert ("no ROI with an area" if unusable == "points_only" else "outside the image") in \
        info.value.problems[0]
    assert not out.exists()


def test_a_roi_set_that_unpacks_like_a_zip_bomb_is_not_read(tmp_path):
    import zipfile

    path = tmp_path / "RoiSet.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("0001.roi", bytes(80 * 2**20))
    with pytest.raises(DataError, match="RoiSet.zip: not read, it is larger than a ROI set "
                                        "should be") as info:
        read_rois(path)
    assert "80.0 MiB once extracted" in info.value.problems[0]
