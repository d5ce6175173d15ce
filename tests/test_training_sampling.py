"""PatchSampler: patches are real windows, reproducible per batch, padding, rejection, errors."""

import numpy as np
import pytest
import torch

from microseg.errors import DataError
from microseg.training.sampling import PatchSampler, as_pairs, pad_to_patch


def position_coded(shape, offset=0):
    """Image whose every pixel value is unique, so a patch tells where it came from."""
    image = (np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + offset)[None]
    target = (np.arange(np.prod(shape)).reshape(shape) % 3).astype(np.int64)
    return image, target


def find_window(pairs, patch, patch_target):
    """Brute force: the (image index, start) whose window equals the patch, or None."""
    for index, (image, target) in enumerate(pairs):
        for y in range(image.shape[1] - patch.shape[1] + 1):
            for x in range(image.shape[2] - patch.shape[2] + 1):
                window = (slice(y, y + patch.shape[1]), slice(x, x + patch.shape[2]))
                if np.array_equal(image[(slice(None), *window)], patch):
                    assert np.array_equal(target[window], patch_target)
                    return index, (y, x)
    return None


def test_patches_are_windows_with_aligned_targets():
    pairs = [position_coded((12, 15)), position_coded((10, 10), offset=1000)]
    sampler = PatchSampler(pairs, (5, 6), batch_size=6, seed=3)
    images, targets = sampler.batch(epoch=0, index=0)
    assert images.shape == (6, 1, 5, 6) and images.dtype == torch.float32
    assert targets.shape == (6, 5, 6) and targets.dtype == torch.int64
    for image, target in zip(images.numpy(), targets.numpy(), strict=True):
        assert find_window(pairs, image, target) is not None


def test_batches_are_a_function_of_seed_rank_epoch_index():
    pairs = [position_coded((20, 20))]
    first = PatchSampler(pairs, (8, 8), 4, seed=1).batch(2, 5)
    again = PatchSampler(pairs, (8, 8), 4, seed=1).batch(2, 5)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    for other in (PatchSampler(pairs, (8, 8), 4, seed=1).batch(2, 6),
                  PatchSampler(pairs, (8, 8), 4, seed=1).batch(3, 5),
                  PatchSampler(pairs, (8, 8), 4, seed=1, rank=1).batch(2, 5),
                  PatchSampler(pairs, (8, 8), 4, seed=2).batch(2, 5)):
        assert not torch.equal(first[0], other[0])


def test_background_threads_give_the_same_batches_in_order():
    sampler = PatchSampler([position_coded((20, 20))], (8, 8), 3, seed=0)
    inline = list(sampler.batches(epoch=1, count=7))
    threaded = list(sampler.batches(epoch=1, count=7, num_workers=2))
    assert len(threaded) == 7
    for (a, b), (c, d) in zip(inline, threaded, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_state_dict_restores_the_batches():
    pairs = [position_coded((20, 20))]
    saved = PatchSampler(pairs, (8, 8), 2, seed=7, rank=1)
    restored = PatchSampler(pairs, (8, 8), 2)
    restored.load_state_dict(saved.state_dict())
    assert torch.equal(saved.batch(4, 2)[0], restored.batch(4, 2)[0])


def test_small_images_are_padded_with_background():
    image, target = position_coded((4, 9), offset=1)
    padded_image, padded_target = pad_to_patch(image, target, (8, 8))
    assert padded_image.shape == (1, 8, 9) and padded_target.shape == (8, 9)
    assert np.array_equal(padded_image[:, 2:6], image)
    assert np.array_equal(padded_target[2:6], target)
    assert not padded_image[:, :2].any() and not padded_image[:, 6:].any()
    assert not padded_target[:2].any() and not padded_target[6:].any()
    sampler = PatchSampler([(image, target), position_coded((16, 16))], (8, 8), 16, seed=0)
    assert sampler.batch(0, 0)[0].shape == (16, 1, 8, 8)


def test_patch_larger_than_every_image_is_an_error():
    with pytest.raises(DataError, match="larger than every training image") as error:
        PatchSampler([position_coded((10, 30)), position_coded((30, 10))], (16, 16), 2,
                     size_divisor=4)
    assert "patch_size=(8, 16)" in str(error.value)


def test_minimum_foreground_is_respected():
    target = np.zeros((40, 40), np.int64)
    target[:10, :10] = 1
    image = target[None].astype(np.float32)
    sampler = PatchSampler([(image, target)], (8, 8), 8, seed=0, min_foreground=0.5,
                           max_retries=500)
    _, targets = sampler.batch(0, 0)
    assert (targets.float().mean(dim=(1, 2)) >= 0.5).all()


def test_unreachable_foreground_names_the_setting():
    target = np.zeros((40, 40), np.int64)
    target[0, 0] = 1
    sampler = PatchSampler([(target[None].astype(np.float32), target)], (8, 8), 2,
                           min_foreground=0.5, max_retries=5)
    with pytest.raises(DataError, match="min_foreground") as error:
        sampler.batch(0, 0)
    assert "0.1% foreground on average" in str(error.value)


def test_augmentation_is_applied_per_patch_and_seeded():
    seeds = []

    def factory(seed):
        seeds.append(seed)
        return lambda image, target: (image[:, ::-1, :] * 2, target[::-1, :])

    pairs = [position_coded((12, 12))]
    plain = PatchSampler(pairs, (6, 6), 3, seed=5).batch(0, 0)
    augmented = PatchSampler(pairs, (6, 6), 3, seed=5, augment_factory=factory).batch(0, 0)
    assert len(seeds) == 1
    # the factory's seed is drawn first, so the windows differ from the plain sampler's;
    # each augmented patch must still be a flipped, doubled window with its target
    for image, target in zip(augmented[0].numpy(), augmented[1].numpy(), strict=True):
        assert find_window(pairs, image[:, ::-1] / 2, target[::-1]) is not None
    assert plain[0].shape == augmented[0].shape
    PatchSampler(pairs, (6, 6), 3, seed=5, augment_factory=factory).batch(0, 0)
    assert seeds[0] == seeds[1]


def test_samples_without_targets_are_listed():
    class Sample:
        def __init__(self, stem, target):
            self.stem, self.image, self.target = stem, np.zeros((1, 4, 4), np.float32), target

    with pytest.raises(DataError) as error:
        as_pairs([Sample("a", None), Sample("b", np.zeros((5, 5))), Sample("c", np.zeros((4, 4)))])
    assert "a: has no label" in str(error.value) and "b: image shape" in str(error.value)
    assert len(error.value.problems) == 2


def test_three_dimensional_patches():
    target = np.zeros((6, 10, 12), np.int64)
    image = np.random.default_rng(0).random((2, 6, 10, 12), dtype=np.float32)
    images, targets = PatchSampler([(image, target)], (4, 8, 8), 2).batch(0, 0)
    assert images.shape == (2, 2, 4, 8, 8) and targets.shape == (2, 4, 8, 8)
