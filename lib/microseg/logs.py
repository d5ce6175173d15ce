"""Notes about single files, said once for a whole folder.

A folder of 557 RGB-saved grey images would otherwise give 557 identical lines, and the one line
that matters drowns. Code that notes something about one file calls :func:`file_note`; inside a
:func:`summarised` block (each recipe runs in one) the notes are collected and, when the block
ends, each kind of note becomes one line with the count and two example names, while the full
list goes to ``file_notes.json`` in the folder the recipe writes to. Outside any block (a single
``read_image`` at the prompt) a note is logged at once, as before.

>>> import logging
>>> log = logging.getLogger("microseg.example")
>>> with summarised() as notes:
...     for name in ("a.tif", "b.tif", "c.tif"):
...         file_note(log, "grey-rgb", name, "its 3 colour channels are identical",
...                   "RGB images whose colour channels are identical")
>>> notes.lines()
['3 RGB images whose colour channels are identical: a.tif, b.tif, ...']
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["NOTES_FILE", "PROGRESS_FROM", "FileNotes", "close_notes", "file_note", "open_notes",
           "progress", "said_once", "shorten_middle", "summarised", "summarises"]

PROGRESS_FROM = 10
"""Loops over at least this many files show a progress bar with the time left."""

NOTES_FILE = "file_notes.json"
"""Where a summarised block writes every file of every note (in its ``record_dir``)."""

_EXAMPLES = 2


@dataclass
class _Kind:
    logger: logging.Logger
    level: int
    text: str
    summary: str
    files: dict[str, None] = field(default_factory=dict)


class FileNotes:
    """The notes collected in one :func:`summarised` block, by kind."""

    def __init__(self) -> None:
        self.kinds: dict[str, _Kind] = {}
        self.repeated: dict[tuple[str, int, str], int] = {}
        self._lock = threading.Lock()

    def repeat(self, logger: logging.Logger, level: int, text: str) -> None:
        with self._lock:
            key = (logger.name, level, text)
            self.repeated[key] = self.repeated.get(key, 0) + 1

    def add(self, logger: logging.Logger, level: int, kind: str, path: str, text: str,
            summary: str) -> None:
        with self._lock:
            entry = self.kinds.setdefault(kind, _Kind(logger, level, text, summary))
            entry.level = max(entry.level, level)
            entry.files[path] = None

    def lines(self, record: Path | None = None) -> list[str]:
        """One line per kind: a single file's note as it is, else the count, the summary and
        two example file names (and ``record``, where the full list is)."""
        lines = []
        for entry in self.kinds.values():
            files = list(entry.files)
            if len(files) == 1:
                lines.append(f"{files[0]}: {entry.text}")
                continue
            names = [os.path.basename(f) or f for f in files[:_EXAMPLES]]
            more = ", ..." if len(files) > _EXAMPLES else ""
            where = f" (all listed in {record})" if record is not None else ""
            lines.append(f"{len(files)} {entry.summary}: {', '.join(names)}{more}{where}")
        return lines

    def emit(self, record_dir: str | Path | None = None) -> Path | None:
        """Log one line per kind and per repeated message; write every file to
        ``record_dir/file_notes.json`` (other kinds already there are kept). Returns that file,
        or None."""
        for (name, level, text), count in self.repeated.items():
            logging.getLogger(name).log(level, "%s%s", text,
                                        f" (the same for {count} images)" if count > 1 else "")
        if not self.kinds:
            return None
        record = None
        if record_dir is not None and any(len(k.files) > 1 for k in self.kinds.values()):
            record = _write_record(Path(record_dir) / NOTES_FILE, self.kinds)
        for entry, line in zip(self.kinds.values(), self.lines(record), strict=True):
            entry.logger.log(entry.level, "%s", line)
        return record


def _write_record(path: Path, kinds: dict[str, _Kind]) -> Path:
    from microseg.runs import atomic_write_json, read_json

    try:
        earlier = read_json(path) if path.is_file() else {}
    except Exception:  # a damaged record is replaced, not a reason to stop
        earlier = {}
    record = dict(earlier) if isinstance(earlier, dict) else {}
    for kind, entry in kinds.items():
        record[kind] = {"note": entry.summary, "count": len(entry.files),
                        "files": list(entry.files)}
    return atomic_write_json(path, record)


_active: list[FileNotes] = []
_active_lock = threading.Lock()


def _open_collection() -> FileNotes | None:
    with _active_lock:
        return _active[-1] if _active else None


def file_note(logger: logging.Logger, kind: str, path: str | os.PathLike, text: str,
              summary: str, level: int = logging.INFO) -> None:
    """Note ``text`` about file ``path`` (kind ``kind``): collected inside a :func:`summarised`
    block, logged by ``logger`` at once outside one.

    ``summary`` says the same of many files, as the count's noun phrase ("RGB images whose
    colour channels are identical: one channel kept").
    """
    notes = _open_collection()
    if notes is None:
        logger.log(level, "%s: %s", path, text)
    else:
        notes.add(logger, level, kind, os.fspath(path), text, summary)


def open_notes() -> tuple[FileNotes, bool]:
    """Start collecting :func:`file_note` calls; (the collection, whether this call opened it —
    False inside another collection, which then receives the notes). Pair with
    :func:`close_notes`; :func:`summarised` does both."""
    with _active_lock:
        if _active:
            return _active[-1], False
        notes = FileNotes()
        _active.append(notes)
        return notes, True


def close_notes(notes: FileNotes, opened: bool, record_dir: str | Path | None = None) -> None:
    """End a collection that :func:`open_notes` opened: one line per kind, every file in
    ``record_dir/file_notes.json``. Does nothing for a collection it did not open."""
    if not opened:
        return
    with _active_lock:
        if notes in _active:
            _active.remove(notes)
    notes.emit(record_dir)


def said_once(logger: logging.Logger, text: str, level: int = logging.INFO) -> None:
    """Log ``text``, a message a loop over images repeats unchanged (a setting adjusted the same
    way for each): inside a :func:`summarised` block said once at its end with the count,
    outside at once."""
    notes = _open_collection()
    if notes is None:
        logger.log(level, "%s", text)
    else:
        notes.repeat(logger, level, text)


@contextmanager
def summarised(record_dir: str | Path | None = None) -> Iterator[FileNotes]:
    """Collect the :func:`file_note` calls of the block; at its end log one line per kind and
    list every file in ``record_dir/file_notes.json``. Inside another block it adds to that
    one (the outermost block says it once)."""
    notes, opened = open_notes()
    try:
        yield notes
    finally:
        close_notes(notes, opened, record_dir)


def summarises(record_dir: Callable[[dict], str | Path | None]) -> Callable:
    """Decorator: run the function inside :func:`summarised`, with the record folder computed
    from its arguments by name (``record_dir(arguments)``), e.g.
    ``@summarises(lambda a: Path(a["run_dir"]) / "data")``."""
    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with summarised(record_dir(bound.arguments)):
                return function(*args, **kwargs)

        return wrapper

    return decorate


def progress(items: Any, desc: str, unit: str, minimum: int = PROGRESS_FROM) -> Any:
    """``items`` with a progress bar and the time left (tqdm: a bar in JupyterLab, a line in a
    terminal or a headless log), when there are at least ``minimum`` of them; else as they are.

    >>> list(progress([1, 2, 3], "checking images", "image"))
    [1, 2, 3]
    """
    items = items if hasattr(items, "__len__") else list(items)
    if len(items) < minimum:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, mininterval=1.0, dynamic_ncols=True)


def shorten_middle(name: str, max_chars: int = 24) -> str:
    """``name`` if it has at most ``max_chars`` characters, else its start and its end joined by
    "…", ``max_chars`` characters in all: long file names then fit above a figure panel, and
    the end, where names usually differ (numbers, channels), stays visible.

    Raises :class:`~microseg.errors.ConfigError` if ``max_chars`` is below 3.

    >>> shorten_middle("plate01_wellB07_field003_channel1", 12)
    'plate…annel1'
    """
    from microseg.errors import ConfigError

    if max_chars < 3:
        raise ConfigError(f"max_chars must be at least 3 (one character, '…', one character), "
                          f"got {max_chars}")
    if len(name) <= max_chars:
        return name
    head = (max_chars - 1) // 2
    return f"{name[:head]}…{name[len(name) - (max_chars - 1 - head):]}"
