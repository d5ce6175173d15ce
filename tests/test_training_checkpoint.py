"""Checkpoints: weights-only loading, load_network round trip, clear errors, RNG states, and a
training killed with SIGKILL that resumes to bitwise the same weights and history."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from microseg.errors import DataError, MicrosegError, OutputExistsError, RunOrderError
from microseg.models import ModelConfig, build_model
from microseg.models.checkpoint import load_checkpoint, load_network, save_checkpoint
from microseg.training.checkpoint import restore_rng_states, rng_states
from microseg.training.config import TrainConfig
from microseg.training.history import TIMING_COLUMNS
from microseg.training.trainer import Trainer

TRAINING_SCRIPT = textwrap.dedent("""
    import sys
    import time
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from microseg.models import ModelConfig, build_model
    from microseg.training.config import TrainConfig
    from microseg.training.trainer import Trainer, seed_everything
    from microseg.transforms.augment import Augmenter

    def pairs(n, seed, shape=(32, 32)):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        out = []
        for _ in range(n):
            target = np.zeros(shape, np.int64)
            for _ in range(3):
                cy, cx = rng.integers(4, shape[0] - 4), rng.integers(4, shape[1] - 4)
                target[(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(3, 6) ** 2] = 1
            out.append(((target + 0.3 * rng.standard_normal(shape)).astype(np.float32)[None],
                        target))
        return out

    seed_everything(0)
    model_config = ModelConfig(ndim=2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1,
                               out_classes=2, dropout=0.1)
    config = TrainConfig(epochs=8, steps_per_epoch=4, batch_size=2, patch_size=(16, 16),
                         amp="none", val_tile=32, patience=0, renorm_warmup_steps=8,
                         renorm_ramp_steps=8)
    Trainer(build_model(model_config), config, pairs(3, 0), pairs(2, 1),
            model_config=model_config, model_dir=sys.argv[1], resume=True, progress=False,
            augment_factory=lambda seed: Augmenter(ndim=2, seed=seed),
            callbacks=[lambda trainer, record: time.sleep(0.2)]).fit()  # time to be killed
""")


def tiny_pairs(n, seed=0, shape=(32, 32)):
    rng = np.random.default_rng(seed)
    target = (rng.random((n, *shape)) > 0.6).astype(np.int64)
    image = (target + 0.3 * rng.standard_normal((n, *shape))).astype(np.float32)
    return [(image[i][None], target[i]) for i in range(n)]


@pytest.fixture
def trained(tmp_path):
    model_config = ModelConfig(ndim=2, channels=(4, 8), strides=(2,), num_res_units=0,
                               out_classes=2)
    torch.manual_seed(0)
    model = build_model(model_config)
    config = TrainConfig(epochs=2, steps_per_epoch=2, batch_size=2, patch_size=(16, 16),
                         amp="none", val_tile=32)
    trainer = Trainer(model, config, tiny_pairs(2), tiny_pairs(1, seed=1),
                      model_config=model_config, model_dir=tmp_path / "model", progress=False)
    trainer.fit()
    return trainer, tmp_path / "model"


def test_checkpoints_load_with_weights_only(trained):
    trainer, folder = trained
    for name in ("best.pt", "latest.pt"):
        state = torch.load(folder / name, weights_only=True)
        assert state["format"] == "microseg-checkpoint-1"
        assert state["train_config"]["batch_size"] == 2
        assert state["model_config"]["channels"] == [4, 8]
        for key, value in trainer.module.state_dict().items():
            if name == "latest.pt":
                assert torch.equal(state["model"][key], value), key
    assert state["epoch"] == 2 and state["step"] == 4 and len(state["history"]) == 2


def test_load_network_gives_the_same_predictions(trained):
    trainer, folder = trained
    model, config, extra = load_network(folder, which="latest")
    assert not model.training and config == trainer.model_config
    assert extra["epoch"] == 2 and extra["history"] == trainer.history
    assert extra["train_config"]["epochs"] == 2
    inputs = torch.randn(2, 1, 16, 16)
    trainer.module.eval()
    with torch.no_grad():
        assert torch.equal(model(inputs), trainer.module(inputs))
    best, _, best_extra = load_network(folder)
    assert best_extra["best_epoch"] == trainer.best_epoch
    assert best_extra["checkpoint"] == folder / "best.pt"


def test_load_network_errors_name_the_folder_and_the_notebook(tmp_path, trained):
    with pytest.raises(RunOrderError, match="config.json is missing.*02_train_from_scratch"):
        load_network(tmp_path / "nothing")
    _, folder = trained
    (folder / "best.pt").unlink()
    with pytest.raises(RunOrderError, match="best.pt does not exist"):
        load_network(folder)
    torch.save({"weights": torch.zeros(1)}, folder / "other.pt")
    with pytest.raises(MicrosegError, match="not a microseg checkpoint"):
        load_network(folder, which="other.pt")
    (folder / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MicrosegError, match="cannot read checkpoint"):
        load_network(folder, which="broken.pt")


def test_pickled_objects_are_refused_without_advising_to_turn_safety_off(tmp_path):
    path = save_checkpoint(tmp_path / "evil.pt", {"config": TrainConfig()})
    with pytest.raises(MicrosegError, match="Python objects besides weights") as raised:
        load_checkpoint(path)
    assert "weights_only=False" not in str(raised.value)
    assert "state_dict" in str(raised.value)


def test_an_empty_checkpoint_says_it_is_empty(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"")
    with pytest.raises(MicrosegError, match=r"empty \(0 bytes\).*copy it again"):
        load_checkpoint(tmp_path / "best.pt")


@pytest.mark.parametrize("which", ["../elsewhere.pt", "/tmp/x.pt", "sub/best.pt", "config.json"])
def test_checkpoints_are_read_from_the_model_folder_only(trained, which):
    _, folder = trained
    save_checkpoint(folder.parent / "elsewhere.pt", {"model": {}})
    with pytest.raises(MicrosegError, match="not a checkpoint of the model folder"):
        load_network(folder, which=which)


def test_a_config_that_does_not_match_the_weights_lists_the_layers(trained):
    _, folder = trained
    ModelConfig(ndim=2, channels=(4, 16), strides=(2,), num_res_units=0,
                out_classes=2).save(folder / "config.json")
    with pytest.raises(DataError, match="do not fit this network") as raised:
        load_network(folder)
    assert "config.json" in str(raised.value)
    assert any("the file has shape" in line for line in raised.value.problems)


def test_resume_without_latest_checkpoint_never_replaces_the_best_one(trained):
    trainer, folder = trained
    (folder / "latest.pt").unlink()
    before = (folder / "best.pt").read_bytes()
    model_config = ModelConfig(ndim=2, channels=(4, 8), strides=(2,), num_res_units=0,
                               out_classes=2)
    config = TrainConfig(epochs=2, steps_per_epoch=2, batch_size=2, patch_size=(16, 16),
                         amp="none", val_tile=32)
    with pytest.raises(OutputExistsError, match="latest.pt is missing.*nothing to resume"):
        Trainer(build_model(model_config), config, tiny_pairs(2), tiny_pairs(1, seed=1),
                model_config=model_config, model_dir=folder, resume=True, progress=False).fit()
    assert (folder / "best.pt").read_bytes() == before


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    path = save_checkpoint(tmp_path / "rng.pt", {"rng": rng_states()})
    expected = (random.random(), np.random.rand(3), np.random.normal(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_states(load_checkpoint(path)["rng"])
    got = (random.random(), np.random.rand(3), np.random.normal(), torch.rand(3))
    assert got[0] == expected[0] and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and torch.equal(got[3], expected[3])


def run_training(script, folder):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, str(script), str(folder)], env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_killed_training_resumes_to_identical_weights_and_history(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAINING_SCRIPT)
    uninterrupted = run_training(script, tmp_path / "whole")
    killed = run_training(script, tmp_path / "killed")
    latest = tmp_path / "killed" / "latest.pt"
    deadline = time.monotonic() + 300
    while not latest.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, killed.stderr.read().decode()
    epochs_before_kill = torch.load(latest, weights_only=True)["epoch"]
    assert 1 <= epochs_before_kill < 8
    resumed = run_training(script, tmp_path / "killed")
    for process in (uninterrupted, resumed):
        assert process.wait(timeout=300) == 0, process.stderr.read().decode()
    for name in ("latest.pt", "best.pt"):
        whole = torch.load(tmp_path / "whole" / name, weights_only=True)
        again = torch.load(tmp_path / "killed" / name, weights_only=True)
        assert whole["epoch"] == again["epoch"] and whole["step"] == again["step"]
        for key, value in whole["model"].items():
            assert torch.equal(value, again["model"][key]), (name, key)
        for key, value in whole["optimizer"]["state"].items():
            for part, tensor in value.items():
                assert torch.equal(tensor, again["optimizer"]["state"][key][part])
        strip = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS}
                 for r in whole["history"]]
        assert strip == [{k: v for k, v in r.items() if k not in TIMING_COLUMNS}
                         for r in again["history"]]
    assert whole["epoch"] == 8 and whole["renorm_schedule"]["step"] == 32
