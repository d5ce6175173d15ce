"""Checkpoints and the model folder: what training writes, and how every later step loads it.

A model folder (``runs/<experiment>/models/<name>/``) holds::

    config.json         the ModelConfig: which network to build
    train_config.json   the TrainConfig it was trained with
    best.pt             the state at the epoch with the lowest validation loss
    latest.pt           the state after the last finished epoch (what resume continues from)
    history.csv         one row per epoch
    environment.json    what it ran on (microseg.runs.environment_record)

Checkpoints hold only state dicts and plain data (numbers, strings, lists, dicts, tensors) —
no pickled objects — so they load with ``torch.load(..., weights_only=True)``: opening a model
someone sent you runs no code. Random number generator states are stored as tensors and lists.

Example
-------
>>> model, config, extra = load_model("runs/demo/models/unet")  # doctest: +SKIP
>>> extra["best_epoch"], config.norm                             # doctest: +SKIP
(17, 'batchrenorm')
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import MicrosegError, RunOrderError

__all__ = [
    "BEST",
    "CHECKPOINT_FORMAT",
    "LATEST",
    "MODEL_CONFIG",
    "TRAIN_CONFIG",
    "load_checkpoint",
    "load_model",
    "restore_rng_states",
    "rng_states",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "microseg-checkpoint-1"
BEST = "best.pt"
LATEST = "latest.pt"
MODEL_CONFIG = "config.json"
TRAIN_CONFIG = "train_config.json"

_EXTRA_KEYS = ("epoch", "step", "best_epoch", "best_val_loss", "best_val_dice", "history",
               "train_config", "stopped_early")


def rng_states() -> dict[str, Any]:
    """States of Python's, NumPy's global and torch's (CPU and CUDA) generators, as plain data."""
    import torch

    version, words, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": {"version": version, "state": list(words), "gauss": gauss},
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set every generator to the states :func:`rng_states` returned."""
    import torch

    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    numpy_state = states["numpy"]
    np.random.set_state({
        "bit_generator": numpy_state["bit_generator"],
        "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
        "has_gauss": numpy_state["has_gauss"],
        "gauss": numpy_state["gauss"],
    })
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plain data and tensors only) atomically, tagged with the format."""
    from microseg.runs import atomic_torch_save

    return atomic_torch_save({"format": CHECKPOINT_FORMAT, **state}, path)


def load_checkpoint(path: str | Path, device: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``; tensors land on ``device``.

    Raises
    ------
    RunOrderError
        If the file does not exist (naming notebook 02).
    MicrosegError
        If it cannot be read or is not a microseg checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise RunOrderError(f"checkpoint {path} does not exist: train a model first with "
                            f"notebooks/02_train_from_scratch.ipynb")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        raise MicrosegError(f"cannot read checkpoint {path}: {err}. The file may be "
                            f"incomplete or from another program") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise MicrosegError(f"{path} is not a microseg checkpoint (format {found!r}, expected "
                            f"{CHECKPOINT_FORMAT!r}); load other weights with microseg.transfer")
    return state


def load_model(model_dir: str | Path, which: str = "best", device: Any = "cpu"
               ) -> tuple[Any, Any, dict[str, Any]]:
    """Build the network of a model folder and load its weights, ready for prediction.

    Parameters
    ----------
    model_dir : a model folder written by training (``runs/<experiment>/models/<name>``).
    which : ``"best"`` (lowest validation loss; default) or ``"latest"`` (last epoch), or the
        file name of another checkpoint in the folder.
    device : where to put the model (``"cpu"``, ``"cuda"``, ``"auto"`` or a torch.device).

    Returns
    -------
    (model in eval mode on ``device``, its ModelConfig, extra) where extra holds ``epoch``,
    ``step``, ``best_epoch``, ``best_val_loss``, ``best_val_dice``, ``history`` (list of dicts),
    ``train_config`` (dict), ``stopped_early`` and ``checkpoint`` (the path read).

    Raises
    ------
    RunOrderError
        If the folder, its ``config.json`` or the checkpoint is missing (naming notebook 02).
    """
    from microseg.models import ModelConfig, build_model
    from microseg.training.trainer import resolve_device

    folder = Path(model_dir)
    config_path = folder / MODEL_CONFIG
    if not config_path.is_file():
        raise RunOrderError(
            f"{folder} is not a trained model folder ({MODEL_CONFIG} is missing): run "
            f"notebooks/02_train_from_scratch.ipynb (or microseg.recipes.train.train_model) "
            f"to train a model there first")
    path = folder / {"best": BEST, "latest": LATEST}.get(which, which)
    device = resolve_device(device)
    state = load_checkpoint(path, device)
    config = ModelConfig.load(config_path)
    model = build_model(config)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    extra = {key: state.get(key) for key in _EXTRA_KEYS}
    extra["checkpoint"] = path
    return model, config, extra
