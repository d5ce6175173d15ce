import numpy as np
import pytest
from scipy import ndimage

from microseg.errors import ConfigError, DataError
from microseg.transforms.augment import AugmentConfig, Augmenter

SPATIAL_ONLY = AugmentConfig(contrast=False, noise=False, flip_prob=0.5, rotate90_prob=0.7,
                             affine_prob=1.0, rotate_degrees=20.0, scale_range=(0.8, 1.2))


def _blobs(rng, shape):
    """A target of smooth random blobs, and an image whose first channel is the target."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 3)
    target = (field > 0.05).astype(np.uint8)
    target[field > 0.15] = 2
    image = np.stack([target.astype(np.float32), rng.random(shape).astype(np.float32)])
    return image, target


@pytest.mark.parametrize("shape", [(48, 40), (12, 32, 28)], ids=["2d", "3d"])
def test_flips_and_quarter_turns_keep_image_and_target_exactly_aligned(rng, shape):
    image, target = _blobs(rng, shape)
    augment = Augmenter(AugmentConfig.flips_only().replace(rotate90=True), ndim=len(shape), seed=3)
    changed = 0
    for _ in range(6):
        new_image, new_target = augment(image, target)
        assert new_target.dtype == target.dtype and new_image.dtype == np.float32
        np.testing.assert_array_equal(new_image[0], new_target)
        changed += not np.array_equal(new_target, target)
    assert changed > 0


def test_quarter_turns_stay_in_the_yx_plane(rng):
    image, target = _blobs(rng, (6, 20, 20))
    config = AugmentConfig.disabled().replace(rotate90=True, rotate90_prob=1.0)
    new_image, new_target = Augmenter(config, ndim=3, seed=0)(image, target)
    turns = [k for k in range(1, 4) if np.array_equal(np.rot90(target, k, axes=(1, 2)), new_target)]
    assert len(turns) == 1
    np.testing.assert_array_equal(new_image, np.rot90(image, turns[0], axes=(2, 3)))


@pytest.mark.parametrize("shape", [(64, 64), (16, 40, 40)], ids=["2d", "3d"])
def test_rotation_and_scaling_keep_image_and_target_aligned(rng, shape):
    image, target = _blobs(rng, shape)
    augment = Augmenter(SPATIAL_ONLY, ndim=len(shape), seed=5)
    for _ in range(3):
        new_image, new_target = augment(image, target)
        assert set(np.unique(new_target)) <= {0, 1, 2}
        # The image channel was the target: interpolated linearly, it must round back to the
        # nearest-neighbour target almost everywhere (differences only along edges).
        agreement = np.mean(np.rint(new_image[0]) == new_target)
        assert agreement > 0.97
        assert not np.array_equal(new_target, target)


def test_same_seed_same_augmentations_other_seed_others(rng):
    image, target = _blobs(rng, (32, 32))
    first, second, other = (Augmenter(AugmentConfig(), ndim=2, seed=s) for s in (1, 1, 2))
    runs = {name: [aug(image, target) for _ in range(4)]
            for name, aug in (("first", first), ("second", second), ("other", other))}
    for (a_img, a_tgt), (b_img, b_tgt) in zip(runs["first"], runs["second"], strict=True):
        np.testing.assert_array_equal(a_img, b_img)
        np.testing.assert_array_equal(a_tgt, b_tgt)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(runs["first"], runs["other"], strict=True))


def test_intensity_transforms_leave_the_target_alone(rng):
    image, target = _blobs(rng, (32, 32))
    config = AugmentConfig.disabled().replace(contrast=True, contrast_prob=1.0, noise=True,
                                              noise_prob=1.0)
    new_image, new_target = Augmenter(config, ndim=2, seed=0)(image, target)
    np.testing.assert_array_equal(new_target, target)
    assert not np.allclose(new_image, image)


def test_disabled_returns_the_inputs_and_bad_inputs_are_refused(rng):
    image, target = _blobs(rng, (16, 16))
    augment = Augmenter(AugmentConfig.disabled(), ndim=2)
    new_image, new_target = augment(image, target)
    assert np.array_equal(new_image, image) and np.array_equal(new_target, target)
    with pytest.raises(DataError, match="spatial"):
        augment(image, target[:8])
    with pytest.raises(DataError, match="spatial"):
        augment(image[0], target)
    with pytest.raises(ConfigError):
        AugmentConfig(flip_prob=1.5)
    with pytest.raises(ConfigError):
        AugmentConfig(scale_range=(1.2, 0.8))
