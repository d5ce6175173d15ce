"""Object scale: diameters against a brute-force count, resampling shapes and label ids."""

from __future__ import annotations

import math

import numpy as np
import pytest

from microseg.errors import ConfigError, DataError
from microseg.transforms.scale import (
    MAX_FACTOR,
    MIN_FACTOR,
    median_diameter,
    object_diameters,
    rescale_image,
    rescale_labels,
    resize_to,
    scale_factor,
)


def discs(shape=(120, 140), radii=(6, 10, 15), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    label = np.zeros(shape, np.int32)
    for k, r in enumerate(radii, start=1):
        cy, cx = rng.integers(r + 1, shape[0] - r - 1), rng.integers(r + 1, shape[1] - r - 1)
        label[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (label == 0)] = k
    return label


def test_diameters_are_equivalent_disc_and_sphere_diameters():
    label = discs(radii=(6, 10, 15))
    areas = [np.sum(label == k) for k in (1, 2, 3)]
    expected = [2 * math.sqrt(a / math.pi) for a in areas]
    np.testing.assert_allclose(object_diameters(label), expected, rtol=1e-12)
    assert np.allclose(object_diameters(label), [12, 20, 30], rtol=0.05)
    cube = np.zeros((10, 10, 10), np.int32)
    cube[2:6, 2:6, 2:6] = 4
    assert object_diameters(cube)[0] == pytest.approx((6 * 64 / math.pi) ** (1 / 3))
    assert median_diameter([label, np.zeros((5, 5), np.int32)]) == pytest.approx(expected[1])
    assert median_diameter(np.zeros((5, 5), np.int32)) is None


def test_diameters_need_integer_labels():
    with pytest.raises(DataError, match="integer label image"):
        object_diameters(np.zeros((4, 4), np.float32))


def test_scale_factor_is_limited_and_checked():
    assert scale_factor(60.0, 30.0) == 0.5
    assert scale_factor(None, 30.0) == 1.0 and scale_factor(60.0, None) == 1.0
    assert scale_factor(1000.0, 30.0) == MIN_FACTOR and scale_factor(0.5, 30.0) == 1.0
    assert scale_factor(20.0, 30.0, smallest_diameter=10.0) == 1.0, "in range: not resampled"
    assert scale_factor(4.0, 30.0, smallest_diameter=10.0) == 2.5
    assert scale_factor(0.5, 30.0, smallest_diameter=10.0) == MAX_FACTOR
    assert scale_factor(60.0, 30.0, smallest_diameter=10.0, shrink_to=10.0) == 10.0 / 60.0
    assert scale_factor(25.0, 30.0, smallest_diameter=10.0, shrink_to=10.0) == 1.0, "in range"
    with pytest.raises(ConfigError, match="positive"):
        scale_factor(0.0, 30.0)
    with pytest.raises(ConfigError, match="positive"):
        scale_factor(60.0, 30.0, shrink_to=0.0)


def test_resampling_halves_diameters_and_keeps_ids():
    label = discs(radii=(8, 12, 16))
    smaller = rescale_labels(label, 0.5)
    assert smaller.shape == (60, 70) and smaller.dtype == label.dtype
    assert set(np.unique(smaller)) == set(np.unique(label))
    np.testing.assert_allclose(object_diameters(smaller), object_diameters(label) / 2, rtol=0.08)
    image = (label > 0).astype(np.float32)[None] * 100
    resampled = rescale_image(np.concatenate([image, image * 2]), 0.5)
    assert resampled.shape == (2, 60, 70) and resampled.dtype == np.float32
    np.testing.assert_allclose(resampled[1], 2 * resampled[0], rtol=1e-5)


def test_resize_back_restores_the_grid_and_smooth_values():
    ramp = np.tile(np.linspace(0, 1, 80, dtype=np.float32), (50, 1))[None]
    back = resize_to(rescale_image(ramp, 0.5), (50, 80))
    assert back.shape == (1, 50, 80)
    assert np.abs(back - ramp)[:, 2:-2, 2:-2].max() < 0.02
    assert resize_to(ramp, (50, 80)) is not None and rescale_image(ramp, 1.0).shape == ramp.shape


@pytest.mark.parametrize("shape, out, order, smooth", [((1, 50, 70), (20, 31), 1, True),
                                                        ((2, 30, 20), (61, 45), 1, False),
                                                        ((1, 12, 40, 30), (6, 17, 13), 0, False)])
def test_resampling_block_by_block_equals_resampling_whole(shape, out, order, smooth):
    from microseg.transforms.scale import resample, resample_region

    source = np.random.default_rng(5).random(shape).astype(np.float32)
    if order == 0:
        source = (source * 50).astype(np.int32)
    whole = resample(source, out, order=order, smooth=smooth)
    assembled = np.zeros_like(whole)
    blocks = [range(0, n, 7) for n in out]
    import itertools

    for starts in itertools.product(*blocks):
        region = tuple(slice(a, min(a + 7, n)) for a, n in zip(starts, out, strict=True))
        assembled[(slice(None), *region)] = resample_region(source, out, region, order, smooth)
    np.testing.assert_array_equal(assembled, whole)
    assert whole.dtype == (np.float32 if order == 1 else np.int32)
