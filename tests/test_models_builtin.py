"""Built-in models: packed from a model folder, found by name wherever a model folder is, and
refused when a shipped file is damaged."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from microseg.errors import MicrosegError
from microseg.models import ModelConfig, TrainedModel, build_model, builtin
from microseg.models.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

REPOSITORY = Path(__file__).resolve().parent.parent


def _pack_script():
    spec = importlib.util.spec_from_file_location(
        "builtin_model", REPOSITORY / "benchmarks" / "builtin_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model_folder(folder: Path) -> Path:
    """A small trained-looking instance model folder (random weights)."""
    from microseg.inference.instances import InstancePostprocessing

    torch.manual_seed(0)
    config = ModelConfig(channels=(4, 8, 16), num_res_units=1, out_classes=5)
    network = build_model(config).eval()
    folder.mkdir(parents=True)
    config.save(folder / "config.json")
    save_checkpoint(folder / "best.pt", {"format": CHECKPOINT_FORMAT, "model": network.state_dict(),
                                         "best_epoch": 7, "optimizer": {"lr": 1.0}})
    TrainedModel.from_network(network, config, instance_head="distance", halo=8,
                              canonical_diameter=30.0, object_diameter=20.0,
                              trained_diameters=(20.0, 28.0),
                              postprocessing=InstancePostprocessing(head="distance")).save(folder)
    (folder / "summary.json").write_text(json.dumps({"steps": 10, "epochs_run": 2}))
    return folder


@pytest.fixture()
def packed(tmp_path, monkeypatch):
    """A model packed as built-in "nuclei" into a weights folder the package then uses."""
    source = _model_folder(tmp_path / "run" / "models" / "unet")
    row = tmp_path / "row.json"
    row.write_text(json.dumps({"label": "defaults", "command": "real_data.py ...",
                               "scores": {"f1": 0.9123, "dsb_score": 0.61, "per_image": []}}))
    weights = tmp_path / "weights"
    _pack_script().main(["--model-dir", str(source), "--name", "nuclei", "--row", str(row),
                         "--description", "Nuclei in fluorescence images.", "--data", "DSB",
                         "--weights-dir", str(weights)])
    monkeypatch.setattr(builtin, "WEIGHTS_DIR", weights)
    builtin._verified.cache_clear()
    yield source, weights
    builtin._verified.cache_clear()


def test_a_packed_model_predicts_as_the_folder_it_came_from(packed):
    source, weights = packed
    state = torch.load(weights / "nuclei" / "best.pt", weights_only=True)
    assert "optimizer" not in state and state["best_epoch"] == 7
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float16}
    original = TrainedModel.load(source)
    shipped = TrainedModel.load("nuclei")
    assert shipped.folder == weights / "nuclei"
    assert shipped.settings == original.settings
    image = np.random.default_rng(1).normal(size=(1, 64, 64)).astype(np.float32)
    a = original.predict(image, normalized=True)
    b = shipped.predict(image, normalized=True)
    assert np.abs(a - b).max() < 5e-3, "fp16 weights change the probabilities a little only"
    assert not np.array_equal(a, b), "the weights really were rounded to fp16"
    listed = builtin.builtin_models()
    assert [m["name"] for m in listed] == ["nuclei"]
    assert listed[0]["scores"] == {"f1": 0.912, "dsb_score": 0.61}
    card = (weights / "nuclei" / "MODEL_CARD.md").read_text()
    assert "Nuclei in fluorescence images." in card and "| f1 | 0.912 |" in card


def test_the_name_works_where_a_model_folder_does(packed, tmp_path):
    from microseg.runs import RunFolder
    from microseg.transfer.loading import load_pretrained

    _, weights = packed
    run = RunFolder(tmp_path / "experiment")
    assert builtin.run_model(run, "nuclei") == weights / "nuclei"
    assert RunFolder.model_key("nuclei") == "nuclei"
    assert load_pretrained("nuclei").source == str(weights / "nuclei")
    own = _model_folder(run.model_dir("nuclei"))
    assert builtin.run_model(run, "nuclei") == own, "the run's own model of that name comes first"
    with pytest.raises(MicrosegError, match="not a built-in model.*nuclei"):
        builtin.builtin_model_dir("cyto")


def test_a_damaged_shipped_file_is_refused(packed):
    _, weights = packed
    path = weights / "nuclei" / "prediction.json"
    path.write_text(path.read_text().replace("30.0", "31.0"))
    with pytest.raises(MicrosegError, match=r"damaged: .*prediction.json has sha256"):
        TrainedModel.load("nuclei")
    builtin._verified.cache_clear()
    path.unlink()
    with pytest.raises(MicrosegError, match="prediction.json is missing"):
        builtin.builtin_model_dir("nuclei")


def test_packing_refuses_to_replace_a_model_unless_told(packed, tmp_path):
    source, weights = packed
    args = ["--model-dir", str(source), "--name", "nuclei", "--description", "d", "--data", "x",
            "--weights-dir", str(weights)]
    with pytest.raises(SystemExit, match="--replace"):
        _pack_script().main(args)
    _pack_script().main([*args, "--replace", "--fp32"])
    state = torch.load(weights / "nuclei" / "best.pt", weights_only=True)
    assert state["weights_dtype"] == "float32"
    builtin._verified.cache_clear()
    assert builtin.builtin_model_dir("nuclei") == weights / "nuclei"



def test_the_command_line_lists_the_built_in_models(packed, capsys):
    from microseg.__main__ import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("nuclei") and "Nuclei in fluorescence images." in out
    assert "f1 0.912" in out and "trained on: DSB" in out


def test_shipped_nuclei_model_is_intact_and_segments_without_training():
    """The package's own "nuclei" model: files as shipped, and synthetic nuclei segmented
    zero-shot at their own size and enlarged 3x (measured on real held-out images in
    BENCHMARKS.md; here a check that the shipped weights work at all)."""
    from microseg.data.synthetic import synthetic_sample
    from microseg.metrics.instance import match_instances
    from microseg.transforms.scale import rescale_image, rescale_labels

    builtin._verified.cache_clear()
    assert [m["name"] for m in builtin.builtin_models()] == ["nuclei"]
    assert builtin.builtin_model_dir("nuclei") == builtin.WEIGHTS_DIR / "nuclei"
    model = TrainedModel.load("nuclei")
    assert model.settings.instance_head == "distance"
    for factor, seed in ((1.0, 0), (1.0, 1), (3.0, 2)):
        image, label = synthetic_sample((192, 192), seed=seed)
        image = rescale_image(image.astype(np.float32), factor)
        label = rescale_labels(label, factor)
        info = model.predict_with_info(image, object_diameter="auto")
        f1 = match_instances(model.labels(info.probabilities), label, (0.5,)).scores[0].f1
        assert f1 > 0.85, (factor, seed, f1, info.describe())


def test_transfer_from_the_built_in_model_keeps_its_head_and_object_scale(packed, tmp_path):
    """Notebooks 03/04 with ``pretrained_path="nuclei"``: the target images are represented as
    the built-in model was trained (its instance head, resampled to its canonical size)."""
    from microseg.recipes.transfer import prepare_transfer

    setup = prepare_transfer(tmp_path / "run", "nuclei", n_target_train=2, n_target_val=1,
                             n_target_test=1, quick=True)
    assert setup.pretrained.source == str(packed[1] / "nuclei")
    assert (setup.representation.head, setup.representation.canonical_diameter) == ("distance", 30.0)


def _annotated_folder(folder: Path, shape: str = "disc", channels: int = 1, n: int = 4) -> Path:
    """``images/`` + ``labels/`` of ``n`` 96² images with a few objects: discs (round, like
    nuclei) or L-shapes (like spread cells), grey or with ``channels`` channels."""
    import tifffile

    yy, xx = np.mgrid[:96, :96]
    for k in range(n):
        label = np.zeros((96, 96), np.uint16)
        for index, (y, x) in enumerate([(24, 24), (24, 70), (70, 30), (68, 70)], start=1):
            if shape == "disc":
                label[(yy - y - k) ** 2 + (xx - x) ** 2 <= 10 ** 2] = index
            else:
                label[y - 10:y + 10, x - 10:x - 4] = index
                label[y + 4:y + 10, x - 10:x + 12] = index
        image = (label > 0).astype(np.float32) * 200 + 20
        image = np.repeat(image[None], channels, axis=0) if channels > 1 else image
        for sub, array in (("images", image.astype(np.uint8)), ("labels", label)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(folder / sub / f"img_{k}.tif", array)
    return folder


def test_the_built_in_model_is_suggested_for_round_objects_in_grey_images(packed, tmp_path):
    name, why = builtin.builtin_for(_annotated_folder(tmp_path / "nuclei"))
    assert name == "nuclei" and "median solidity 0.9" in why
    name, why = builtin.builtin_for(_annotated_folder(tmp_path / "cells", shape="L"))
    assert name is None and "not round like nuclei" in why
    name, why = builtin.builtin_for(_annotated_folder(tmp_path / "two", channels=2), axes="CYX")
    assert name is None and "2 channels" in why


def test_notebook_03_starts_from_the_built_in_model_when_the_run_has_none(packed, tmp_path):
    from microseg.errors import RunOrderError
    from microseg.recipes.transfer import prepare_transfer

    nuclei = _annotated_folder(tmp_path / "nuclei", n=5)
    setup = prepare_transfer(tmp_path / "fresh", None, nuclei, n_target_train=2, n_target_val=1)
    assert setup.pretrained.source == str(packed[1] / "nuclei")
    cells = _annotated_folder(tmp_path / "cells", shape="L", n=5)
    with pytest.raises(RunOrderError, match="no trained model.*no built-in model suits"):
        prepare_transfer(tmp_path / "fresh2", None, cells, n_target_train=2, n_target_val=1)


def _stained_tissue(seed=0, shape=(96, 96)):
    """An H&E-like RGB image (YXC, uint8) from known stains: purple nuclei on pink tissue."""
    from skimage.color import hed2rgb

    rng = np.random.default_rng(seed)
    hed = np.zeros((*shape, 3))
    hed[..., 1] = 0.02 + rng.uniform(0.0, 0.005, shape)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for y, x in rng.integers(12, shape[0] - 12, (6, 2)):
        hed[..., 0][(yy - y) ** 2 + (xx - x) ** 2 < 36] = 0.12
    return np.round(hed2rgb(hed) * 255).astype(np.uint8)


def test_a_model_reading_nuclei_takes_stained_tissue_as_its_haematoxylin(packed, tmp_path):
    """Packed with ``--colour-input nuclei``, a grey model predicts a colour image of stained
    tissue exactly as the haematoxylin channel made by hand; without it, the image is refused
    with the way to make it one channel."""
    from microseg.errors import DataError
    from microseg.transforms.colour import haematoxylin

    source, weights = packed
    _pack_script().main(["--model-dir", str(source), "--name", "nuclei", "--replace",
                         "--description", "Nuclei.", "--data", "DSB", "--colour-input", "nuclei",
                         "--weights-dir", str(weights)])
    builtin._verified.cache_clear()
    model = TrainedModel.load("nuclei")
    assert model.settings.colour_input == "nuclei"
    assert "haematoxylin" in (weights / "nuclei" / "MODEL_CARD.md").read_text()
    tissue = _stained_tissue()
    by_hand = model.predict(haematoxylin(tissue)[None])
    np.testing.assert_array_equal(model.predict(tissue, axes="YXC"), by_hand)
    np.testing.assert_array_equal(model.predict(np.moveaxis(tissue, -1, 0)), by_hand)
    composite = np.zeros((64, 64, 3), np.uint8)
    composite[20:30, 20:30, 2] = 220
    with pytest.raises(DataError, match="dark background"):
        model.predict(composite, axes="YXC")
    unconverted = TrainedModel.load(source)
    assert unconverted.settings.colour_input == "refuse"
    with pytest.raises(DataError, match="haematoxylin"):
        unconverted.predict(tissue, axes="YXC")


def test_the_shipped_nuclei_model_reads_colour_images_of_stained_tissue():
    builtin._verified.cache_clear()
    model = TrainedModel.load("nuclei")
    assert model.settings.colour_input == "nuclei"
    probabilities = model.predict(_stained_tissue(seed=3), axes="YXC")
    assert probabilities.shape[1:] == (96, 96)
