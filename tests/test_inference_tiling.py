"""Tiled prediction: stitched tiles equal the whole-image prediction for networks with global norms."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from microseg.errors import ConfigError, DataError
from microseg.inference.tiling import (
    BORDERS,
    axis_windows,
    blending_weights,
    predict_tiled,
    predict_whole,
    predict_windows,
    read_window,
    tile_grid,
    window_layout,
)
from microseg.models import ModelConfig, build_model, set_renorm_limits

NUMPY_PAD_MODES = {
    "reflect": "reflect",
    "symmetric": "symmetric",
    "replicate": "edge",
    "constant": "constant",
    "wrap": "wrap",
}


def unet(ndim: int, norm: str, num_res_units: int, seed: int = 0) -> nn.Module:
    """Tiny MONAI UNet with non-trivial running statistics (train-mode forwards on shifted data)."""
    torch.manual_seed(seed)
    config = ModelConfig(
        ndim=ndim, channels=(4, 8, 16), strides=(2, 2), num_res_units=num_res_units, norm=norm
    )
    model = build_model(config)
    set_renorm_limits(model, 3.0, 5.0)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 1, *(16,) * ndim) * 2.0 + 0.5)
    return model.eval()


def whole_reference(
    model: nn.Module,
    image: np.ndarray,
    halo: int,
    mode: str,
    divisor: int = 4,
    border: str = "inside",
) -> np.ndarray:
    """Independent reference: np.pad to the divisor (and by the halo with border="extend"), one
    forward pass, crop."""
    spatial = image.shape[1:]
    halo = halo if border == "extend" else 0
    pads = [(0, 0)] + [(halo, halo + math.ceil(n / divisor) * divisor - n) for n in spatial]
    padded = np.pad(image, pads, mode=NUMPY_PAD_MODES[mode])
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        logits = model(torch.from_numpy(padded[None]).to(dtype))[0].numpy()
    return logits[(slice(None), *(slice(halo, halo + n) for n in spatial))]


def assert_same_in_float64(stitched: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to the order of float64 sums (convolution kernels vectorize differently at
    different window offsets): 1e-12, where a seam from too small a halo is above 1e-6."""
    assert stitched.dtype == np.float64
    np.testing.assert_allclose(stitched, expected, rtol=0, atol=1e-12)


@pytest.fixture
def image2d(rng):
    image = rng.normal(size=(1, 67, 93)).astype(np.float32)
    image[:, 10:30, 20:60] += 2.0
    return image


@pytest.mark.parametrize("mode", sorted(NUMPY_PAD_MODES))
@pytest.mark.parametrize("pad", [2, 7, 13])
def test_read_window_equals_numpy_pad_also_beyond_the_image_size(mode, pad, rng):
    image = rng.integers(0, 100, size=(2, 5, 4))
    expected = np.pad(image, [(0, 0), (pad, pad + 3), (pad + 1, pad)], mode=NUMPY_PAD_MODES[mode])
    window = read_window(image, [-pad, -pad - 1], [5 + pad + 3, 4 + pad], mode)
    np.testing.assert_array_equal(window, expected)


def test_read_window_reads_only_the_inside_part_of_an_array_like(rng):
    image = rng.normal(size=(1, 30, 30))
    requested = []

    class Recorder:
        shape = image.shape

        def __getitem__(self, key):
            requested.append(key)
            return image[key]

    window = read_window(Recorder(), [10, -3], [20, 7], "reflect")
    np.testing.assert_array_equal(
        window, np.pad(image, [(0, 0), (0, 0), (3, 0)], mode="reflect")[:, 10:20, 0:10]
    )
    assert requested == [(slice(None), slice(10, 20), slice(0, 7))]


@pytest.mark.parametrize(
    "shape, tile", [((67, 93), (16, 32)), ((5, 7), (8, 8)), ((45, 33, 51), (16, 16, 20))]
)
def test_tile_grid_covers_every_pixel_exactly_once(shape, tile):
    count = np.zeros(shape, dtype=int)
    for block in tile_grid(shape, tile):
        count[block] += 1
    np.testing.assert_array_equal(count, 1)


def test_tile_grid_with_a_step_overlaps_and_covers_everything():
    count = np.zeros((67, 93), dtype=int)
    for block in tile_grid((67, 93), 32, step=16):
        count[block] += 1
    assert count.min() >= 1 and count.max() == 4


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("num_res_units", [0, 1, 2])
@pytest.mark.parametrize("norm", ["batch", "batchrenorm", "none"])
def test_stitched_equals_whole_image_in_2d(norm, num_res_units, border, image2d):
    model = unet(2, norm, num_res_units)
    expected = whole_reference(model, image2d, 24, "reflect", border=border)
    for tile, batch_size in [(16, 1), (24, 3), ((8, 36), 3), (64, 1)]:
        stitched = predict_tiled(
            model, image2d, tile, 24, batch_size=batch_size, activation=None, border=border
        )
        assert stitched.dtype == np.float32 and stitched.shape == expected.shape
        assert np.abs(stitched - expected).max() <= 1e-5, (tile, batch_size)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("num_res_units", [0, 2])
@pytest.mark.parametrize("norm", ["batch", "batchrenorm", "none"])
def test_stitched_equals_whole_image_exactly_in_float64(norm, num_res_units, border, image2d):
    model = unet(2, norm, num_res_units).double()
    image = image2d.astype(np.float64)
    expected = whole_reference(model, image, 24, "reflect", border=border)
    for tile, batch_size in [(16, 3), (28, 1)]:
        stitched = predict_tiled(
            model, image, tile, 24, batch_size=batch_size, activation=None, border=border
        )
        assert stitched.dtype == np.float64
        assert_same_in_float64(stitched, expected)
    whole = predict_whole(model, image, halo=24, activation=None, border=border)
    np.testing.assert_array_equal(whole, expected)


@pytest.mark.parametrize(
    "norm, num_res_units, halo", [("batch", 1, 16), ("batchrenorm", 0, 12), ("none", 1, 16)]
)
@pytest.mark.parametrize("border", BORDERS)
def test_stitched_equals_whole_volume_in_3d(norm, num_res_units, halo, border, rng):
    """Halos are the measured receptive-field radii (13 and 10) rounded up to the divisor 4."""
    model = unet(3, norm, num_res_units).double()
    image = rng.normal(size=(1, 45, 33, 51))
    expected = whole_reference(model, image, halo, "reflect", border=border)
    for tile, batch_size in [((24, 16, 28), 3), ((32, 20, 52), 1)]:
        stitched = predict_tiled(
            model, image, tile, halo, batch_size=batch_size, activation=None, border=border
        )
        assert_same_in_float64(stitched, expected)
    stitched32 = predict_tiled(
        model.float(), image.astype(np.float32), 24, halo, batch_size=3, activation=None,
        border=border,
    )
    assert np.abs(stitched32 - expected).max() <= 1e-5


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("mode", sorted(NUMPY_PAD_MODES))
def test_every_pad_mode_stitches_exactly(mode, border, rng):
    model = unet(2, "batch", 1).double()
    image = rng.normal(size=(2, 61, 70))
    model = nn.Sequential(nn.Conv2d(2, 1, 1).double(), model)
    model.size_divisor = 4
    expected = whole_reference(model, image, 24, mode, border=border)
    stitched = predict_tiled(
        model, image, 8, 24, pad_mode=mode, batch_size=2, activation=None, border=border
    )
    assert_same_in_float64(stitched, expected)


def test_instance_norm_cannot_stitch_seamlessly(image2d):
    model = unet(2, "instance", 1)
    expected = whole_reference(model, image2d, 24, "reflect")
    stitched = predict_tiled(model, image2d, 16, 24, activation=None)
    assert np.abs(stitched - expected).max() > 0.05


def test_a_halo_below_the_receptive_field_leaves_seams(image2d):
    model = unet(2, "batch", 2).double()
    image = image2d.astype(np.float64)
    expected = whole_reference(model, image, 24, "reflect", border="extend")
    too_small = whole_reference(model, image, 16, "reflect", border="extend")
    stitched = predict_tiled(model, image, 16, 16, activation=None, border="extend")
    assert np.abs(stitched - expected).max() > 1e-6
    assert np.abs(stitched - too_small).max() > 1e-6, "seams, not only a different border"


def test_softmax_and_sigmoid_outputs(image2d):
    model = unet(2, "batch", 0)
    logits = predict_tiled(model, image2d, 32, 12, activation=None)
    probabilities = predict_tiled(model, image2d, 32, 12)
    expected = torch.from_numpy(logits).softmax(0).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-6)
    sigmoid = predict_tiled(model, image2d, 32, 12, activation="sigmoid")
    np.testing.assert_allclose(sigmoid, 1 / (1 + np.exp(-logits.astype(np.float64))), atol=1e-6)


def test_zarr_in_and_out_equal_numpy(image2d, tmp_path):
    import zarr

    model = unet(2, "batchrenorm", 1)
    source = zarr.create_array(
        tmp_path / "image.zarr", shape=image2d.shape, chunks=(1, 16, 16), dtype="float32"
    )
    source[:] = image2d
    target = zarr.create_array(
        tmp_path / "out.zarr", shape=(3, 67, 93), chunks=(3, 32, 32), dtype="float32"
    )
    returned = predict_tiled(model, source, 32, 24, out=target)
    assert returned is target
    np.testing.assert_array_equal(target[:], predict_tiled(model, image2d, 32, 24))


def test_integer_images_are_predicted_as_floats(rng):
    model = unet(2, "none", 0)
    image = rng.integers(0, 4000, size=(1, 40, 52)).astype(np.uint16)
    stitched = predict_tiled(model, image, 16, 12, activation=None)
    expected = whole_reference(model, image.astype(np.float32), 12, "reflect")
    assert np.abs(stitched - expected).max() <= 1e-5 * np.abs(expected).max()


def test_model_mode_is_restored_and_inputs_unchanged(image2d):
    model = unet(2, "batch", 0).train()
    copy = image2d.copy()
    predict_tiled(model, image2d, 32, 12)
    assert model.training
    np.testing.assert_array_equal(image2d, copy)


def test_tile_and_halo_are_aligned_to_the_divisor_with_a_message(image2d, caplog):
    model = unet(2, "batch", 2)
    with caplog.at_level(logging.INFO, logger="microseg.inference.tiling"):
        stitched = predict_tiled(model, image2d, 18, 21, activation=None)
    assert "rounded to (16, 16) and (24, 24)" in caplog.text
    assert np.abs(stitched - whole_reference(model, image2d, 24, "reflect")).max() <= 1e-5


@pytest.mark.parametrize("border", BORDERS)
def test_tiny_image_smaller_than_the_halo(border, rng):
    model = unet(2, "batch", 1).double()
    image = rng.normal(size=(1, 3, 5))
    stitched = predict_tiled(model, image, 16, 24, activation=None, border=border)
    expected = whole_reference(model, image, 24, "reflect", border=border)
    assert_same_in_float64(stitched, expected)


def test_a_halo_below_the_receptive_field_leaves_seams_inside_the_image_too(image2d):
    model = unet(2, "batch", 2).double()
    image = image2d.astype(np.float64)
    stitched = predict_tiled(model, image, 16, 8, activation=None)
    assert np.abs(stitched - whole_reference(model, image, 0, "reflect")).max() > 1e-6


def brute_force_window_count(keep: int, window: int, halo: int, low: int, high: int) -> int:
    """Fewest windows of ``window`` pixels in [low, high) that keep [0, keep) with halo context,
    found by trying every start position greedily (starts on integers, no divisor)."""
    if high - low <= window:
        return 1
    count, covered, start = 1, low + window - (halo if low + window < high else 0), low
    while covered < keep:
        start = min(covered - halo, high - window)
        count += 1
        covered = start + window - (halo if start + window < high else 0)
    return count


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize(
    "size, window, halo, divisor",
    [(128, 96, 24, 4), (256, 96, 24, 8), (4096, 256, 24, 8), (67, 40, 8, 4), (5, 16, 4, 4),
     (97, 12, 4, 1), (300, 60, 12, 4), (96, 96, 24, 4), (97, 96, 24, 4)],
)
def test_axis_windows_partition_the_axis_with_halo_context(size, window, halo, divisor, border):
    padded = math.ceil(size / divisor) * divisor
    low, high = (0, padded) if border == "inside" else (-halo, padded + halo)
    windows = axis_windows(0, size, size, window, halo, divisor, border)
    kept = np.zeros(size, dtype=int)
    for start, length, keep_start, keep_stop in windows:
        assert start % divisor == 0 and length % divisor == 0
        assert low <= start and start + length <= high
        assert keep_start < keep_stop
        assert keep_start - start >= (0 if start == low else halo)
        assert start + length - keep_stop >= (0 if start + length == high else halo)
        kept[keep_start:keep_stop] += 1
    np.testing.assert_array_equal(kept, 1)
    lengths = {length for _, length, _, _ in windows}
    assert len(lengths) == 1
    if len(windows) > 1:
        shortest = lengths.pop()
        assert shortest <= window
        if shortest - divisor > 2 * halo:  # one divisor shorter would need more windows
            shorter = axis_windows(0, size, size, shortest - divisor, halo, divisor, border)
            assert len(shorter) > len(windows)
    if divisor == 1:
        assert len(windows) == brute_force_window_count(size, window, halo, low, high)


def test_windows_inside_the_image_need_fewer_network_inputs():
    """A 128³ volume, 96³ windows, halo 24: 2 per axis inside the image (each shortened to 88,
    all that 2 windows need), 3 when extended."""
    inside = window_layout((128, 128, 128), 48, 24, divisor=8)
    extended = window_layout((128, 128, 128), 48, 24, divisor=8, border="extend")
    assert len(inside) == 8 and len(extended) == 27
    sides = {tuple(u - lo for u, lo in zip(w.upper, w.lower, strict=True)) for w in inside}
    assert sides == {(88, 88, 88)}


def test_bad_inputs_raise_readable_errors(image2d):
    model = unet(2, "batch", 0)
    with pytest.raises(DataError, match=r"channel-first .* image\[None\]"):
        predict_tiled(model, image2d[0], 32, 8)
    with pytest.raises(ConfigError, match="pad_mode 'mirror'"):
        predict_tiled(model, image2d, 32, 8, pad_mode="mirror")
    with pytest.raises(ConfigError, match="blending 'cosine'"):
        predict_tiled(model, image2d, 32, 8, blending="cosine")
    with pytest.raises(ConfigError, match="tile_shape"):
        predict_tiled(model, image2d, (32, 32, 32), 8)


class ConstantModel(nn.Module):
    """Ignores its input: logits are the same constants everywhere."""

    def forward(self, x):
        values = torch.tensor([0.5, -1.0, 2.0], dtype=x.dtype).view(1, 3, *(1,) * (x.dim() - 2))
        return values.expand(x.shape[0], 3, *x.shape[2:]).clone()


class OnesModel(nn.Module):
    def forward(self, x):
        return torch.ones_like(x[:, :1])


@pytest.mark.parametrize("blending", ["gaussian", "linear"])
def test_blending_weights_sum_to_one_and_constant_models_stay_exact(blending, image2d):
    ones = predict_tiled(OnesModel(), image2d, 24, 8, blending=blending, activation=None)
    np.testing.assert_allclose(ones, 1.0, rtol=0, atol=1e-6)
    constant = predict_tiled(ConstantModel(), image2d, 24, 8, blending=blending, activation=None)
    np.testing.assert_allclose(
        constant, np.array([0.5, -1.0, 2.0]).reshape(3, 1, 1) * np.ones((1, 67, 93)), atol=1e-6
    )


def test_blending_a_pointwise_model_equals_the_whole_image(rng):
    torch.manual_seed(0)
    model = nn.Conv3d(2, 3, 1).double()
    image = rng.normal(size=(2, 11, 17, 23))
    blended = predict_tiled(model, image, 8, 0, blending="gaussian", activation=None)
    np.testing.assert_allclose(blended, predict_whole(model, image, activation=None), atol=1e-12)


def test_blending_into_a_preallocated_array_zero_fills_it_first(image2d):
    out = np.full((1, 67, 93), 7.0, dtype=np.float32)
    predict_tiled(OnesModel(), image2d, 24, 8, blending="linear", activation=None, out=out)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_blending_windows_are_positive_and_peak_in_the_centre():
    for kind in ("gaussian", "linear"):
        weights = blending_weights(16, kind)
        assert weights.min() > 0 and np.argmax(weights) in (7, 8)
        np.testing.assert_allclose(weights, weights[::-1])


class OutOfMemoryAbove(nn.Module):
    """Wraps a model; raises CUDA out-of-memory for batches or tiles above a limit."""

    def __init__(self, model, max_batch=None, max_side=None):
        super().__init__()
        self.model, self.max_batch, self.max_side = model, max_batch, max_side
        self.size_divisor = 4
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        if (self.max_batch and x.shape[0] > self.max_batch) or (
            self.max_side and max(x.shape[2:]) > self.max_side
        ):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.model(x)


def test_out_of_memory_halves_the_batch_and_stays_exact(image2d, caplog):
    model = unet(2, "batch", 2).double()
    image = image2d.astype(np.float64)
    flaky = OutOfMemoryAbove(model, max_batch=1)
    with caplog.at_level(logging.WARNING, logger="microseg.inference.tiling"):
        stitched = predict_tiled(flaky, image, 16, 24, batch_size=4, activation=None)
    assert_same_in_float64(stitched, whole_reference(model, image, 24, "reflect"))
    assert "4 tiles per batch; retrying with 2" in caplog.text and "retrying with 1" in caplog.text
    assert {shape[0] for shape in flaky.calls} == {4, 2, 1}


def test_out_of_memory_with_one_tile_halves_the_tile_and_stays_exact(image2d, caplog):
    model = unet(2, "batch", 2).double()
    image = image2d.astype(np.float64)
    flaky = OutOfMemoryAbove(model, max_side=2 * 24 + 16)
    with caplog.at_level(logging.WARNING, logger="microseg.inference.tiling"):
        stitched = predict_tiled(flaky, image, 64, 24, batch_size=2, activation=None)
    assert_same_in_float64(stitched, whole_reference(model, image, 24, "reflect"))
    assert "one tile of inner shape (64, 64); retrying with (32, 32)" in caplog.text
    assert max(flaky.calls[-1][2:]) == 64


def test_out_of_memory_below_the_smallest_tile_is_raised(image2d):
    flaky = OutOfMemoryAbove(unet(2, "batch", 0), max_side=8)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="does not fit in GPU memory even alone"):
        predict_tiled(flaky, image2d, 16, 4, batch_size=2)


def test_predict_windows_equals_a_direct_forward(rng):
    model = unet(3, "batchrenorm", 1)
    windows = [rng.normal(size=(1, 8, 12, 16)).astype(np.float32) for _ in range(3)]
    with torch.no_grad():
        expected = model(torch.from_numpy(np.stack(windows))).softmax(1).numpy()
    np.testing.assert_allclose(predict_windows(model, windows), expected, atol=1e-6)
