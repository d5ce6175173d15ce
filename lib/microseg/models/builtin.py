"""Models that come with microseg, usable by name wherever a model folder is.

A built-in model is a model folder shipped inside the package (``microseg/models/weights/
<name>/``: ``config.json``, ``best.pt`` with the weights only, ``prediction.json``, the tuned
``instance_postprocessing.json`` and a ``MODEL_CARD.md`` saying what it was trained on, how, and
how well it does). ``weights/models.json`` lists them with the sha256 of every file; the files
are checked against it when a model is first used, so a damaged install says so instead of
predicting nonsense.

``"nuclei"`` anywhere a model is asked for — ``pretrained_path`` in notebooks 03 and 04,
``model_dirs`` in 05, ``model_name`` in 07, :meth:`~microseg.models.TrainedModel.load` —
resolves to the built-in folder (:func:`builtin_model_dir`) unless the run folder has a model of
that name of its own. :func:`builtin_models` lists them; ``python -m microseg models`` prints
the list.

Models are added with ``benchmarks/builtin_model.py``, which packs a trained model folder (fp16
weights, settings, card) and writes its checksums into ``models.json``.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from microseg.errors import MicrosegError
from microseg.runs import BEST_CHECKPOINT, RunFolder, sha256_of

__all__ = [
    "WEIGHTS_DIR",
    "builtin_model_dir",
    "builtin_models",
    "is_builtin_model",
    "builtin_for",
    "model_folder",
    "run_model",
    "sha256_of",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Where the built-in model folders and their list (``models.json``) are."""
MANIFEST = "models.json"
NUCLEI_SOLIDITY = 0.9
"""Objects whose median solidity (area over convex-hull area) is at least this look like nuclei:
0.96 on Data Science Bowl 2018 nuclei, 0.83 on phase-contrast cells (Usiigaci), 0.78 on EM cells
(ISBI 2012), measured on 25 label images of each."""


def _manifest(weights_dir: Path) -> dict[str, Any]:
    path = weights_dir / MANIFEST
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def builtin_models(weights_dir: Path | None = None) -> list[dict[str, Any]]:
    """One entry per built-in model: ``name``, ``description``, ``data``, ``scores`` (as the
    model card reports them), ``size_mb`` of its files and ``folder``."""
    weights_dir = weights_dir or WEIGHTS_DIR
    rows = []
    for name, entry in sorted(_manifest(weights_dir).items()):
        folder = weights_dir / entry["folder"]
        size = sum((folder / f).stat().st_size for f in entry["files"] if (folder / f).is_file())
        rows.append({"name": name, "description": entry.get("description", ""),
                     "data": entry.get("data", ""), "scores": entry.get("scores", {}),
                     "size_mb": round(size / 1e6, 2), "folder": str(folder)})
    return rows


def is_builtin_model(name: Any, weights_dir: Path | None = None) -> bool:
    """Whether ``name`` (a string without a folder separator) names a built-in model."""
    return isinstance(name, str) and "/" not in name and \
        name in _manifest(weights_dir or WEIGHTS_DIR)


def model_folder(name: str | Path) -> Path:
    """``name`` as a model folder: the built-in model's (checked, :func:`builtin_model_dir`)
    when ``name`` is not an existing path but names a built-in model; the cached package
    (downloaded and checked first, :func:`microseg.models.zoo.fetch_package`) when it names a
    bioimage.io model, an https address or a Zenodo DOI; else ``Path(name)``."""
    from microseg.models.zoo import fetch_package, is_remote

    if is_remote(name):
        return fetch_package(str(name))
    path = Path(name)
    if not path.exists() and is_builtin_model(str(name)):
        return builtin_model_dir(str(name))
    return path


def run_model(run: RunFolder, name: str | os.PathLike) -> Path:
    """The folder of model ``name`` for ``run``: :meth:`~microseg.runs.RunFolder.require_model`
    (a model of the run, or a model folder anywhere), or the built-in model of that name when
    the run has none of its own (the run's model comes first)."""
    folder = Path(name) if run.is_model_path(name) else run.model_dir(os.fspath(name))
    if not (folder / BEST_CHECKPOINT).is_file() and is_builtin_model(os.fspath(name)):
        return builtin_model_dir(os.fspath(name))
    return run.require_model(name)


def builtin_for(data_dir: str | Path, axes: str | None = None, max_images: int = 8
                ) -> tuple[str | None, str]:
    """The built-in model that suits the annotated images in ``data_dir`` (``images/`` +
    ``labels/``), and why: ``("nuclei", reason)`` for 2D one-channel images (grey RGB counts)
    whose objects are round (median solidity of up to ``max_images`` label images at least
    :data:`NUCLEI_SOLIDITY`), else ``(None, why not)``. Reads, never writes."""
    import numpy as np
    from skimage.measure import regionprops

    from microseg.io import pair_folder, read_label

    if not is_builtin_model("nuclei"):
        return None, "no built-in nuclei model in this installation"
    pairs = pair_folder(data_dir, axes=axes)
    if len(pairs[0].spatial_shape) != 2:
        return None, "they are volumes; the built-in nuclei model is 2D"
    channels = max(p.n_channels for p in pairs)
    if channels != 1:
        return None, f"they have {channels} channels; the built-in nuclei model reads one (grey)"
    chosen = pairs[:: max(1, len(pairs) // max_images)][:max_images]
    solidity = [r.solidity for p in chosen for r in regionprops(read_label(p.label, ndim=2))
                if r.area >= 9]
    if not solidity:
        return None, "their labels hold no objects of 9 pixels or more"
    median = float(np.median(solidity))
    if median < NUCLEI_SOLIDITY:
        return None, (f"their objects are not round like nuclei (median solidity {median:.2f}, "
                      f"nuclei {NUCLEI_SOLIDITY} or more)")
    return "nuclei", f"2D, one channel, round objects (median solidity {median:.2f})"


def builtin_model_dir(name: str, weights_dir: Path | None = None) -> Path:
    """The folder of built-in model ``name``, its files checked against their sha256.

    Raises
    ------
    MicrosegError
        ``name`` is not a built-in model (the built-in names listed), or a file is missing or
        differs from what was shipped (reinstall microseg).
    """
    weights_dir = (weights_dir or WEIGHTS_DIR).resolve()
    manifest = _manifest(weights_dir)
    if name not in manifest:
        known = ", ".join(sorted(manifest)) or "none in this installation"
        raise MicrosegError(f"{name!r} is not a built-in model (built-in models: {known})")
    entry = manifest[name]
    folder = weights_dir / entry["folder"]
    _verified(folder, tuple(sorted(entry["files"].items())))
    return folder


@functools.lru_cache(maxsize=16)
def _verified(folder: Path, files: tuple[tuple[str, str], ...]) -> None:
    """Check every file once per process (cached on the expected checksums)."""
    problems = []
    for file, expected in files:
        path = folder / file
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif (found := sha256_of(path)) != expected:
            problems.append(f"{path} has sha256 {found[:16]}…, expected {expected[:16]}…")
    if problems:
        raise MicrosegError(f"built-in model {folder.name!r} is damaged: "
                            + "; ".join(problems) + " — reinstall microseg")
