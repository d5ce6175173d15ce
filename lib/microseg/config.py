"""Typed, versioned stage configurations saved as JSON next to what they produced.

Every stage (data, model, training, inference, ...) has one dataclass derived from
:class:`StageConfig`. Fields hold defaults in one place; ``from_dict`` refuses unknown keys and
values of the wrong type with a message that names the key, so a typo in a notebook's parameters
cell fails at once instead of being silently ignored.

Example
-------
>>> from dataclasses import dataclass
>>> @dataclass
... class TileConfig(StageConfig):
...     '''tile: tile edge in pixels.'''
...     tile: int = 256
>>> TileConfig.from_dict({"tile": 128}).tile
128
>>> TileConfig.from_dict({"tiles": 128})
Traceback (most recent call last):
...
microseg.errors.ConfigError: TileConfig has no key 'tiles' (did you mean 'tile'?). Valid keys: tile
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from microseg.errors import ConfigError

__all__ = [
    "StageConfig",
]

_META_KEYS = ("config_type", "config_version")


@dataclasses.dataclass
class StageConfig:
    """Base class of the stage configurations.

    Subclasses are dataclasses whose docstring documents every field. ``VERSION`` is raised when
    a field changes meaning; ``migrate`` turns an older dict into the current layout so that old
    run folders stay loadable.
    """

    VERSION: ClassVar[int] = 1

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            setattr(self, field.name, _coerce(type(self).__name__, field.name, value, hints[field.name]))

    @classmethod
    def migrate(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        """Return ``data`` (written by config version ``version``) in the current layout."""
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageConfig:
        """Build a config from a plain dict, rejecting unknown keys and wrong types.

        Raises
        ------
        ConfigError
            For an unknown key (with the closest valid key), a value of the wrong type, or a
            config written by a newer version of microseg.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a {cls.__name__} (settings by name, a JSON object), "
                              f"found {type(data).__name__}")
        data = dict(data)
        kind = data.pop("config_type", cls.__name__)
        if kind != cls.__name__:
            raise ConfigError(f"expected a {cls.__name__}, found a {kind}")
        version = data.pop("config_version", cls.VERSION)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ConfigError(f"{cls.__name__}: config_version {version!r} is not a whole number")
        if version > cls.VERSION:
            raise ConfigError(
                f"{cls.__name__} version {version} was written by a newer microseg "
                f"(this one reads up to version {cls.VERSION}); update microseg"
            )
        if version < cls.VERSION:
            data = cls.migrate(data, version)
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"{cls.__name__} has no key {key!r}{hint}. Valid keys: {', '.join(names)}"
                )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, with the config type and version."""
        out = {"config_type": type(self).__name__, "config_version": self.VERSION}
        for field in dataclasses.fields(self):
            out[field.name] = _to_json(getattr(self, field.name))
        return out

    def replace(self, **changes: Any) -> StageConfig:
        """A copy with some fields changed (validated like ``from_dict``)."""
        data = {k: v for k, v in self.to_dict().items() if k not in _META_KEYS}
        data.update(changes)
        return type(self).from_dict(data)

    def save(self, path: str | Path) -> Path:
        """Write the config as JSON (atomically) and return the path."""
        from microseg.runs import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> StageConfig:
        """Read a config written by :meth:`save`; errors name the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {path} is not valid JSON: {err}") from None
        except OSError as err:
            raise ConfigError(f"config file {path} cannot be read ({err.strerror or err})"
                              ) from None
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None


def _to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _coerce(owner: str, name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the type ``hint``; convert lists to tuples and ints to floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(owner, name, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{owner}.{name}: {value!r} does not fit {_name(hint)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{owner}.{name}: {value!r} is not one of {', '.join(repr(a) for a in args)}"
            )
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{owner}.{name}: expected a list or tuple, found {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(owner, name, v, args[0]) for v in value)
        if args and len(args) != len(value):
            raise ConfigError(f"{owner}.{name}: expected {len(args)} values, found {len(value)}")
        return tuple(_coerce(owner, name, v, a) for v, a in zip(value, args, strict=True)) if args else tuple(value)
    if origin in (list, dict):
        if not isinstance(value, origin):
            raise ConfigError(f"{owner}.{name}: expected a {origin.__name__}, found {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{owner}.{name}: expected a number, found {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{owner}.{name}: expected an integer, found {value!r}")
        return value
    if hint in (bool, str):
        if not isinstance(value, hint):
            raise ConfigError(f"{owner}.{name}: expected {hint.__name__}, found {value!r}")
        return value
    return value


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
