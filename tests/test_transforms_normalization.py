import math

import numpy as np
import pytest

from microseg.errors import ConfigError, DataError
from microseg.transforms.normalization import (
    PercentileNormalization,
    normalize,
    normalize_tilewise,
    percentile_statistics,
)


def _camera_like(rng, shape):
    """Two channels of uint16 with different offsets and ranges."""
    first = rng.poisson(120.0, shape) + 100
    second = rng.gamma(2.0, 300.0, shape).astype(int) + 5
    return np.stack([first, second]).astype(np.uint16)


@pytest.mark.parametrize("shape", [(40, 50), (6, 20, 30)], ids=["2d", "3d"])
def test_statistics_equal_numpy_percentiles_in_float64(rng, shape):
    image = _camera_like(rng, shape)
    config = PercentileNormalization(low=2.0, high=99.5)
    low, high = percentile_statistics(image, config)
    assert low.dtype == high.dtype == np.float64 and low.shape == (2,)
    for c in range(2):
        expected = np.percentile(image[c].astype(np.float64), [2.0, 99.5])
        assert low[c] == expected[0] and high[c] == expected[1]


def _brute_force_step(shape, max_samples):
    step = 1
    while math.prod(len(range(0, side, step)) for side in shape) > max_samples:
        step += 1
    return step


def test_large_images_use_a_regular_subsample_of_at_most_max_samples(rng):
    image = _camera_like(rng, (101, 77))
    config = PercentileNormalization(max_samples=500)
    step = _brute_force_step((101, 77), 500)
    assert step > 1
    sample = image[:, ::step, ::step]
    assert sample[0].size <= 500
    low, high = percentile_statistics(image, config)
    for c in range(2):
        expected = np.percentile(sample[c].astype(np.float64), [config.low, config.high])
        assert (low[c], high[c]) == tuple(expected)
    _, exact_high = percentile_statistics(image, PercentileNormalization(max_samples=101 * 77))
    assert exact_high[1] == np.percentile(image[1].astype(np.float64), 99.8)
    assert exact_high[1] != high[1], "the cap changes which pixels are used"


def test_statistics_read_only_slices_of_a_zarr_array(rng):
    import zarr

    image = _camera_like(rng, (30, 40))
    stored = zarr.create_array(store=zarr.storage.MemoryStore(), shape=image.shape,
                               chunks=(1, 16, 16), dtype=image.dtype)
    stored[:] = image
    config = PercentileNormalization(max_samples=300)
    for got, want in zip(percentile_statistics(stored, config),
                         percentile_statistics(image, config), strict=True):
        assert np.array_equal(got, want)


def test_normalize_matches_the_float64_formula_per_channel(rng):
    image = _camera_like(rng, (20, 30))
    low, high = np.array([110.0, 40.0]), np.array([150.0, 1900.0])
    out = normalize(image, low, high)
    expected = (image.astype(np.float64) - low[:, None, None]) / (high - low)[:, None, None]
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    clipped = normalize(image, low, high, clip=True)
    np.testing.assert_allclose(clipped, np.clip(expected, 0, 1), rtol=1e-6, atol=1e-6)


def test_constant_channel_gives_finite_values():
    image = np.full((1, 8, 8), 7, np.uint16)
    low, high = percentile_statistics(image)
    out = normalize(image, low, high)
    assert low[0] == high[0] == 7.0 and np.all(out == 0.0)
    assert np.all(np.isfinite(normalize(image + 1, low, high)))


def test_tilewise_uses_each_tiles_own_percentiles(rng):
    image = _camera_like(rng, (40, 40))
    image[:, :, 20:] *= 3
    config = PercentileNormalization(clip=True)
    left, right = image[:, :, :20], image[:, :, 20:]
    for tile in (left, right):
        low, high = percentile_statistics(tile, config)
        assert np.array_equal(normalize_tilewise(tile, config), normalize(tile, low, high, True))
    whole = normalize_tilewise(image, config)
    assert not np.allclose(whole[:, :, 20:], normalize_tilewise(right, config))


def test_config_validation_and_round_trip():
    config = PercentileNormalization(low=0.5, high=99.0, mode="tile")
    assert PercentileNormalization.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError):
        PercentileNormalization(low=50.0, high=10.0)
    with pytest.raises(ConfigError):
        PercentileNormalization(mode="local")
    with pytest.raises(DataError, match="channel axis"):
        percentile_statistics(np.zeros((5,)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_nan_or_infinite_pixel_stops_normalization(bad):
    image = np.arange(64, dtype=np.float32).reshape(1, 8, 8)
    image[0, 2, 3] = bad
    with pytest.raises(DataError, match=r"1 of 64 pixel\(s\) of an image of shape \(1, 8, 8\) "
                                        r"are NaN or infinite once normalized") as caught:
        normalize(image, [0.0], [63.0])
    assert "Remove NaNs" in caught.value.problems[0]
    with pytest.raises(DataError, match="64 of 64 pixel"):
        normalize(np.ones((1, 8, 8)), [np.nan], [1.0])


def test_one_infinite_pixel_stops_prediction_instead_of_blanking_its_neighbourhood():
    import torch

    from microseg.models import ModelConfig, TrainedModel, build_model

    torch.manual_seed(0)
    config = ModelConfig(channels=(4, 8), strides=(2,), num_res_units=0)
    model = TrainedModel.from_network(build_model(config).eval(), config)
    image = np.random.default_rng(0).normal(100, 10, (1, 64, 64)).astype(np.float32)
    assert np.isfinite(model.predict(image, device="cpu")).all()
    image[0, 30, 30] = np.inf
    low, high = model.normalization_statistics(image)
    assert np.isfinite(low).all() and np.isfinite(high).all(), "the percentiles miss the pixel"
    with pytest.raises(DataError, match="1 of 4096 pixel"):
        model.predict(image, device="cpu")
