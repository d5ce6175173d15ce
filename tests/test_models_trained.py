"""TrainedModel: the one way every stage loads a model folder, predicts an image and labels it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from microseg.errors import ConfigError, DataError, RunOrderError
from microseg.models import ModelConfig, PredictionSettings, TrainedModel, build_model
from microseg.models.checkpoint import save_checkpoint
from microseg.transforms.normalization import (
    PercentileNormalization,
    normalize,
    percentile_statistics,
)


def tiny_unet(ndim: int = 2, norm: str = "batch", out_classes: int = 3):
    """A warmed-up tiny U-Net in eval mode with non-trivial running statistics."""
    import torch

    config = ModelConfig(ndim=ndim, channels=(4, 8, 16), strides=(2, 2), num_res_units=1,
                         norm=norm, norm_momentum=0.5, out_classes=out_classes)
    network = build_model(config)
    network.train()
    with torch.no_grad():
        for _ in range(3):
            network(2.0 * torch.randn((2, 1) + (16,) * ndim) + 0.5)
    return network.eval(), config


def model_folder(tmp_path, network, config, settings=None, name="unet"):
    folder = tmp_path / name
    folder.mkdir(parents=True)
    config.save(folder / "config.json")
    save_checkpoint(folder / "best.pt", {"model": network.state_dict(), "epoch": 3,
                                         "best_epoch": 2})
    if settings is not None:
        settings.save(folder / "prediction.json")
    return folder


def test_load_reads_network_settings_and_postprocessing(tmp_path):
    from microseg.inference.instances import InstancePostprocessing

    network, config = tiny_unet()
    settings = PredictionSettings(task="instance", normalization=PercentileNormalization(
        low=2.0, high=98.0).to_dict(), input_axes="YX", halo=(8, 8))
    folder = model_folder(tmp_path, network, config, settings)
    InstancePostprocessing(seed_threshold=0.3).save(folder / "instance_postprocessing.json")
    model = TrainedModel.load(folder)
    assert model.name == "unet" and model.task == "instance" and model.halo == (8, 8)
    assert model.normalization.low == 2.0 and model.settings.input_axes == "YX"
    assert model.postprocessing.seed_threshold == 0.3
    assert model.checkpoint["best_epoch"] == 2 and model.size_divisor == 4
    image = np.random.default_rng(0).random((1, 32, 32)).astype(np.float32)
    import torch

    with torch.no_grad():
        direct = network(torch.from_numpy(image[None])).softmax(1)[0].numpy()
    np.testing.assert_allclose(model.predict(image, normalized=True, device="cpu"), direct,
                               atol=1e-6)


def test_save_and_load_round_trip_the_prediction_settings(tmp_path):
    from microseg.inference.instances import InstancePostprocessing

    network, config = tiny_unet()
    folder = model_folder(tmp_path, network, config)
    model = TrainedModel.from_network(network, config, task="instance", halo=12,
                                      normalization={"low": 0.5, "high": 99.0},
                                      postprocessing=InstancePostprocessing(min_size=4))
    model.save(folder)
    again = TrainedModel.load(folder)
    assert again.settings == model.settings and again.halo == (12, 12)
    assert again.postprocessing == model.postprocessing
    assert again.settings.class_names == ("background", "foreground", "boundary")


def test_older_model_folders_take_their_settings_from_the_run_manifest(tmp_path):
    from microseg.recipes.prepare import prepare_data

    run = tmp_path / "run"
    prepare_data(run, quick=True, n_synthetic=4, synthetic_shape=(32, 32),
                 fractions=(0.5, 0.25, 0.25), normalization={"low": 3.0, "high": 97.0})
    network, config = tiny_unet()
    model = TrainedModel.load(model_folder(run / "models", network, config))
    assert model.task == "instance" and model.normalization.low == 3.0
    alone = TrainedModel.load(model_folder(tmp_path / "elsewhere", network, config))
    assert alone.normalization == PercentileNormalization()


def test_missing_folder_names_notebook_02(tmp_path):
    with pytest.raises(RunOrderError, match="02_train_from_scratch"):
        TrainedModel.load(tmp_path / "nothing")


@pytest.mark.parametrize("ndim, shape, tile", [(2, (1, 700, 90), (64, 48)),
                                               (3, (1, 40, 36, 100), (16, 16, 32))])
def test_tiled_prediction_equals_whole_image_prediction(ndim, shape, tile):
    network, config = tiny_unet(ndim)
    model = TrainedModel.from_network(network, config)
    image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    plan = model.plan_prediction(shape[1:])
    whole = model.predict(image, normalized=True, tile_shape=max(shape[1:]) * 2, device="cpu")
    tiled = model.predict(image, normalized=True, tile_shape=tile, device="cpu")
    assert plan.kind == ("tiled" if ndim == 2 else "whole")
    assert np.abs(whole - tiled).max() < 1e-5
    assert model.plan_prediction(shape[1:], tile).describe().startswith("in tiles of")


def test_the_halo_is_the_receptive_field_radius_rounded_to_the_divisor():
    from microseg.inference.receptive_field import theoretical_receptive_field

    network, config = tiny_unet()
    field = theoretical_receptive_field(network, 2, 1)
    expected = tuple(-(-r // 4) * 4 for r in field.radius)
    assert TrainedModel.from_network(network, config).halo == expected


def test_images_are_normalized_with_percentiles_of_the_whole_image():
    network, config = tiny_unet()
    normalization = PercentileNormalization(low=1.0, high=99.0)
    model = TrainedModel.from_network(network, config, normalization=normalization)
    raw = np.random.default_rng(2).gamma(2.0, 300.0, size=(1, 600, 80)).astype(np.uint16)
    low, high = percentile_statistics(raw.astype(np.float64), normalization)
    by_hand = model.predict(normalize(raw, low, high), normalized=True, device="cpu",
                            tile_shape=(128, 64))
    np.testing.assert_allclose(model.predict(raw, device="cpu", tile_shape=(128, 64)), by_hand,
                               atol=1e-6)
    np.testing.assert_allclose(model.predict(raw[0], axes="YX", device="cpu"), by_hand,
                               atol=1e-5)


def test_nan_pixels_stop_prediction_with_a_clear_message():
    network, config = tiny_unet()
    image = np.ones((1, 32, 32), np.float32)
    image[0, 3, 4] = np.nan
    with pytest.raises(DataError, match="NaN or infinite"):
        TrainedModel.from_network(network, config).predict(image, device="cpu")


def test_images_that_do_not_fit_the_network_are_explained():
    network, config = tiny_unet()
    model = TrainedModel.from_network(network, config)
    with pytest.raises(DataError, match="2 channel"):
        model.predict(np.zeros((2, 32, 32), np.float32), device="cpu")
    with pytest.raises(DataError, match="3D, the model is 2D"):
        model.predict(np.zeros((1, 8, 32, 32), np.float32), device="cpu")
    with pytest.raises(DataError, match="axes"):
        model.predict(np.zeros((32, 32), np.float32), device="cpu")


def test_tiles_below_the_size_divisor_are_refused():
    network, config = tiny_unet()
    model = TrainedModel.from_network(network, config, halo=0)
    with pytest.raises(ConfigError, match="size divisor 4"):
        model.predict(np.zeros((1, 64, 64), np.float32), tile_shape=0, device="cpu")


def test_labels_are_objects_for_instance_models_and_classes_otherwise(caplog):
    from microseg.inference.instances import InstancePostprocessing, probabilities_to_instances

    probabilities = np.zeros((3, 12, 12), np.float32)
    probabilities[0] = 1
    for box in ((slice(1, 5), slice(1, 5)), (slice(6, 11), slice(6, 11))):
        probabilities[(slice(None), *box)] = 0
        probabilities[(1, *box)] = 1
    network, config = tiny_unet()
    post = InstancePostprocessing(min_size=1)
    instances = TrainedModel.from_network(network, config, postprocessing=post)
    np.testing.assert_array_equal(instances.labels(probabilities),
                                  probabilities_to_instances(probabilities, post))
    assert instances.labels(probabilities).max() == 2
    semantic = TrainedModel.from_network(network, config, task="semantic")
    np.testing.assert_array_equal(semantic.labels(probabilities), probabilities.argmax(0))
    with caplog.at_level("WARNING", logger="microseg"):
        TrainedModel.from_network(network, config).labels(probabilities)
    assert "no tuned instance post-processing" in caplog.text


def tiny_unetr():
    """A small UNETR of input shape 64×64 as a TrainedModel, and the list of the input shapes
    its network is called with."""
    config = ModelConfig(architecture="unetr", img_size=(64, 64), hidden_size=16, mlp_dim=16,
                         num_heads=2, feature_size=4)
    network = build_model(config).eval()
    seen = []
    network.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[2:])))
    return TrainedModel.from_network(network, config), seen


@pytest.mark.parametrize("shape", [(1, 20, 25), (1, 70, 45)])
def test_fixed_input_shape_models_are_predicted_in_windows_of_that_shape(shape):
    model, seen = tiny_unetr()
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    probabilities = model.predict(image, normalized=True, device="cpu")
    plan = model.plan_prediction(shape[1:])
    assert probabilities.shape == (3, *shape[1:]) and plan.kind == "fixed"
    assert plan.halo == (16, 16) and model.halo == (16, 16)
    assert "fixed input shape (64, 64)" in plan.describe()
    assert set(seen) == {(64, 64)}
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)


def test_a_fixed_input_shape_network_takes_any_shape_through_its_windowed_form(tmp_path):
    """Block-wise prediction hands the network windows of other shapes (border blocks): the
    windowed form runs it on windows of its fixed shape only and equals it on that shape; a
    U-Net is its own windowed form; out-of-core prediction of a UNETR gives probabilities."""
    import torch

    model, seen = tiny_unetr()
    windowed = model.windowed_network
    x = torch.from_numpy(np.random.default_rng(1).random((2, 1, 64, 64)).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_array_equal(windowed(x).numpy(), model.network(x).numpy())
        odd = windowed(x[:, :, :40, :56])
        larger = windowed(torch.cat([x, x], dim=-1))
    assert odd.shape == (2, 3, 40, 56) and larger.shape == (2, 3, 64, 128)
    assert set(seen) == {(64, 64)}
    unet = TrainedModel.from_network(*tiny_unet())
    assert unet.windowed_network is unet.network
    import zarr

    plan = model.plan_prediction((90, 70))
    seen.clear()
    result = model.predict_volume(np.random.default_rng(2).random((1, 90, 70)).astype(np.float32),
                                  tmp_path / "out", tile_shape=plan.tile, halo=plan.halo,
                                  device="cpu")
    assert set(seen) == {(64, 64)}

    found = zarr.open_array(result["probabilities"], mode="r")[...]
    assert found.shape == (3, 90, 70) and np.isfinite(found).all()
    np.testing.assert_allclose(found.sum(0), 1.0, atol=1e-4)


def test_saved_settings_are_json_a_person_can_read(tmp_path):
    network, config = tiny_unet()
    folder = model_folder(tmp_path, network, config)
    TrainedModel.from_network(network, config, task="binary", halo=(8, 12)).save(folder)
    saved = json.loads((folder / "prediction.json").read_text())
    assert saved["task"] == "binary" and saved["halo"] == [8, 12]
    assert saved["normalization"]["low"] == 1.0


def test_tta_keeps_tiled_prediction_equal_to_whole_image_prediction():
    network, config = tiny_unet()
    model = TrainedModel.from_network(network, config)
    image = np.random.default_rng(3).normal(size=(1, 70, 90)).astype(np.float32)
    whole = model.predict(image, normalized=True, tta=True, tile_shape=256, device="cpu")
    tiled = model.predict(image, normalized=True, tta=True, tile_shape=(32, 24), device="cpu")
    plain = model.predict(image, normalized=True, device="cpu")
    assert np.abs(whole - tiled).max() < 1e-5
    assert np.abs(whole - plain).max() > 1e-3, "the network is not symmetric: TTA changes it"
    info = model.predict_with_info(image, normalized=True, tta=True, device="cpu")
    assert info.tta and info.passes == 1


def test_models_trained_at_a_canonical_size_resample_the_image_and_map_back():
    from microseg.transforms.scale import rescale_image, resize_to

    network, config = tiny_unet()
    model = TrainedModel.from_network(network, config, canonical_diameter=20.0,
                                      object_diameter=40.0)
    image = np.random.default_rng(4).normal(size=(1, 64, 96)).astype(np.float32)
    info = model.predict_with_info(image, normalized=True, device="cpu")
    assert info.scale_factor == 0.5 and info.object_diameter == 40.0
    by_hand = resize_to(model.predict(rescale_image(image, 0.5), normalized=True,
                                      object_diameter=20.0, device="cpu"), (64, 96))
    np.testing.assert_allclose(info.probabilities, by_hand, atol=1e-6)
    assert model.predict_with_info(image, normalized=True, object_diameter=80.0,
                                   device="cpu").scale_factor == 0.25
    assert model.trained_diameters == (20.0, 20.0), "saved without a range: median to canonical"
    assert model.scale_factor(10.0) == 2.0 and model.scale_factor(2.0) == 4.0, "at most 4x"
    ranged = TrainedModel.from_network(network, config, canonical_diameter=30.0,
                                       object_diameter=40.0, trained_diameters=(10.0, 20.0))
    assert ranged.predict_with_info(image, normalized=True, object_diameter=10.0,
                                    device="cpu").scale_factor == 1.0, "in range: kept"
    assert ranged.scale_factor(22.0) == 1.0, "within the margin: kept"
    assert ranged.scale_factor(40.0) == 0.25, "large (above 20): shrunk to the median, 10"
    assert ranged.predict_with_info(image, normalized=True, object_diameter=4.0,
                                    device="cpu").scale_factor == 2.5, "small: enlarged"
    with pytest.raises(ConfigError, match="object_diameter"):
        model.predict(image, normalized=True, object_diameter="large", device="cpu")
    plain = TrainedModel.from_network(network, config)
    assert plain.predict_with_info(image, normalized=True, object_diameter=10.0,
                                   device="cpu").scale_factor == 1.0


class DiscFinder:
    """A 'network' that segments bright discs perfectly at any scale: foreground where the
    input exceeds 0.5, boundary on its rim (for the three-class head)."""

    size_divisor = 1

    def __call__(self, batch):
        import torch
        from scipy import ndimage

        out = []
        for x in batch.numpy():
            inside = x[0] > 0.5
            rim = inside & ~ndimage.binary_erosion(inside)
            logits = np.stack([~inside, inside & ~rim, rim]).astype(np.float32) * 20
            out.append(logits)
        return torch.from_numpy(np.stack(out))

    def to(self, *args, **kwargs):
        return self

    def parameters(self):
        return iter(())

    def modules(self):
        return iter(())

    def eval(self):
        return self


def discs(shape, centres, radius):
    """Labels 1..n of discs of ``radius`` at ``centres``, and the image (1, *shape): 1 inside."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    label = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate(centres, start=1):
        label[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = k
    return label, (label > 0).astype(np.float32)[None]


def disc_model(network, object_diameter):
    """An instance model around a fake ``network`` trained at a canonical diameter of 20."""
    from microseg.inference.instances import InstancePostprocessing

    return TrainedModel(network, None, PredictionSettings(
        task="instance", canonical_diameter=20.0, object_diameter=object_diameter, halo=(2, 2)),
        InstancePostprocessing(min_size=1, seed_threshold=0.5))


def test_auto_diameter_finds_the_objects_size_and_predicts_at_it():
    from microseg.transforms.scale import median_diameter

    label, image = discs((200, 200), [(50, 50), (50, 140), (140, 60), (140, 145)], 30)
    model = disc_model(DiscFinder(), 15.0)
    info = model.predict_with_info(image, normalized=True, object_diameter="auto")
    true_diameter = median_diameter(label)
    assert info.passes >= 2
    assert info.object_diameter == pytest.approx(true_diameter, rel=0.1)
    # shrunk to the training median (15: the model's object_diameter, saved without a range)
    assert info.scale_factor == pytest.approx(15.0 / true_diameter, rel=0.1)
    assert model.labels(info.probabilities).max() == 4


class FragmentingFinder(DiscFinder):
    """Like :class:`DiscFinder` while a disc measures at most 30 pixels across; larger discs are
    cut by boundary lines every 12 pixels (a network whose field of view is too small)."""

    def __call__(self, batch):
        import torch
        from scipy import ndimage

        out = []
        for x in batch.numpy():
            inside = x[0] > 0.5
            components, _ = ndimage.label(inside)
            areas = np.bincount(components.ravel())
            large = (areas[components] > np.pi * 15 ** 2) & inside
            yy, xx = np.mgrid[:inside.shape[0], :inside.shape[1]]
            rim = (inside & ~ndimage.binary_erosion(inside)) | \
                (large & ((yy % 12 == 0) | (xx % 12 == 0)))
            out.append(np.stack([~inside, inside & ~rim, rim]).astype(np.float32) * 20)
        return torch.from_numpy(np.stack(out))


def test_auto_diameter_is_not_fooled_by_fragments_of_large_objects():
    from microseg.transforms.scale import median_diameter

    label, image = discs((360, 360), [(90, 90), (90, 260), (260, 100), (265, 265)], 50)
    model = disc_model(FragmentingFinder(), 20.0)
    at_training_scale = model.labels(model.predict(image, normalized=True))
    assert at_training_scale.max() > 4 * 20, "the network fragments 100-pixel discs"
    assert median_diameter(at_training_scale) < 15, "and the fragments look like objects"
    info = model.predict_with_info(image, normalized=True, object_diameter="auto")
    assert info.object_diameter == pytest.approx(median_diameter(label), rel=0.1)
    assert info.scale_estimate.confidence == "high"
    assert model.labels(info.probabilities).max() == 4
    facts = info.describe()
    assert facts["diameter_confidence"] == "high" and facts["scale_trials"][0][0] == 1.0


def test_out_of_core_prediction_at_a_canonical_size_equals_in_memory(tmp_path):
    import tifffile
    import torch
    import zarr

    from microseg.data.synthetic import synthetic_sample
    from microseg.inference.instances import InstancePostprocessing
    from microseg.metrics.instance import match_instances
    from microseg.transforms.targets import labels_to_target

    _, truth = synthetic_sample((160, 176), seed=4)
    one_hot = np.eye(3, dtype=np.float32)[labels_to_target(truth, "instance")].transpose(2, 0, 1)
    network = torch.nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        network.weight.copy_(8 * torch.eye(3)[:, :, None, None])
        network.bias.zero_()
    network.size_divisor = 1
    model = TrainedModel.from_network(
        network.eval(), task="instance", halo=(4, 4), canonical_diameter=10.0,
        object_diameter=20.0, postprocessing=InstancePostprocessing(min_size=4),
        normalization={"low": 0.0, "high": 100.0})
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, one_hot, photometric="minisblack", metadata={"axes": "CYX"})
    result = model.predict_volume(path, tmp_path / "out", tile_shape=16, output="both",
                                  axes="CYX", scheduler="synchronous")
    in_memory = model.predict_with_info(one_hot, tile_shape=16)
    assert result["scale_factor"] == in_memory.scale_factor == 0.5
    found = zarr.open_array(result["probabilities"], mode="r")[...]
    np.testing.assert_allclose(found, in_memory.probabilities, atol=1e-5)
    labels = zarr.open_array(result["labels"], mode="r")[...]
    expected = model.labels(in_memory.probabilities)
    assert match_instances(labels, expected, (0.9,)).at(0.9).f1 == 1.0
    assert result["n_objects"] == expected.max() > 5
    assert not (tmp_path / "out" / "_scaled").exists()
    assert json.loads((tmp_path / "out" / "scale.json").read_text())["complete"]


def test_the_size_search_of_a_large_image_predicts_a_central_crop(monkeypatch):
    from microseg.models import trained

    monkeypatch.setitem(trained.SEARCH_SIDE, 2, 96)
    _, image = discs((120, 300), [(60, cx) for cx in range(20, 300, 40)], 8)
    model = disc_model(DiscFinder(), 16.0)
    shapes = []
    predict_scaled = model._predict_scaled
    monkeypatch.setattr(model, "_predict_scaled", lambda region, *a: (
        shapes.append(region.shape[1:]), predict_scaled(region, *a))[1])
    info = model.predict_with_info(image, normalized=True, object_diameter="auto")
    assert shapes[-1] == (120, 300), "the image itself is predicted at the end"
    assert all(s == (96, 96) for s in shapes[:-1]), shapes
    assert info.object_diameter == pytest.approx(17.0, rel=0.1)
    assert model.labels(info.probabilities).max() == 7


def test_a_colour_image_for_a_grey_model_says_to_make_it_grey():
    network, config = tiny_unet()
    model = TrainedModel.from_network(network, config)
    rgb = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    with pytest.raises(DataError, match="(?s)3 channel.*takes 1.*make it one channel first.*haematoxylin"):
        model.predict(rgb)
    with pytest.raises(DataError, match="(?s)2 channel.*takes 1.*check the axes"):
        model.predict(rgb[:2])
