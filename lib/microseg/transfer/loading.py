"""Load a pretrained model from a model folder, a bioimage.io package or a plain state dict.

Sources (:func:`load_pretrained` tells them apart):

- a **model folder** written by notebook 02 (``config.json`` + ``best.pt``), from any run folder;
- a **bioimage.io model package**, a ``.zip`` or a folder with ``rdf.yaml`` (or
  ``bioimageio.yaml``): its PyTorch state-dict weights when the package names microseg's
  architecture (:mod:`microseg.export.bioimageio_arch`, as the packages of
  :func:`microseg.export.bioimageio.export_bioimageio` do), otherwise its TorchScript weights —
  only when the caller allows TorchScript;
- a **state dict** file (``.pt``/``.pth``; a bare state dict or a checkpoint holding one under
  ``"model"``) plus a :class:`~microseg.models.ModelConfig` (an object, a JSON file, or
  ``config.json`` beside the weights).

Files from elsewhere never run code here: weights load with ``torch.load(..., weights_only=True)``;
a package's ``rdf.yaml`` is read with ``yaml.safe_load`` and the architecture it names is never
imported — microseg builds its own networks from the package's ``kwargs`` and refuses others;
zip members are checked against path traversal (absolute paths, ``..``, symbolic links) and
against exhausting the disk (total size, member count, zip-bomb compression ratios) before
anything is extracted, into a new temporary folder; TorchScript (a program, not only weights) is
loaded only with ``allow_torchscript=True``. Weights that do not fit the architecture raise one
error naming every mismatched layer with both shapes; nothing is ever loaded partially.

Example
-------
>>> pretrained = load_pretrained("runs/demo/models/unet")                # doctest: +SKIP
>>> pretrained.kind, pretrained.config.out_classes                       # doctest: +SKIP
('model_folder', 3)
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from microseg.errors import ConfigError, DataError, MicrosegError
from microseg.io.archives import check_zip_members, safe_extract
from microseg.runs import BEST_CHECKPOINT, LATEST_CHECKPOINT, MODEL_CONFIG_FILE, sha256_of

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "PretrainedModel",
    "check_zip_members",
    "load_bioimageio",
    "load_model_folder",
    "load_pretrained",
    "load_state_dict_file",
    "read_state_dict",
    "safe_extract",
]

log = logging.getLogger(__name__)

OUR_ARCHITECTURE = ("microseg.export.bioimageio_arch", "build_from_kwargs")
_CHECKPOINT_KEYS = ("model", "state_dict", "model_state_dict")


@dataclasses.dataclass
class PretrainedModel:
    """A loaded pretrained network, in eval mode.

    model: the network (a ``torch.nn.Module``; a ``torch.jit.ScriptModule`` for TorchScript).
    config: its :class:`~microseg.models.ModelConfig`; None for TorchScript weights, which can be
        evaluated but not adapted (there is no architecture to rebuild or save).
    kind: ``"model_folder"``, ``"bioimageio"``, ``"state_dict"`` or ``"torchscript"``.
    source: the path it was loaded from.
    details: what else the source said (package name and weights format, checkpoint epoch, ...).
    """

    model: Any
    config: Any
    kind: str
    source: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        """One line for a notebook: what was loaded, from where, and its size."""
        from microseg.models import count_parameters

        _, total = count_parameters(self.model)
        shape = ""
        if self.config is not None:
            shape = (f", {self.config.architecture} {self.config.ndim}D, "
                     f"{self.config.in_channels} channel(s) in, {self.config.out_classes} classes out")
        return f"{self.kind} {self.source}{shape}, {total:,} parameters"


def load_pretrained(
    source: str | Path,
    config: Any = None,
    allow_torchscript: bool = False,
    device: Any = "cpu",
) -> PretrainedModel:
    """Load a pretrained model from any supported source (see the module docstring).

    Parameters
    ----------
    source : a model folder, the name of a built-in model (``"nuclei"``,
        :mod:`microseg.models.builtin`), a bioimage.io package (``.zip`` or folder with
        ``rdf.yaml``), or a state-dict file.
    config : for a state-dict file: its ModelConfig, or a path to its JSON; None looks for
        ``config.json`` beside the file. Ignored for the other sources (they carry their own).
    allow_torchscript : accept TorchScript weights (a bioimage.io package without our
        architecture, or a TorchScript file). TorchScript is a program; load only files you trust.
    device : where the model goes.

    Returns
    -------
    PretrainedModel, the network in eval mode.

    Raises
    ------
    DataError
        The source does not exist, is of an unknown kind, is unsafe (zip path traversal), or its
        weights do not fit (every mismatched layer listed with both shapes).
    ConfigError
        A state dict without a config, or a config that is not valid.
    MicrosegError
        TorchScript refused (``allow_torchscript`` false) or an architecture microseg cannot build.
    """
    from microseg.models.builtin import model_folder

    path = model_folder(source)
    if not path.exists():
        raise DataError(f"pretrained model {path} does not exist",
                        ["give a model folder (config.json + best.pt, written by notebook 02), a "
                         "bioimage.io package (.zip or folder with rdf.yaml) or a state dict (.pt)"])
    if path.is_dir() and (path / MODEL_CONFIG_FILE).is_file() and _has_checkpoint(path):
        return load_model_folder(path, device=device)
    if (path.is_dir() and _rdf_file(path) is not None) or (
            path.suffix == ".zip" and not _is_torchscript_file(path)):
        return load_bioimageio(path, allow_torchscript=allow_torchscript, device=device)
    if path.is_file():
        return load_state_dict_file(path, config=config, allow_torchscript=allow_torchscript,
                                    device=device)
    raise DataError(f"{path}: not a model folder (config.json + best.pt), a bioimage.io package "
                    f"(rdf.yaml) or a weights file", [f"found in it: {_listing(path)}"])


def _has_checkpoint(folder: Path) -> bool:
    return (folder / BEST_CHECKPOINT).is_file() or (folder / LATEST_CHECKPOINT).is_file()


def _listing(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") if names else "nothing"


def load_model_folder(folder: str | Path, which: str = "best", device: Any = "cpu") -> PretrainedModel:
    """Load a model folder written by notebook 02 (or 03/04) with its ``which`` checkpoint.

    Uses :func:`microseg.models.checkpoint.load_network` (weights-only loading, strict).
    """
    from microseg.models.checkpoint import load_network

    model, config, extra = load_network(folder, which=which, device=device)
    details = {k: v for k, v in dict(extra or {}).items() if isinstance(v, (int, float, str))}
    details["checkpoint"] = which
    return PretrainedModel(model.eval(), config, "model_folder", str(folder), details)


def load_state_dict_file(
    path: str | Path,
    config: Any = None,
    allow_torchscript: bool = False,
    device: Any = "cpu",
) -> PretrainedModel:
    """Build the network ``config`` describes and load the state dict in ``path`` into it, strictly.

    ``config``: a ModelConfig, a path to its JSON, or None for ``config.json`` beside ``path``.
    A TorchScript file is loaded as such only with ``allow_torchscript``. Errors as
    :func:`load_pretrained`.
    """
    path = Path(path)
    if _is_torchscript_file(path):
        return _load_torchscript(path, allow_torchscript, device, {"format": "torchscript"})
    model_config = _model_config(path, config)
    state = read_state_dict(path)
    model = _built(model_config)
    _load_weights(model, state, path)
    return PretrainedModel(model.to(device).eval(), model_config, "state_dict", str(path))


def _model_config(weights: Path, config: Any) -> Any:
    from microseg.models import ModelConfig

    if isinstance(config, ModelConfig):
        return config
    config_path = Path(config) if config is not None else weights.parent / MODEL_CONFIG_FILE
    if not config_path.is_file():
        raise ConfigError(
            f"{weights} holds weights only; the architecture is missing: pass config= (a "
            f"ModelConfig or its JSON file) or put the model's config.json beside the weights "
            f"(looked for {config_path})")
    return ModelConfig.load(config_path)


def _built(config: Any) -> nn.Module:
    from microseg.models import build_model

    return build_model(config)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, read with ``torch.load(..., weights_only=True)`` on the CPU.

    Accepts a bare state dict or a checkpoint dict holding one under ``"model"``,
    ``"state_dict"`` or ``"model_state_dict"``; a ``"module."`` prefix (from DataParallel) is
    removed. Raises :class:`DataError` for a file that holds something else or cannot be read
    safely (e.g. pickled objects), and :class:`MicrosegError` for a TorchScript file.
    """
    import torch

    path = Path(path)
    if _is_torchscript_file(path):
        raise MicrosegError(f"{path} is a TorchScript program, not a state dict; load it with "
                            f"load_pretrained(..., allow_torchscript=True) if you trust it")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for unreadable or unsafe files
        raise DataError(f"{path} cannot be read as PyTorch weights",
                        [f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                         "only plain state dicts (tensors and numbers) are read; files that "
                         "need arbitrary Python objects are refused"]) from None
    state = _state_in(loaded)
    if state is None:
        keys = ", ".join(map(str, list(loaded)[:6])) if isinstance(loaded, Mapping) else type(loaded).__name__
        raise DataError(f"{path} holds no state dict", [f"found: {keys}"])
    return {k.removeprefix("module."): v for k, v in state.items()}


def _state_in(loaded: Any) -> Mapping[str, Any] | None:
    import torch

    if isinstance(loaded, Mapping) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return loaded
    if isinstance(loaded, Mapping):
        for key in _CHECKPOINT_KEYS:
            if isinstance(loaded.get(key), Mapping):
                return _state_in(loaded[key])
    return None


def _load_weights(model: nn.Module, state: Mapping[str, Any], source: str | Path) -> nn.Module:
    from microseg.models.checkpoint import load_weights

    return load_weights(model, state, source)


def _is_torchscript_file(path: Path) -> bool:
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(PurePosixPath(n).name == "constants.pkl" for n in archive.namelist())


def _load_torchscript(path: Path, allowed: bool, device: Any, details: dict[str, Any]) -> PretrainedModel:
    if not allowed:
        raise MicrosegError(
            f"{path} holds TorchScript, a compiled program that runs when loaded; it is not "
            f"loaded by default. If you trust its origin, pass allow_torchscript=True "
            f"(notebooks: the parameter allow_torchscript). TorchScript models can be evaluated "
            f"but not adapted; for transfer learning use state-dict weights")
    from microseg.export.torchscript import load_torchscript

    model = load_torchscript(path).to(device)
    log.warning("loaded TorchScript from %s (allowed explicitly)", path)
    return PretrainedModel(model.eval(), None, "torchscript", str(path), details)


def load_bioimageio(path: str | Path, allow_torchscript: bool = False, device: Any = "cpu") -> PretrainedModel:
    """Load a bioimage.io model package (``.zip`` or a folder holding ``rdf.yaml``).

    Uses its ``pytorch_state_dict`` weights when the package names microseg's architecture,
    rebuilding the network from the package's kwargs (a ModelConfig) without importing anything
    the package names; else its ``torchscript`` weights when ``allow_torchscript``. A zip is
    checked member by member and extracted into a new temporary folder, removed after loading.
    Each weights file's sha256, when the package gives one, must match.

    Raises
    ------
    DataError
        Unsafe zip, missing or unreadable ``rdf.yaml``, not a model, missing weights file,
        checksum mismatch, weights that do not fit.
    MicrosegError
        No weights microseg can load (the message lists the formats and architecture found).
    """
    path = Path(path)
    if path.is_dir():
        return _load_package_folder(path, path, allow_torchscript, device)
    with tempfile.TemporaryDirectory(prefix="microseg-package-") as folder:
        safe_extract(path, folder)
        return _load_package_folder(Path(folder), path, allow_torchscript, device)


def _rdf_file(folder: Path) -> Path | None:
    from microseg.models.zoo import description_file

    return description_file(folder)


def _load_package_folder(folder: Path, source: Path, allow_torchscript: bool, device: Any) -> PretrainedModel:
    rdf = _read_rdf(folder, source)
    weights = rdf.get("weights") or {}
    details = {"name": rdf.get("name"), "format_version": rdf.get("format_version")}
    entry = weights.get("pytorch_state_dict")
    if isinstance(entry, Mapping) and _is_our_architecture(entry):
        config = _package_config(entry, source)
        state = read_state_dict(_package_file(folder, entry, source))
        model = _built(config)
        _load_weights(model, state, source)
        details["weights_format"] = "pytorch_state_dict"
        return PretrainedModel(model.to(device).eval(), config, "bioimageio", str(source), details)
    if isinstance(weights.get("torchscript"), Mapping) and allow_torchscript:
        details["weights_format"] = "torchscript"
        return _load_torchscript(_package_file(folder, weights["torchscript"], source), True, device, details)
    raise MicrosegError(_unloadable_message(source, weights, allow_torchscript))


def _read_rdf(folder: Path, source: Path) -> dict[str, Any]:
    from microseg.models.zoo import read_model_description

    rdf_path = _rdf_file(folder)
    if rdf_path is None:
        raise DataError(f"{source} is not a bioimage.io package: it has no rdf.yaml",
                        [f"found: {_listing(folder)}"])
    return read_model_description(rdf_path, source)


def _architecture(entry: Mapping[str, Any]) -> tuple[str, str, Mapping[str, Any]]:
    """(module, callable, kwargs) of a weights entry, format 0.5 or 0.4."""
    architecture = entry.get("architecture")
    if isinstance(architecture, Mapping):
        return (str(architecture.get("import_from", architecture.get("source", ""))),
                str(architecture.get("callable", "")), architecture.get("kwargs") or {})
    module, _, name = str(architecture or "").rpartition(":")
    return module, name, entry.get("kwargs") or {}


def _is_our_architecture(entry: Mapping[str, Any]) -> bool:
    module, name, _ = _architecture(entry)
    return (module, name) == OUR_ARCHITECTURE


def _package_config(entry: Mapping[str, Any], source: Path) -> Any:
    from microseg.models import ModelConfig

    kwargs = dict(_architecture(entry)[2])
    try:
        return ModelConfig.from_dict(kwargs)
    except ConfigError as err:
        raise ConfigError(f"{source}: the architecture kwargs are not a valid ModelConfig: {err}") from None


def _package_file(folder: Path, entry: Mapping[str, Any], source: Path) -> Path:
    name = str(entry.get("source", ""))
    if "://" in name:
        raise DataError(f"{source}: the weights are not inside the package but at {name}; "
                        f"download the packaged .zip instead")
    path = (folder / name).resolve()
    if not name or not path.is_relative_to(folder.resolve()) or not path.is_file():
        raise DataError(f"{source}: weights file {name!r} is missing from the package (or lies "
                        f"outside it)", [f"package files: {_listing(folder)}"])
    expected = entry.get("sha256")
    if expected and sha256_of(path) != str(expected).lower():
        raise DataError(f"{source}: weights file {name} is damaged or was changed: its sha256 "
                        f"differs from the one in the package description; download it again")
    return path


def _unloadable_message(source: Path, weights: Mapping[str, Any], allow_torchscript: bool) -> str:
    formats = ", ".join(weights) or "none"
    lines = [f"{source}: microseg cannot load these weights (formats in the package: {formats})."]
    entry = weights.get("pytorch_state_dict")
    if isinstance(entry, Mapping):
        module, name, _ = _architecture(entry)
        lines.append(f"Its PyTorch weights need the architecture {module}:{name}, which microseg "
                     f"does not build (it builds {':'.join(OUR_ARCHITECTURE)} only, and never "
                     f"imports code named by a package).")
    if "torchscript" in weights and not allow_torchscript:
        lines.append("It has TorchScript weights: pass allow_torchscript=True to load them if you "
                     "trust the package (they can be evaluated, not adapted).")
    return " ".join(lines)
