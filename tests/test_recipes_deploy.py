"""The deploy recipe: synthetic large input, folders, exports, summary, refusals, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from microseg.errors import ConfigError, DataError, OutputExistsError, RunOrderError
from microseg.recipes import deploy as recipe

SMALL_2D = (96, 80)


def _model_folder(run_dir, name="unet", ndim=2, num_res_units=2):
    import torch

    from microseg.models import ModelConfig, build_model
    from microseg.models.checkpoint import save_checkpoint

    config = ModelConfig(ndim=ndim, channels=(4, 8, 16), strides=(2, 2),
                         num_res_units=num_res_units, out_classes=2, norm="batchrenorm")
    torch.manual_seed(0)
    model = build_model(config)
    folder = run_dir / "models" / name
    folder.mkdir(parents=True)
    config.save(folder / "config.json")
    save_checkpoint(folder / "best.pt", {"model": model.state_dict()})
    return folder


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("deploy") / "run"
    _model_folder(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def deployed(run_2d):
    """One quick deployment with the default (receptive-field) halo, both outputs and exports."""
    summary = recipe.deploy(run_2d, output="both", quick=True, progress=False,
                            export_formats=("torchscript", "onnx"))
    return run_2d, summary


def _read(path):
    import zarr

    return np.asarray(zarr.open_array(str(path), mode="r")[...])


def test_summary_has_the_documented_keys_and_is_written(deployed):
    run_dir, summary = deployed
    for key in ("n_inputs", "outputs", "voxels_per_second", "peak_memory_mb", "exports",
                "halo", "tile_shape", "input_kind", "predictions"):
        assert key in summary
    written = json.loads((run_dir / "predictions" / "unet" / "summary.json").read_text())
    assert written == json.loads(json.dumps(summary.to_dict()))
    assert summary["n_inputs"] == 1 and summary["input_kind"] == "synthetic"
    assert summary["voxels"] == np.prod(recipe.QUICK_SYNTHETIC_SHAPE[2])
    assert summary["voxels_per_second"] > 0 and summary["peak_memory_mb"] > 0
    assert (run_dir / "predictions" / "unet" / "deploy_config.json").is_file()


def test_halo_comes_from_the_receptive_field(deployed):
    """MONAI UNet, strides (2, 2), 2 residual units: radius 23, halo 24 (divisor 4)."""
    _, summary = deployed
    assert summary["halo"] == [24, 24] and summary["halo_source"] == "receptive field"
    assert summary["tile_shape"] == [128, 128]


def test_out_of_core_prediction_equals_whole_image_prediction(deployed):
    from microseg.inference.tiling import predict_whole
    from microseg.models.checkpoint import load_network
    from microseg.transforms.normalization import normalize, percentile_statistics

    run_dir, summary = deployed
    image = _read(summary["input"])
    model, _, _ = load_network(run_dir / "models" / "unet")
    low, high = percentile_statistics(image)
    assert summary["tta"] is True  # the default: every tile in its 8 orientations
    expected = predict_whole(model, normalize(image, low, high), halo=24, tta=True)
    found = _read(summary["predictions"][0]["probabilities"])
    labels = _read(summary["predictions"][0]["labels"])
    assert found.shape == expected.shape == (2, *image.shape[1:])
    assert np.abs(found - expected).max() <= 1e-5
    np.testing.assert_array_equal(labels, found.argmax(axis=0))


def test_exports_are_reloaded_and_compared(deployed):
    _, summary = deployed
    for name in ("torchscript", "onnx"):
        entry = summary["exports"][name]
        assert entry["max_abs_diff"] <= 1e-4
        assert entry["path"].startswith(str(summary["model_dir"]).rsplit("/models/", 1)[0])


def test_synthetic_input_has_true_objects_beside_it(deployed):
    _, summary = deployed
    labels = _read(summary["input"].replace("input.zarr", "input_labels.zarr"))
    assert labels.shape == recipe.QUICK_SYNTHETIC_SHAPE[2] and labels.max() > 0


def test_previews_crop_the_same_region_of_input_and_labels(deployed):
    _, summary = deployed
    preview = recipe.result_preview(summary, size=64)
    side = recipe.QUICK_SYNTHETIC_SHAPE[2][0]
    crop = (slice((side - 64) // 2, (side - 64) // 2 + 64),) * 2
    np.testing.assert_array_equal(preview["labels"],
                                  _read(summary["predictions"][0]["labels"])[crop])
    np.testing.assert_array_equal(preview["image"], _read(summary["input"])[0][crop])
    source = recipe.DeployInput(recipe.Path(summary["input"]), "synthetic")
    np.testing.assert_array_equal(recipe.input_preview(source, size=64), preview["image"])
    assert source.describe()["shape (C, *spatial)"] == [1, side, side]


def test_refuses_a_finished_deployment_unless_overwrite(deployed):
    run_dir, summary = deployed
    before = (run_dir / "predictions" / "unet" / "summary.json").read_text()
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        recipe.deploy(run_dir, quick=True, progress=False, export_formats=())
    assert (run_dir / "predictions" / "unet" / "summary.json").read_text() == before


def test_overwrite_predicts_again(tmp_path):
    run_dir = tmp_path / "run"
    _model_folder(run_dir, num_res_units=0)
    options = dict(halo=8, quick=True, progress=False, export_formats=(),
                   synthetic_shape=SMALL_2D)
    first = recipe.deploy(run_dir, **options)
    again = recipe.deploy(run_dir, overwrite=True, **options)
    assert again["outputs"] == first["outputs"]
    assert _read(again["outputs"][0]).shape == SMALL_2D


def test_folder_input_predicts_every_image_and_lists_failures(tmp_path):
    from microseg.io import write_image

    run_dir = tmp_path / "run"
    _model_folder(run_dir, num_res_units=0)
    images = tmp_path / "new_images"
    rng = np.random.default_rng(0)
    for stem, shape in (("a", (40, 56)), ("b", (64, 48))):
        write_image(images / f"{stem}.tif", rng.integers(0, 4000, (1, *shape), dtype=np.uint16),
                    axes="CYX")
    write_image(images / "c.tif", rng.integers(0, 4000, (1, 8, 32, 32), dtype=np.uint16),
                axes="CZYX")
    summary = recipe.deploy(run_dir, input_path=images, halo=8, tile_shape=32, quick=True,
                            export_formats=(), progress=False)
    assert summary["n_inputs"] == 3 and summary["input_kind"] == "folder"
    assert len(summary["errors"]) == 1 and "c.tif" in summary["errors"][0]
    from microseg.io import read_label

    shapes = {p["input"].rsplit("/", 1)[1]: read_label(p["labels"]).shape
              for p in summary["predictions"]}
    assert shapes == {"a.tif": (40, 56), "b.tif": (64, 48)}
    assert sorted(p.name for p in images.iterdir()) == ["a.tif", "b.tif", "c.tif"]


def test_3d_model_gets_a_synthetic_volume(tmp_path):
    run_dir = tmp_path / "run"
    _model_folder(run_dir, ndim=3, num_res_units=0)
    summary = recipe.deploy(run_dir, halo=8, tile_shape=16, quick=True, export_formats=(),
                            progress=False, synthetic_shape=(16, 40, 32))
    assert _read(summary["input"]).shape == (1, 16, 40, 32)
    assert _read(summary["outputs"][0]).shape == (16, 40, 32)
    assert summary["tile_shape"] == [16, 16, 16] and summary["halo"] == [8, 8, 8]


def test_wrong_dimensionality_is_explained(run_2d, tmp_path):
    from microseg.io import write_image

    volume = tmp_path / "elsewhere" / "volume.tif"
    write_image(volume, np.zeros((1, 16, 32, 32), np.uint16), axes="CZYX")
    with pytest.raises(DataError, match="3D.*2D|2D.*3D"):
        recipe.deploy(run_2d, input_path=volume, halo=8, export_formats=(), overwrite=True,
                      progress=False)


def test_tile_smaller_than_twice_the_halo_is_refused_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    _model_folder(run_dir, num_res_units=0)
    with pytest.raises(ConfigError, match="twice the halo"):
        recipe.deploy(run_dir, tile_shape=32, halo=24, quick=True, export_formats=())
    assert not (run_dir / "predictions" / "unet" / "input.zarr").exists()


def test_bad_settings_are_explained(run_2d, tmp_path):
    with pytest.raises(RunOrderError, match="02_train_from_scratch"):
        recipe.deploy(run_2d, model_name="missing")
    with pytest.raises(ConfigError, match="scheduler"):
        recipe.deploy(run_2d, scheduler="gpu-farm", overwrite=True)
    with pytest.raises(ConfigError, match="export format"):
        recipe.deploy(run_2d, export_formats=("pickle",), overwrite=True)
    with pytest.raises(ConfigError, match="halo"):
        recipe.deploy(run_2d, halo=(8, 8, 8), overwrite=True)
    with pytest.raises(DataError, match="does not exist"):
        recipe.deploy(run_2d, input_path=tmp_path / "nothing.tif", halo=8, overwrite=True)


def test_output_next_to_the_input_is_refused(run_2d, tmp_path):
    from microseg.io import write_image

    image = tmp_path / "mine" / "image.tif"
    write_image(image, np.zeros((1, 32, 32), np.uint16), axes="CYX")
    with pytest.raises(OutputExistsError, match="never written"):
        recipe.deploy(run_2d, input_path=image, output_path=tmp_path / "mine" / "out", halo=8,
                      overwrite=True, export_formats=())


def test_choose_halo_prefers_given_then_the_models_own(tmp_path):
    from microseg.models import TrainedModel

    folder = _model_folder(tmp_path / "run", ndim=3, num_res_units=0)
    model = TrainedModel.load(folder)
    assert recipe.choose_halo(model, 5) == ((5, 5, 5), "given")
    model.settings = model.settings.replace(halo=[4, 8, 8])
    assert recipe.choose_halo(model, None) == ((4, 8, 8), "receptive field")


def test_tiles_below_the_size_divisor_are_refused_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    _model_folder(run_dir, num_res_units=0)
    with pytest.raises(ConfigError, match="size divisor 4"):
        recipe.deploy(run_dir, tile_shape=0, halo=0, quick=True, export_formats=())
    assert not (run_dir / "predictions" / "unet" / "input.zarr").exists()


def test_choose_tile_defaults_and_rounding():
    assert recipe.choose_tile(None, (24, 24), 2, divisor=4) == (512, 512)
    assert recipe.choose_tile(None, (10, 30, 30), 3, divisor=8, quick=True) == (32, 64, 64)
    assert recipe.choose_tile((48, 64), (24, 8), 2) == (48, 64)


def test_failed_export_is_recorded_and_the_rest_goes_on(tmp_path, monkeypatch):
    from microseg.errors import MicrosegError

    run_dir = tmp_path / "run"
    _model_folder(run_dir, num_res_units=0)
    config = recipe.DeployConfig(halo=8, export_formats=("onnx", "torchscript"))
    plan = recipe.plan_deployment(run_dir, config)

    def failing(*args, **kwargs):
        raise MicrosegError("no runtime here")

    monkeypatch.setattr(recipe, "_export_onnx", failing)
    example = np.random.default_rng(0).random((1, 64, 64)).astype(np.float32)
    exports = recipe.export_model(plan, example)
    assert exports["onnx"] == {"path": None, "max_abs_diff": None, "error": "no runtime here"}
    assert exports["torchscript"]["max_abs_diff"] <= 1e-4
    assert exports["torchscript"]["path"] == str(plan.results / "export" / "model.torchscript.pt")


@pytest.mark.slow
def test_local_cluster_gives_the_same_labels(deployed, tmp_path):
    """The same model and synthetic input on a LocalCluster: the same labels."""
    _, summary = deployed
    run_dir = tmp_path / "run"
    _model_folder(run_dir)
    clustered = recipe.deploy(run_dir, halo=24, quick=True, scheduler="local-cluster",
                              export_formats=(), progress=False)
    np.testing.assert_array_equal(_read(clustered["outputs"][0]),
                                  _read(summary["predictions"][0]["labels"]))
    assert clustered["worker_peak_memory_mb"]


def test_a_scheduler_address_gives_the_same_labels(deployed, tmp_path):
    """A running scheduler reached by its address (here an in-process cluster)."""
    from distributed import LocalCluster

    _, summary = deployed
    run_dir = tmp_path / "run"
    _model_folder(run_dir)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        remote = recipe.deploy(run_dir, halo=24, quick=True, scheduler=address,
                               export_formats=(), progress=False)
    np.testing.assert_array_equal(_read(remote["outputs"][0]),
                                  _read(summary["predictions"][0]["labels"]))
    assert remote["scheduler"] == address and len(remote["worker_peak_memory_mb"]) == 1
