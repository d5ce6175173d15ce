"""The evaluation recipe on a tiny trained model: outputs, values recomputed, clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from microseg.errors import ConfigError, DataError, OutputExistsError, RunOrderError
from microseg.recipes.evaluate import (
    evaluate_models,
)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run folder: 8 synthetic 64² images split 4/2/2 and a tiny U-Net trained a few steps."""
    import torch

    from microseg.data.dataset import load_subset
    from microseg.data.split import load_manifest
    from microseg.models import ModelConfig, build_model
    from microseg.recipes.prepare import prepare_data
    from microseg.training.config import TrainConfig
    from microseg.training.trainer import Trainer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    run_dir = tmp_path_factory.mktemp("evaluate") / "run"
    prepare_data(run_dir, quick=True, n_synthetic=8, synthetic_shape=(64, 64),
                 fractions=(0.5, 0.25, 0.25))
    manifest = load_manifest(run_dir)
    model_config = ModelConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=0, norm="batch")
    train_config = TrainConfig(epochs=2, steps_per_epoch=4, batch_size=4, patch_size=(64, 64),
                               amp="none", learning_rate=1e-2)
    Trainer(build_model(model_config), train_config, load_subset(manifest, "train"),
            load_subset(manifest, "val"), model_config=model_config,
            model_dir=run_dir / "models" / "unet", device="cpu", progress=False).fit()
    return run_dir


@pytest.fixture
def run_dir(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def recomputed(run_dir, stem_order):
    """Per-image F1 at 0.5 and pooled class IoU, computed here from the model directly."""
    from microseg.data.dataset import load_subset
    from microseg.data.split import load_manifest
    from microseg.inference.instances import load_postprocessing, probabilities_to_instances
    from microseg.inference.tiling import predict_whole
    from microseg.metrics.instance import match_instances
    from microseg.models.checkpoint import load_network

    model, _, _ = load_network(run_dir / "models" / "unet", device="cpu")
    post = load_postprocessing(run_dir / "models" / "unet")
    config = json.loads((run_dir / "eval" / "unet" / "eval_config.json").read_text())
    halo = config["halo"]

    def predict(image):
        return predict_whole(model, np.ascontiguousarray(image), halo, device="cpu",
                             size_divisor=4)

    def predict_tta(image):
        """The mean of the softmax over the 8 rotations and mirror images, each turned back."""
        total = 0
        for flip in (False, True):
            for k in range(4):
                view = np.rot90(image[..., ::-1] if flip else image, k, axes=(-2, -1))
                back = np.rot90(predict(view), -k, axes=(-2, -1))
                total = total + (back[..., ::-1] if flip else back)
        return total / 8

    f1, counts = {}, np.zeros((3, 3))
    for sample in load_subset(load_manifest(run_dir), "test"):
        probabilities = (predict_tta if config["tta"] else predict)(sample.image)
        prediction = probabilities.argmax(0)
        for c in range(3):
            counts[c] += [np.sum((prediction == c) & (sample.target == c)),
                          np.sum((prediction == c) & (sample.target != c)),
                          np.sum((prediction != c) & (sample.target == c))]
        objects = probabilities_to_instances(probabilities, post)
        f1[sample.stem] = match_instances(objects, sample.label, (0.5,)).at(0.5).f1
    iou = counts[:, 0] / counts.sum(axis=1)
    return [f1[s] for s in stem_order], iou


def test_evaluation_writes_tables_summaries_report_and_recomputable_values(run_dir):
    result = evaluate_models(run_dir, device="cpu")
    out = run_dir / "eval" / "unet"
    for name in ("metrics.csv", "summary.json", "eval_config.json", "report.html"):
        assert (out / name).is_file(), name
    assert len(list((out / "figures").glob("*.png"))) == 5
    assert (run_dir / "models" / "unet" / "instance_postprocessing.json").is_file()
    assert json.loads((out / "eval_config.json").read_text())["tta"] is True  # the default

    table = pd.read_csv(out / "metrics.csv")
    assert len(table) == 2 and list(table["f1@0.5"]) == sorted(table["f1@0.5"])
    f1, iou = recomputed(run_dir, list(table["stem"]))
    assert list(table["f1@0.5"]) == pytest.approx(f1)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 2 and summary["task"] == "instance"
    assert [summary["pixel"][n]["iou"] for n in ("background", "foreground", "boundary")] == \
        pytest.approx(iou)
    assert set(summary["pixel"]["foreground"]) >= {"iou", "dice", "precision", "recall"}
    assert set(summary["instance"]) >= {"thresholds", "precision", "recall", "f1", "ap"}
    assert len(summary["instance"]["f1"]) == 18
    assert summary["instance"]["mean_over_images"]["f1"][8] == pytest.approx(np.mean(f1))
    assert summary["panoptic_quality"] == summary["instance"]["panoptic_quality"][8]
    assert summary["fit_diagnosis"]["verdict"] == "too short to tell"

    combined = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert combined["best_model"] == "unet" and combined["models"]["unet"]["n_images"] == 2
    assert result["comparison"].columns.tolist() == ["unet"]
    assert [r.stem for r in result["results"]["unet"]] == list(table["stem"])


def test_quick_runs_report_self_contained_never_overwrite_and_leave_no_tuning(run_dir):
    first = evaluate_models(run_dir, device="cpu", quick=True)
    page = (run_dir / "eval" / "unet" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "panoptic quality" in page and "held-out test images" in page
    assert not (run_dir / "models" / "unet" / "instance_postprocessing.json").exists()
    assert first["models"]["unet"]["eval_dir"] == str(run_dir / "eval" / "unet")

    before = (run_dir / "eval" / "unet" / "summary.json").read_bytes()
    second = evaluate_models(run_dir, device="cpu", quick=True)
    assert (run_dir / "eval" / "unet" / "summary.json").read_bytes() == before
    assert second["models"]["unet"]["eval_dir"] == str(run_dir / "eval" / "unet-2")
    history = (run_dir / "eval" / "summary_history.jsonl").read_text().splitlines()
    assert len(history) == 1 and json.loads(history[0])["best_model"] == "unet"

    evaluate_models(run_dir, device="cpu", quick=True, overwrite=True)
    assert not (run_dir / "eval" / "unet-3").exists()


def test_missing_or_unknown_model_names_notebook_02(run_dir, tmp_path):
    with pytest.raises(RunOrderError, match="02_train_from_scratch.*'other'"):
        evaluate_models(run_dir, model_names=["other"], device="cpu")
    with pytest.raises(RunOrderError, match="no trained model.*02_train_from_scratch"):
        evaluate_models(tmp_path / "empty", device="cpu")
    (run_dir / "models" / "unet" / "config.json").unlink()
    with pytest.raises(RunOrderError, match="config.json.*02_train_from_scratch"):
        evaluate_models(run_dir, model_names=["unet"], device="cpu")


def test_missing_split_names_notebook_01(run_dir):
    (run_dir / "data" / "split.json").unlink()
    with pytest.raises(RunOrderError, match="01_prepare_data"):
        evaluate_models(run_dir, device="cpu")


def test_test_set_without_labels_is_refused_naming_the_images(run_dir):
    path = run_dir / "data" / "split.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["test"]:
        entry["label"] = None
    path.write_text(json.dumps(manifest))
    stems = [e["stem"] for e in manifest["test"]]
    with pytest.raises(DataError, match="no labels") as raised:
        evaluate_models(run_dir, device="cpu")
    assert all(any(stem in p for p in raised.value.problems) for stem in stems)


def test_training_images_are_never_evaluated(run_dir):
    with pytest.raises(ConfigError, match="'test'"):
        evaluate_models(run_dir, subset="train", device="cpu")


def folder_listing(folder):
    return sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_a_labelled_folder_is_evaluated_and_left_untouched(run_dir, tmp_path):
    data_dir = tmp_path / "user_data"
    shutil.copytree(run_dir / "data" / "synthetic", data_dir)
    before = folder_listing(data_dir)
    result = evaluate_models(run_dir, data_dir=data_dir, device="cpu", quick=True)
    assert result["models"]["unet"]["n_images"] == 2
    assert result["data"].source == str(data_dir)
    assert folder_listing(data_dir) == before


def test_models_are_evaluated_on_another_run_folders_split(run_dir):
    """Notebook 04 keeps its target data in run_dir/target; its models live in run_dir/models."""
    from microseg.data.split import load_manifest
    from microseg.recipes.prepare import prepare_data

    target = run_dir / "target"
    prepare_data(target, quick=True, n_synthetic=6, synthetic_shape=(48, 48),
                 fractions=(0.34, 0.33, 0.33), seed=7)
    expected = sorted(e["stem"] for e in load_manifest(target).entries("test"))
    result = evaluate_models(run_dir, device="cpu", split_dir=target)
    assert sorted(result["tables"]["unet"]["stem"]) == expected
    assert result["data"].source == f"test split of {target}"
    assert all(s.image.shape[1:] == (48, 48) for s in result["data"].samples)
    assert (run_dir / "eval" / "summary.json").is_file() and not (target / "eval").exists()


def test_a_nan_pixel_in_an_evaluated_folder_names_the_image(run_dir, tmp_path):
    from microseg.io import read_image, write_image

    data_dir = tmp_path / "user_data"
    shutil.copytree(run_dir / "data" / "synthetic", data_dir)
    damaged = sorted((data_dir / "images").iterdir())[1]
    image = read_image(damaged).astype(np.float32)
    image[0, 3, 4] = np.nan
    damaged.unlink()
    write_image(damaged, image, axes="CYX")
    with pytest.raises(DataError, match="1 NaN and 0 infinite pixel") as raised:
        evaluate_models(run_dir, data_dir=data_dir, device="cpu")
    assert str(damaged) in str(raised.value)


def test_folder_with_missing_or_non_integer_labels_is_explained(run_dir, tmp_path):
    import tifffile

    data_dir = tmp_path / "user_data"
    shutil.copytree(run_dir / "data" / "synthetic", data_dir)
    missing = sorted((data_dir / "labels").iterdir())[0]
    missing.unlink()
    with pytest.raises(DataError, match="no labels") as raised:
        evaluate_models(run_dir, data_dir=data_dir, device="cpu")
    assert any(missing.stem in p for p in raised.value.problems)
    tifffile.imwrite(missing, np.full((64, 64), 0.5, np.float32))
    with pytest.raises(DataError, match="whole numbers"):
        evaluate_models(run_dir, data_dir=data_dir, device="cpu")


def test_prediction_of_the_wrong_shape_is_explained(run_dir, monkeypatch):
    import microseg.inference.tiling as tiling

    monkeypatch.setattr(tiling, "predict_whole",
                        lambda model, image, *args, **kw: np.zeros((3, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"\(8, 8\).*\(64, 64\)"):
        evaluate_models(run_dir, device="cpu")


def test_model_that_does_not_fit_the_data_is_explained_or_skipped(run_dir, caplog):
    from microseg.models import ModelConfig, build_model
    from microseg.models.checkpoint import save_checkpoint

    folder = run_dir / "models" / "binary"
    config = ModelConfig(channels=(4, 8), strides=(2,), num_res_units=0, out_classes=2)
    folder.mkdir()
    config.save(folder / "config.json")
    save_checkpoint(folder / "best.pt", {"model": build_model(config).state_dict()})
    with pytest.raises(DataError, match="'binary'") as raised:
        evaluate_models(run_dir, model_names=["binary"], device="cpu")
    assert any("outputs 2 classes" in p and "needs 3" in p for p in raised.value.problems)
    with caplog.at_level("WARNING", logger="microseg"):
        result = evaluate_models(run_dir, device="cpu", quick=True)
    assert list(result["models"]) == ["unet"] and "skipping model 'binary'" in caplog.text


def test_output_folder_collision_with_a_file_is_refused(run_dir):
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "unet").write_text("not a folder")
    with pytest.raises(OutputExistsError):
        evaluate_models(run_dir, device="cpu", quick=True, overwrite=True)


def test_a_3d_binary_model_is_evaluated_per_pixel(tmp_path):
    import torch

    from microseg.data.dataset import load_subset
    from microseg.data.split import load_manifest
    from microseg.models import ModelConfig, build_model
    from microseg.recipes.prepare import prepare_data
    from microseg.training.config import TrainConfig
    from microseg.training.trainer import Trainer

    torch.manual_seed(0)
    run_dir = tmp_path / "run3d"
    prepare_data(run_dir, ndim=3, task="binary", n_synthetic=4, synthetic_shape=(16, 32, 32),
                 fractions=(0.5, 0.25, 0.25))
    manifest = load_manifest(run_dir)
    model_config = ModelConfig(ndim=3, channels=(4, 8), strides=(2,), num_res_units=0,
                               out_classes=2, norm="batch")
    train_config = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=(16, 32, 32),
                               amp="none")
    Trainer(build_model(model_config), train_config, load_subset(manifest, "train"),
            load_subset(manifest, "val"), model_config=model_config,
            model_dir=run_dir / "models" / "unet3d", device="cpu", progress=False).fit()
    result = evaluate_models(run_dir, device="cpu")
    summary = result["models"]["unet3d"]
    assert summary["task"] == "binary" and summary["instance"] is None
    assert summary["pixel"]["foreground"]["dice"] == pytest.approx(summary["object_dice"])
    assert "f1@0.5" not in result["tables"]["unet3d"].columns
    assert result["summary"]["ranked_by"] == "mean class Dice (pooled)"
    assert len(list((run_dir / "eval" / "unet3d" / "figures").glob("*.png"))) == 4


def test_one_tile_side_and_one_model_name_are_accepted(run_dir):
    result = evaluate_models(run_dir, model_names="unet", tile_shape=32, device="cpu",
                             quick=True)
    assert list(result["models"]) == ["unet"]
    assert "in tiles of (32, 32)" in result["models"]["unet"]["prediction"]


def test_a_model_folder_elsewhere_is_evaluated_like_a_model_of_the_run(run_dir, tmp_path):
    """The same name wherever a model is chosen: a path to a model folder works as a name."""
    elsewhere = tmp_path / "colleague" / "nuclei_v2"
    shutil.copytree(run_dir / "models" / "unet", elsewhere)
    by_path = evaluate_models(run_dir, model_names=[str(elsewhere)], device="cpu", quick=True,
                              tta=False)
    by_name = evaluate_models(run_dir, model_names=["unet"], device="cpu", quick=True, tta=False)
    assert list(by_path["models"]) == ["nuclei_v2"]
    assert (run_dir / "eval" / "nuclei_v2" / "summary.json").is_file()
    assert by_path["tables"]["nuclei_v2"]["stem"].tolist() == by_name["tables"]["unet"][
        "stem"].tolist()
    assert by_path["models"]["nuclei_v2"]["at_threshold"] == by_name["models"]["unet"][
        "at_threshold"]
    with pytest.raises(ConfigError, match="two models are called 'unet'"):
        evaluate_models(run_dir, model_names=["unet", str(run_dir / "models" / "unet")],
                        device="cpu", quick=True)
    with pytest.raises(RunOrderError, match="holds no trained model"):
        evaluate_models(run_dir, model_names=[str(tmp_path / "colleague")], device="cpu")
