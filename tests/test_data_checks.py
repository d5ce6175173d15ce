"""microseg.data.checks, and prepare_data stopping on what would spoil a split.

Each prepare test builds a small data folder whose only fault is the one named in the test, and
checks that the split stops with the file named and nothing written to the run folder's data."""

from __future__ import annotations

import numpy as np
import pytest

from microseg.data.checks import (
    label_problems,
    nonfinite_problem,
    require_finite,
    summarize_label,
)
from microseg.data.synthetic import write_synthetic_dataset
from microseg.errors import DataError
from microseg.io import read_image, read_label, write_image
from microseg.recipes.prepare import prepare_data


@pytest.fixture
def user_data(tmp_path):
    return write_synthetic_dataset(tmp_path / "user", n_images=5, shape=(48, 48), seed=9)


def _refused(run, data, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        prepare_data(run, data_dir=data, **kwargs)
    assert not (run / "data" / "split.json").exists()
    return info.value


def semantic_folder(root, labels):
    for k, label in enumerate(labels):
        write_image(root / "images" / f"s{k}.tif", (label % 7 * 30 + k).astype(np.uint16)[None],
                    axes="CYX")
        write_image(root / "labels" / f"s{k}.tif", label, axes="YX")
    return root


# ---------------------------------------------------------------- images


def test_nonfinite_pixels_are_counted_per_kind():
    image = np.ones((1, 4, 5), np.float32)
    image[0, 0, :2], image[0, 3, 4] = np.nan, -np.inf
    assert nonfinite_problem(image, "a.tif").startswith(
        "a.tif: 2 NaN and 1 infinite pixel(s) of 20; replace them")
    assert nonfinite_problem(np.zeros((1, 4, 5), np.uint16), "b.tif") is None
    assert nonfinite_problem(np.ones((1, 4, 5), np.float64), "b.tif") is None
    with pytest.raises(DataError, match="c.tif: 2 NaN"):
        require_finite(image, "c.tif")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_infinite_pixels_stop_the_split_naming_each_image(tmp_path, user_data, bad):
    for stem in ("synthetic_001", "synthetic_003"):
        path = user_data / "images" / f"{stem}.tif"
        image = read_image(path).astype(np.float32)
        image[0, 5, 7] = bad
        write_image(path, image, axes="CYX", overwrite=True)
    error = _refused(tmp_path / "run", user_data)
    kind = "1 NaN and 0 infinite" if np.isnan(bad) else "0 NaN and 1 infinite"
    assert [p.split(": ")[0].rsplit("/", 1)[1] for p in error.problems] == [
        "synthetic_001.tif", "synthetic_003.tif"]
    assert all(f"{kind} pixel(s) of 2304" in p for p in error.problems)


# ---------------------------------------------------------------- labels


def test_label_images_without_objects_stop_the_split_unless_allowed(tmp_path, user_data):
    path = user_data / "labels" / "synthetic_002.tif"
    write_image(path, read_label(path) * 0, axes="YX", overwrite=True)
    error = _refused(tmp_path / "run", user_data)
    assert error.problems[0].startswith("1 of 5 label image(s) hold no object")
    assert str(path) in error.problems[0] and "allow_empty_labels=True" in error.problems[0]
    summary = prepare_data(tmp_path / "run", data_dir=user_data, allow_empty_labels=True)
    assert summary["empty_label_images"] == ["synthetic_002"]
    assert summary["parameters"]["allow_empty_labels"] is True


def test_semantic_labels_with_a_stray_huge_value_are_refused(tmp_path):
    labels = []
    for _ in range(3):
        label = np.zeros((24, 24), np.uint16)
        label[2:10, 2:10], label[12:20, 12:20] = 1, 2
        labels.append(label)
    labels[1][23, 23] = 60000
    data = semantic_folder(tmp_path / "sem", labels)
    error = _refused(tmp_path / "run", data, task="semantic")
    (problem,) = error.problems
    assert "found 1, 2, 60000, so 60001 classes of which 59997 have no pixel" in problem
    assert f"60000 (1 pixel(s), in {data / 'labels' / 's1.tif'})" in problem
    labels[1][23, 23] = 0
    fixed = semantic_folder(tmp_path / "fixed", labels)
    assert prepare_data(tmp_path / "run", data_dir=fixed, task="semantic")["n_classes"] == 3


def test_masks_of_0_and_255_as_semantic_point_to_the_binary_task():
    label = np.zeros((16, 16), np.uint8)
    label[3:9, 3:9] = 255
    (problem,) = label_problems([summarize_label("m", "m.png", label)], "semantic")
    assert "256 classes of which 254 have no pixel" in problem and "task='binary'" in problem


def test_a_few_unused_class_ids_are_accepted_with_a_message(caplog):
    label = np.zeros((16, 16), np.uint8)
    label[2:6, 2:6], label[8:12, 8:12] = 1, 4
    assert label_problems([summarize_label("s", "s.tif", label)], "semantic") == []
    assert "2 of the class ids 1..4 have no pixel" in caplog.text


def test_instance_labels_given_as_semantic_are_refused(tmp_path):
    data = write_synthetic_dataset(tmp_path / "inst", n_images=4, shape=(64, 64), seed=3)
    error = _refused(tmp_path / "run", data, task="semantic")
    (problem,) = error.problems
    assert problem.startswith("the labels look like instance labels, not class ids")
    largest = max(int(read_label(p).max()) for p in (data / "labels").iterdir())
    assert f"would make {largest + 1} classes" in problem and "task='instance'" in problem
    assert prepare_data(tmp_path / "run", data_dir=data, task="instance")["n_classes"] == 3
    declared = prepare_data(tmp_path / "run2", data_dir=data, task="semantic",
                            n_classes=largest + 1)
    assert declared["n_classes"] == largest + 1


def test_declared_classes_replace_the_guesses_and_bound_the_values(tmp_path):
    label = np.zeros((24, 24), np.uint16)
    label[2:10, 2:10], label[12:20, 12:20] = 1, 6
    data = semantic_folder(tmp_path / "sem", [label, label, label])
    assert prepare_data(tmp_path / "run", data_dir=data, task="semantic",
                        n_classes=8)["class_frequencies"]["class_7"] == 0.0
    error = _refused(tmp_path / "run2", data, task="semantic", n_classes=5)
    assert error.problems[0].endswith(
        "s0.tif: class ids 6 are not below n_classes = 5 (ids 0..4); fix the stray values or "
        "declare more classes")


def test_masks_given_as_instance_labels_are_refused(tmp_path, user_data):
    path = user_data / "labels" / "synthetic_004.tif"
    label = read_label(path)
    write_image(path, (label > 0).astype(np.uint8), axes="YX", overwrite=True)
    n_objects = len(np.unique(label)) - 1
    error = _refused(tmp_path / "run", user_data)
    (problem,) = error.problems
    assert problem.startswith("1 label image(s) are masks or class maps, not instance labels")
    assert f"{path}: 1 value(s) mark" in problem and "task='binary'" in problem
    assert n_objects >= 5


def test_every_problem_of_a_folder_comes_in_one_error(tmp_path, user_data):
    image_path = user_data / "images" / "synthetic_000.tif"
    image = read_image(image_path).astype(np.float32)
    image[0, 0, 0] = np.nan
    write_image(image_path, image, axes="CYX", overwrite=True)
    label_path = user_data / "labels" / "synthetic_001.tif"
    write_image(label_path, read_label(label_path) * 0, axes="YX", overwrite=True)
    error = _refused(tmp_path / "run", user_data)
    assert len(error.problems) == 2
    assert "synthetic_000.tif: 1 NaN" in error.problems[0]
    assert "hold no object" in error.problems[1]
