"""The run folder: where notebooks pass work to each other, and how files land in it safely.

Layout (``runs/<experiment>/``)::

    data/                 split manifest, normalization statistics, dataset summary
    models/<name>/        config.json, best.pt, latest.pt, history.csv, environment.json, figures
    eval/<name>/          per-image metrics, summary.json, overlays, QC report
    diagnostics/<name>/   summary.json, figures
    predictions/<name>/   outputs, exported packages

Writes are atomic (write to a temporary file in the same folder, then rename), so a crash never
leaves a half-written checkpoint or summary behind, and new outputs never replace earlier ones
unless the caller asks for it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microseg.errors import (
    ConfigError,
    DataError,
    MissingFileError,
    OutputExistsError,
    RunOrderError,
    WriteError,
)

__all__ = [
    "BEST_CHECKPOINT",
    "HISTORY_FILE",
    "LATEST_CHECKPOINT",
    "MODEL_CONFIG_FILE",
    "POSTPROCESSING_FILE",
    "PREDICTION_FILE",
    "RunFolder",
    "TRAIN_CONFIG_FILE",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "save_figure",
    "sha256_of",
    "check_outside_inputs",
    "create_output_dir",
    "environment_record",
    "read_json",
    "require_folder",
    "unique_name",
    "write_summary",
    "writing",
]

MODEL_CONFIG_FILE = "config.json"
"""In a model folder: the ModelConfig, which network to build."""
TRAIN_CONFIG_FILE = "train_config.json"
"""In a model folder: the TrainConfig it was trained with."""
BEST_CHECKPOINT = "best.pt"
"""In a model folder: the weights at the epoch with the lowest validation loss."""
LATEST_CHECKPOINT = "latest.pt"
"""In a model folder: the training state after the last finished epoch (what resume reads)."""
PREDICTION_FILE = "prediction.json"
"""In a model folder: how to predict with it (task, input normalization, halo, object scale)."""
POSTPROCESSING_FILE = "instance_postprocessing.json"
"""In a model folder: the instance post-processing tuned on validation images."""
HISTORY_FILE = "history.csv"
"""In a model folder: one row per training epoch."""


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one experiment's run folder. Creating the object creates nothing on disk.

    Example
    -------
    >>> run = RunFolder("runs/demo")
    >>> run.model_dir("unet").as_posix()
    'runs/demo/models/unet'
    """

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def split_manifest(self) -> Path:
        return self.data_dir / "split.json"

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def eval_dir(self, name: str) -> Path:
        return self.root / "eval" / name

    def diagnostics_dir(self, name: str) -> Path:
        return self.root / "diagnostics" / name

    def predictions_dir(self, name: str) -> Path:
        return self.root / "predictions" / name

    def model_names(self) -> list[str]:
        """Names of the model folders that hold a finished model (a ``best.pt``), sorted."""
        models = self.root / "models"
        if not models.is_dir():
            return []
        return sorted(p.name for p in models.iterdir() if (p / BEST_CHECKPOINT).is_file())

    def saved_parameters(self, notebook: str) -> dict[str, Any] | None:
        """The parameters notebook ``notebook`` (e.g. ``"02_train_from_scratch"``) last ran with
        here, or None if it never ran in this run folder."""
        path = self.root / "notebooks" / f"{notebook}.params.json"
        if not path.is_file():
            return None
        record = read_json(path)
        if not isinstance(record, dict) or not isinstance(record.get("parameters"), dict):
            raise DataError(f"{path} is not a parameters record (expected an object with "
                            f"'parameters'); delete it and run {notebook} again")
        return record["parameters"]

    def default_model_name(self) -> str:
        """The model a later stage uses when none is named: the one policy of every notebook.

        In order: the model notebook 02 last trained here (its saved ``model_name``), when it
        finished; the only trained model; a trained model named ``"unet"`` (notebook 02's
        default name).

        Raises
        ------
        RunOrderError
            No trained model, or several and none of the above picks one (naming them).
        """
        names = self.model_names()
        trained = (self.saved_parameters("02_train_from_scratch") or {}).get("model_name")
        for candidate in (trained, names[0] if len(names) == 1 else None, "unet"):
            if candidate in names:
                return candidate
        if not names:
            raise RunOrderError(
                f"no trained model in {self.root / 'models'}: run "
                f"notebooks/02_train_from_scratch.ipynb with run_dir={str(self.root)!r} first")
        raise RunOrderError(f"{self.root / 'models'} holds several models "
                            f"({', '.join(names)}): name the one to use (model_name=...)")

    def require_split(self) -> Path:
        """The split manifest path; :class:`RunOrderError` naming notebook 01 if it is missing."""
        if not self.split_manifest.is_file():
            raise RunOrderError(
                f"{self.split_manifest} does not exist: run notebooks/01_prepare_data.ipynb "
                f"with run_dir={str(self.root)!r} first"
            )
        return self.split_manifest

    @staticmethod
    def is_model_path(name: str | os.PathLike) -> bool:
        """Whether a model ``name`` is a path to a model folder (it holds a folder separator)
        rather than the name of a folder under ``models/``."""
        text = os.fspath(name)
        return "/" in text or os.sep in text

    @classmethod
    def model_key(cls, name: str | os.PathLike) -> str:
        """The name results of model ``name`` are kept under (``eval/<key>``, ``diagnostics/``,
        ``predictions/``): the name itself, or the folder's name for a path.

        >>> RunFolder.model_key("unet"), RunFolder.model_key("/data/models/nuclei_v2/")
        ('unet', 'nuclei_v2')
        """
        return Path(name).name if cls.is_model_path(name) else os.fspath(name)

    def require_model(self, name: str | os.PathLike) -> Path:
        """The folder of model ``name`` — a folder under ``models/`` or a path to a model
        folder made anywhere (another run, a colleague's) — holding ``best.pt``;
        :class:`RunOrderError` naming notebook 02 if there is none. (Built-in models by name
        as well: :func:`microseg.models.builtin.run_model`.)"""
        folder = Path(name) if self.is_model_path(name) else self.model_dir(os.fspath(name))
        if self.is_model_path(name) and not (folder / BEST_CHECKPOINT).is_file():
            raise RunOrderError(f"{folder} holds no trained model (no {BEST_CHECKPOINT}): give "
                                f"a model folder (as notebook 02 writes under run_dir/models/) "
                                f"or the name of a model in {self.root / 'models'}")
        if not (folder / BEST_CHECKPOINT).is_file():
            found = ", ".join(self.model_names()) or "none"
            raise RunOrderError(
                f"no trained model in {folder} (models found in this run folder: {found}): "
                f"run notebooks/02_train_from_scratch.ipynb with model_name={name!r} first"
            )
        return folder


def create_output_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Create a fresh output folder and return it.

    An existing empty folder is reused. A folder that already holds files raises
    :class:`OutputExistsError` unless ``overwrite`` is true (then its files are kept and
    overwritten one by one as the new run writes them; nothing is deleted).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} exists and is a file, expected a folder for results")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{path} already holds results from an earlier run; choose another name "
            f"or pass overwrite=True to write over them"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def unique_name(parent: str | Path, name: str) -> str:
    """``name`` if ``parent/name`` is free or an empty folder, else ``name-2``, ``name-3``, ...

    A plain file at ``parent/name`` counts as taken.
    """
    parent = Path(parent)
    candidate, k = name, 1
    while (parent / candidate).exists() and (
        not (parent / candidate).is_dir() or any((parent / candidate).iterdir())
    ):
        k += 1
        candidate = f"{name}-{k}"
    return candidate


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path in the target folder, then rename it to ``path``.

    Readers see the old file or the new one, never half of one; on error nothing is left behind.

    Raises
    ------
    WriteError
        When the disk is full or the folder is read-only (any ``OSError`` while writing), naming
        the file, the reason and the fix.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            write(Path(tmp))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into a :class:`WriteError` that says why
    (full disk, read-only folder, ...) and what to do.

    Example
    -------
    >>> with tempfile.TemporaryDirectory() as folder, writing(Path(folder) / "notes.txt"):
    ...     (Path(folder) / "notes.txt").write_text("...")
    3
    >>> with writing("/no/such/folder/notes.txt"):
    ...     Path("/no/such/folder/notes.txt").write_text("...")
    Traceback (most recent call last):
    ...
    microseg.errors.WriteError: ...
    """
    try:
        yield
    except WriteError:
        raise
    except OSError as err:
        raise _write_error(path, err) from err


_FULL = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def _write_error(path: str | Path, err: OSError) -> WriteError:
    """The :class:`WriteError` for ``err`` raised while writing ``path``."""
    path = Path(path)
    folder = _existing_parent(path)
    if err.errno in _FULL:
        reason = f"the disk holding {folder} is full ({_free_space(folder)} free)"
        fix = "free space on that disk, or choose a run_dir on another disk"
    elif err.errno == errno.EFBIG:
        reason = "the file would be larger than this process may write (ulimit -f)"
        fix = "raise the file size limit, or write to another disk"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST) and _file_on_path(path) is not None:
        reason = f"{_file_on_path(path)} is a file, not a folder"
        fix = "choose another run_dir, or move that file away"
    elif err.errno in _READ_ONLY:
        reason = f"{folder} is read-only for this user ({err.strerror})"
        fix = ("choose a run_dir you can write to, e.g. under your home folder (in the "
               "container: under /results)")
    else:
        reason, fix = f"{err.strerror or err}", "check the folder and the disk, then run again"
    error = WriteError(f"cannot write {path}: {reason}; {fix}. Nothing half-written was left "
                       f"behind.")
    error.errno = err.errno
    return error


def _file_on_path(path: Path) -> Path | None:
    """The first part of ``path``'s folders that exists as a file, or None."""
    return next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)


def require_folder(path: str | Path, name: str = "run_dir") -> Path:
    """``path`` as a Path, unless it or one of its parents exists as a file (ConfigError)."""
    path = Path(path)
    found = path if path.exists() and not path.is_dir() else _file_on_path(path)
    if found is not None:
        raise ConfigError(f"{name} = {str(path)!r}: {found} is a file, not a folder; choose "
                          f"a folder (it is made if missing)")
    return path


def _existing_parent(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate if candidate.is_dir() else candidate.parent
    return Path.cwd()


def _free_space(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown space"
    return f"{free / 2**20:.1f} MiB" if free < 2**30 else f"{free / 2**30:.1f} GiB"


def check_outside_inputs(output: str | Path, inputs: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` when ``output`` is one of the folders in ``inputs`` (name →
    path or None) or lies inside one: the user's input folders are never written to.

    Call it before writing anything. Example: a run folder inside the data folder.

    >>> check_outside_inputs("runs/a", {"data_dir": "data"})
    >>> check_outside_inputs("data/run", {"data_dir": "data"})
    Traceback (most recent call last):
    ...
    microseg.errors.ConfigError: data/run is inside data_dir = 'data', which is only read, never written to; choose a folder outside it, e.g. runs/<name>
    """
    resolved = Path(output).resolve()
    for name, folder in inputs.items():
        if folder is None or str(folder) == "":
            continue
        source = Path(folder).resolve()
        if resolved == source or source in resolved.parents:
            raise ConfigError(f"{output} is inside {name} = {str(folder)!r}, which is only read, "
                              f"never written to; choose a folder outside it, e.g. runs/<name>")


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically. NumPy scalars and arrays are converted."""
    return atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file, then rename: a crash never leaves a broken checkpoint."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_summary(out_dir: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write ``out_dir/summary.json``, the machine-readable result every notebook ends with
    (a dict, or a recipe's result: its ``to_dict()``)."""
    plain = summary.to_dict() if hasattr(summary, "to_dict") else dict(summary)
    return atomic_write_json(Path(out_dir) / "summary.json", plain)


def read_json(path: str | Path) -> Any:
    """Read a JSON file, with an error that names the file.

    Raises :class:`MissingFileError` when it does not exist, :class:`DataError` when it is
    damaged (not JSON) or cannot be read.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingFileError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}): the file is damaged, e.g. by a "
                        f"full disk or an interrupted run; delete it and run the step that "
                        f"writes it again") from None
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror or err}): check that it is a "
                        f"file you may read") from None


def _json_default(value: Any) -> Any:
    if hasattr(value, "to_dict"):  # a recipe's result inside a summary
        return value.to_dict()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def environment_record() -> dict[str, Any]:
    """What a run ran on: Python and package versions, torch/CUDA/cuDNN, device, git, container.

    Written as ``environment.json`` beside every model and result so a run can be reproduced.
    """
    from importlib import metadata

    packages = {}
    for name in ("microseg", "torch", "monai", "numpy", "scipy", "scikit-image", "tifffile",
                 "zarr", "dask", "matplotlib", "papermill", "onnx", "onnxruntime",
                 "bioimageio.core", "optuna"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    record: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": packages,
        # In an image there is no git checkout: the image carries the commit it was built from.
        "git_commit": _git_commit() or os.environ.get("MICROSEG_SOURCE_REVISION") or None,
        "container_image": os.environ.get("MICROSEG_IMAGE") or None,
        "container_digest": os.environ.get("MICROSEG_IMAGE_DIGEST") or None,
        "container_base": os.environ.get("MICROSEG_BASE_IMAGE") or None,
    }
    if "torch" in sys.modules or packages["torch"]:
        import torch

        cuda = torch.cuda.is_available()
        record.update(
            torch=torch.__version__,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version() if cuda else None,
            device=torch.cuda.get_device_name(0) if cuda else "cpu",
            gpu_count=torch.cuda.device_count(),
        )
    return record


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def save_figure(figure: Any, path: str | Path, dpi: int = 100) -> Path:
    """Save ``figure`` as PNG (parent folders created), atomically, and return the path.

    Raises :class:`~microseg.errors.WriteError` naming the file when the disk is full or the
    folder read-only; a half-written figure is never left behind.
    """
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi,
                                                         bbox_inches="tight"))


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
