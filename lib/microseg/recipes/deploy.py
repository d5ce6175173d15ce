"""Deploy a trained model: predict new images and volumes larger than memory, export the model.

What notebook 07 calls. :func:`deploy` runs the steps below in one call; the notebook calls
them one by one to show each result.

1. :func:`plan_deployment` — the model (a :class:`~microseg.models.TrainedModel`; notebook
   02's model by default), the halo (given, else the model's: its receptive-field radius,
   measured after training) and the tile (given; else :data:`DEFAULT_TILE`, at least twice
   the halo);
2. :func:`prepare_input` — the user's folder or file, or, without one, a large synthetic volume
   (3D model) or image (2D model) written chunk by chunk (:mod:`microseg.data.synthetic_volume`);
3. :func:`predict_input` — a folder image by image (:func:`microseg.inference.folder.
   predict_folder`); one image or volume of any size out of core, block by block into Zarr with
   Dask (:func:`microseg.inference.ooc.predict_volume_to_zarr`), normalized with statistics of
   the whole input computed once;
4. :func:`measure_objects` — one table of objects per input (size, position, intensity) and,
   on request, the labels as Fiji ROI sets, QuPath GeoJSON or OME-Zarr;
5. :func:`export_model` — TorchScript, ONNX and bioimage.io, each loaded back and compared with
   the PyTorch model; then :func:`deployment_summary` and ``summary.json``.

Everything lands in ``run_dir/predictions/<model name>/``, never next to the inputs::

    deploy_config.json    the settings of this deployment
    input.zarr            the synthetic input (and input_labels.zarr, its true objects), if made
    prediction/           the prediction (unless output_path is given)
    objects/              one CSV of objects per input (measure_objects)
    labels_export/        the labels for Fiji, QuPath, napari (when asked for)
    export/               model.torchscript.pt, model.onnx, model.bioimageio.zip
    summary.json          n_inputs, outputs, voxels_per_second, peak_memory_mb, exports, ...

An interrupted deployment resumes when called again with the same settings (finished blocks are
kept); a finished one is refused unless ``overwrite=True``.

Example
-------
>>> summary = deploy("runs/demo", quick=True)                        # doctest: +SKIP
>>> summary["n_inputs"], summary["exports"]["onnx"]["max_abs_diff"] < 1e-4  # doctest: +SKIP
(1, True)

Why one module of about 700 lines: it is notebook 07's whole recipe, one function per step
(plan, input, prediction, objects, export, summary); the engines live in :mod:`microseg.inference`
and :mod:`microseg.export`.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from microseg.config import StageConfig
from microseg.errors import ConfigError, DataError, MicrosegError, OutputExistsError
from microseg.inference.scheduling import LOCAL_CLUSTER, LOCAL_SCHEDULERS
from microseg.inference.tiling import per_axis
from microseg.io.tables import IMAGE_SCALE_KEYS
from microseg.models.builtin import run_model
from microseg.recipes.results import (
    DeploymentSummary,
    ExportedModel,
    MeasuredObjects,
    Prediction,
)
from microseg.runs import RunFolder, write_summary

__all__ = [
    "DEFAULT_TILE",
    "DeployConfig",
    "DeployInput",
    "DeploymentPlan",
    "EXPORT_FORMATS",
    "choose_halo",
    "choose_tile",
    "deploy",
    "deployment_summary",
    "export_model",
    "input_preview",
    "measure_objects",
    "plan_deployment",
    "predict_input",
    "prepare_input",
    "result_preview",
    "scale_table",
]

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("torchscript", "onnx", "bioimageio")
DEFAULT_TILE = MappingProxyType({2: 512, 3: 96})
"""Inner tile side per spatial dimensionality; large tiles waste less work on halos."""
QUICK_TILE = MappingProxyType({2: 128, 3: 32})
"""Halo used only when neither a halo is given nor the receptive-field diagnostics are
installed: enough for the default 2D U-Net (radius 23) and the tiny 3D one (radius 13)."""
SYNTHETIC_SHAPE = MappingProxyType({2: (4096, 4096), 3: (128, 256, 256)})
QUICK_SYNTHETIC_SHAPE = MappingProxyType({2: (384, 384), 3: (32, 96, 96)})
SYNTHETIC_CHUNKS = MappingProxyType({2: (1024, 1024), 3: (64, 128, 128)})
_MIN_EXPORT_SIDE = MappingProxyType({2: 64, 3: 32})


@dataclass
class DeployConfig(StageConfig):
    """Settings of one deployment, saved as ``deploy_config.json`` beside its results.

    model_name : model folder name under ``run_dir/models/`` or a path to a model folder;
        None: the model notebook 02 trained.
    input_path : a folder of images, or one image/volume file (TIFF, Zarr, OME-Zarr, .npy, ...);
        None: a large synthetic input made on the fly.
    output_path : where predictions go; None: ``predictions/<model>/prediction/``.
    tile_shape : inner tile (one side or one per spatial axis); None: :data:`DEFAULT_TILE`
        (:data:`QUICK_TILE` when quick), at least twice the halo.
    halo : context per side (one value or one per axis); None: notebook 06's recommended halo,
        else the measured receptive-field radius rounded up to the model's size divisor.
    scheduler : None (Dask's local threads), ``"synchronous"``, ``"processes"``,
        ``"local-cluster"`` (a dask.distributed LocalCluster of single-threaded processes made
        for this call) or the address of a running scheduler (``"tcp://host:8786"``).
    export_formats : any of ``"torchscript"``, ``"onnx"``, ``"bioimageio"``.
    output : ``"labels"`` (instances for instance models, classes otherwise),
        ``"probabilities"`` or ``"both"``.
    synthetic_shape : spatial shape of the synthetic input; None: :data:`SYNTHETIC_SHAPE`
        (:data:`QUICK_SYNTHETIC_SHAPE` when quick).
    quick : a smoke run: small synthetic input, small tiles, a quicker receptive-field estimate.
    object_diameter : for a model trained at a canonical object size: the median object
        diameter of the input in pixels; None: the training images'; ``"auto"``: estimated
        (per image of a folder; on a central crop of a large image).
    tta : test-time augmentation (flips and rotations of every tile, averaged; 8× the work; on by
        default, as it segments real images better; False for very large inputs).
    """

    model_name: str | None = None
    input_path: str | None = None
    output_path: str | None = None
    tile_shape: int | tuple[int, ...] | None = None
    halo: int | tuple[int, ...] | None = None
    scheduler: str | None = None
    export_formats: tuple[str, ...] = EXPORT_FORMATS
    output: Literal["labels", "probabilities", "both"] = "labels"
    synthetic_shape: tuple[int, ...] | None = None
    quick: bool = False
    object_diameter: float | str | None = "auto"
    tta: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [f for f in self.export_formats if f not in EXPORT_FORMATS]
        if unknown:
            raise ConfigError(f"unknown export format(s) {unknown}; choose from {EXPORT_FORMATS}")
        known = (None, *LOCAL_SCHEDULERS, LOCAL_CLUSTER)
        if self.scheduler not in known and "://" not in self.scheduler:
            raise ConfigError(
                f"scheduler {self.scheduler!r} is not known; use None (local threads), "
                f"{', '.join(map(repr, LOCAL_SCHEDULERS))}, {LOCAL_CLUSTER!r} or a scheduler "
                f"address such as 'tcp://127.0.0.1:8786'")


@dataclass(frozen=True)
class DeploymentPlan:
    """What :func:`plan_deployment` decided: model (a :class:`~microseg.models.TrainedModel`),
    halo, tile, where results go."""

    config: DeployConfig
    model: Any
    results: Path
    halo: tuple[int, ...]
    halo_source: str
    tile: tuple[int, ...]
    overwrite: bool = False
    started: float = field(default_factory=time.perf_counter)

    @property
    def prediction_path(self) -> Path:
        """The user's ``output_path``, else ``results/prediction``."""
        if self.config.output_path:
            return Path(self.config.output_path)
        return self.results / "prediction"

    def describe(self) -> dict[str, Any]:
        """The plan as a small table (name → value) for a notebook."""
        config = self.model.config
        return {"model": self.model.name, "model folder": str(self.model.folder),
                "task": self.model.task, "dimensions": config.ndim,
                "input channels": config.in_channels, "output classes": config.out_classes,
                "normalization layers": config.norm, "size divisor": self.model.size_divisor,
                "instance head": self.model.settings.instance_head,
                "canonical object diameter (px)": self.model.settings.canonical_diameter,
                "object diameter of the training images (px)":
                    self.model.settings.object_diameter,
                "object diameter of the input": self.config.object_diameter,
                "test-time augmentation": self.config.tta,
                "halo": list(self.halo),
                "halo from": self.halo_source, "tile": list(self.tile),
                "results": str(self.results)}


@dataclass(frozen=True)
class DeployInput:
    """The input of a deployment: ``path`` and ``kind`` ("synthetic", "file" or "folder")."""

    path: Path
    kind: str

    def describe(self) -> dict[str, Any]:
        """Path, kind, number of images, and shape and size of the first image."""
        volume = _open_first(self)
        return {"input": str(self.path), "kind": self.kind, "images": len(_input_files(self)),
                "shape (C, *spatial)": list(volume.shape), "dtype": str(volume.dtype),
                "size (MB)": round(math.prod(volume.shape) * volume.dtype.itemsize / 1e6, 1)}


def deploy(run_dir: str | Path, model_name: str | None = None,
           input_path: str | Path | None = None, output_path: str | Path | None = None,
           tile_shape: int | Sequence[int] | None = None, halo: int | Sequence[int] | None = None,
           scheduler: str | None = None, export_formats: Sequence[str] = EXPORT_FORMATS,
           output: str = "labels", quick: bool = False, overwrite: bool = False, *,
           synthetic_shape: Sequence[int] | None = None, batch_size: int = 4,
           device: Any = None, progress: bool = True,
           object_diameter: float | str | None = "auto", tta: bool = True,
           label_export_formats: Sequence[str] = ()) -> DeploymentSummary:
    """Predict new data with a trained model, out of core where needed, and export the model.

    Parameters are those of :class:`DeployConfig`, plus ``run_dir`` (the experiment's run
    folder), ``overwrite`` (replace a finished deployment of this model), ``batch_size`` (tiles
    per forward pass), ``device`` (None: CUDA if available, else CPU), ``progress`` (a
    progress bar over blocks on local schedulers) and ``label_export_formats`` (labels also
    written for Fiji, QuPath or napari: any of ``"roiset"``, ``"geojson"``, ``"ome-zarr"``;
    see :func:`measure_objects`).

    Returns
    -------
    The summary of :func:`deployment_summary`, also written to
    ``predictions/<model>/summary.json``.

    Raises
    ------
    RunOrderError if the model folder holds no trained model (naming notebook 02);
    OutputExistsError if this model was deployed before (pass ``overwrite=True``) or an output
    would land in an input folder; ConfigError for bad settings (tile smaller than twice the
    halo, unknown scheduler or export format); DataError for an input that does not fit the
    model (dimensionality, channels) or cannot be read.
    """
    config = DeployConfig(
        model_name=model_name, input_path=_as_str(input_path), output_path=_as_str(output_path),
        tile_shape=_as_shape(tile_shape), halo=_as_shape(halo), scheduler=scheduler,
        export_formats=tuple(export_formats), output=output,
        synthetic_shape=_as_shape(synthetic_shape), quick=quick,
        object_diameter=object_diameter, tta=tta)
    plan = plan_deployment(run_dir, config, overwrite)
    source = prepare_input(plan)
    prediction = predict_input(plan, source, batch_size, device, progress)
    measured = measure_objects(plan, prediction, label_export_formats)
    exports = export_model(plan, prediction.example)
    summary = deployment_summary(plan, source, prediction, exports, measured)
    write_summary(plan.results, summary)
    return summary


def _as_str(path: str | Path | None) -> str | None:
    return None if path is None else str(path)


def _as_shape(value: int | Sequence[int] | None) -> int | tuple[int, ...] | None:
    if value is None or isinstance(value, (int, np.integer)):
        return None if value is None else int(value)
    return tuple(int(v) for v in value)


def plan_deployment(run_dir: str | Path, config: DeployConfig | None = None,
                    overwrite: bool = False) -> DeploymentPlan:
    """Load the model, choose halo and tile, and claim ``predictions/<model>/``.

    Writes ``deploy_config.json`` there. Nothing else is written, and bad settings fail here,
    before any input is made or predicted.

    Raises
    ------
    RunOrderError if the model folder holds no trained model (naming notebook 02);
    OutputExistsError for a finished deployment of this model without ``overwrite``;
    ConfigError for a halo or tile that does not fit the model (see :func:`choose_tile`).
    """
    from microseg.models import TrainedModel

    config = config or DeployConfig()
    run = RunFolder(run_dir)
    model = TrainedModel.load(run_model(run, config.model_name or run.default_model_name()))
    results = _results_dir(run, model.name, overwrite)
    halo, source = choose_halo(model, config.halo)
    tile = choose_tile(config.tile_shape, halo, model.ndim, model.size_divisor, config.quick)
    results.mkdir(parents=True, exist_ok=True)
    config.save(results / "deploy_config.json")
    return DeploymentPlan(config, model, results, halo, source, tile, overwrite)


def _results_dir(run: RunFolder, name: str, overwrite: bool) -> Path:
    """``predictions/<name>/``; refuses a finished deployment unless ``overwrite``."""
    results = run.predictions_dir(name)
    if (results / "summary.json").is_file() and not overwrite:
        raise OutputExistsError(
            f"{results} already holds a finished deployment of model {name!r}; pass "
            f"overwrite=True to predict and export again, or copy the results elsewhere first")
    return results


def choose_halo(model: Any, halo: int | Sequence[int] | None = None
                ) -> tuple[tuple[int, ...], str]:
    """The halo per spatial axis and where it came from: ``halo`` if given (``"given"``), else
    the model's (``"receptive field"``: its radius rounded up to the size divisor, saved in
    the model folder after training or measured now; see :attr:`~microseg.models.TrainedModel.
    halo`).

    Raises :class:`ConfigError` for a halo of the wrong length or a negative one.
    """
    if halo is not None:
        return per_axis(halo, model.ndim, "halo"), "given"
    if model.settings.halo is None:
        log.info("measuring the receptive field of the model to choose the halo (pass halo=... "
                 "to skip; 3D models take a minute or more)")
    return model.halo, "receptive field"


def choose_tile(tile_shape: int | Sequence[int] | None, halo: Sequence[int], ndim: int,
                divisor: int = 1, quick: bool = False) -> tuple[int, ...]:
    """The inner tile per spatial axis.

    A given ``tile_shape`` is used as is (rounded to the divisor later by the prediction); None
    gives :data:`DEFAULT_TILE` (:data:`QUICK_TILE` when quick), enlarged to twice the halo
    and rounded up to ``divisor``.

    Raises :class:`ConfigError` when a given tile is smaller than the divisor (e.g. 0) or than
    twice the halo on some axis (every tile would read several times its own size).

    Example
    -------
    >>> choose_tile(None, (24, 24), ndim=2, divisor=4, quick=True)
    (128, 128)
    >>> choose_tile(None, (100, 100), ndim=2, divisor=8, quick=True)
    (200, 200)
    """
    halo = tuple(int(h) for h in halo)
    if tile_shape is None:
        base = (QUICK_TILE if quick else DEFAULT_TILE)[ndim]
        return tuple(math.ceil(max(base, 2 * h) / divisor) * divisor for h in halo)
    tile = per_axis(tile_shape, ndim, "tile_shape")
    if min(tile) < max(divisor, 1):
        raise ConfigError(
            f"tile_shape {tile} is smaller than the model's size divisor {divisor}: use tiles of "
            f"at least {max(divisor, 2 * max(halo, default=0))} pixels per side (or leave "
            f"tile_shape None for the default)")
    if any(t < 2 * h for t, h in zip(tile, halo, strict=True)):
        raise ConfigError(
            f"tile_shape {tile} is smaller than twice the halo {halo}: every tile would read "
            f"more than 4x its own size; use tile_shape of at least {tuple(2 * h for h in halo)} "
            f"(or leave it None for the default)")
    return tile


def prepare_input(plan: DeploymentPlan) -> DeployInput:
    """The input of ``plan``: the user's folder or file, or a synthetic one made now.

    Raises :class:`DataError` for an input path that does not exist, and
    :class:`OutputExistsError` when the prediction would land in the user's input folder.
    """
    config = plan.config
    if config.input_path is None:
        path = _synthetic_input(plan.results, plan.model.config, config.synthetic_shape,
                                config.quick, plan.overwrite)
        return DeployInput(path, "synthetic")
    path = Path(config.input_path)
    if not path.exists():
        raise DataError(f"input {path} does not exist; give a folder of images, one image or "
                        f"volume file, or None for a synthetic volume")
    source = DeployInput(path, "folder" if path.is_dir() and path.suffix != ".zarr" else "file")
    _refuse_output_near_input(plan.prediction_path, source)
    return source


def _synthetic_input(results: Path, model_config: Any, shape: Sequence[int] | None = None,
                     quick: bool = False, overwrite: bool = False) -> Path:
    """Make (or reuse) ``results/input.zarr``: a synthetic volume for a 3D model, a large image
    for a 2D one, with its true objects in ``results/input_labels.zarr``.

    An existing input of the same shape is reused (it is deterministic); one of another shape
    is replaced only with ``overwrite``. Raises :class:`ConfigError` for a model that takes more
    than one channel (the synthetic images have one), :class:`OutputExistsError` as said.
    """
    from microseg.data.synthetic_volume import write_synthetic_volume

    ndim = model_config.ndim
    if model_config.in_channels != 1:
        raise ConfigError(f"the built-in synthetic input has 1 channel, the model takes "
                          f"{model_config.in_channels}: pass input_path= with your own images")
    shape = tuple(shape or (QUICK_SYNTHETIC_SHAPE if quick else SYNTHETIC_SHAPE)[ndim])
    image, labels = results / "input.zarr", results / "input_labels.zarr"
    if image.exists() and _stored_shape(image) == (1, *shape):
        return image
    if image.exists() and not overwrite:
        raise OutputExistsError(f"{image} holds a synthetic input of another shape; pass "
                                f"overwrite=True to replace it")
    partial = [results / f".{p.name}.partial" for p in (image, labels)]
    for path in (image, labels, *partial):
        shutil.rmtree(path, ignore_errors=True)
    chunks = tuple(min(c, s) for c, s in zip(SYNTHETIC_CHUNKS[ndim], shape, strict=True))
    log.info("writing a synthetic %s input to %s", "x".join(map(str, shape)), image)
    write_synthetic_volume(partial[0], shape, chunks, seed=0, labels_path=partial[1])
    partial[1].rename(labels)
    partial[0].rename(image)
    return image


def _stored_shape(path: Path) -> tuple[int, ...]:
    import zarr

    return tuple(zarr.open_array(str(path), mode="r").shape)


def _refuse_output_near_input(target: Path, source: DeployInput) -> None:
    """Outputs never go into the folder a user's input lies in."""
    folder = source.path if source.kind == "folder" else source.path.parent
    resolved, inside = target.resolve(), folder.resolve()
    if resolved == inside or inside in resolved.parents:
        raise OutputExistsError(
            f"output_path {target} lies in the input folder {folder}; inputs are never written "
            f"to: choose an output_path elsewhere or leave it None (the run folder)")


def _input_files(source: DeployInput) -> list[Path]:
    from microseg.io import list_images

    return list_images(source.path) if source.kind == "folder" else [source.path]


def _open_first(source: DeployInput, axes: str | None = None) -> Any:
    """The first input image as a channel-first view, read region by region."""
    from microseg.inference.ooc import VolumeSource

    files = _input_files(source)
    if not files:
        raise DataError(f"{source.path} holds no images")
    return VolumeSource(files[0], axes)


def predict_input(plan: DeploymentPlan, source: DeployInput, batch_size: int = 4,
                  device: Any = None, progress: bool = True) -> Prediction:
    """Predict the input of ``plan`` into ``plan.prediction_path``.

    A folder is predicted image by image into TIFF files; one file (or the synthetic input)
    out of core into Zarr, on ``plan.config.scheduler``, with a text progress bar on local
    schedulers when ``progress``.

    Returns
    -------
    :class:`~microseg.recipes.results.Prediction`: ``n_inputs``, ``predictions`` (per input:
    ``input``, ``labels``, ``probabilities``, how it was resampled), ``errors``, ``voxels``, ``voxels_per_second``, ``peak_memory_mb``,
    ``worker_peak_memory_mb`` (cluster only), ``n_objects`` (instance labels of one volume) and
    ``example`` (a raw crop of the first input for the export checks), ``record`` (what the
    predictor wrote: ``predictions.json`` of a folder, the out-of-core record of a volume).

    Raises :class:`DataError` if the input does not fit the model or no image could be read.
    """
    if source.kind == "folder":
        return _predict_folder(plan, source, batch_size, device)
    return _predict_volume(plan, source, batch_size, device, progress)


def _predict_folder(plan: DeploymentPlan, source: DeployInput, batch_size: int,
                    device: Any) -> Prediction:
    from microseg.inference.folder import predict_folder

    if plan.config.scheduler is not None:
        log.info("a folder is predicted image by image in this process; scheduler %r is used "
                 "for single large volumes only", plan.config.scheduler)
    result = predict_folder(plan.model, source.path, plan.prediction_path, plan.tile,
                            plan.halo, output=plan.config.output, overwrite=plan.overwrite,
                            batch_size=batch_size, device=device,
                            object_diameter=plan.config.object_diameter, tta=plan.config.tta)
    if not result["outputs"]:
        raise DataError(f"no image of {source.path} could be predicted", result["errors"])
    first = DeployInput(Path(result["outputs"][0]["input"]), "file")
    predictions = [{key: o.get(key) for key in ("input", "labels", "probabilities",
                                                 *IMAGE_SCALE_KEYS)}
                   for o in result["outputs"]]
    voxels = sum(math.prod(o["shape"][1:]) for o in result["outputs"])
    example = _example_crop(_open_first(first, plan.model.settings.input_axes), plan.halo,
                            plan.model.size_divisor, plan.model.fixed_input_shape)
    return Prediction(n_inputs=result["n_inputs"], predictions=predictions,
                      errors=result["errors"], voxels=voxels,
                      voxels_per_second=result["voxels_per_second"],
                      peak_memory_mb=result["peak_memory_mb"], worker_peak_memory_mb=None,
                      n_objects=None, example=example, record=result)


def _predict_volume(plan: DeploymentPlan, source: DeployInput, batch_size: int, device: Any,
                    progress: bool) -> Prediction:
    """One image or volume out of core, normalized with statistics of the whole input."""
    from microseg.inference.scheduling import dask_scheduler, progress_bar, worker_peak_memory

    model = plan.model
    volume = _open_first(source, model.settings.input_axes)
    model.check_fits(volume.shape[0], len(volume.shape) - 1, str(source.path))
    statistics = model.normalization_statistics(volume)
    with dask_scheduler(plan.config.scheduler) as scheduler, progress_bar(progress, scheduler):
        result = model.predict_volume(
            volume, plan.prediction_path, tile_shape=plan.tile, halo=plan.halo,
            normalization_stats=statistics, output=plan.config.output, batch_size=batch_size,
            device=device, scheduler=scheduler, overwrite=plan.overwrite,
            object_diameter=plan.config.object_diameter, tta=plan.config.tta)
        workers = worker_peak_memory(scheduler)
    predictions = [{"input": str(source.path), "labels": result["labels"],
                    "probabilities": result["probabilities"],
                    **{key: result[key] for key in IMAGE_SCALE_KEYS}}]
    return Prediction(n_inputs=1, predictions=predictions, errors=[],
                      voxels=math.prod(volume.spatial_shape),
                      voxels_per_second=result["voxels_per_second"],
                      peak_memory_mb=result["peak_memory_mb"], worker_peak_memory_mb=workers,
                      n_objects=result["n_objects"],
                      example=_example_crop(volume, plan.halo, model.size_divisor,
                                            model.fixed_input_shape),
                      record=result)


def _example_crop(volume: Any, halo: Sequence[int], divisor: int,
                  fixed: Sequence[int] | None = None) -> np.ndarray:
    """A raw crop (C, *side) from the start of ``volume`` for export checks.

    Each side is the smallest multiple of ``divisor`` larger than twice the halo (what a
    bioimage.io test input needs), at least 64 (2D) or 32 (3D); reflected where the input is
    smaller. float32.
    """
    from microseg.inference.tiling import read_window

    ndim = len(volume.shape) - 1
    sides = [max(_MIN_EXPORT_SIDE[ndim], (2 * h // divisor + 1) * divisor) for h in halo]
    sides = [math.ceil(s / divisor) * divisor for s in sides] if fixed is None else list(fixed)
    return read_window(volume, [0] * ndim, sides, "reflect").astype(np.float32)


def export_model(plan: DeploymentPlan, example: np.ndarray) -> dict[str, ExportedModel]:
    """Export the model in each of ``plan.config.export_formats`` into ``results/export/``.

    Every export is loaded back and compared with the PyTorch model: TorchScript and ONNX on
    ``example`` (a raw crop (C, *spatial)) normalized, the bioimage.io package on it raw (the
    package normalizes). A format that cannot be exported here gets ``path`` None and the
    ``error``, and the others go on.

    Returns per format an :class:`~microseg.recipes.results.ExportedModel`: ``path``,
    ``max_abs_diff`` (reloaded export vs PyTorch) and, for bioimage.io, ``test_passed``.
    """
    from microseg.transforms.normalization import normalize, percentile_statistics

    normalization = plan.model.normalization
    low, high = percentile_statistics(example, normalization)
    batch = normalize(example, low, high, normalization.clip)[None]
    exporters = {"torchscript": _export_torchscript, "onnx": _export_onnx,
                 "bioimageio": _export_bioimageio}
    results = {}
    for name in plan.config.export_formats:
        try:
            results[name] = exporters[name](plan, batch, example)
        except (MicrosegError, ImportError) as err:
            log.warning("%s export failed: %s", name, err)
            results[name] = ExportedModel.from_dict(
                {"path": None, "max_abs_diff": None, "error": str(err)})
    return results


def _export_torchscript(plan: DeploymentPlan, batch: np.ndarray, example: np.ndarray
                        ) -> ExportedModel:
    from microseg.export import export_torchscript

    found = export_torchscript(plan.model.network, batch,
                               plan.results / "export" / "model.torchscript.pt",
                               overwrite=plan.overwrite)
    return ExportedModel.from_dict({"path": found["path"], "max_abs_diff": found["max_abs_diff"]})


def _export_onnx(plan: DeploymentPlan, batch: np.ndarray, example: np.ndarray) -> ExportedModel:
    from microseg.export import export_onnx

    found = export_onnx(plan.model.network, batch,
                        plan.results / "export" / "model.onnx", overwrite=plan.overwrite,
                        dynamic_spatial=plan.model.fixed_input_shape is None)
    return ExportedModel.from_dict({"path": found["path"], "max_abs_diff": found["max_abs_diff"]})


def _export_bioimageio(plan: DeploymentPlan, batch: np.ndarray, example: np.ndarray
                       ) -> ExportedModel:
    from microseg.export.bioimageio import BioimageioMetadata, export_bioimageio

    model = plan.model
    found = export_bioimageio(model, plan.results / "export" / "model.bioimageio.zip", example,
                              halo=list(plan.halo),
                              metadata=BioimageioMetadata(name=f"microseg {model.name}"),
                              overwrite=plan.overwrite)
    return ExportedModel.from_dict({"path": found["path"],
                                    "max_abs_diff": found["torchscript_max_abs_diff"],
                                    "test_passed": found["test_passed"]})


def measure_objects(plan: DeploymentPlan, prediction: Prediction,
                    label_export_formats: Sequence[str] = ()) -> MeasuredObjects:
    """Object tables of the predicted labels (one CSV per input: id, size in pixels and µm
    when the input's pixel size is known, centroid, bounding box, mean intensity per channel)
    into ``results/objects/``, and the labels in ``label_export_formats`` (Fiji RoiSet, QuPath
    GeoJSON, OME-Zarr with NGFF labels) into ``results/labels_export/``.

    Returns :class:`~microseg.recipes.results.MeasuredObjects`: ``object_tables`` (folder, or
    None when only probabilities were predicted),
    ``n_objects_measured``, ``tables`` (per input) and ``label_exports`` (per input and format).
    """
    from microseg.io import export_prediction_labels, write_prediction_tables

    predictions = prediction["predictions"]
    if not predictions or predictions[0]["labels"] is None:
        return MeasuredObjects(object_tables=None, n_objects_measured=None, tables=[],
                               label_exports=[])
    folder = plan.results / "objects"
    tables = write_prediction_tables(predictions, folder)
    exports = (export_prediction_labels(predictions, plan.results / "labels_export",
                                        list(label_export_formats), overwrite=plan.overwrite)
               if label_export_formats else [])
    return MeasuredObjects(object_tables=str(folder),
                           n_objects_measured=sum(t["n_objects"] for t in tables),
                           tables=tables, label_exports=exports)


def deployment_summary(plan: DeploymentPlan, source: DeployInput, prediction: Prediction,
                       exports: dict[str, ExportedModel], measured: MeasuredObjects | None = None
                       ) -> DeploymentSummary:
    """The machine-readable result of a deployment: a
    :class:`~microseg.recipes.results.DeploymentSummary` (``summary.json`` holds its dict).

    Fields: ``model``, ``model_dir``, ``input``, ``input_kind``, ``n_inputs``, ``outputs``
    (every array or file written), ``predictions`` (per input: ``input``, ``labels``,
    ``probabilities``, ``object_diameter``, ``diameter_confidence``, ``scale_factor``),
    ``errors``, ``output``,
    ``tile_shape``, ``halo``, ``halo_source``, ``scheduler``, ``voxels``,
    ``voxels_per_second``, ``peak_memory_mb`` (peak resident memory of this process),
    ``worker_peak_memory_mb`` (per cluster worker, else None), ``n_objects``, ``exports`` (per
    format: ``path`` and ``max_abs_diff``, or ``error``), ``instance_head``,
    ``object_diameter`` and ``scale_factor`` (medians over the inputs), ``n_rescaled``,
    ``n_uncertain_diameter`` (inputs whose size the scale search was not sure of), ``tta``,
    ``object_tables`` and ``label_exports`` (see :func:`measure_objects`), ``quick``,
    ``seconds`` (since the plan was made).
    """
    from microseg.models.prediction import scale_summary

    predictions = prediction.predictions
    measured = measured or MeasuredObjects(label_exports=[])
    return DeploymentSummary.from_dict({
        "model": plan.model.name,
        "model_dir": str(plan.model.folder),
        "input": str(source.path),
        "input_kind": source.kind,
        "n_inputs": prediction["n_inputs"],
        "outputs": [p[key] for p in predictions for key in ("labels", "probabilities")
                    if p[key] is not None],
        "predictions": predictions,
        "errors": prediction["errors"],
        "output": plan.config.output,
        "tile_shape": list(plan.tile),
        "halo": list(plan.halo),
        "halo_source": plan.halo_source,
        "scheduler": plan.config.scheduler or "threads",
        "voxels": prediction["voxels"],
        "voxels_per_second": prediction["voxels_per_second"],
        "peak_memory_mb": prediction["peak_memory_mb"],
        "worker_peak_memory_mb": prediction["worker_peak_memory_mb"],
        "n_objects": prediction["n_objects"],
        "exports": exports,
        "instance_head": (plan.model.settings.instance_head if plan.model.task == "instance"
                          else None),
        **scale_summary(predictions),
        "tta": plan.config.tta,
        "object_tables": measured.object_tables,
        "n_objects_measured": measured.n_objects_measured,
        "label_exports": measured.label_exports,
        "quick": plan.config.quick,
        "seconds": time.perf_counter() - plan.started,
    })


def scale_table(prediction: Prediction | DeploymentSummary) -> list[dict[str, Any]]:
    """One row per input: its name, the object diameter it was predicted for (pixels), how that
    was found (``given`` or the scale search's confidence), the factor it was resampled by and
    a sentence for the notebook. Empty for a model that works at the image's own scale."""
    from microseg.models.prediction import UNCERTAIN_DIAMETER

    rows = []
    for p in prediction.predictions:
        if p.get("object_diameter") is None:
            continue
        factor = p.get("scale_factor", 1.0)
        said = ("not resampled" if factor == 1.0 else
                f"{'shrunk' if factor < 1 else 'enlarged'} {max(factor, 1 / factor):.2f}x")
        if p.get("diameter_confidence") in UNCERTAIN_DIAMETER:
            said += " (size uncertain: check the labels, or give object_diameter)"
        rows.append({"input": Path(p["input"]).name,
                     "object diameter (px)": round(p["object_diameter"], 1),
                     "diameter": p.get("diameter_confidence"),
                     "scale factor": round(factor, 3), "resampling": said})
    return rows


def input_preview(source: DeployInput, size: int = 256) -> np.ndarray:
    """A centred crop (at most ``size`` wide) of the first input image: its first channel and,
    for a volume, its middle Z plane. float64 (Y, X)."""
    volume = _open_first(source)
    return _plane(volume, _centre_box(volume.shape[1:], size)).astype(np.float64)


def result_preview(summary: Prediction | DeploymentSummary, size: int = 256
                   ) -> dict[str, np.ndarray]:
    """The same crop of the first input and of its predicted labels, for a figure.

    ``summary`` is a deployment summary or the result of :func:`predict_input` (both list the
    ``predictions``). Returns ``{"image": float64 (Y, X), "labels": int32 (Y, X)}`` (see :func:`input_preview`).
    Raises :class:`MicrosegError` if the deployment wrote no labels
    (``output="probabilities"``).
    """
    from microseg.io import open_image

    first = summary.predictions[0]
    if first["labels"] is None:
        raise MicrosegError("this deployment wrote probabilities only (output='probabilities'); "
                            "deploy with output='labels' or 'both' to preview labels")
    volume = _open_first(DeployInput(Path(first["input"]), "file"))
    box = _centre_box(volume.shape[1:], size)
    stored, _ = open_image(first["labels"])
    labels = np.asarray(stored[box], dtype=np.int32)
    return {"image": _plane(volume, box).astype(np.float64),
            "labels": labels.reshape(labels.shape[-2:])}


def _plane(volume: Any, box: tuple[slice, ...]) -> np.ndarray:
    region = np.asarray(volume[(0, *box)])
    return region.reshape(region.shape[-2:])


def _centre_box(spatial: Sequence[int], size: int) -> tuple[slice, ...]:
    """Middle plane (3D) and a centred square of at most ``size`` in Y and X."""
    box = [slice(n // 2, n // 2 + 1) for n in spatial[:-2]]
    for n in spatial[-2:]:
        side = min(size, n)
        box.append(slice((n - side) // 2, (n - side) // 2 + side))
    return tuple(box)
