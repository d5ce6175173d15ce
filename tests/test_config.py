from dataclasses import dataclass
from typing import Literal

import pytest

from microseg.config import StageConfig
from microseg.errors import ConfigError


@dataclass
class ExampleConfig(StageConfig):
    """tile: tile edge. norm: feature norm. channels: per level. lr: learning rate. halo: pixels."""

    tile: int = 64
    norm: Literal["batch", "instance"] = "batch"
    channels: tuple[int, ...] = (8, 16)
    lr: float = 1e-3
    halo: int | None = None


def test_round_trip_through_json(tmp_path):
    cfg = ExampleConfig(tile=32, channels=[4, 8, 16], lr=1)
    path = cfg.save(tmp_path / "config.json")
    again = ExampleConfig.load(path)
    assert again == cfg
    assert again.channels == (4, 8, 16) and isinstance(again.lr, float)


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"no key 'tiles' \(did you mean 'tile'\?\)"):
        ExampleConfig.from_dict({"tiles": 3})


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"tile": "big"}, "expected an integer"),
        ({"tile": True}, "expected an integer"),
        ({"norm": "group"}, "not one of"),
        ({"channels": 8}, "expected a list or tuple"),
        ({"halo": "x"}, "does not fit"),
    ],
)
def test_wrong_types_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        ExampleConfig.from_dict(changes)


def test_newer_version_and_other_type_are_refused(tmp_path):
    data = ExampleConfig().to_dict()
    with pytest.raises(ConfigError, match="newer microseg"):
        ExampleConfig.from_dict({**data, "config_version": 99})
    with pytest.raises(ConfigError, match="expected a ExampleConfig"):
        ExampleConfig.from_dict({**data, "config_type": "ModelConfig"})
    bad = tmp_path / "c.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="c.json is not valid JSON"):
        ExampleConfig.load(bad)


def test_replace_validates():
    cfg = ExampleConfig()
    assert cfg.replace(tile=16).tile == 16
    with pytest.raises(ConfigError):
        cfg.replace(norm="nope")


@pytest.mark.parametrize(("content", "message"), [
    ("[1, 2]", "expected a ExampleConfig \\(settings by name, a JSON object\\), found list"),
    ('{"config_version": "new"}', "config_version 'new' is not a whole number"),
    (b"\xff\xfe", "is not valid JSON"),
])
def test_a_config_file_of_the_wrong_shape_is_named(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError, match=f"{path}.*{message}|config file {path} {message}"):
        ExampleConfig.load(path)
