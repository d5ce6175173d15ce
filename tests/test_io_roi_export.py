"""microseg.io.roi_export: label images → Fiji ROI sets → label images, and the Fiji import.

No installed package ships an ImageJ ROI set; roifile (the reader Fiji's format is checked
against in test_io_roi.py) writes and reads the files made here.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from roifile import ROI_TYPE, roiread

from microseg.errors import OutputExistsError
from microseg.io import read_label, write_image
from microseg.io.annotations import import_annotations
from microseg.io.roi import rois_to_labels
from microseg.io.roi_export import labels_to_rois, write_roiset
from test_io_outlines import hard_labels, same_objects, volume_labels


def test_2d_round_trip_through_a_file(tmp_path):
    labels = hard_labels()
    path = write_roiset(tmp_path / "RoiSet_a.zip", labels)
    assert same_objects(rois_to_labels(path, labels.shape), labels)
    rois = roiread(path)
    assert [roi.name for roi in rois] == [f"object {k}" for k in range(1, 10)]
    kinds = {roi.name: (roi.roitype, roi.composite) for roi in rois}
    assert kinds["object 3"] == (ROI_TYPE.TRACED, False)
    assert kinds["object 1"][1] and kinds["object 7"][1]          # a hole; two parts
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == [f"object {k}.roi" for k in range(1, 10)]


def test_3d_round_trip_needs_grouping_by_name(tmp_path):
    labels = volume_labels()
    path = write_roiset(tmp_path / "v.zip", labels)
    rois = roiread(path)
    assert [(roi.name, roi.position) for roi in rois[:3]] == [
        ("object 1 z1", 1), ("object 1 z2", 2), ("object 2 z2", 2)]
    assert rois[-1].position == 4
    assert same_objects(rois_to_labels(path, labels.shape, group_by_name=True), labels)
    per_slice = rois_to_labels(path, labels.shape)
    assert per_slice.max() == len(rois) > labels.max()


def test_renamed_or_new_rois_stay_separate_objects():
    labels = volume_labels()
    rois = labels_to_rois(labels)
    rois[0].name = "0001-0004-0004"
    read = rois_to_labels(rois, labels.shape, group_by_name=True)
    assert read.max() == labels.max() + 1


def test_existing_files_are_kept_and_only_zip_is_written(tmp_path):
    labels = hard_labels()
    path = write_roiset(tmp_path / "r.zip", labels)
    with pytest.raises(OutputExistsError):
        write_roiset(path, labels)
    smaller = np.where(labels == 1, 1, 0)
    write_roiset(path, smaller, overwrite=True)
    assert len(roiread(path)) == 1
    with pytest.raises(ValueError, match=r"\.zip"):
        write_roiset(tmp_path / "r.roi", labels)


def test_fiji_import_through_import_annotations(tmp_path):
    images = tmp_path / "data" / "images"
    labels = hard_labels()
    write_image(images / "a.tif", np.zeros(labels.shape, np.uint8), axes="YX")
    rois = tmp_path / "rois"
    write_roiset(rois / "RoiSet_a.zip", labels)
    result = import_annotations(rois, tmp_path / "run" / "import", images_dir=images)
    assert (result.format, result.n_images, result.n_objects) == ("fiji", 1, 9)
    assert same_objects(read_label(result.labels_dir / "a.tif"), labels)
