import json
import math

import numpy as np
import pytest
from scipy import ndimage

from microseg.data.synthetic import (
    SyntheticConfig,
    domain_config,
    synthetic_sample,
    write_synthetic_dataset,
)
from microseg.errors import ConfigError, OutputExistsError
from microseg.io import read_image, read_label

SHAPES = [(96, 96), (24, 48, 48)]


@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "3d"])
def test_same_seed_same_arrays_other_seed_other_arrays(shape):
    image, label = synthetic_sample(shape, seed=7)
    again_image, again_label = synthetic_sample(shape, seed=7)
    other_image, other_label = synthetic_sample(shape, seed=8)
    assert np.array_equal(image, again_image) and np.array_equal(label, again_label)
    assert not np.array_equal(image, other_image)
    assert not np.array_equal(label, other_label)


@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "3d"])
def test_shapes_dtypes_and_contiguous_connected_ids(shape):
    image, label = synthetic_sample(shape, seed=1)
    assert image.shape == (1, *shape) and image.dtype == np.uint16
    assert label.shape == shape and label.dtype == np.int32
    ids = np.unique(label)
    assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, label.max() + 1))
    assert label.max() >= 5
    for object_id in ids[1:]:
        assert ndimage.label(label == object_id)[1] == 1, f"object {object_id} is in pieces"


@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "3d"])
def test_image_is_brighter_inside_objects(shape):
    image, label = synthetic_sample(shape, seed=2)
    inside = image[0][label > 0].astype(float).mean()
    outside = image[0][label == 0].astype(float).mean()
    assert inside > outside + 5 * image[0][label == 0].std() / math.sqrt(10)
    per_object = ndimage.mean(image[0].astype(float), label, np.arange(1, label.max() + 1))
    assert np.mean(per_object > outside) > 0.95


def test_some_objects_touch():
    _, label = synthetic_sample((128, 128), SyntheticConfig(density=0.5), seed=0)
    left, right = label[:, :-1], label[:, 1:]
    assert np.sum((left > 0) & (right > 0) & (left != right)) > 0


def test_photon_count_gives_the_documented_snr():
    config = SyntheticConfig(snr=7.0, read_noise=3.0, background_level=0.2)
    signal = config.photons_per_brightness
    assert signal / math.sqrt(signal * 1.2 + 9.0) == pytest.approx(7.0, rel=1e-12)


def _appearance(config, seed):
    """Object area, SNR, background unevenness and photon-transfer gain, measured from pixels."""
    image, label = synthetic_sample((192, 192), config, seed=seed)
    grey = image[0].astype(float)
    far = ndimage.distance_transform_edt(label == 0) > 6
    core = ndimage.binary_erosion(label > 0, iterations=2)
    contrast = grey[core].mean() - grey[far].mean()
    smooth_background = ndimage.gaussian_filter(grey, 8)[far]
    return {
        "area": np.bincount(label.ravel())[1:].mean(),
        "snr": contrast / math.sqrt(_noise_variance(grey, core)),
        "unevenness": smooth_background.std() / contrast,
        "gain": _noise_variance(grey, far) / (grey[far].mean() - config.offset),
    }


def _noise_variance(grey, mask):
    """Pixel noise variance where ``mask`` holds: horizontal neighbours differ by twice it."""
    return np.var(np.diff(grey, axis=1)[mask[:, 1:] & mask[:, :-1]]) / 2


def _mean(rows, key):
    return float(np.mean([row[key] for row in rows]))


def test_target_domain_shifts_in_the_documented_direction():
    source = [_appearance(domain_config("source"), seed) for seed in range(3)]
    target = [_appearance(domain_config("target"), seed) for seed in range(3)]
    assert _mean(target, "area") > 1.8 * _mean(source, "area")
    assert _mean(target, "snr") < 0.6 * _mean(source, "snr")
    assert _mean(target, "unevenness") > 2.0 * _mean(source, "unevenness")
    assert _mean(target, "gain") > 2.0 * _mean(source, "gain")


def test_domain_presets_and_validation():
    target = domain_config("target")
    assert target.snr < SyntheticConfig().snr and target.radius_range[0] > 5.0
    assert SyntheticConfig.from_dict(target.to_dict()) == target
    with pytest.raises(ConfigError, match="unknown synthetic domain"):
        domain_config("other")
    with pytest.raises(ConfigError, match="radius_range"):
        SyntheticConfig(radius_range=(9.0, 5.0))
    with pytest.raises(ConfigError, match="snr"):
        SyntheticConfig(snr=0.0)
    with pytest.raises(ConfigError, match="shape"):
        synthetic_sample((4, 64))


def test_written_dataset_reads_back_as_generated(tmp_path):
    out = write_synthetic_dataset(tmp_path / "data", n_images=3, shape=(16, 32, 32), seed=5,
                                  domain="target")
    stems = sorted(p.stem for p in (out / "images").iterdir())
    assert stems == ["synthetic_000", "synthetic_001", "synthetic_002"]
    assert sorted(p.stem for p in (out / "labels").iterdir()) == stems
    for i, stem in enumerate(stems):
        image, label = synthetic_sample((16, 32, 32), domain_config("target"), seed=(5, i))
        assert np.array_equal(read_image(out / "images" / f"{stem}.tif"), image)
        assert np.array_equal(read_label(out / "labels" / f"{stem}.tif", ndim=3), label)
    record = json.loads((out / "synthetic.json").read_text())
    assert record["domain"] == "target" and record["shape"] == [16, 32, 32]
    assert SyntheticConfig.from_dict(record["config"]) == domain_config("target")


def test_dataset_refuses_a_folder_with_files_and_ambiguous_arguments(tmp_path):
    (tmp_path / "keep.txt").write_text("earlier results")
    with pytest.raises(OutputExistsError):
        write_synthetic_dataset(tmp_path, n_images=1, shape=(32, 32))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    with pytest.raises(ConfigError, match="not both"):
        write_synthetic_dataset(tmp_path / "new", n_images=1, shape=(32, 32), domain="target",
                                config=SyntheticConfig())
