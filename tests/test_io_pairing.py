"""microseg.io.pairing: pairs found, every bad folder reported with the file named, nothing written."""

from __future__ import annotations

import logging
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile

from microseg.errors import DataError
from microseg.io.pairing import ImagePair, list_images, pair_folder


def write_tif(path: Path, array: np.ndarray, axes: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, photometric="minisblack",
                     metadata={"axes": axes} if axes else {})
    return path


def add_pair(root: Path, stem: str, shape=(16, 24), channels: int = 1, label_shape=None,
             label: np.ndarray | None = None) -> None:
    rng = np.random.default_rng(len(stem))
    image = rng.integers(0, 4000, size=(channels, *shape)).astype(np.uint16)
    axes = ("C" if channels > 1 else "") + ("ZYX" if len(shape) == 3 else "YX")
    write_tif(root / "images" / f"{stem}.tif", image if channels > 1 else image[0], axes)
    if label is None:
        label = rng.integers(0, 5, size=label_shape or shape).astype(np.uint16)
    write_tif(root / "labels" / f"{stem}.tif", label, "ZYX" if label.ndim == 3 else "YX")


def problems_of(data_dir: Path, **kwargs) -> list[str]:
    with pytest.raises(DataError) as info:
        pair_folder(data_dir, **kwargs)
    assert str(data_dir) in info.value.summary
    return info.value.problems


def only_problem(data_dir: Path, **kwargs) -> str:
    problems = problems_of(data_dir, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


def test_pairs_sorted_with_shapes_channels_and_dtypes(tmp_path):
    add_pair(tmp_path, "b")
    add_pair(tmp_path, "a")
    grey = np.arange(16 * 24, dtype=np.uint8).reshape(16, 24)
    (tmp_path / "images" / "c.png").write_bytes(imagecodecs.png_encode(np.stack([grey] * 3, -1)))
    (tmp_path / "labels" / "c.png").write_bytes(imagecodecs.png_encode(grey % 3))
    write_tif(tmp_path / "images" / "d.ome.tif", grey, "YX")
    np.save(tmp_path / "labels" / "d.npy", np.zeros((16, 24), np.int64))
    pairs = pair_folder(tmp_path, ndim=2, axes=None)
    assert [p.stem for p in pairs] == ["a", "b", "c", "d"]
    assert pairs[0] == ImagePair("a", tmp_path / "images" / "a.tif", tmp_path / "labels" / "a.tif",
                                 (16, 24), 1, "uint16")
    assert (pairs[2].n_channels, pairs[2].dtype) == (1, "uint8")     # grey RGB counts as one
    assert pairs[3].label == tmp_path / "labels" / "d.npy" and pairs[3].ndim == 2


def test_multichannel_pairs(tmp_path):
    add_pair(tmp_path, "a", channels=2)
    add_pair(tmp_path, "b", channels=2)
    assert [(p.stem, p.n_channels, p.spatial_shape) for p in pair_folder(tmp_path)] == [
        ("a", 2, (16, 24)), ("b", 2, (16, 24))]


def test_3d_pairs(tmp_path):
    add_pair(tmp_path, "v", shape=(3, 16, 24))
    (pair,) = pair_folder(tmp_path, ndim=3)
    assert pair.spatial_shape == (3, 16, 24) and pair.ndim == 3 and pair.n_channels == 1


def test_labels_optional(tmp_path):
    add_pair(tmp_path, "a")
    write_tif(tmp_path / "images" / "b.tif", np.zeros((16, 24), np.uint8))
    pairs = pair_folder(tmp_path, require_labels=False)
    assert [(p.stem, p.label) for p in pairs] == [("a", tmp_path / "labels" / "a.tif"),
                                                  ("b", None)]
    (tmp_path / "labels" / "a.tif").unlink()
    (tmp_path / "labels").rmdir()
    assert [p.label for p in pair_folder(tmp_path, require_labels=False)] == [None, None]


def test_custom_subfolder_names(tmp_path):
    add_pair(tmp_path, "a")
    (tmp_path / "images").rename(tmp_path / "raw")
    (tmp_path / "labels").rename(tmp_path / "masks")
    assert [p.stem for p in pair_folder(tmp_path, images="raw", labels="masks")] == ["a"]


def test_missing_data_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere does not exist"):
        pair_folder(tmp_path / "nowhere")


def test_missing_images_folder(tmp_path):
    add_pair(tmp_path, "a")
    for path in (tmp_path / "images").iterdir():
        path.unlink()
    (tmp_path / "images").rmdir()
    problems = problems_of(tmp_path)
    assert any(f"{tmp_path / 'images'} does not exist" in p for p in problems)
    assert any("a.tif: a label image without an image" in p for p in problems)


def test_missing_labels_folder(tmp_path):
    write_tif(tmp_path / "images" / "a.tif", np.zeros((16, 24), np.uint8))
    assert f"{tmp_path / 'labels'} does not exist" in only_problem(tmp_path)


def test_empty_images_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    problems = problems_of(tmp_path)
    assert any(f"{tmp_path / 'images'} holds no images" in p for p in problems)


def test_image_without_label(tmp_path):
    add_pair(tmp_path, "a")
    write_tif(tmp_path / "images" / "b.tif", np.zeros((16, 24), np.uint8))
    problem = only_problem(tmp_path)
    assert problem.startswith(str(tmp_path / "images" / "b.tif")) and "no label image" in problem


def test_label_without_image(tmp_path):
    add_pair(tmp_path, "a")
    write_tif(tmp_path / "labels" / "z.tif", np.zeros((16, 24), np.uint8))
    problem = only_problem(tmp_path)
    assert problem.startswith(str(tmp_path / "labels" / "z.tif")) and "without an image" in problem


def test_two_files_with_one_stem(tmp_path):
    add_pair(tmp_path, "a")
    np.save(tmp_path / "images" / "a.npy", np.zeros((16, 24), np.uint8))
    problem = only_problem(tmp_path)
    assert "a.npy" in problem and "a.tif" in problem and "share the stem 'a'" in problem


def test_spatial_shape_mismatch_names_both_shapes(tmp_path):
    add_pair(tmp_path, "a", shape=(16, 24), label_shape=(16, 25))
    problem = only_problem(tmp_path)
    assert str(tmp_path / "labels" / "a.tif") in problem
    assert "(16, 25)" in problem and "(16, 24)" in problem


def test_label_with_fractions(tmp_path):
    label = np.zeros((16, 24), np.float32)
    label[3, 4] = 0.5
    add_pair(tmp_path, "a", label=label)
    problem = only_problem(tmp_path)
    assert str(tmp_path / "labels" / "a.tif") in problem and "such as 0.5" in problem


def test_label_with_negative_values(tmp_path):
    label = np.zeros((16, 24), np.int16)
    label[3, 4] = -1
    add_pair(tmp_path, "a", label=label)
    problem = only_problem(tmp_path)
    assert str(tmp_path / "labels" / "a.tif") in problem and "negative values such as -1" in problem


def test_corrupt_image(tmp_path):
    add_pair(tmp_path, "a")
    (tmp_path / "images" / "a.tif").write_bytes(b"garbage" * 20)
    problem = only_problem(tmp_path)
    assert problem.startswith(str(tmp_path / "images" / "a.tif")) and "cannot be read" in problem


def test_unsupported_files_reported_hidden_files_ignored(tmp_path):
    add_pair(tmp_path, "a")
    (tmp_path / "images" / "notes.txt").write_text("x")
    (tmp_path / "images" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "images" / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "labels" / "._a.tif").write_bytes(b"x")
    problem = only_problem(tmp_path)
    assert problem.startswith(str(tmp_path / "images" / "notes.txt"))
    assert "unsupported file type" in problem and ".tif" in problem


def test_mixed_2d_and_3d(tmp_path):
    add_pair(tmp_path, "flat")
    add_pair(tmp_path, "vol", shape=(5, 16, 24))
    problem = only_problem(tmp_path)
    assert "mix 2D and 3D" in problem and "flat.tif" in problem and "vol.tif" in problem


def test_ndim_given_flags_the_other_kind(tmp_path):
    add_pair(tmp_path, "flat")
    add_pair(tmp_path, "vol", shape=(5, 16, 24))
    problem = only_problem(tmp_path, ndim=2)
    assert problem.startswith(str(tmp_path / "images" / "vol.tif")) and "expected a 2D" in problem


def test_channel_counts_differ(tmp_path):
    add_pair(tmp_path, "one")
    add_pair(tmp_path, "two", channels=2)
    problem = only_problem(tmp_path)
    assert "different channel counts" in problem
    assert "1 channel(s): " + str(tmp_path / "images" / "one.tif") in problem
    assert "2 channel(s): " + str(tmp_path / "images" / "two.tif") in problem


def test_every_problem_is_listed_at_once(tmp_path):
    add_pair(tmp_path, "good")
    add_pair(tmp_path, "shape", label_shape=(8, 8))
    write_tif(tmp_path / "images" / "lonely.tif", np.zeros((16, 24), np.uint8))
    write_tif(tmp_path / "labels" / "orphan.tif", np.zeros((16, 24), np.uint8))
    (tmp_path / "labels" / "readme.md").write_text("x")
    (tmp_path / "images" / "broken.tif").write_bytes(b"garbage" * 20)
    write_tif(tmp_path / "labels" / "broken.tif", np.zeros((16, 24), np.uint8))
    problems = problems_of(tmp_path)
    assert len(problems) == 5, problems
    for name in ("shape.tif", "lonely.tif", "orphan.tif", "readme.md", "broken.tif"):
        assert sum(name in p for p in problems) == 1, (name, problems)


def snapshot(folder: Path) -> dict[str, int]:
    return {str(path): path.stat().st_mtime_ns
            for path in folder.rglob("*")} | {str(folder): folder.stat().st_mtime_ns}


def test_pair_folder_writes_nothing(tmp_path):
    add_pair(tmp_path, "a")
    add_pair(tmp_path, "b", shape=(16, 24), channels=2)
    grey = np.arange(16 * 24, dtype=np.uint8).reshape(16, 24)
    (tmp_path / "images" / "c.png").write_bytes(imagecodecs.png_encode(np.stack([grey] * 3, -1)))
    (tmp_path / "labels" / "c.png").write_bytes(imagecodecs.png_encode(grey % 3))
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match="channel counts"):
        pair_folder(tmp_path)
    assert snapshot(tmp_path) == before
    (tmp_path / "images" / "b.tif").unlink()
    (tmp_path / "labels" / "b.tif").unlink()
    before = snapshot(tmp_path)
    assert len(pair_folder(tmp_path)) == 2
    assert snapshot(tmp_path) == before


def test_list_images_sorted_ignoring_hidden_and_logging_others(tmp_path, caplog):
    folder = tmp_path / "in"
    write_tif(folder / "b.tif", np.zeros((4, 4), np.uint8))
    np.save(folder / "a.npy", np.zeros((4, 4), np.uint8))
    (folder / "c.ome.zarr").mkdir()
    (folder / ".hidden.tif").write_bytes(b"x")
    (folder / "notes.txt").write_text("x")
    with caplog.at_level(logging.WARNING, logger="microseg.io.pairing"):
        found = list_images(folder)
    assert [p.name for p in found] == ["a.npy", "b.tif", "c.ome.zarr"]
    assert "notes.txt" in caplog.text and ".hidden" not in caplog.text
    with pytest.raises(DataError, match="missing is not a folder"):
        list_images(tmp_path / "missing")


def test_file_names_that_are_not_utf8_are_named_and_refused(tmp_path):
    import os

    add_pair(tmp_path, "ok")
    for folder in ("images", "labels"):
        write_tif(tmp_path / folder / "x.tif", np.ones((16, 24), np.uint8))
        os.rename(tmp_path / folder / "x.tif", os.fsencode(tmp_path / folder) + b"/caf\xe9.tif")
    with pytest.raises(DataError) as info:
        pair_folder(tmp_path)
    assert len(info.value.problems) == 2
    assert all("caf\ufffd.tif: the file name is not valid UTF-8 (bytes b'caf\\xe9.tif'" in p
               for p in info.value.problems)
    with pytest.raises(DataError, match="not valid UTF-8"):
        list_images(tmp_path / "images")


def test_an_image_without_pixels_is_named(tmp_path):
    add_pair(tmp_path, "ok")
    np.save(tmp_path / "images" / "empty.npy", np.zeros((0, 24), np.uint16))
    np.save(tmp_path / "labels" / "empty.npy", np.zeros((0, 24), np.uint16))
    assert problems_of(tmp_path) == [
        f"{tmp_path / 'images' / 'empty.npy'}: holds no pixels (shape (0, 24), axes 'YX'); "
        f"export the image again"]
