"""train_model in quick mode: prepares a split when missing, writes the model folder and
summary, refuses to overwrite, resumes, takes tuned configs, and runs from the command line."""

import json
import logging

import numpy as np
import pytest
import torch

from microseg.errors import ConfigError, OutputExistsError, RunOrderError
from microseg.models import ModelConfig
from microseg.models.checkpoint import load_network
from microseg.recipes.train import (
    default_configs,
    describe_configs,
    main,
    search_hyperparameters,
    train_model,
    validation_predictions,
)
from microseg.runs import RunFolder
from microseg.training.config import TrainConfig
from microseg.training.live_plot import plot_predictions

SUMMARY_KEYS = {"best_val_loss", "best_val_dice", "epochs_run", "stopped_early", "fit_diagnosis",
                "model_dir", "device", "seconds"}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    summary = train_model(run_dir, quick=True)
    return run_dir, summary


def test_quick_training_prepares_data_and_writes_the_model_folder(trained_run):
    run_dir, summary = trained_run
    run = RunFolder(run_dir)
    assert run.split_manifest.is_file()
    folder = run.model_dir("unet")
    assert summary["model_dir"] == str(folder)
    assert SUMMARY_KEYS <= set(summary)
    assert json.loads((folder / "summary.json").read_text()) == summary
    assert summary["epochs_run"] == 2 and summary["device"] == "cpu"
    assert summary["fit_diagnosis"]["verdict"] == "too short to tell"
    assert 0 <= summary["best_val_dice"] <= 1
    assert sum(summary["class_frequencies"]) == pytest.approx(1.0)
    model, config, extra = load_network(folder)
    assert config.channels == (4, 8, 16) and config.norm == "batchrenorm"
    assert config.out_classes == 5 and extra["best_val_loss"] == summary["best_val_loss"]
    assert run.model_names() == ["unet"]
    # the default head is chosen from the labels: the synthetic cells sit on background
    assert summary["instance_head"] == "distance"
    assert "objects on background" in summary["instance_head_reason"]


def test_existing_model_is_kept_and_resume_finishes_it(trained_run):
    run_dir, summary = trained_run
    with pytest.raises(OutputExistsError, match="already holds a model"):
        train_model(run_dir, quick=True)
    resumed = train_model(run_dir, quick=True, resume=True)
    assert resumed["best_val_loss"] == summary["best_val_loss"]
    assert resumed["steps"] == summary["steps"]


def test_tuned_configs_are_used_as_saved(trained_run, tmp_path):
    run_dir, _ = trained_run
    ModelConfig(channels=(2, 4), strides=(2,), num_res_units=0, norm="batch").save(
        tmp_path / "best_model_config.json")
    TrainConfig(epochs=9, steps_per_epoch=2, batch_size=2, patch_size=(32, 32)).save(
        tmp_path / "best_train_config.json")
    summary = train_model(run_dir, model_name="tuned", tuned=tmp_path, epochs=1)
    _, config, extra = load_network(summary["model_dir"])
    assert config.channels == (2, 4) and config.norm == "batch"
    assert extra["train_config"]["epochs"] == 1 and extra["train_config"]["patch_size"] == [32, 32]
    with pytest.raises(RunOrderError, match="run_search=True"):
        train_model(run_dir, model_name="x", tuned=tmp_path / "missing")


def test_command_line(trained_run, caplog):
    run_dir, _ = trained_run
    with caplog.at_level(logging.INFO):
        summary = main(["--run-dir", str(run_dir), "--model-name", "cli", "--quick",
                        "--patch-size", "32", "--norm", "group", "--batch-size", "auto"])
    _, config, extra = load_network(summary["model_dir"])
    assert config.norm == "group" and extra["train_config"]["patch_size"] == [32, 32]
    assert extra["train_config"]["batch_size"] == 2  # no GPU: the default, with a message
    assert "keeping batch_size=2" in caplog.text


def test_default_configs_follow_the_manifest():
    class Manifest:
        ndim, n_channels, n_classes = 3, 2, 4

    model, train = default_configs(Manifest(), norm="instance", patch_size=(16, 32, 32),
                                   epochs=7)
    assert (model.ndim, model.in_channels, model.out_classes) == (3, 2, 4)
    assert model.norm == "instance" and train.epochs == 7 and train.batch_size == 2
    assert train.patch_size == (16, 32, 32)
    quick_model, quick_train = default_configs(Manifest(), quick=True)
    assert quick_model.channels == (4, 8, 16) and quick_train.patch_size == (16, 32, 32)
    unetr, _ = default_configs(Manifest(), architecture="unetr", patch_size=32, quick=True)
    assert unetr.img_size == (32, 32, 32)


def test_describe_configs_explains_each_setting():
    class Manifest:
        ndim, n_channels, n_classes = 2, 1, 3

    table = describe_configs(*default_configs(Manifest()))
    assert table.loc["patch", "value"] == "128×128"
    assert table.loc["BatchRenorm schedule", "value"] == "BatchNorm for 240 steps, ramp over 240"
    assert table["meaning"].str.len().min() > 10


def test_validation_predictions_are_class_maps_of_the_best_model(trained_run):
    run_dir, _ = trained_run
    rows = validation_predictions(run_dir, "unet", n=2)
    assert 1 <= len(rows) <= 2
    model, _, _ = load_network(RunFolder(run_dir).model_dir("unet"))
    for _, image, truth, prediction in rows:
        assert image.ndim == 3 and prediction.shape == truth.shape == image.shape[1:]
        with torch.no_grad():  # the synthetic images are multiples of the size divisor
            direct = model(torch.from_numpy(image)[None]).argmax(1)[0].numpy()
        assert (prediction == direct).mean() > 0.999
    figure = plot_predictions(rows, n_classes=3)
    assert len(figure.axes) == 3 * len(rows)
    with pytest.raises(RunOrderError, match="02_train_from_scratch"):
        validation_predictions(run_dir, "missing")


def test_quick_search_writes_configs_train_model_can_use(trained_run):
    run_dir, _ = trained_run
    result = search_hyperparameters(run_dir, "searched", quick=True, seed=1)
    folder = RunFolder(run_dir).root / "search" / "searched"
    assert result["folder"] == str(folder) and result["n_trials"] == 2
    assert (folder / "best_train_config.json").is_file()
    again = search_hyperparameters(run_dir, "searched", n_trials=1, quick=True)
    assert again["folder"].endswith("searched-2")  # the first search is kept
    model_config, train_config = default_configs(None, tuned=folder)
    assert train_config.learning_rate == pytest.approx(result["best_params"]["learning_rate"])
    assert model_config.norm == result["best_params"]["norm"]


def test_quick_training_in_3d(tmp_path):
    from microseg.recipes.prepare import prepare_data

    prepare_data(tmp_path, ndim=3, quick=True, n_synthetic=4, synthetic_shape=(16, 32, 32))
    summary = train_model(tmp_path, quick=True)
    _, config, extra = load_network(summary["model_dir"])
    assert config.ndim == 3 and extra["train_config"]["patch_size"] == [16, 32, 32]
    assert summary["epochs_run"] == 2


def test_distance_head_at_a_canonical_size_is_saved_for_prediction(trained_run):
    import numpy as np

    from microseg.data.dataset import load_subset
    from microseg.data.split import load_manifest
    from microseg.models import TrainedModel
    from microseg.transforms.scale import median_diameter

    run_dir, _ = trained_run
    summary = train_model(run_dir, model_name="distance", quick=True, instance_head="distance",
                          object_diameter="auto", canonical_diameter=12.0)
    train = load_subset(load_manifest(run_dir), "train")
    expected = median_diameter([s.label for s in train])
    assert summary["instance_head"] == "distance" and summary["canonical_diameter"] == 12.0
    assert summary["object_diameter"] == pytest.approx(expected)
    own = [median_diameter([s.label]) or expected for s in train]
    assert summary["scale_factor"] == pytest.approx(float(np.median([min(1.0, 12.0 / d)
                                                                     for d in own])))
    assert summary["scale_factor_min"] <= summary["scale_factor"] <= summary["scale_factor_max"]
    model = TrainedModel.load(summary["model_dir"])
    assert model.config.out_classes == 5 and model.settings.instance_head == "distance"
    assert model.settings.object_diameter == pytest.approx(expected)
    seen = [min(d, 12.0) for d in (median_diameter([s.label]) for s in train) if d]
    assert model.settings.trained_diameters == pytest.approx(
        tuple(np.percentile(seen, [50, 90])), abs=0.01)
    info = model.predict_with_info(train[0].image, normalized=True)
    largest = model.settings.trained_diameters[1]
    assert info.scale_factor == pytest.approx(
        largest / expected if expected > largest * 1.15 else 1.0)
    assert info.probabilities.shape == (5, *train[0].image.shape[1:])
    assert model.labels(info.probabilities).dtype == "int32"


def test_steps_per_epoch_cover_the_training_pixels():
    import numpy as np

    from microseg.recipes.train import steps_per_epoch_for

    class Image:
        def __init__(self, side):
            self.image = np.zeros((1, side, side), np.float32)

    assert steps_per_epoch_for([Image(512)] * 40, 8, (128, 128)) == 80
    assert steps_per_epoch_for([Image(256)] * 4, 8, (128, 128)) == 25
    assert steps_per_epoch_for([Image(2048)] * 400, 8, (128, 128)) == 250


def test_prepare_training_describes_head_scale_and_budget(trained_run):
    from microseg.recipes.train import prepare_training

    run_dir, _ = trained_run
    setup = prepare_training(run_dir, quick=True, object_diameter="auto", max_minutes=3)
    table = setup.describe()
    assert table.loc["time budget", "value"] == "3 min"
    assert "→ 30 px" in table.loc["object scale", "value"]
    assert table.loc["instance head", "value"] == "distance"
    assert setup.train_config.max_minutes == 3


def test_the_training_time_is_estimated_from_timed_steps(trained_run, monkeypatch):
    from microseg.recipes import train as recipe
    from microseg.recipes.train import estimate_minutes, prepare_training

    run_dir, _ = trained_run
    setup = prepare_training(run_dir, quick=True)
    clock = iter(range(0, 1000, 2))  # two readings per step, 2 s apart: 2 s per step
    monkeypatch.setattr(recipe.time, "perf_counter", lambda: float(next(clock)))
    estimate = estimate_minutes(setup, device="cpu")
    assert estimate["seconds_per_step"] == 2.0 and estimate["device"] == "cpu"
    steps = setup.train_config.total_steps
    assert steps * 2.0 / 60 <= estimate["minutes"] <= steps * 2.0 / 60 * 2
    budget = prepare_training(run_dir, quick=True, max_minutes=7)
    assert estimate_minutes(budget, device="cpu")["minutes"] == 7


def test_a_training_writes_its_prediction_settings_before_it_starts(trained_run, monkeypatch):
    """A training killed after its first checkpoint leaves a folder later stages read right."""
    from microseg.models import TrainedModel
    from microseg.training.trainer import Trainer

    run_dir, _ = trained_run

    def killed(self):
        from microseg.models.checkpoint import save_checkpoint

        self._write_run_files()
        save_checkpoint(self.model_dir / "best.pt", self.state_dict())
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", killed)
    with pytest.raises(KeyboardInterrupt):
        train_model(run_dir, model_name="killed", quick=True, instance_head="distance")
    model = TrainedModel.load(RunFolder(run_dir).model_dir("killed"))
    assert model.task == "instance" and model.settings.instance_head == "distance"
    assert model.config.out_classes == 5


def test_a_patch_side_the_network_cannot_take_is_refused_when_the_settings_are_made(
        trained_run):
    """Before the time estimate or anything else runs the network (torch would stop with
    'Sizes of tensors must match'), with the sides to use instead."""
    from microseg.recipes.train import prepare_training

    run_dir, _ = trained_run
    with pytest.raises(ConfigError, match=r"patch_size \(30, 30\) is not a multiple .* use "
                                          r"patch_size=\(28, 28\) or \(32, 32\)"):
        prepare_training(run_dir, patch_size=30, quick=True)


def test_the_watershed_is_tuned_on_the_validation_images_after_training(trained_run):
    """As StarDist's optimize_thresholds: the best row of the search is what the model folder
    holds and what every later prediction uses; the score is recomputed here from the saved
    thresholds on the same validation predictions."""
    import pandas as pd

    from microseg.data.dataset import load_subset
    from microseg.data.split import load_manifest
    from microseg.inference.instances import probabilities_to_instances
    from microseg.metrics.instance import match_instances
    from microseg.models import TrainedModel
    from microseg.recipes.train import TUNING_IMAGES_QUICK

    run_dir, summary = trained_run
    folder = RunFolder(run_dir).model_dir("unet")
    tuned = summary["postprocessing"]
    search = pd.read_csv(folder / "instance_postprocessing_search.csv")
    assert len(search) == 2, "quick: two seed thresholds"
    best = search.iloc[0]
    assert (tuned["foreground_threshold"], tuned["seed_threshold"]) == (
        best["foreground_threshold"], best["seed_threshold"])
    assert tuned["validation_f1"] == pytest.approx(best["f1"])
    model = TrainedModel.load(folder)
    assert model.postprocessing.seed_threshold == tuned["seed_threshold"]
    assert model.postprocessing.head == "distance"
    samples = load_subset(load_manifest(run_dir), "val")[:TUNING_IMAGES_QUICK]
    assert tuned["validation_images"] == len(samples)
    f1 = []
    for sample in samples:
        probabilities = model.predict_with_info(sample.image, normalized=True,
                                                object_diameter="auto", tta=True).probabilities
        predicted = probabilities_to_instances(probabilities, model.postprocessing)
        value = match_instances(predicted, sample.label, (0.5,)).scores[0].f1
        if value is not None:
            f1.append(value)
    assert tuned["validation_f1"] == pytest.approx(float(np.mean(f1)))


def test_field_of_view_is_checked_against_the_largest_training_objects():
    from microseg.data.representation import ScaleFacts
    from microseg.recipes.train import FIELD_PER_DIAMETER, TrainingSetup

    # ten images of 10..28-pixel objects, the two largest shrunk to 24: seen 10..24
    diameters = tuple(10.0 + 2 * k for k in range(10))
    factors = tuple(min(1.0, 24.0 / d) for d in diameters)
    facts = ScaleFacts(diameters, factors, float(np.median(diameters)))
    seen = [d * f for d, f in zip(diameters, factors, strict=True)]
    assert facts.trained_range() == pytest.approx((np.median(seen), np.percentile(seen, 90)),
                                                  abs=0.01)
    setup = TrainingSetup(None, [], [], None, facts, None, None)
    largest = facts.trained_range()[1]
    fits, said = setup.field_of_view((24, 24))
    assert fits == (48 >= FIELD_PER_DIAMETER * largest) and "48 pixels" in said
    fits, said = setup.field_of_view((12, 16))
    assert not fits and "canonical_diameter (at most 16)" in said
    unscaled = TrainingSetup(None, [], [], None, ScaleFacts((None,), (1.0,), None), None, None)
    assert unscaled.field_of_view((8, 8)) == (
        True, "the network sees about 16 pixels around each pixel; objects are used at their "
              "own size")
