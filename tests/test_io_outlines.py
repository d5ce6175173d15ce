"""microseg.io.outlines: exact pixel-edge outlines and their fill, against independent references."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path as OutlinePath

from microseg.io.outlines import (
    fill_polygons,
    mask_polygons,
    object_polygons,
    polygon_region,
    ring_area,
)


def hard_labels() -> np.ndarray:
    """2D objects that trip up outline code: holes (one touching its object's boundary at a
    corner), touching objects, objects on every border, an object in two diagonal parts, a
    single pixel, and a ring around another object."""
    labels = np.zeros((20, 24), np.int32)
    labels[2:9, 2:9] = 1
    labels[4:7, 4:7] = 0                     # a hole
    labels[10:16, 2:8] = 2
    labels[12, 4] = 0                        # a one-pixel hole
    labels[10, 2] = 0                        # a notch in the corner, and a hole touching it
    labels[11, 3] = 0                        # corner-wise: the hole stays a hole
    labels[10:16, 8:12] = 3                  # touches object 2 along an edge
    labels[0, :] = 4                         # the whole top row
    labels[:, 23] = 5                        # the whole right column
    labels[19, 0] = 6                        # a corner pixel
    labels[17, 14] = labels[18, 15] = 7      # two parts touching at a corner
    labels[3:8, 13:20] = 8
    labels[4:7, 14:19] = 0
    labels[5, 16] = 9                        # an object inside the hole of another
    return labels


def volume_labels() -> np.ndarray:
    """3D: objects across slices, with a hole on one slice and objects on the volume border."""
    labels = np.zeros((4, 12, 14), np.int32)
    labels[0:3, 2:7, 2:7] = 1
    labels[1, 4, 4] = 0
    labels[1:4, 6:12, 9:14] = 2
    labels[3, 0:3, 0:4] = 3
    labels[2, 8:10, 1:5] = 4
    return labels


def same_objects(first: np.ndarray, second: np.ndarray) -> bool:
    """Equal up to renumbering: the same pixels in the same objects, background kept."""
    if first.shape != second.shape or not np.array_equal(first > 0, second > 0):
        return False
    pairs = set(zip(first.ravel().tolist(), second.ravel().tolist(), strict=True))
    return len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def centres_inside(rings, shape):
    """Reference: even-odd over rings with matplotlib's point-in-polygon at pixel centres."""
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    centres = np.stack([x.ravel() + 0.5, y.ravel() + 0.5], axis=1)
    inside = np.zeros(shape, bool)
    for ring in rings:
        inside ^= OutlinePath(ring).contains_points(centres).reshape(shape)
    return inside


def test_every_object_fills_back_exactly():
    labels = hard_labels()
    polygons = object_polygons(labels)
    assert sorted(polygons) == list(range(1, 10))
    for label, found in polygons.items():
        np.testing.assert_array_equal(fill_polygons(found, labels.shape), labels == label)
        box, mask = polygon_region(found, labels.shape)
        full = np.zeros(labels.shape, bool)
        full[box] = mask
        np.testing.assert_array_equal(full, labels == label)


def test_outer_rings_then_holes_and_every_ring_simple():
    polygons = object_polygons(hard_labels())
    assert [len(p) for p in polygons[1]] == [2]            # one part, one hole
    assert [len(p) for p in polygons[2]] == [3]            # two one-pixel holes
    assert len(polygons[7]) == 2                           # diagonal parts are separate polygons
    for found in polygons.values():
        for rings in found:
            assert ring_area(rings[0]) > 0 and all(ring_area(h) < 0 for h in rings[1:])
            for ring in rings:
                assert len({tuple(p) for p in ring.tolist()}) == len(ring)
    square = polygons[1][0][0]
    assert ring_area(square) == 49 and ring_area(polygons[1][0][1]) == -9


def test_random_label_images_round_trip(rng):
    for _ in range(80):
        shape = tuple(int(s) for s in rng.integers(2, 16, size=2))
        labels = rng.integers(0, 4, size=shape).astype(np.int32)
        for label, found in object_polygons(labels).items():
            np.testing.assert_array_equal(fill_polygons(found, shape), labels == label)
            assert sum(abs(ring_area(r)) * np.sign(ring_area(r)) for p in found for r in p) \
                == pytest.approx((labels == label).sum())


def test_pixel_edge_fill_agrees_with_point_in_polygon(rng):
    for _ in range(50):
        mask = rng.random((12, 13)) < 0.5
        for rings in mask_polygons(mask):
            np.testing.assert_array_equal(fill_polygons([rings], mask.shape),
                                          centres_inside(rings, mask.shape))


def test_float_polygons_use_pixel_centres_and_are_cut_at_the_border():
    angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    outer = np.stack([9.3 + 11 * np.cos(angles), 7.7 + 6.2 * np.sin(angles)], axis=1)
    hole = np.stack([9 + 2.5 * np.cos(angles), 8 + 2.5 * np.sin(angles)], axis=1)[::-1]
    shape = (14, 16)
    filled = fill_polygons([[outer, hole]], shape)
    np.testing.assert_array_equal(filled, centres_inside([outer, hole], shape))
    assert filled[:, 0].any() and not filled[8, 9]
    box, mask = polygon_region([[outer, hole]], shape)
    assert box == (slice(1, 14), slice(0, 16))
    np.testing.assert_array_equal(mask, filled[box])


def test_offset_and_wrong_shapes():
    mask = np.zeros((3, 3), bool)
    mask[1, 1] = True
    assert mask_polygons(mask, offset=(10, 20))[0][0].tolist() == [[11, 21], [12, 21], [12, 22],
                                                                    [11, 22]]
    assert mask_polygons(np.zeros((3, 3), bool)) == []
    assert polygon_region([[np.array([[50.0, 50], [60, 50], [60, 60]])]], (5, 5))[1].size == 0
    with pytest.raises(ValueError, match="2D"):
        object_polygons(np.zeros((2, 3, 3), np.int32))
