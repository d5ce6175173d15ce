"""Folder prediction: new output folder, same stems, bad files listed, run settings used."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
import zarr

from microseg.errors import OutputExistsError
from microseg.inference.folder import predict_folder
from microseg.inference.tiling import predict_whole
from microseg.models import ModelConfig, TrainedModel, build_model
from microseg.transforms.normalization import PercentileNormalization

TILE, HALO = 24, 12  # the tiny U-Net's receptive-field radius is 10


def _config(out_classes: int = 2) -> ModelConfig:
    return ModelConfig(ndim=2, channels=(4, 8, 16), strides=(2, 2), num_res_units=0, norm="batch",
                       out_classes=out_classes)


def _trained(network: torch.nn.Module, config: ModelConfig) -> TrainedModel:
    task = "instance" if config.out_classes == 3 else "binary"
    return TrainedModel.from_network(network, config, task=task)


def _image(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).gamma(2.0, 300.0, size=shape) + 50).astype(np.uint16)


def _expected_probabilities(model: torch.nn.Module, image: np.ndarray, low: float = 1.0,
                            high: float = 99.8) -> np.ndarray:
    """Whole-image prediction after normalizing with float64 percentiles of the whole image."""
    lo, hi = np.percentile(image.astype(np.float64), (low, high))
    return predict_whole(model, ((image - lo) / (hi - lo)).astype(np.float32), halo=HALO)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "cells_a.tif", _image((60, 52), 1))
    tifffile.imwrite(folder / "cells_b.tif", _image((40, 72), 2))
    (folder / "broken.tif").write_bytes(b"not a tiff at all")
    return folder


def test_folder_predicted_into_labels_named_like_the_inputs(tmp_path, images):
    torch.manual_seed(0)
    model = build_model(_config()).eval()

    result = predict_folder(_trained(model, _config()), images, tmp_path / "out", TILE, HALO,
                            output="both")

    assert result["n_inputs"] == 3 and len(result["outputs"]) == 2
    assert len(result["errors"]) == 1 and "broken.tif" in result["errors"][0]
    for stem in ("cells_a", "cells_b"):
        image = tifffile.imread(images / f"{stem}.tif")[None]
        expected = _expected_probabilities(model, image)
        found = tifffile.imread(tmp_path / "out" / "probabilities" / f"{stem}.tif")
        np.testing.assert_allclose(found, expected, atol=1e-5, rtol=0)
        labels = tifffile.imread(tmp_path / "out" / "labels" / f"{stem}.tif")
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(labels, expected.argmax(axis=0))
    assert sorted(p.name for p in images.iterdir()) == ["broken.tif", "cells_a.tif", "cells_b.tif"]
    assert result["voxels_per_second"] > 0 and result["peak_memory_mb"] > 0
    saved = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert saved["errors"] == result["errors"]


def test_zarr_format_gives_the_tif_results(tmp_path, images):
    torch.manual_seed(0)
    settings = _trained(build_model(_config()).eval(), _config())

    predict_folder(settings, images / "cells_a.tif", tmp_path / "tif", TILE, HALO, output="both")
    predict_folder(settings, images / "cells_a.tif", tmp_path / "zarr", TILE, HALO, output="both",
                   format="zarr", scheduler="synchronous")

    for kind in ("probabilities", "labels"):
        from_tif = tifffile.imread(tmp_path / "tif" / kind / "cells_a.tif")
        from_zarr = zarr.open_array(str(tmp_path / "zarr" / "cells_a" / f"{kind}.zarr"), mode="r")
        np.testing.assert_allclose(from_zarr[...], from_tif, atol=1e-5, rtol=0)


def test_output_inside_the_input_folder_or_holding_results_is_refused(tmp_path, images):
    model = _trained(build_model(_config()).eval(), _config())
    with pytest.raises(OutputExistsError, match="inside the input folder"):
        predict_folder(model, images, images / "predictions", TILE, HALO)
    with pytest.raises(OutputExistsError, match="inside the input folder"):
        predict_folder(model, images / "cells_a.tif", images, TILE, HALO)
    predict_folder(model, images / "cells_a.tif", tmp_path / "out", TILE, HALO)
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        predict_folder(model, images / "cells_a.tif", tmp_path / "out", TILE, HALO)
    assert sorted(p.name for p in images.iterdir()) == ["broken.tif", "cells_a.tif", "cells_b.tif"]


def test_model_folder_uses_the_runs_normalization_and_instance_postprocessing(tmp_path, images):
    from microseg.data.split import SplitManifest
    from microseg.inference.instances import InstancePostprocessing, probabilities_to_instances
    from microseg.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = _config(out_classes=3)
    model = build_model(config).eval()
    model_dir = tmp_path / "run" / "models" / "unet"
    config.save(model_dir / "config.json")
    save_checkpoint(model_dir / "best.pt", {"model": model.state_dict()})
    normalization = PercentileNormalization(low=5.0, high=95.0)
    SplitManifest(data_dir=str(images), ndim=2, axes="CYX", n_channels=1, task="instance",
                  n_classes=3, normalization=normalization.to_dict()
                  ).save(tmp_path / "run" / "data" / "split.json")

    predict_folder(TrainedModel.load(model_dir), images / "cells_b.tif", tmp_path / "out", TILE,
                   HALO, output="both")

    image = tifffile.imread(images / "cells_b.tif")[None]
    expected = _expected_probabilities(model, image, low=5.0, high=95.0)
    found = tifffile.imread(tmp_path / "out" / "probabilities" / "cells_b.tif")
    np.testing.assert_allclose(found, expected, atol=1e-5, rtol=0)
    labels = tifffile.imread(tmp_path / "out" / "labels" / "cells_b.tif")
    expected_labels = probabilities_to_instances(found, InstancePostprocessing())
    np.testing.assert_array_equal(labels, expected_labels)
    assert not np.array_equal(labels, found.argmax(axis=0)), "labels must be instances, not classes"
