import numpy as np
import pytest

from microseg.data.dataset import Sample, load_subset
from microseg.data.split import SplitManifest, manifest_entry
from microseg.data.synthetic import synthetic_sample
from microseg.errors import DataError
from microseg.io import write_image
from microseg.transforms.normalization import PercentileNormalization
from microseg.transforms.targets import labels_to_target


def _write(folder, stem, shape, seed):
    image, label = synthetic_sample(shape, seed=seed)
    spatial = "ZYX" if len(shape) == 3 else "YX"
    write_image(folder / "images" / f"{stem}.tif", image, axes="C" + spatial)
    write_image(folder / "labels" / f"{stem}.tif", label, axes=spatial)
    return image, label


def _manifest(folder, entries, ndim=2, task="instance", clip=False):
    return SplitManifest(
        data_dir=str(folder), ndim=ndim, axes="CZYX" if ndim == 3 else "CYX", n_channels=1,
        task=task, n_classes=3, normalization=PercentileNormalization(clip=clip).to_dict(),
        **entries)


def test_load_subset_reads_crops_normalizes_and_builds_targets(tmp_path):
    image, label = _write(tmp_path, "a", (40, 60), seed=1)
    low, high = [float(image.min()) + 3.0], [float(image.max()) - 20.0]
    region = (slice(5, 30), slice(10, 50))
    entry = manifest_entry("a", tmp_path / "images" / "a.tif", tmp_path / "labels" / "a.tif",
                           low, high, region)
    unlabelled = manifest_entry("a", tmp_path / "images" / "a.tif", None, low, high)
    manifest = _manifest(tmp_path, {"train": [entry], "test": [unlabelled]})

    (sample,) = load_subset(manifest, "train")
    expected = (image[:, 5:30, 10:50].astype(np.float64) - low[0]) / (high[0] - low[0])
    assert isinstance(sample, Sample) and sample.stem == "a"
    assert sample.image.dtype == np.float32 and sample.image.shape == (1, 25, 40)
    np.testing.assert_allclose(sample.image, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(sample.label, label[5:30, 10:50])
    assert sample.label.dtype == np.int32
    # The target is built from the cropped label: the crop edge is not a boundary.
    np.testing.assert_array_equal(sample.target, labels_to_target(label[5:30, 10:50], "instance"))

    (whole,) = load_subset(manifest, "test")
    assert whole.image.shape == (1, 40, 60) and whole.label is None and whole.target is None
    assert load_subset(manifest, "val") == []


def test_load_subset_in_3d_with_clipping_and_binary_task(tmp_path):
    image, label = _write(tmp_path, "v", (10, 24, 24), seed=2)
    low, high = np.percentile(image[0].astype(np.float64), [1.0, 99.8])
    entry = manifest_entry("v", tmp_path / "images" / "v.tif", tmp_path / "labels" / "v.tif",
                           [low], [high])
    manifest = _manifest(tmp_path, {"val": [entry]}, ndim=3, task="binary", clip=True)
    (sample,) = load_subset(manifest, "val")
    expected = np.clip((image.astype(np.float64) - low) / (high - low), 0, 1)
    np.testing.assert_allclose(sample.image, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(sample.target, (label > 0).astype(np.uint8))


def test_a_missing_file_is_named(tmp_path):
    entry = manifest_entry("gone", tmp_path / "images" / "gone.tif", None, [0.0], [1.0])
    with pytest.raises(DataError, match="gone.tif"):
        load_subset(_manifest(tmp_path, {"train": [entry]}), "train")


def test_nan_pixels_in_a_manifest_image_stop_loading_naming_the_file(tmp_path):
    image, _ = _write(tmp_path, "a", (24, 24), seed=2)
    entry = manifest_entry("a", tmp_path / "images" / "a.tif", tmp_path / "labels" / "a.tif",
                           [float(image.min())], [float(image.max())])
    (sample,) = load_subset(_manifest(tmp_path, {"test": [entry]}), "test")
    assert np.isfinite(sample.image).all()
    spoiled = image.astype(np.float32)
    spoiled[0, 3, 4] = np.nan
    write_image(tmp_path / "images" / "a.tif", spoiled, axes="CYX", overwrite=True)
    with pytest.raises(DataError, match=r"a.tif: 1 NaN and 0 infinite pixel\(s\) of 576"):
        load_subset(_manifest(tmp_path, {"test": [entry]}), "test")


def test_nan_statistics_in_a_manifest_stop_loading_with_the_fix(tmp_path):
    _write(tmp_path, "a", (24, 24), seed=2)
    entry = manifest_entry("a", tmp_path / "images" / "a.tif", tmp_path / "labels" / "a.tif",
                           [float("nan")], [float("nan")])
    with pytest.raises(DataError, match="statistics in the split manifest are not finite.*"
                                        "overwrite=True"):
        load_subset(_manifest(tmp_path, {"test": [entry]}), "test")
