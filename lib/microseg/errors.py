"""Exceptions raised by microseg, each carrying a message a user can act on."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "MicrosegError",
    "MissingFileError",
    "OutputExistsError",
    "RunOrderError",
    "WriteError",
]


class MicrosegError(Exception):
    """Base class of every error microseg raises on purpose."""


class ConfigError(MicrosegError, ValueError):
    """A configuration has an unknown key, a value of the wrong type, or an unsupported version."""


class DataError(MicrosegError, ValueError):
    """Input data cannot be used. ``problems`` lists every problem found, one line each.

    Checks collect all problems before raising, so a user fixes a folder in one pass instead of
    one error at a time.
    """

    def __init__(self, summary: str, problems: list[str] | None = None):
        self.summary = summary
        self.problems = list(problems or [])
        lines = [summary] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class RunOrderError(MicrosegError, RuntimeError):
    """A step needs the output of an earlier step (notebook) that has not been run."""


class OutputExistsError(MicrosegError, FileExistsError):
    """A run would overwrite earlier results; pass ``overwrite=True`` or choose a new name."""


class MissingFileError(MicrosegError, FileNotFoundError):
    """A file microseg needs does not exist; the message names it and what makes it."""


class WriteError(MicrosegError, OSError):
    """A result could not be written (full disk, read-only folder, ...); the message names the
    file, the reason and the fix. Nothing half-written is left behind."""
