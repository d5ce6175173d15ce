"""Out-of-core prediction: equal to in-memory tiled prediction, resumable, lazy; instance
labels stitched across blocks equal to whole-image instances."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
import zarr

from microseg.errors import ConfigError, DataError, OutputExistsError
from microseg.inference.ooc import VolumeSource, predict_volume_to_zarr
from microseg.inference.tiling import predict_tiled, predict_whole
from microseg.models import ModelConfig, build_model
from microseg.transforms.normalization import (
    PercentileNormalization,
    normalize,
    percentile_statistics,
)
from test_inference_stitching import assert_same_objects, objects_cut_by_blocks

TILE, HALO = 24, 12  # the tiny U-Net's receptive-field radius is 10; halo 12 is a multiple of 4


def _tiny_model(ndim: int = 2, in_channels: int = 1) -> torch.nn.Module:
    """A tiny U-Net with non-trivial BatchNorm statistics, in eval mode."""
    config = ModelConfig(ndim=ndim, in_channels=in_channels, channels=(4, 8, 16), strides=(2, 2),
                         num_res_units=0, norm="batch", norm_momentum=0.5)
    model = build_model(config).train()
    with torch.no_grad():
        model(2.0 * torch.randn((2, in_channels) + (16,) * ndim) + 0.5)
    return model.eval()


def _image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.gamma(2.0, 300.0, size=shape) + 100).astype(np.uint16)


def _reference(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    low, high = percentile_statistics(image, PercentileNormalization())
    return predict_tiled(model, normalize(image, low, high), TILE, HALO, size_divisor=4)


@pytest.fixture(scope="module")
def model2d() -> torch.nn.Module:
    torch.manual_seed(0)
    return _tiny_model()


@pytest.fixture(scope="module")
def image2d() -> np.ndarray:
    return _image((1, 70, 90))


def test_tiff_volume_matches_in_memory_and_whole_image_prediction(tmp_path, model2d, image2d):
    path = tmp_path / "input" / "image.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, image2d[0])

    result = predict_volume_to_zarr(model2d, path, tmp_path / "out", TILE, HALO,
                                    output="both", scheduler="synchronous")

    found = zarr.open_array(str(tmp_path / "out" / "probabilities.zarr"), mode="r")[...]
    np.testing.assert_allclose(found, _reference(model2d, image2d), atol=1e-5, rtol=0)
    low, high = percentile_statistics(image2d, PercentileNormalization())
    whole = predict_whole(model2d, normalize(image2d, low, high), halo=HALO, size_divisor=4)
    np.testing.assert_allclose(found, whole, atol=1e-5, rtol=0)
    labels = zarr.open_array(str(tmp_path / "out" / "labels.zarr"), mode="r")[...]
    np.testing.assert_array_equal(labels, whole.argmax(axis=0))
    assert result["complete"] and result["blocks_total"] == result["blocks_predicted"] == 4
    assert result["low"] == pytest.approx(low.tolist())
    assert result["high"] == pytest.approx(high.tolist())
    assert not (tmp_path / "out" / "_INCOMPLETE").exists()
    assert not (tmp_path / "out" / "_progress").exists()
    assert json.loads((tmp_path / "out" / "prediction.json").read_text())["complete"] is True
    assert sorted(p.name for p in path.parent.iterdir()) == ["image.tif"]


def test_volume_extended_beyond_its_border_matches_predict_tiled_extended(tmp_path, model2d,
                                                                          image2d):
    result = predict_volume_to_zarr(model2d, image2d, tmp_path / "out", TILE, HALO,
                                    scheduler="synchronous", border="extend")
    found = zarr.open_array(result["probabilities"], mode="r")[...]
    low, high = percentile_statistics(image2d, PercentileNormalization())
    extended = predict_tiled(model2d, normalize(image2d, low, high), TILE, HALO, size_divisor=4,
                             border="extend")
    np.testing.assert_allclose(found, extended, atol=1e-5, rtol=0)
    inside = _reference(model2d, image2d)
    assert np.abs(found - inside).max() > 1e-3, "the border setting must reach the windows"


def test_compressed_tiff_and_zarr_give_the_same_3d_result(tmp_path):
    from microseg.io import write_image

    model = _tiny_model(ndim=3)
    volume = _image((1, 20, 44, 36), seed=3)
    tifffile.imwrite(tmp_path / "volume.tif", volume[0], compression="zlib", tile=(16, 16))
    write_image(tmp_path / "volume.zarr", volume, axes="CZYX")
    expected = _reference(model, volume)
    for name in ("volume.tif", "volume.zarr"):
        out = tmp_path / f"out-{name}"
        predict_volume_to_zarr(model, tmp_path / name, out, TILE, HALO, block_shape=(24, 24, 48))
        found = zarr.open_array(str(out / "probabilities.zarr"), mode="r")[...]
        np.testing.assert_allclose(found, expected, atol=1e-5, rtol=0)


def test_interrupted_prediction_resumes_and_equals_an_uninterrupted_run(tmp_path, model2d, image2d):
    calls = []

    def fail_after_two_batches(module, inputs):
        calls.append(inputs[0].shape[0])
        if len(calls) > 2:
            raise RuntimeError("simulated crash")

    hook = model2d.register_forward_pre_hook(fail_after_two_batches)
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            predict_volume_to_zarr(model2d, image2d, tmp_path / "out", TILE, HALO,
                                   scheduler="synchronous")
    finally:
        hook.remove()
    assert (tmp_path / "out" / "_INCOMPLETE").exists()
    finished = list((tmp_path / "out" / "_progress" / "blocks").iterdir())
    assert len(finished) == 1  # the probe for K, then one block of one batch; the next failed

    result = predict_volume_to_zarr(model2d, image2d, tmp_path / "out", TILE, HALO,
                                    scheduler="synchronous")

    assert result["resumed"] and result["blocks_predicted"] == result["blocks_total"] - 1
    found = zarr.open_array(str(tmp_path / "out" / "probabilities.zarr"), mode="r")[...]
    np.testing.assert_allclose(found, _reference(model2d, image2d), atol=1e-5, rtol=0)
    assert not (tmp_path / "out" / "_INCOMPLETE").exists()


def test_complete_or_foreign_outputs_are_refused(tmp_path, model2d, image2d):
    predict_volume_to_zarr(model2d, image2d, tmp_path / "out", TILE, HALO, scheduler="synchronous")
    with pytest.raises(OutputExistsError, match="complete prediction"):
        predict_volume_to_zarr(model2d, image2d, tmp_path / "out", TILE, HALO)
    result = predict_volume_to_zarr(model2d, image2d, tmp_path / "out", TILE, HALO, overwrite=True,
                                    output="labels", scheduler="synchronous")
    assert result["probabilities"] is None
    assert not (tmp_path / "out" / "probabilities.zarr").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not a microseg prediction"):
        predict_volume_to_zarr(model2d, image2d, tmp_path / "other", TILE, HALO, overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_unfinished_run_with_other_settings_is_refused(tmp_path, model2d, image2d):
    predict_volume_to_zarr(model2d, image2d, tmp_path / "out", TILE, HALO, scheduler="synchronous")
    (tmp_path / "out" / "_INCOMPLETE").write_text("")
    with pytest.raises(OutputExistsError, match="halo"):
        predict_volume_to_zarr(model2d, image2d, tmp_path / "out", 32, 16)


def test_bad_inputs_are_explained(tmp_path, model2d):
    with pytest.raises(DataError, match="2 channel"):
        predict_volume_to_zarr(model2d, _image((2, 40, 40)), tmp_path / "a", TILE, HALO)
    with pytest.raises(DataError, match="3D"):
        predict_volume_to_zarr(model2d, _image((8, 40, 40)), tmp_path / "b", TILE, HALO, axes="ZYX")
    with pytest.raises(ConfigError, match="twice the halo"):
        predict_volume_to_zarr(model2d, _image((1, 40, 40)), tmp_path / "c", 16, 12)
    assert not any(tmp_path.iterdir())


class _RecordingArray:
    """A (C, Y, X) array that records the size of every read."""

    def __init__(self, values: np.ndarray):
        self.values, self.shape, self.dtype, self.reads = values, values.shape, values.dtype, []

    def __getitem__(self, key):
        part = self.values[key]
        self.reads.append(part.size)
        return part


def test_no_read_is_larger_than_a_tile_window_or_the_statistics_sample(tmp_path, model2d):
    source = _RecordingArray(_image((1, 150, 170)))
    normalization = PercentileNormalization(max_samples=2000)

    predict_volume_to_zarr(model2d, source, tmp_path / "out", TILE, HALO,
                           normalization=normalization, scheduler="synchronous")

    window = (TILE + 2 * HALO) ** 2
    assert max(source.reads) <= max(window, normalization.max_samples)
    assert sum(source.reads) < 3 * 150 * 170 * ((TILE + 2 * HALO) / TILE) ** 2


def test_volume_source_reads_regions_in_canonical_axes(tmp_path):
    stored = _image((6, 2, 10, 12))  # Z C Y X
    tifffile.imwrite(tmp_path / "zcyx.tif", stored, photometric="minisblack",
                     metadata={"axes": "ZCYX"})
    volume = VolumeSource(tmp_path / "zcyx.tif")
    assert volume.shape == (2, 6, 10, 12)
    np.testing.assert_array_equal(volume[:, 1:4, 2:5, ::3],
                                  stored.transpose(1, 0, 2, 3)[:, 1:4, 2:5, ::3])
    np.testing.assert_array_equal(volume[1, ::2], stored[::2, 1])


def test_distributed_local_cluster_gives_the_same_result(tmp_path, model2d, image2d):
    from distributed import Client, LocalCluster

    path = tmp_path / "image.tif"
    tifffile.imwrite(path, image2d[0])
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        predict_volume_to_zarr(model2d, path, tmp_path / "out", TILE, HALO, scheduler=client)
    found = zarr.open_array(str(tmp_path / "out" / "probabilities.zarr"), mode="r")[...]
    np.testing.assert_allclose(found, _reference(model2d, image2d), atol=1e-5, rtol=0)


def test_instance_labels_stitched_across_blocks_equal_whole_image_instances(tmp_path):
    from microseg.data.synthetic import synthetic_sample
    from microseg.inference.instances import InstancePostprocessing, probabilities_to_instances
    from microseg.transforms.targets import labels_to_target

    _, truth = synthetic_sample((96, 112), seed=4)
    one_hot = np.eye(3, dtype=np.float32)[labels_to_target(truth, "instance")].transpose(2, 0, 1)
    model = torch.nn.Conv2d(3, 3, 1)  # logits = 8 * input: near one-hot probabilities
    with torch.no_grad():
        model.weight.copy_(8 * torch.eye(3)[:, :, None, None])
        model.bias.zero_()
    postprocessing = InstancePostprocessing()

    def instances(probabilities):
        return probabilities_to_instances(probabilities, postprocessing)

    result = predict_volume_to_zarr(model, one_hot * 1.0, tmp_path / "out", 16, 4,
                                    normalization_stats=([0.0] * 3, [1.0] * 3), output="labels",
                                    instance_labels=instances, block_shape=32)

    whole = predict_whole(model, one_hot, halo=4)
    expected = probabilities_to_instances(whole, postprocessing)
    found = zarr.open_array(str(tmp_path / "out" / "labels.zarr"), mode="r")[...]
    assert_same_objects(found, expected)
    assert result["n_objects"] == expected.max() > 10
    assert objects_cut_by_blocks(expected, 32) > 3
    assert not (tmp_path / "out" / "probabilities.zarr").exists()


def test_test_time_augmentation_out_of_core_equals_in_memory(tmp_path, model2d, image2d):
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, image2d[0])
    low, high = percentile_statistics(image2d)
    result = predict_volume_to_zarr(model2d, path, tmp_path / "out", TILE, HALO, tta=True,
                                    scheduler="synchronous")
    found = zarr.open_array(str(tmp_path / "out" / "probabilities.zarr"), mode="r")[...]
    expected = predict_tiled(model2d, normalize(image2d, low, high), TILE, HALO, tta=True)
    np.testing.assert_allclose(found, expected, atol=1e-5, rtol=0)
    assert json.loads((tmp_path / "out" / "prediction.json").read_text())["plan"]["tta"] is True
    assert result["complete"]
