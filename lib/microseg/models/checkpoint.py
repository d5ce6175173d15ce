"""Checkpoint files of a model folder: written atomically, read without running code.

A model folder (``runs/<experiment>/models/<name>/``) holds, under the names defined in
:mod:`microseg.runs`::

    config.json                    the ModelConfig: which network to build
    train_config.json              the TrainConfig it was trained with
    best.pt                        the state at the epoch with the lowest validation loss
    latest.pt                      the state after the last finished epoch (what resume reads)
    prediction.json                how to predict with it (microseg.models.trained)
    instance_postprocessing.json   tuned instance post-processing (instance models)
    history.csv, environment.json  one row per epoch; what it ran on

Checkpoints hold only state dicts and plain data (numbers, strings, lists, dicts, tensors) —
no pickled objects — so they load with ``torch.load(..., weights_only=True)``: opening a model
someone sent you runs no code.

Example
-------
>>> network, config, extra = load_network("runs/demo/models/unet")  # doctest: +SKIP
>>> extra["best_epoch"], config.norm                                 # doctest: +SKIP
(17, 'batchrenorm')
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from microseg.errors import DataError, MicrosegError, RunOrderError
from microseg.runs import BEST_CHECKPOINT, LATEST_CHECKPOINT, MODEL_CONFIG_FILE

__all__ = [
    "CHECKPOINT_FORMAT",
    "checkpoint_path",
    "load_checkpoint",
    "load_network",
    "load_weights",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "microseg-checkpoint-1"

EXTRA_KEYS = ("epoch", "step", "best_epoch", "best_val_loss", "best_val_dice", "history",
              "train_config", "stopped_early")
"""Plain-data entries of a checkpoint besides the weights, returned by :func:`load_network`."""


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
        If it is empty, cannot be read safely (pickled objects are refused: the message says
        what to do instead), or is not a microseg checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise RunOrderError(f"checkpoint {path} does not exist: train a model first with "
                            f"notebooks/02_train_from_scratch.ipynb")
    if path.stat().st_size == 0:
        raise MicrosegError(f"checkpoint {path} is empty (0 bytes): it was cut off while being "
                            f"copied or written; copy it again from where it came from, or "
                            f"train the model again")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises several types for unreadable or unsafe files
        raise MicrosegError(_unreadable_message(path, err)) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise MicrosegError(f"{path} is not a microseg checkpoint (format {found!r}, expected "
                            f"{CHECKPOINT_FORMAT!r}); load other weights with "
                            f"microseg.transfer.load_pretrained")
    return state


def _unreadable_message(path: Path, err: Exception) -> str:
    """Why a checkpoint could not be read, without torch's advice to turn safety off."""
    text = str(err)
    if "Unsupported global" in text:
        found = text.split("Unsupported global:", 1)[1].split(" was not", 1)[0].strip()
        return (f"{path} holds Python objects besides weights ({found}); microseg reads only "
                f"plain weights (loading objects can run code from the file) and refused it. "
                f"If it is your own model, save only its state dict (torch.save(model."
                f"state_dict(), path)) and load it with microseg.transfer.load_pretrained(path, "
                f"config=...)")
    reason = type(err).__name__ if "weights_only" in text else (text.splitlines() or [""])[0]
    return (f"cannot read checkpoint {path} ({reason}): the file is damaged or incomplete, or "
            f"is not a PyTorch file; copy it again or train the model again")


def checkpoint_path(folder: str | Path, which: str = "best") -> Path:
    """The checkpoint file of a model folder: ``"best"``, ``"latest"``, or a ``.pt`` file name.

    Raises
    ------
    MicrosegError
        For a name that is not a plain file name inside ``folder`` (``"../x.pt"``, an absolute
        path, a sub-folder): a model folder's checkpoints are read from the folder only.
    """
    folder = Path(folder)
    name = {"best": BEST_CHECKPOINT, "latest": LATEST_CHECKPOINT}.get(which, which)
    if Path(name).name != name or name in ("", ".", "..") or not name.endswith(".pt"):
        raise MicrosegError(f"checkpoint {which!r} is not a checkpoint of the model folder "
                            f"{folder}: use 'best', 'latest' or the file name of a .pt file in "
                            f"that folder (no folders or '..')")
    return folder / name


def load_weights(model: Any, state_dict: Mapping[str, Any], source: str | Path) -> Any:
    """Load ``state_dict`` into ``model`` strictly, or raise one error listing every mismatch.

    Raises
    ------
    DataError
        Naming ``source``, with one line per layer whose shape differs (file shape and model
        shape), per tensor missing from the file and per tensor the model does not have. Nothing
        is loaded then.

    Example
    -------
    >>> import torch
    >>> load_weights(torch.nn.Linear(2, 3), {"weight": torch.zeros(3, 4), "bias": torch.zeros(3)},
    ...              "w.pt")
    Traceback (most recent call last):
    ...
    microseg.errors.DataError: the weights in w.pt do not fit this network (1 problem(s)); ...
      - layer weight: the file has shape (3, 4), the network expects (3, 2)
    """
    expected = model.state_dict()
    problems = [
        f"layer {name}: the file has shape {tuple(state_dict[name].shape)}, the network expects "
        f"{tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state_dict and tuple(state_dict[name].shape) != tuple(tensor.shape)
    ]
    problems += [f"layer {name}: missing from the file" for name in expected
                 if name not in state_dict]
    problems += [f"layer {name}: in the file but not in the network" for name in state_dict
                 if name not in expected]
    if problems:
        raise DataError(
            f"the weights in {source} do not fit this network ({len(problems)} problem(s)); "
            f"check that the model config (channels, strides, norm, in_channels, out_classes) "
            f"is the one the weights were trained with", problems)
    model.load_state_dict(dict(state_dict), strict=True)
    return model


def load_network(folder: str | Path, which: str = "best", device: Any = "cpu"
                 ) -> tuple[Any, Any, dict[str, Any]]:
    """Build the network of a model folder and load its weights, in eval mode on ``device``.

    Most callers want :meth:`microseg.models.TrainedModel.load`, which adds everything
    prediction needs; this is the network alone (training's resume, weight transfer).

    Returns
    -------
    (network, its ModelConfig, extra) where extra holds :data:`EXTRA_KEYS` from the checkpoint
    and ``checkpoint`` (the path read).

    Raises
    ------
    RunOrderError
        If the folder, its ``config.json`` or the checkpoint is missing (naming notebook 02).
    DataError
        If ``config.json`` describes another network than the weights (every layer listed).
    MicrosegError, ConfigError
        As :func:`checkpoint_path`, :func:`load_checkpoint` and ``ModelConfig.load``.
    """
    from microseg.devices import resolve_device
    from microseg.models.factory import ModelConfig, build_model

    folder = Path(folder)
    config_path = folder / MODEL_CONFIG_FILE
    if not config_path.is_file():
        raise RunOrderError(
            f"{folder} is not a trained model folder ({MODEL_CONFIG_FILE} is missing): run "
            f"notebooks/02_train_from_scratch.ipynb (or microseg.recipes.train.train_model) "
            f"to train a model there first")
    path = checkpoint_path(folder, which)
    device = resolve_device(device)
    state = load_checkpoint(path, device)
    config = ModelConfig.load(config_path)
    network = build_model(config)
    if not isinstance(state.get("model"), Mapping):
        raise MicrosegError(f"{path} holds no network weights (no 'model' entry); it is not a "
                            f"model checkpoint")
    load_weights(network, state["model"], f"{path} (built from {config_path})")
    network.to(device).eval()
    extra = {key: state.get(key) for key in EXTRA_KEYS}
    extra["checkpoint"] = path
    return network, config, extra
