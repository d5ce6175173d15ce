"""Tile mismatch: zero for global normalization, positive for InstanceNorm and tile-wise input norm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microseg.diagnostics.mismatch import (
    channel_dice,
    hard_masks,
    pair_geometry,
    tile_mismatch,
    tile_pairs,
)
from microseg.errors import ConfigError
from microseg.models import ModelConfig, build_model


def unet(norm: str, ndim: int = 2, double: bool = False):
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(ndim=ndim, channels=(4, 8, 16), strides=(2, 2), num_res_units=0, norm=norm)
    )
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 1, *(16,) * ndim) + 0.5)
    return (model.double() if double else model).eval()


@pytest.fixture
def image(rng):
    values = rng.normal(size=(1, 128, 96)).astype(np.float32)
    values[:, 20:60, 10:50] += 3.0
    values[:, 70:120, 40:90] += 1.5
    return values


def standardize(tile):
    return (tile - tile.mean()) / (tile.std() + 1e-6)


def test_hard_masks_and_channel_dice_known_answers():
    probabilities = np.array([[[0.7, 0.1]], [[0.2, 0.1]], [[0.1, 0.8]]])
    np.testing.assert_array_equal(hard_masks(probabilities)[:, 0], [[1, 0], [0, 0], [0, 1]])
    np.testing.assert_array_equal(hard_masks(np.array([[[0.4, 0.6]]])), [[[False, True]]])
    a = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]], dtype=bool)
    b = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1]], dtype=bool)
    np.testing.assert_allclose(channel_dice(a, b), [2 / 3, np.nan, 4 / 5])


def test_tile_pairs_stay_inside_the_image():
    pairs = tile_pairs((96, 80), (32, 32), (16, 16), (32, 32))
    # origins: rows 0, 32, 64 and columns 0, 32; shifting rows needs row + 48 <= 96 (2 rows x 2
    # columns), shifting columns needs column + 48 <= 80 (3 rows x 2 columns)
    assert len(pairs) == 2 * 2 + 3 * 2
    for origin, axis in pairs:
        shifted = [o + (16 if a == axis else 0) for a, o in enumerate(origin)]
        assert all(s + 32 <= n for s, n in zip(shifted, (96, 80), strict=True))


@pytest.mark.parametrize("norm", ["batch", "batchrenorm", "none"])
def test_global_normalization_has_no_mismatch(norm, image):
    result = tile_mismatch(unet(norm), image, tile_shape=64, halo=10)
    assert not result["any"] and result["any_mismatch"] == [False, False, False]
    assert all(v in (0.0, None) for v in result["per_channel"])
    assert result["max_abs_diff"] <= 1e-6 and result["map"].sum() == 0
    exact = tile_mismatch(unet(norm, double=True), image.astype(np.float64), tile_shape=64, halo=10)
    assert exact["max_abs_diff"] <= 1e-15, "softmax rounding only; the logits agree exactly"


def test_instance_norm_mismatches(image):
    result = tile_mismatch(unet("instance"), image, tile_shape=64, halo=10)
    assert result["any"] and result["mean"] > 0.01 and result["max_abs_diff"] > 0.01
    assert result["n_pairs"] == len(tile_pairs((128, 96), (64, 64), (32, 32), (64, 64))) == 3
    assert result["map"].sum() > 0


def test_tile_wise_input_normalization_mismatches_even_with_batchnorm(image):
    result = tile_mismatch(
        unet("batch"), image, 64, 10, input_norm="tile", tile_normalizer=standardize
    )
    assert result["any"] and result["max_abs_diff"] > 1e-3 and result["input_norm"] == "tile"


def test_one_pair_against_a_brute_force_reference(rng):
    model = unet("instance")
    image = rng.normal(size=(1, 48, 32)).astype(np.float32)
    image[:, 10:30, 5:20] += 2.0
    result = tile_mismatch(model, image, tile_shape=32, halo=4, offset=16)
    assert result["n_pairs"] == 1
    with torch.no_grad():
        first = model(torch.from_numpy(image[None, :, 0:32, :])).argmax(1)[0].numpy()
        second = model(torch.from_numpy(image[None, :, 16:48, :])).argmax(1)[0].numpy()
    overlap_first, overlap_second = first[20:28, 4:28], second[4:12, 4:28]
    expected = []
    for c in range(3):
        a, b = overlap_first == c, overlap_second == c
        both = sum(int(x and y) for x, y in zip(a.ravel(), b.ravel(), strict=True))
        total = int(a.sum() + b.sum())
        expected.append(None if total == 0 else 1 - 2 * both / total)
    assert result["per_channel"] == pytest.approx(expected)
    differs = np.zeros((48, 32), dtype=int)
    differs[20:28, 4:28] = overlap_first != overlap_second
    np.testing.assert_array_equal(result["map"], differs)
    compared = np.zeros((48, 32), dtype=int)
    compared[20:28, 4:28] = 1
    np.testing.assert_array_equal(result["coverage"], compared)


def test_3d_volume(rng):
    volume = rng.normal(size=(1, 32, 40, 32)).astype(np.float32)
    assert not tile_mismatch(unet("batch", ndim=3), volume, 32, 10, offset=8)["any"]


def test_thin_axes_are_not_shifted(rng):
    volume = rng.normal(size=(1, 24, 64, 64)).astype(np.float32)
    result = tile_mismatch(unet("instance", ndim=3), volume, (24, 40, 40), 4, offset=(16, 16, 16))
    assert result["n_pairs"] == 2 and result["any"], "one pair along Y, one along X, none along Z"
    assert result["map"][:4].sum() == 0 and result["map"][20:].sum() == 0


def test_impossible_geometry_is_explained(image):
    with pytest.raises(ConfigError, match=r"no valid overlap .* at least \(52, 52\)"):
        tile_mismatch(unet("batch"), image, tile_shape=32, halo=12)
    with pytest.raises(ConfigError, match=r"at least \(48, 48\)"):
        tile_mismatch(unet("batch"), image, tile_shape=32, halo=12, offset=20)
    with pytest.raises(ConfigError, match="holds no pair"):
        tile_mismatch(unet("batch"), image[:, :40, :40], tile_shape=40, halo=4)
    with pytest.raises(ConfigError, match="multiple of the size divisor 4"):
        tile_mismatch(unet("batch"), image, tile_shape=64, halo=4, offset=30)
    with pytest.raises(ConfigError, match="tile_normalizer"):
        tile_mismatch(unet("batch"), image, 64, 10, input_norm="tile")


def test_axes_shorter_than_the_tile_are_padded_and_compared_inside_the_image(rng):
    image = rng.normal(size=(1, 20, 80)).astype(np.float32)
    image[:, 5:15, 10:40] += 2.0
    assert tile_pairs((20, 80), (32, 32), (16, 16), (32, 32)) == [((-6, 0), 1), ((-6, 32), 1)]
    exact = tile_mismatch(unet("batch", double=True), image.astype(np.float64), 32, 10, offset=8)
    assert exact["n_pairs"] == 2 and not exact["any"] and exact["max_abs_diff"] <= 1e-15
    instance = tile_mismatch(unet("instance"), image, 32, 10, offset=8)
    assert instance["any"] and instance["map"].shape == (20, 80)
    assert instance["map"][:, :18].sum() == 0, "compared only from origin + offset + halo on"


def test_pair_geometry_fits_pairs_with_a_valid_overlap_or_leaves_thin_axes_unshifted():
    assert pair_geometry((512, 512), 176, 24, 4) == ((176, 176), (88, 88)), "the paper's half tile"
    # 256: a third of the image (84) as offset, tiles of 172; 64 with halo 16: the smallest offset
    # that leaves an overlap (12), tiles of 52; 32: too short for any pair, covered by 64
    assert pair_geometry((256, 64, 32), 96, 16, 4) == ((96, 52, 64), (48, 12, 48))
    for size, side, halo in [(256, 176, 24), (64, 96, 16), (97, 40, 5), (130, 200, 30)]:
        (tile,), (offset,) = pair_geometry((size,), side, halo, 4)
        if tile <= size:
            assert tile + offset <= size and tile - offset - 2 * halo >= 1
            assert tile % 4 == 0 and offset % 4 == 0 and offset >= 4
