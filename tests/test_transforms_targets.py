import itertools

import numpy as np
import pytest

from microseg.errors import ConfigError, DataError
from microseg.transforms.targets import (
    class_counts,
    class_names,
    labels_to_target,
    n_classes_for,
)


def _touching_labels(rng, coarse_shape, zoom):
    """Blocks of random ids (0..5), many touching each other, with gaps in the ids."""
    coarse = rng.choice([0, 0, 1, 2, 3, 7, 9], size=coarse_shape)
    return np.kron(coarse, np.ones((zoom,) * len(coarse_shape), int)).astype(np.int32)


def _brute_force_instance_target(label):
    """0 background; 2 where an object pixel has a face neighbour (inside the image) with
    another value; else 1."""
    target = np.zeros(label.shape, np.uint8)
    steps = [step for axis in range(label.ndim) for step in
             (tuple(int(a == axis) for a in range(label.ndim)),
              tuple(-int(a == axis) for a in range(label.ndim)))]
    for index in itertools.product(*(range(s) for s in label.shape)):
        if label[index] == 0:
            continue
        target[index] = 1
        for step in steps:
            neighbour = tuple(i + s for i, s in zip(index, step, strict=True))
            inside = all(0 <= n < side for n, side in zip(neighbour, label.shape, strict=True))
            if inside and label[neighbour] != label[index]:
                target[index] = 2
    return target


@pytest.mark.parametrize("coarse_shape, zoom", [((5, 6), 3), ((3, 4, 4), 2)], ids=["2d", "3d"])
def test_instance_target_equals_a_brute_force_neighbourhood_loop(rng, coarse_shape, zoom):
    label = _touching_labels(rng, coarse_shape, zoom)
    target = labels_to_target(label, "instance")
    assert target.dtype == np.uint8
    np.testing.assert_array_equal(target, _brute_force_instance_target(label))
    assert {0, 1, 2} <= set(np.unique(target))


def test_touching_objects_are_separated_by_boundary():
    label = np.zeros((6, 8), np.int32)
    label[1:5, 1:4], label[1:5, 4:7] = 1, 2
    target = labels_to_target(label, "instance")
    assert np.all(target[1:5, 3] == 2) and np.all(target[1:5, 4] == 2)
    assert np.all(target[2:4, 2] == 1) and np.all(target[2:4, 5] == 1)


def test_binary_and_semantic_targets(rng):
    label = _touching_labels(rng, (4, 4), 2)
    np.testing.assert_array_equal(labels_to_target(label, "binary"), (label > 0).astype(np.uint8))
    semantic = labels_to_target(label, "semantic")
    assert semantic.dtype == np.uint8 and np.array_equal(semantic, label)
    many = np.array([[0, 300]], np.int32)
    assert labels_to_target(many, "semantic").dtype == np.int64


def test_number_and_names_of_classes(rng):
    assert n_classes_for("binary") == 2 and n_classes_for("instance") == 3
    labels = [np.array([[0, 1]]), np.array([[4, 0]])]
    assert n_classes_for("semantic", labels) == 5
    assert n_classes_for("semantic", np.zeros((3, 3), int)) == 2
    assert class_names("instance", 3) == ["background", "foreground", "boundary"]
    assert class_names("semantic", 3) == ["background", "class_1", "class_2"]
    with pytest.raises(ConfigError, match="semantic"):
        n_classes_for("semantic")
    with pytest.raises(ConfigError, match="unknown task"):
        labels_to_target(np.zeros((2, 2), int), "panoptic")


def test_class_counts_and_invalid_labels(rng):
    target = rng.integers(0, 3, (9, 7))
    counts = class_counts(target, 4)
    assert counts.tolist() == [int((target == k).sum()) for k in range(4)]
    with pytest.raises(DataError, match="class 2"):
        class_counts(target, 2)
    with pytest.raises(DataError, match="integers"):
        labels_to_target(np.array([[0.5, 1.0]]), "binary")
    with pytest.raises(DataError, match="integers"):
        labels_to_target(np.array([[-1, 1]]), "instance")


def test_distance_levels_follow_the_distance_to_each_objects_border():
    from scipy import ndimage

    from microseg.transforms.targets import labels_to_target

    label = np.zeros((20, 30), np.int32)
    label[2:18, 2:14] = 1
    label[2:18, 14:28] = 2
    label[0:5, 25:30] = 3  # touches the image border: the border is not a boundary
    levels = 4
    target = labels_to_target(label, "instance", head="distance", levels=levels)
    assert target.dtype == np.uint8 and set(np.unique(target)) <= set(range(levels + 1))
    for k in (1, 2, 3):
        inside = label == k
        brute = np.zeros(label.shape)
        for y, x in zip(*np.nonzero(inside), strict=True):
            outside = np.argwhere(~inside & (label != k))
            brute[y, x] = np.sqrt(((outside - (y, x)) ** 2).sum(1)).min()
        expected = np.ceil(levels * brute / brute[inside].max()).clip(1, levels)
        np.testing.assert_array_equal(target[inside], expected[inside])
    assert np.all(target[label == 0] == 0)
    assert ndimage.label(target == levels)[1] == 3, "one core per object"


def test_heads_have_their_class_counts_and_names():
    from microseg.errors import ConfigError
    from microseg.transforms.targets import class_names, n_classes_for

    assert n_classes_for("instance", head="distance", levels=5) == 6
    assert n_classes_for("instance") == 3
    assert class_names("instance", 4, "distance") == ["background", "level 1 (rim)", "level 2",
                                                      "level 3 (core)"]
    with pytest.raises(ConfigError, match="unknown instance head"):
        n_classes_for("instance", head="flows")
    with pytest.raises(ConfigError, match="at least 2 levels"):
        n_classes_for("instance", head="distance", levels=1)


def test_auto_head_follows_the_median_share_of_labelled_pixels():
    """Counted pixel by pixel: two images mostly covered and one sparse choose three_class;
    the other way round, distance; an image without labels is left out; none at all is an
    error."""
    from microseg.transforms.targets import AUTO_HEAD_COVERAGE, choose_instance_head

    def covering(share: float) -> np.ndarray:
        label = np.zeros((10, 10), np.int32)
        label.flat[:round(share * 100)] = np.arange(1, round(share * 100) + 1) % 7 + 1
        return label

    dense, sparse = covering(0.8), covering(0.1)
    assert sum(1 for v in dense.flat if v) / dense.size >= AUTO_HEAD_COVERAGE
    head, reason = choose_instance_head([dense, dense, sparse, None])
    assert head == "three_class" and "80%" in reason
    assert choose_instance_head([sparse, sparse, dense])[0] == "distance"
    assert choose_instance_head([covering(AUTO_HEAD_COVERAGE)])[0] == "three_class"
    with pytest.raises(DataError, match="labelled"):
        choose_instance_head([None])
