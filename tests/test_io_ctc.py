"""microseg.io.ctc: Cell Tracking Challenge folders (2D, 3D, slice annotations, partial truth).

No installed package ships a CTC dataset; the folders are written in its naming conventions.
"""

from __future__ import annotations

import numpy as np
import pytest

from microseg.errors import DataError
from microseg.io import read_image, read_label
from microseg.io.annotations import guess_annotation_format, import_annotations
from microseg.io.ctc import PARTIAL_NOTE, ctc_annotations, write_ctc_sequence
from test_io_outlines import hard_labels, same_objects, volume_labels


def frames_2d(n=4):
    labels = hard_labels()
    return [(labels * (10 + t)).astype(np.uint16) for t in range(n)], labels


def test_2d_sequences_round_trip_with_partial_frames(tmp_path):
    frames, labels = frames_2d()
    root = tmp_path / "Fluo-N2DH-X"
    write_ctc_sequence(root, "01", frames, {0: labels, 3: np.where(labels == 2, 2, 0)})
    write_ctc_sequence(root, "02", frames[:2], {1: labels}, truth="ST")
    assert (root / "01" / "t003.tif").is_file() and (root / "01_GT" / "SEG" / "man_seg003.tif") \
        .is_file()
    assert guess_annotation_format(root) == "ctc"
    found = ctc_annotations(root)
    assert [(e["stem"], e["truth"]) for e in found] == [("01_t000", "GT"), ("01_t003", "GT"),
                                                        ("02_t001", "ST")]
    result = import_annotations(root, tmp_path / "run" / "import")
    assert (result.n_images, result.n_objects) == (3, 9 + 1 + 9)
    assert same_objects(read_label(result.labels_dir / "01_t000.tif"), labels)
    np.testing.assert_array_equal(read_image(result.data_dir / "images" / "01_t003.tif")[0],
                                  frames[3])
    assert "sequence 01: 2 of 4 frames annotated" in result.notes
    assert "sequence 02: 1 of 2 frames annotated" in result.notes and PARTIAL_NOTE in result.notes


def test_3d_volumes_and_slice_annotations(tmp_path):
    volume = volume_labels()
    frames = [(volume * 7 + t).astype(np.uint16) for t in range(3)]
    root = tmp_path / "Fluo-N3DH-X"
    write_ctc_sequence(root, "01", frames, {0: volume, (1, 2): volume[2], (2, 1): volume[1]})
    whole = import_annotations(root, tmp_path / "run" / "whole", ndim=3)
    assert whole.n_images == 1 and same_objects(read_label(whole.labels_dir / "01_t000.tif",
                                                           ndim=3), volume)
    assert whole.notes[0] == "2 slice annotation(s) left out (ndim=3); pass ndim=2 to use them " \
                             "instead"
    slices = import_annotations(root, tmp_path / "run" / "slices", ndim=2)
    assert sorted(p.name for p in slices.labels_dir.iterdir()) == ["01_t001_z002.tif",
                                                                   "01_t002_z001.tif"]
    np.testing.assert_array_equal(read_image(slices.data_dir / "images" / "01_t001_z002.tif")[0],
                                  frames[1][2])
    assert same_objects(read_label(slices.labels_dir / "01_t002_z001.tif"), volume[1])


def test_annotations_without_frames_and_wrong_shapes_are_listed(tmp_path):
    frames, labels = frames_2d(2)
    root = tmp_path / "ctc"
    write_ctc_sequence(root, "01", frames, {0: labels[:10], 1: labels})
    (root / "01" / "t001.tif").unlink()
    with pytest.raises(DataError) as caught:
        import_annotations(root, tmp_path / "out", "ctc")
    assert caught.value.problems == [f"{root / '01_GT' / 'SEG' / 'man_seg001.tif'}: no frame "
                                     f"t001.tif in {root / '01'}"]
    (root / "01_GT" / "SEG" / "man_seg001.tif").unlink()
    with pytest.raises(DataError, match=r"labels of shape \(10, 24\), expected \(20, 24\)"):
        import_annotations(root, tmp_path / "out", "ctc")
    assert not (tmp_path / "out").exists()
