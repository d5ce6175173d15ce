"""microseg.io.masks: one binary mask per object (Kaggle DSB layout) ↔ label images.

No installed package ships a Data Science Bowl sample; the folders are written here in its
layout (``<id>/images/<id>.png``, ``<id>/masks/*.png`` with 0/255 masks).
"""

from __future__ import annotations

import numpy as np
import pytest

from microseg.errors import DataError, OutputExistsError
from microseg.io import read_image, read_label, write_image
from microseg.io.annotations import guess_annotation_format, import_annotations
from microseg.io.masks import masks_to_labels, write_mask_folder
from test_io_outlines import hard_labels, same_objects, volume_labels


def test_2d_and_3d_round_trip(tmp_path):
    labels = hard_labels()
    image = (labels * 20).astype(np.uint8)[None]
    folder = write_mask_folder(tmp_path / "dsb", "abc", image, labels)
    masks = sorted((folder / "masks").iterdir())
    assert len(masks) == 9 and masks[0].name == "abc_1.png"
    assert set(np.unique(read_label(masks[0]))) == {0, 255}
    read, overlapping = masks_to_labels(masks, labels.shape)
    assert same_objects(read, labels) and overlapping == 0
    np.testing.assert_array_equal(read_image(folder / "images" / "abc.png"), image)
    volume = volume_labels()
    folder = write_mask_folder(tmp_path / "dsb", "vol", volume[None].astype(np.uint16), volume)
    read, _ = masks_to_labels(sorted((folder / "masks").iterdir()), volume.shape)
    assert same_objects(read, volume)
    with pytest.raises(OutputExistsError):
        write_mask_folder(tmp_path / "dsb", "abc", image, labels)


def test_overlaps_go_to_the_smaller_object_and_are_counted(tmp_path):
    big = np.zeros((10, 10), np.uint8)
    big[1:9, 1:9] = 255
    small = np.zeros((10, 10), np.uint8)
    small[0:3, 0:3] = 255
    apart = np.zeros((10, 10), np.uint8)
    apart[9, 9] = 1
    paths = []
    for name, mask in (("a", big), ("b", small), ("c", apart), ("d", np.zeros_like(big))):
        paths.append(write_image(tmp_path / f"{name}.png", mask, axes="YX"))
    labels, overlapping = masks_to_labels(paths)
    assert overlapping == 2
    assert (labels == 2).sum() == 9 and (labels == 1).sum() == 64 - 4 and labels[9, 9] == 3


def test_problems_name_each_mask(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((4, 4), np.uint8), axes="YX")
    write_image(tmp_path / "b.png", np.zeros((5, 4), np.uint8), axes="YX")
    (tmp_path / "c.png").write_text("not a png")
    with pytest.raises(DataError) as caught:
        masks_to_labels([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"])
    assert caught.value.problems[0] == f"{tmp_path / 'b.png'}: shape (5, 4), expected (4, 4) " \
                                       f"(the image's)"
    assert caught.value.problems[1].startswith(f"{tmp_path / 'c.png'}: cannot be read as PNG")


def test_folder_import(tmp_path):
    labels = hard_labels()
    root = tmp_path / "stage1_train"
    write_mask_folder(root, "img1", (labels * 20).astype(np.uint8)[None], labels)
    colour = np.stack([labels * k for k in (10, 20, 30)]).astype(np.uint8)
    write_mask_folder(root, "img2", colour, np.where(labels == 1, 1, 0))
    assert guess_annotation_format(root) == "masks"
    result = import_annotations(root, tmp_path / "run" / "import")
    assert (result.format, result.n_images, result.n_objects) == ("masks", 2, 10)
    assert same_objects(read_label(result.labels_dir / "img1.tif"), labels)
    assert read_image(result.data_dir / "images" / "img2.png").shape == (3, *labels.shape)


def test_folder_import_lists_bad_samples(tmp_path):
    root = tmp_path / "dsb"
    (root / "empty" / "masks").mkdir(parents=True)
    write_mask_folder(root, "ok", np.zeros((1, 4, 4), np.uint8), np.ones((4, 4), np.int32))
    write_image(root / "ok" / "masks" / "wrong.png", np.zeros((3, 3), np.uint8), axes="YX")
    with pytest.raises(DataError) as caught:
        import_annotations(root, tmp_path / "out", "masks")
    assert caught.value.problems == [
        f"{root / 'empty' / 'images'}: found 0 image(s), expected one (<id>/images/<id>.png)",
        f"{root / 'ok' / 'masks'}: object masks that cannot be used; {root / 'ok' / 'masks' / 'wrong.png'}:"
        f" shape (3, 3), expected (4, 4) (the image's)"]
