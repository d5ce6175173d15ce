"""Training from scratch: config, losses, patch sampling, checks, the Trainer, checkpoints.

Submodules:

- :mod:`microseg.training.config` — :class:`TrainConfig`, every training setting documented;
- :mod:`microseg.training.losses` — soft Dice (empty channels left out), cross-entropy, sum;
- :mod:`microseg.training.sampling` — reproducible random patches, optional rejection;
- :mod:`microseg.training.checks` — checks of the data and the first batch, class balance;
- :mod:`microseg.training.trainer` — :class:`Trainer`: the loop, validation, early stopping,
  mixed precision, BatchRenorm schedule, resume;
- :mod:`microseg.training.validation` — what validation predicts, hard Dice;
- :mod:`microseg.training.history` — ``history.csv``;
- :mod:`microseg.training.checkpoint` — generator states for an exact resume;
- :mod:`microseg.training.diagnosis` — :func:`diagnose_fit` from the loss curves;
- :mod:`microseg.training.distributed` — several GPUs with ``torchrun`` (DDP);
- :mod:`microseg.training.tuning` — hyperparameter search with Optuna;
- :mod:`microseg.training.live_plot` — loss curves, live in a notebook.

The names below are imported on first use, so ``import microseg.training`` stays cheap.

>>> from microseg.training import TrainConfig, Trainer
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "TrainConfig": "microseg.training.config",
    "Trainer": "microseg.training.trainer",
    "FitResult": "microseg.training.trainer",
    "diagnose_fit": "microseg.training.diagnosis",
    "FitDiagnosis": "microseg.training.diagnosis",
    "make_loss": "microseg.training.losses",
    "PatchSampler": "microseg.training.sampling",
    "read_history_csv": "microseg.training.history",
    "tune_hyperparameters": "microseg.training.tuning",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'microseg.training' has no attribute {name!r}")
