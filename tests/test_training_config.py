"""TrainConfig: validation, defaults, JSON round trip, BatchRenorm schedule defaults."""

import subprocess
import sys

import pytest

from microseg.errors import ConfigError
from microseg.training.config import TrainConfig


def test_round_trip_through_json(tmp_path):
    config = TrainConfig(patch_size=(16, 32, 32), class_weights=(1.0, 5.0), loss="ce")
    loaded = TrainConfig.load(config.save(tmp_path / "train_config.json"))
    assert loaded == config
    assert loaded.patch_size == (16, 32, 32) and loaded.class_weights == (1.0, 5.0)


def test_unknown_key_and_every_problem_listed():
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError) as error:
        TrainConfig(batch_size=0, learning_rate=-1.0, min_foreground=1.5, patch_size=(64,))
    message = str(error.value)
    for part in ("batch_size", "learning_rate", "min_foreground", "patch_size"):
        assert part in message


def test_renorm_schedule_defaults_scale_with_the_run():
    config = TrainConfig(epochs=10, steps_per_epoch=20)
    assert config.total_steps == 200
    assert config.renorm_steps() == (80, 80)
    assert TrainConfig(renorm_warmup_steps=5, renorm_ramp_steps=0).renorm_steps() == (5, 0)


def test_amp_and_scheduler_choices_are_checked():
    with pytest.raises(ConfigError, match="amp"):
        TrainConfig(amp="fp8")
    with pytest.raises(ConfigError, match="scheduler"):
        TrainConfig(scheduler="step")


def test_importing_the_package_and_config_stays_light():
    code = ("import sys, microseg.training, microseg.training.config, "
            "microseg.training.diagnosis, microseg.training.history; "
            "assert 'torch' not in sys.modules and 'monai' not in sys.modules; "
            "from microseg.training import TrainConfig; print(TrainConfig().epochs)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "24"
