"""Is the model under-fitting, over-fitting or fitting well? Read from the loss curves.

The rules follow the chapter's description of training and validation losses:

- **still improving**: the validation Dice was best in the last epochs and rose clearly over
  the second half of the run — train longer. A learning rate that decays towards the end (the
  cosine schedule) flattens the losses whether or not the model has converged, so this is
  read from the validation Dice first;
- **under-fitting**, still learning: both losses still fall at the end — train longer;
- **under-fitting**, stuck: both losses flat but high (little below where they started) — the
  model is too small, or the learning rate is wrong;
- **over-fitting**: the validation loss rises while the training loss keeps falling, or the
  training loss is far below a validation loss that stopped improving;
- **good fit**: both losses flat, low, and close to each other (validation a little higher);
- **too short to tell**: fewer than ``min_epochs`` epochs.

Changes are measured relative to the starting loss level, over the last quarter of the run (at
least 3 epochs), so the verdict does not depend on the loss function's scale.

Example
-------
>>> import numpy as np
>>> epochs = np.arange(30)
>>> train = 1.0 * np.exp(-epochs / 5) + 0.1
>>> val = train + 0.02
>>> diagnose_fit({"train_loss": train, "val_loss": val}).verdict
'good fit'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from microseg.errors import DataError

__all__ = ["FitDiagnosis", "diagnose_fit"]

Verdict = Literal["still improving", "under-fitting", "good fit", "over-fitting",
                  "too short to tell"]


@dataclasses.dataclass(frozen=True)
class FitDiagnosis:
    """verdict : one of "still improving", "under-fitting", "good fit", "over-fitting",
    "too short to tell".
    reason : one or two sentences: what the curves show and what to do."""

    verdict: Verdict
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"verdict": self.verdict, "reason": self.reason}


def diagnose_fit(history: Any, min_epochs: int = 5, trend_tolerance: float = 0.02,
                 gap_tolerance: float = 0.1, high_fraction: float = 0.6,
                 dice_gain: float = 0.01) -> FitDiagnosis:
    """Diagnose the fit from per-epoch training and validation losses.

    Parameters
    ----------
    history : a pandas DataFrame, a list of dicts (one per epoch), a dict of sequences, or the
        path of a ``history.csv``; needs ``train_loss`` and ``val_loss``.
    min_epochs : fewer epochs give "too short to tell".
    trend_tolerance : a loss "falls" or "rises" when it changed by more than this fraction of the
        starting loss level over the last quarter of the run.
    gap_tolerance : validation above training by more than this fraction of the starting level
        counts as a large gap.
    high_fraction : flat losses above this fraction of their starting value are "high".
    dice_gain : "still improving" when the best validation Dice of the second half of the run
        exceeds that of the first half by more than this and lies in the last quarter.

    Returns
    -------
    FitDiagnosis.

    Raises
    ------
    DataError
        If ``train_loss`` or ``val_loss`` is missing.
    """
    train, val = _curves(history)
    if len(train) < min_epochs:
        return FitDiagnosis("too short to tell", (
            f"only {len(train)} epoch(s); at least {min_epochs} are needed to judge the "
            f"curves. Train longer."))
    improving = _still_improving(_column(history, "val_dice"), dice_gain)
    if improving is not None:
        return improving
    scale = max(train[0], val[0], float(np.max(train)), float(np.max(val))) or 1.0
    window = max(3, len(train) // 4)
    train_trend = _relative_change(train[-window:]) / scale
    val_trend = _relative_change(val[-window:]) / scale
    gap = (val[-window:].mean() - train[-window:].mean()) / scale
    rise = (val[-1] - val.min()) / scale
    facts = _Facts(train_trend, val_trend, gap, rise, int(np.argmin(val)) + 1, len(train),
                   train[-window:].mean() / train[0] if train[0] else 0.0)
    return _verdict(facts, trend_tolerance, gap_tolerance, high_fraction)


@dataclasses.dataclass(frozen=True)
class _Facts:
    train_trend: float
    val_trend: float
    gap: float
    rise: float
    best_epoch: int
    epochs: int
    train_level: float


def _verdict(f: _Facts, trend: float, gap: float, high: float) -> FitDiagnosis:
    train_falls = f.train_trend < -trend
    val_falls, val_rises = f.val_trend < -trend, f.val_trend > trend
    if val_rises and f.rise > trend and not f.train_trend > trend:
        return FitDiagnosis("over-fitting", (
            f"the validation loss rose by {f.rise:.0%} of the starting level since its lowest "
            f"point (epoch {f.best_epoch}) while the training loss did not. best.pt keeps the "
            f"best epoch; add augmentation or more varied training images, or stop earlier."))
    if train_falls and val_falls:
        return FitDiagnosis("under-fitting", (
            "both losses were still falling at the end: the model is still learning. Train "
            "longer (more epochs or steps per epoch)."))
    if train_falls and f.gap > gap:
        return FitDiagnosis("over-fitting", (
            f"the training loss keeps falling but the validation loss stopped improving "
            f"(best in epoch {f.best_epoch}) and lies {f.gap:.0%} of the starting level above "
            f"it. Add augmentation or more varied training images."))
    if train_falls:
        return FitDiagnosis("under-fitting", (
            "the training loss was still falling at the end while the validation loss "
            "levelled off close to it. Train longer and watch the validation loss."))
    if f.train_level > high:
        return FitDiagnosis("under-fitting", (
            f"both losses are flat but high ({f.train_level:.0%} of the starting training "
            f"loss): the model cannot learn the task as set up. Try a larger model, another "
            f"learning rate (often lower), or check the labels."))
    if f.gap > gap:
        return FitDiagnosis("over-fitting", (
            f"both losses are flat but the validation loss stays {f.gap:.0%} of the starting "
            f"level above the training loss. Add augmentation or more varied training images."))
    return FitDiagnosis("good fit", (
        "both losses have levelled off, low and close to each other (validation slightly "
        "higher, as expected). More training will not help much."))


def _still_improving(dice: np.ndarray | None, gain: float) -> FitDiagnosis | None:
    """The "still improving" verdict from the validation Dice curve, or None."""
    if dice is None:
        return None
    dice = dice[np.isfinite(dice)]
    if len(dice) < 4:
        return None
    half, window = len(dice) // 2, max(1, len(dice) // 4)
    first, second = float(dice[:half].max()), float(dice[half:].max())
    best = int(np.argmax(dice))
    if second - first > gain and best >= len(dice) - window:
        return FitDiagnosis("still improving", (
            f"the validation Dice rose from {first:.3f} (best of the first half) to "
            f"{second:.3f}, best in epoch {best + 1} of {len(dice)}: the model is still "
            f"improving. Train longer (more epochs, or a larger max_minutes)."))
    return None


def _column(history: Any, name: str) -> np.ndarray | None:
    """One column of the history as floats, or None when it has none."""
    if isinstance(history, (str, Path)):
        from microseg.training.history import read_history_csv

        history = read_history_csv(history)
    columns = _columns(history)
    return np.asarray(columns[name], dtype=np.float64) if name in columns else None


def _relative_change(values: np.ndarray) -> float:
    """Change over ``values`` along a least-squares line (robust to noise)."""
    x = np.arange(len(values), dtype=np.float64)
    slope = np.polyfit(x, values, 1)[0]
    return float(slope * (len(values) - 1))


def _curves(history: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(history, (str, Path)):
        from microseg.training.history import read_history_csv

        history = read_history_csv(history)
    columns = _columns(history)
    missing = [name for name in ("train_loss", "val_loss") if name not in columns]
    if missing:
        raise DataError(f"the history needs the columns train_loss and val_loss; "
                        f"{', '.join(missing)} missing (found {', '.join(map(str, columns))}); pass "
                        f"the history.csv of a training run (read_history_csv)")
    train = np.asarray(columns["train_loss"], dtype=np.float64)
    val = np.asarray(columns["val_loss"], dtype=np.float64)
    keep = np.isfinite(train) & np.isfinite(val)
    return train[keep], val[keep]


def _columns(history: Any) -> Mapping[str, Any]:
    if hasattr(history, "to_dict") and hasattr(history, "columns"):
        return {str(c): history[c].to_numpy() for c in history.columns}
    if isinstance(history, Mapping):
        return history
    rows: Sequence[Mapping[str, Any]] = list(history)
    names = list(dict.fromkeys(key for row in rows for key in row))
    return {name: [row.get(name, np.nan) for row in rows] for name in names}
