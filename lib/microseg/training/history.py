"""The training history: one row per epoch, kept in checkpoints and written as ``history.csv``.

Example
-------
>>> import tempfile
>>> rows = [{"epoch": 1, "train_loss": 0.9, "val_loss": 1.0}]
>>> with tempfile.TemporaryDirectory() as folder:
...     read_history_csv(write_history_csv(Path(folder) / "history.csv", rows)) == rows
True
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from microseg.errors import MissingFileError

__all__ = ["HISTORY_COLUMNS", "TIMING_COLUMNS", "read_history_csv", "write_history_csv"]

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_dice", "val_foreground_dice",
                   "learning_rate", "renorm_r_max", "renorm_d_max", "steps", "seconds",
                   "data_seconds")
"""Columns of ``history.csv`` (then ``val_dice_class<k>`` per class k >= 1). ``val_dice`` is
the mean hard Dice over the foreground classes 1 .. K-1; ``val_foreground_dice`` the Dice of
"any class but background" (the objects); ``seconds`` and ``data_seconds`` (time waiting for
batches) are wall-clock times of the epoch."""

TIMING_COLUMNS = ("seconds", "data_seconds")
"""History columns that differ between otherwise identical runs."""


def write_history_csv(path: str | Path, history: Sequence[dict[str, Any]]) -> Path:
    """Write the history (one dict per epoch) as CSV, atomically; known columns first."""
    from microseg.runs import atomic_write_text

    extra = sorted({key for record in history for key in record} - set(HISTORY_COLUMNS))
    columns = [c for c in HISTORY_COLUMNS if any(c in r for r in history)] + extra
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in history:
        writer.writerow({key: record.get(key) for key in columns})
    return atomic_write_text(path, buffer.getvalue())


def read_history_csv(path: str | Path) -> list[dict[str, float]]:
    """Read ``history.csv`` back: one dict of floats per epoch (``epoch``/``steps`` as ints)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist: no training history there; training "
                               f"writes history.csv into the model folder (notebook 02)")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    whole = ("epoch", "steps")
    return [{key: (int(value) if key in whole else float(value)) for key, value in row.items()}
            for row in rows]
