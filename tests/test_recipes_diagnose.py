"""diagnose_model: every diagnostic of a trained model, written to diagnostics/<name>/summary.json."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from microseg.errors import RunOrderError
from microseg.inference.receptive_field import HaloTooSmallWarning
from microseg.recipes.diagnose import diagnose_model, sweep_sizes


def train(run_dir, name, norm, steps):
    from microseg.data.dataset import load_subset
    from microseg.data.split import load_manifest
    from microseg.models import ModelConfig, build_model
    from microseg.training.config import TrainConfig
    from microseg.training.trainer import Trainer

    manifest = load_manifest(run_dir)
    model_config = ModelConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=0, norm=norm)
    train_config = TrainConfig(
        epochs=1,
        steps_per_epoch=steps,
        batch_size=4,
        patch_size=(64, 64),
        amp="none",
        learning_rate=1e-2,
    )
    Trainer(
        build_model(model_config),
        train_config,
        load_subset(manifest, "train"),
        load_subset(manifest, "val"),
        model_config=model_config,
        model_dir=run_dir / "models" / name,
        device="cpu",
        progress=False,
    ).fit()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """8 synthetic 96² images split 4/2/2; a BatchNorm U-Net ("unet") and an InstanceNorm one."""
    import torch

    from microseg.recipes.prepare import prepare_data

    torch.set_num_threads(1)
    torch.manual_seed(0)
    run_dir = tmp_path_factory.mktemp("diagnose") / "run"
    prepare_data(
        run_dir, quick=True, n_synthetic=8, synthetic_shape=(96, 96), fractions=(0.5, 0.25, 0.25)
    )
    train(run_dir, "unet", "batch", 6)
    train(run_dir, "inst", "instance", 1)
    return run_dir


@pytest.fixture
def run_dir(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


@pytest.fixture
def diagnosed(run_dir):
    return run_dir, diagnose_model(run_dir, quick=True, device="cpu")


def test_summary_holds_every_diagnostic(diagnosed):
    run_dir, result = diagnosed
    summary = json.loads((run_dir / "diagnostics" / "unet" / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary.to_dict()))
    assert summary["model_name"] == "unet" and summary["norm"] == "batch"
    assert summary["trf"]["extent"] == [21, 21] and summary["recommended_halo"] == [12, 12]
    assert summary["halo"] == 12 and summary["halo_sufficient"] is True
    assert summary["erf"]["extent"][0] <= 21
    assert summary["tile_shape"] == 64, "the training patch side"
    assert summary["norm_comparison"] == [] and summary["n_val_images"] == 1


def test_batchnorm_model_stitches_seamlessly(diagnosed):
    _, result = diagnosed
    mismatch = result["summary"]["tile_mismatch"]
    assert mismatch["any"] is False and mismatch["n_pairs"] >= 1
    assert result["summary"]["max_abs_diff"] <= 1e-6
    sample, first = result["mismatch"]
    assert first["map"].shape == sample.image.shape[1:] and first["map"].sum() == 0
    sweep = result["summary"]["tile_sweep"]
    assert [row["tile_size"] for row in sweep] == sweep_sizes(64, 4, 96) == [16, 32, 64, 96]
    dice = np.array([[row["dice_class1"], row["dice_class2"]] for row in sweep], dtype=float)
    np.testing.assert_allclose(dice, dice[:1].repeat(len(sweep), axis=0), atol=1e-3)


def test_disparity_records_the_training_batch(diagnosed):
    disparity = diagnosed[1]["summary"]["train_eval_disparity"]
    assert 0.0 <= disparity["disparity"] <= 1.0
    assert disparity["batch"]["size"] == 4 and disparity["batch"]["tile_shape"] == [64, 64]


def test_figures_are_saved_and_a_second_run_gets_a_new_folder(diagnosed):
    run_dir, result = diagnosed
    figures = run_dir / "diagnostics" / "unet" / "figures"
    assert {p.stem for p in figures.glob("*.png")} == {
        "receptive_field",
        "tile_sweep",
        "tile_mismatch",
    }
    second = diagnose_model(run_dir, quick=True, device="cpu")
    assert second["out_dir"] == run_dir / "diagnostics" / "unet-2"
    again = diagnose_model(run_dir, quick=True, device="cpu", overwrite=True)
    assert again["out_dir"] == run_dir / "diagnostics" / "unet"


def test_instance_norm_model_warns_and_mismatches(run_dir):
    with pytest.warns(HaloTooSmallWarning, match="no halo"):
        result = diagnose_model(run_dir, model_name="inst", quick=True, device="cpu")
    summary = result["summary"]
    assert summary["trf"]["whole_input"] is True and summary["halo_sufficient"] is False
    assert summary["tile_mismatch"]["any"] is True and summary["max_abs_diff"] > 1e-4
    assert summary["train_eval_disparity"]["disparity"] == 0.0


def test_comparison_on_the_run_data(run_dir):
    result = diagnose_model(
        run_dir, quick=True, device="cpu", compare_norms=True, comparison_data="run"
    )
    rows = result["summary"]["norm_comparison"]
    assert [r["configuration"] for r in rows][:2] == ["batch/global", "batch/tile"] and len(
        rows
    ) == 6
    assert result["summary"]["norm_comparison_settings"]["config"]["patch_size"] == 48
    assert "norm_comparison" in result["figures"] and "norm_comparison" in result["tables"]


def test_missing_steps_name_the_notebook(run_dir, tmp_path):
    with pytest.raises(RunOrderError, match="02_train_from_scratch"):
        diagnose_model(run_dir, model_name="nope", quick=True, device="cpu")
    with pytest.raises(RunOrderError, match="01_prepare_data"):
        diagnose_model(tmp_path / "empty", quick=True, device="cpu")


def test_a_model_folder_elsewhere_is_diagnosed_under_its_folder_name(run_dir, tmp_path):
    elsewhere = tmp_path / "shared" / "bn_model"
    shutil.copytree(run_dir / "models" / "unet", elsewhere)
    result = diagnose_model(run_dir, model_name=str(elsewhere), quick=True, device="cpu",
                            compare_norms=False)
    assert result["summary"]["model_name"] == "bn_model"
    assert result["out_dir"] == run_dir / "diagnostics" / "bn_model"
