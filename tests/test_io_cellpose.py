"""microseg.io.cellpose: _seg.npy and _masks files, read safely, written for the Cellpose GUI.

No installed package ships a Cellpose file (Cellpose is not installed); the "GUI" file below is a
dict with the keys and types Cellpose's ``masks_flows_to_seg`` saves (cellpose/io.py).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from microseg.errors import DataError
from microseg.io import read_image, read_label, write_image
from microseg.io.annotations import guess_annotation_format, import_annotations
from microseg.io.cellpose import read_seg_file, read_seg_masks, write_seg_file
from test_io_outlines import hard_labels, same_objects, volume_labels


def gui_seg_file(path, masks):
    """A _seg.npy as the Cellpose GUI saves it: arrays, lists, strings, NumPy scalars, NaN."""
    outlines = np.where(masks > 0, masks, 0).astype(np.uint16)
    data = {"outlines": outlines, "masks": masks.astype(np.uint16), "chan_choose": [0, 0],
            "ismanual": np.zeros(int(masks.max()), bool), "filename": "img.tif",
            "flows": [np.zeros((1, *masks.shape, 3), np.uint8), np.zeros(masks.shape, np.uint8),
                      [], np.zeros((3, *masks.shape), np.float32)],
            "diameter": np.nan, "est_diam": np.float64(17.5)}
    np.save(path, data, allow_pickle=True)
    return path


class RunsACommand:
    def __reduce__(self):
        return (os.system, ("echo unsafe",))


def test_seg_file_round_trip_2d_and_3d(tmp_path):
    for name, labels in (("a", hard_labels()), ("v", volume_labels())):
        path = write_seg_file(tmp_path / f"{name}_seg.npy", labels, image_name=f"{name}.tif")
        np.testing.assert_array_equal(read_seg_masks(path), labels)
        data = read_seg_file(path)
        assert data["filename"] == f"{name}.tif" and data["masks"].dtype == np.uint16
        assert len(data["ismanual"]) == labels.max()
        # outlines: object pixels next to another value (image edge included), carrying the id
        outline = data["outlines"]
        assert set(np.unique(outline)) <= set(np.unique(labels))
        assert np.all(outline[outline > 0] == labels[outline > 0])
    two_d = read_seg_file(tmp_path / "a_seg.npy")["outlines"]
    assert two_d[0].all() == bool(hard_labels()[0].all())      # the top row object is all border
    assert two_d[14, 5] == 0 and two_d[5, 5] == 0 and two_d[3, 4] == 1 and two_d[15, 5] == 2


def test_a_gui_file_is_read_and_a_pickled_command_is_refused(tmp_path):
    labels = hard_labels()
    assert same_objects(read_seg_masks(gui_seg_file(tmp_path / "g_seg.npy", labels)), labels)
    np.save(tmp_path / "e_seg.npy", {"masks": labels, "x": RunsACommand()}, allow_pickle=True)
    with pytest.raises(DataError, match=r"e_seg\.npy: cannot be read.*refusing to load"):
        read_seg_masks(tmp_path / "e_seg.npy")
    old = {"masks": labels.astype(np.int32) - 1, "outlines": labels}
    np.save(tmp_path / "o_seg.npy", old, allow_pickle=True)
    np.testing.assert_array_equal(read_seg_masks(tmp_path / "o_seg.npy"), labels)


def test_wrong_contents_are_named(tmp_path):
    np.save(tmp_path / "n_seg.npy", {"outlines": np.zeros((4, 4))}, allow_pickle=True)
    with pytest.raises(DataError, match=r"'masks' should be a 2D or 3D integer label image, "
                                        r"found NoneType"):
        read_seg_masks(tmp_path / "n_seg.npy")
    (tmp_path / "t_seg.npy").write_text("not numpy")
    with pytest.raises(DataError, match=r"t_seg\.npy: cannot be read as a Cellpose"):
        read_seg_masks(tmp_path / "t_seg.npy")
    with pytest.raises(DataError, match="does not exist"):
        read_seg_masks(tmp_path / "missing_seg.npy")
    with pytest.raises(ValueError, match="_seg.npy"):
        write_seg_file(tmp_path / "x.npy", hard_labels())


def test_folder_import_prefers_seg_files_and_notes_the_rest(tmp_path):
    folder = tmp_path / "cellpose"
    labels = hard_labels()
    for stem in ("a", "b", "c"):
        write_image(folder / f"{stem}.tif", (labels * 10).astype(np.uint16), axes="YX")
    gui_seg_file(folder / "a_seg.npy", labels)
    write_image(folder / "a_masks.png", np.zeros(labels.shape, np.uint16), axes="YX")
    write_image(folder / "b_cp_masks.png", labels.astype(np.uint16), axes="YX")
    write_image(folder / "b_flows.tif", np.zeros((3, *labels.shape), np.uint8), axes="CYX")
    assert guess_annotation_format(folder) == "cellpose"
    result = import_annotations(folder, tmp_path / "run" / "import")
    assert (result.n_images, result.data_dir) == (2, tmp_path / "run" / "import")
    for stem in ("a", "b"):
        assert same_objects(read_label(result.labels_dir / f"{stem}.tif"), labels)
        np.testing.assert_array_equal(read_image(result.data_dir / "images" / f"{stem}.tif"),
                                      read_image(folder / f"{stem}.tif"))
    assert result.notes == ("1 image(s) without annotations left out: c",
                            "a: both _seg.npy and _masks files; used _seg.npy")


def test_folder_import_names_mismatched_files(tmp_path):
    folder = tmp_path / "cp"
    write_image(folder / "a.tif", np.zeros((5, 6), np.uint8), axes="YX")
    write_seg_file(folder / "a_seg.npy", np.ones((6, 6), np.int32))
    write_seg_file(folder / "z_seg.npy", np.ones((6, 6), np.int32))
    with pytest.raises(DataError) as caught:
        import_annotations(folder, tmp_path / "out", "cellpose")
    assert caught.value.problems == [
        f"{folder / 'a_seg.npy'}: labels of shape (6, 6), but its image {folder / 'a.tif'} has "
        f"spatial shape (5, 6)",
        f"{folder / 'z_seg.npy'}: no image named z.* beside it"]
    assert not (tmp_path / "out").exists()
