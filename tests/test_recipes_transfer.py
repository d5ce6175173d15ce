"""The transfer-learning and fine-tuning recipes in quick mode, end to end."""

import numpy as np
import pytest
import torch

from microseg.data.synthetic import write_synthetic_dataset
from microseg.errors import DataError, MicrosegError, OutputExistsError, RunOrderError
from microseg.export.torchscript import export_torchscript
from microseg.io import write_image
from microseg.models import ModelConfig, build_model
from microseg.models.checkpoint import load_checkpoint, save_checkpoint
from microseg.recipes.fine_tune import correction_rounds, fine_tune
from microseg.recipes.prepare import prepare_data
from microseg.recipes.transfer import (
    adapt_pretrained,
    comparison_table,
    prepare_transfer,
    transfer_learning,
    zero_shot,
)
from microseg.runs import RunFolder, read_json
from microseg.transfer.adapt import AdaptConfig
from microseg.transfer.freezing import layer_groups

CONFIG = ModelConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
SUMMARY_KEYS = {"zero_shot_dice", "adapted_dice", "scratch_dice", "trainable_params",
                "total_params"}


def pretrained_run(root):
    """A run folder as notebooks 01 and 02 leave it: a source split and models/unet."""
    prepare_data(root, quick=True)
    torch.manual_seed(0)
    model = build_model(CONFIG)
    folder = RunFolder(root).model_dir("unet")
    folder.mkdir(parents=True)
    CONFIG.save(folder / "config.json")
    save_checkpoint(folder / "best.pt", {"model": model.state_dict(), "epoch": 1})
    return model


def files_under(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_transfer_learning_quick(tmp_path):
    run_dir = tmp_path / "run"
    pretrained = pretrained_run(run_dir)
    source_data = files_under(run_dir / "data")
    summary = transfer_learning(run_dir, quick=True)
    assert SUMMARY_KEYS <= set(summary)
    for key in ("zero_shot_dice", "adapted_dice", "scratch_dice"):
        assert 0.0 <= summary[key] <= 1.0
    assert summary["total_params"] == sum(p.numel() for p in pretrained.parameters())
    assert summary["trainable_params"] < summary["total_params"]
    assert summary["n_target_train"] == 4 and summary["n_target_val"] == 2
    assert summary["n_target_test"] == 2
    assert files_under(run_dir / "data") == source_data, "the source split stays as it was"
    assert sorted(p.name for p in run_dir.iterdir()) == ["data", "models", "target"]
    run = RunFolder(run_dir)
    assert run.model_names() == ["transfer", "transfer_scratch", "unet"]
    assert read_json(run.model_dir("transfer") / "summary.json") == summary
    assert AdaptConfig.load(run.model_dir("transfer") / "adapt_config.json").freeze == ("encoder",)
    target_manifest = read_json(run_dir / "target" / "data" / "split.json")
    assert [len(target_manifest[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    saved = load_checkpoint(run.model_dir("transfer") / "best.pt")["model"]
    original = pretrained.state_dict()
    encoder = tuple(m + "." for m in layer_groups(pretrained)["encoder"])
    limits = ("r_max", "d_max")  # schedule limits, set by the trainer, not learnt
    for key, value in original.items():
        if key.startswith(encoder) and not key.endswith(limits):
            assert torch.equal(saved[key], value), key
    head = [k for k in original if k.startswith("model.2.") and k.endswith("weight")]
    assert any(not torch.equal(saved[k], original[k]) for k in head)
    with pytest.raises(OutputExistsError):
        transfer_learning(run_dir, quick=True)
    # Both models' watershed thresholds were tuned on the target validation images: the saved
    # post-processing is the search's best row, whose F1 is the table's largest.
    for name in ("transfer", "transfer_scratch"):
        search = run.model_dir(name) / "instance_postprocessing_search.csv"
        rows = [line.split(",") for line in search.read_text().splitlines()]
        header, first = rows[0], dict(zip(rows[0], rows[1], strict=True))
        f1 = [float(r[header.index("f1")]) for r in rows[1:]]
        assert float(first["f1"]) == max(f1) and len(f1) == 2, "the quick grid: 2 seed values"
        tuned = read_json(run.model_dir(name) / "instance_postprocessing.json")
        assert tuned["seed_threshold"] == float(first["seed_threshold"])


def test_fine_tune_quick_with_a_correction_round(tmp_path):
    run_dir = tmp_path / "run"
    pretrained_run(run_dir)
    summary = fine_tune(run_dir, quick=True, rounds=1, images_per_round=1)
    assert SUMMARY_KEYS | {"rounds"} <= set(summary)
    assert summary["trainable_params"] == summary["total_params"]
    [record] = summary["rounds"]
    assert record["round"] == 1 and record["n_train"] == 5 and record["simulated"]
    assert record["dice_before"] == summary["adapted_dice"]
    assert 0.0 <= record["changed_pixels"] <= 1.0
    run = RunFolder(run_dir)
    assert {"finetune", "finetune_scratch", "finetune_round1"} <= set(run.model_names())
    round_dir = run_dir / "corrections" / "round_1"
    assert sorted(p.name for p in (round_dir / "labels").iterdir()) == ["synthetic_000.tif"]
    assert (run_dir / "corrections" / "rounds.csv").is_file()
    grown = read_json(round_dir / "split.json")
    assert [e["stem"] for e in grown["train"]][-1] == "round1/synthetic_000"
    assert (run_dir / "target" / "data" / "pool" / "labels" / "synthetic_000.tif").is_file()


def test_adapted_models_keep_the_pretrained_head_and_object_scale(tmp_path):
    """A model of the distance head trained at a canonical size: transfer learning, fine-tuning
    and its correction round save models that predict the same way (prediction.json)."""
    from microseg.models import PredictionSettings, TrainedModel

    run_dir = tmp_path / "run"
    prepare_data(run_dir, quick=True)
    config = CONFIG.replace(out_classes=5)
    folder = RunFolder(run_dir).model_dir("unet")
    folder.mkdir(parents=True)
    config.save(folder / "config.json")
    save_checkpoint(folder / "best.pt", {"model": build_model(config).state_dict(), "epoch": 1})
    PredictionSettings(task="instance", instance_head="distance", canonical_diameter=12.0,
                       object_diameter=15.0).save(folder / "prediction.json")
    transfer_learning(run_dir, quick=True)
    fine_tune(run_dir, quick=True, rounds=1, images_per_round=1)
    for name in ("transfer", "finetune", "finetune_round1"):
        model = TrainedModel.load(RunFolder(run_dir).model_dir(name))
        assert model.settings.instance_head == "distance", name
        assert model.settings.canonical_diameter == 12.0, name
        assert model.config.out_classes == 5, name


def test_default_pretrained_model_comes_from_notebook_02(tmp_path):
    with pytest.raises(RunOrderError, match="02_train_from_scratch"):
        prepare_transfer(tmp_path / "empty_run", quick=True)


def test_user_target_data_and_torchscript(tmp_path):
    run_dir = tmp_path / "run"
    pretrained = pretrained_run(run_dir)
    user = write_synthetic_dataset(tmp_path / "user", n_images=6, shape=(64, 64), domain="target")
    before = files_under(user)
    scripted = tmp_path / "scripted.pt"
    export_torchscript(pretrained, np.zeros((1, 1, 32, 32), np.float32), scripted)
    setup = prepare_transfer(run_dir, scripted, target_data_dir=user, n_target_train=2,
                             n_target_val=1, allow_torchscript=True)
    assert (len(setup.train), len(setup.val), len(setup.test)) == (2, 1, 3)
    assert files_under(user) == before
    assert setup.pretrained.kind == "torchscript"
    zero = zero_shot(setup)
    assert len(zero["val"].per_image) == 1 and len(zero["test"].per_image) == 3
    table = comparison_table(zero["test"])
    assert table["foreground_dice"].tolist() == [zero["test"].foreground_dice]
    with pytest.raises(MicrosegError, match="can evaluate but not adapt"):
        adapt_pretrained(setup, "transfer")
    unlabelled = tmp_path / "unlabelled"
    write_image(unlabelled / "images" / "new.tif", np.zeros((1, 64, 64), np.uint16), axes="CYX")
    with pytest.raises(DataError, match="simulated corrections need the true labels"):
        correction_rounds(setup, None, rounds=1, images_per_round=1, unlabelled_dir=unlabelled)
    assert correction_rounds(setup, None, rounds=0) == []
    with pytest.raises(DataError, match="holds 6 labelled image"):
        prepare_transfer(run_dir, scripted, target_data_dir=user, n_target_train=5,
                         allow_torchscript=True)


def test_volumes_get_volume_target_data(tmp_path):
    config = CONFIG.replace(ndim=3)
    folder = RunFolder(tmp_path / "run").model_dir("unet")
    folder.mkdir(parents=True)
    config.save(folder / "config.json")
    save_checkpoint(folder / "best.pt", {"model": build_model(config).state_dict()})
    setup = prepare_transfer(tmp_path / "run", quick=True, n_target_train=2, n_target_val=1,
                             n_target_test=1)
    assert setup.manifest.ndim == 3 and setup.task == "instance"
    assert setup.train[0].image.shape == (1, 32, 64, 64)
    zero = zero_shot(setup)
    assert zero["test"].predictions[0].shape == (32, 64, 64)
