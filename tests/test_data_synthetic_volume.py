"""Large synthetic volumes written chunk by chunk: exact, deterministic, bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from microseg.data import synthetic_volume as sv
from microseg.data.synthetic import SyntheticConfig, domain_config
from microseg.errors import ConfigError, OutputExistsError


def _whole(shape, config=None, seed=0):
    return sv.synthetic_volume_block(shape, tuple(slice(0, s) for s in shape), config, seed)


def _read(path):
    import zarr

    return np.asarray(zarr.open_array(str(path), mode="r")[...])


@pytest.mark.parametrize("shape, chunks", [((20, 48, 40), (8, 24, 17)), ((70, 90), (32, 25))])
def test_chunked_writing_equals_whole_volume_generation(tmp_path, shape, chunks):
    write = sv.write_synthetic_volume(tmp_path / "v.zarr", shape, chunks, seed=3,
                                      labels_path=tmp_path / "l.zarr")
    image, labels = _whole(shape, domain_config("source"), seed=3)
    assert write == tmp_path / "v.zarr"
    np.testing.assert_array_equal(_read(tmp_path / "v.zarr"), image)
    np.testing.assert_array_equal(_read(tmp_path / "l.zarr"), labels)
    assert image.shape == (1, *shape) and image.dtype == np.uint16
    assert labels.dtype == np.int32 and labels.max() > 0


def test_any_block_equals_the_same_region_of_the_whole_volume():
    shape = (24, 40, 40)
    image, labels = _whole(shape, seed=5)
    box = (slice(3, 17), slice(11, 40), slice(0, 9))
    part_image, part_labels = sv.synthetic_volume_block(shape, box, seed=5)
    np.testing.assert_array_equal(part_image, image[(slice(None), *box)])
    np.testing.assert_array_equal(part_labels, labels[box])


def test_deterministic_by_seed():
    first, first_labels = _whole((16, 32, 32), seed=1)
    again, again_labels = _whole((16, 32, 32), seed=1)
    other, other_labels = _whole((16, 32, 32), seed=2)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first_labels, again_labels)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first_labels, other_labels)


def test_looks_like_the_in_memory_generator():
    """Coverage near ``density``, objects brighter than background, sizes as configured."""
    from scipy import ndimage

    config = SyntheticConfig()
    image, labels = _whole((32, 96, 96), config, seed=0)
    covered = (labels > 0).mean()
    assert 0.2 < covered < 0.5
    inside = image[0][labels > 0].mean()
    outside = image[0][labels == 0].mean()
    assert inside > outside + 20
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    interior = ndimage.find_objects(labels)
    whole_objects = [sizes[i] for i, obj_id in enumerate(ids)
                     if all(s.start > 0 and s.stop < n
                            for s, n in zip(interior[obj_id - 1], labels.shape, strict=True))]
    largest_volume = 4 / 3 * np.pi * config.radius_range[1] ** 3
    assert np.median(whole_objects) < largest_volume
    assert np.median(whole_objects) > 4 / 3 * np.pi * (config.radius_range[0] / 2) ** 3


def test_objects_cross_chunk_borders_intact(tmp_path):
    """An object cut by a chunk border has the same id and voxels on both sides."""
    shape, chunks = (16, 64, 64), (16, 32, 32)
    sv.write_synthetic_volume(tmp_path / "v.zarr", shape, chunks, labels_path=tmp_path / "l.zarr")
    labels = _read(tmp_path / "l.zarr")
    left, right = labels[:, :, 31], labels[:, :, 32]
    crossing = set(np.unique(left[left > 0])) & set(np.unique(right[right > 0]))
    assert len(crossing) >= 2
    _, whole = _whole(shape)
    np.testing.assert_array_equal(labels, whole)


def test_memory_is_bounded_by_the_chunk_not_the_volume(tmp_path, monkeypatch):
    chunks = (8, 48, 48)
    boxes = []
    original = sv.synthetic_volume_block

    def recording(shape, box, config=None, seed=0):
        boxes.append(tuple(s.stop - s.start for s in box))
        return original(shape, box, config, seed)

    monkeypatch.setattr(sv, "synthetic_volume_block", recording)
    original((8, 48, 48), (slice(0, 8),) * 3)  # imports and caches outside the measurement
    peaks = {}
    for name, shape in (("small", (8, 48, 48)), ("large", (8, 192, 192))):
        tracemalloc.start()
        sv.write_synthetic_volume(tmp_path / f"{name}.zarr", shape, chunks,
                                  labels_path=tmp_path / f"{name}_labels.zarr")
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert len(boxes) == 1 + 16
    assert all(b[i] <= chunks[i] for b in boxes for i in range(3))
    assert peaks["large"] < 1.3 * peaks["small"], peaks  # 16x the voxels, the same memory


def test_hashed_noise_is_standard_normal_and_independent_of_the_region():
    lower, upper = np.array([0, 0, 0]), np.array([20, 50, 100])
    noise = sv.hashed_normal(lower, upper, seed=0, stream=0)
    assert abs(noise.mean()) < 0.02 and abs(noise.std() - 1.0) < 0.02
    part = sv.hashed_normal(np.array([5, -3, 40]), np.array([9, 10, 60]), seed=0, stream=0)
    np.testing.assert_array_equal(part[:, 3:], noise[5:9, 0:10, 40:60])
    other_stream = sv.hashed_normal(lower, upper, seed=0, stream=2)
    assert abs(np.corrcoef(noise.ravel(), other_stream.ravel())[0, 1]) < 0.02


def test_random_rotation_is_a_rotation():
    rng = np.random.default_rng(0)
    for ndim in (2, 3):
        rotation = sv.random_rotation(ndim, rng)
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(ndim), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0)


def test_written_arrays_carry_axes_for_microseg_io(tmp_path):
    from microseg.io import open_image

    sv.write_synthetic_volume(tmp_path / "v.zarr", (16, 24, 24), (8, 8, 8),
                              labels_path=tmp_path / "l.zarr")
    _, image_axes = open_image(tmp_path / "v.zarr")
    _, label_axes = open_image(tmp_path / "l.zarr")
    assert (image_axes, label_axes) == ("CZYX", "ZYX")


def test_refuses_existing_output_and_bad_arguments(tmp_path):
    sv.write_synthetic_volume(tmp_path / "v.zarr", (8, 8, 8), (8, 8, 8))
    with pytest.raises(OutputExistsError, match="already exists"):
        sv.write_synthetic_volume(tmp_path / "v.zarr", (8, 8, 8), (8, 8, 8))
    with pytest.raises(ConfigError, match="every side"):
        sv.write_synthetic_volume(tmp_path / "w.zarr", (4, 64, 64), (4, 8, 8))
    with pytest.raises(ConfigError, match="chunks"):
        sv.write_synthetic_volume(tmp_path / "w.zarr", (16, 16, 16), (8, 8))
    with pytest.raises(ConfigError, match="domain"):
        sv.write_synthetic_volume(tmp_path / "w.zarr", (16, 16, 16), (8, 8, 8), domain="other")
