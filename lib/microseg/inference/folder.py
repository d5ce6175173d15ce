"""Predict every image of a folder (or one image) with a trained model, into a new folder.

Each image is normalized with the percentiles of the whole image (the run's normalization
settings), predicted tile by tile with a halo, and written under the input's stem:

- ``format="tif"``: ``output_dir/labels/<stem>.tif`` (int32) and/or
  ``output_dir/probabilities/<stem>.tif`` (float32, K channels), in memory per image. The
  ``labels/`` folder pairs with the input folder by name, ready for correction and retraining.
- ``format="zarr"``: ``output_dir/<stem>/`` with ``labels.zarr`` and/or ``probabilities.zarr``,
  out of core (:func:`microseg.inference.ooc.predict_volume_to_zarr`), for images larger than
  memory.

Outputs never go next to the inputs: an output folder inside the input folder is refused. A file
that cannot be read or does not fit the model is listed in ``errors`` and the others are
predicted anyway. ``output_dir/predictions.json`` records what was done.

Example
-------
>>> result = predict_folder("runs/demo/models/unet", "new_images/", "runs/demo/predictions/new",
...                         tile_shape=256, halo=32)                    # doctest: +SKIP
>>> result["n_inputs"], result["errors"]                                # doctest: +SKIP
(12, [])
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from microseg.errors import ConfigError, DataError, OutputExistsError

logger = logging.getLogger(__name__)

FORMATS = ("tif", "zarr")


@dataclasses.dataclass(frozen=True)
class PredictionModel:
    """A network with what prediction needs from its run: normalization and post-processing.

    ``postprocessing`` is an :class:`~microseg.inference.instances.InstancePostprocessing` for
    instance models (labels are objects), None otherwise (labels are classes); ``input_axes``
    are the axes the training images were read with (None: metadata or guess).
    """

    network: Any
    normalization: Any
    postprocessing: Any = None
    input_axes: str | None = None


def prediction_model(model: str | Path | Any, normalization: Any = None,
                     postprocessing: Any = None) -> PredictionModel:
    """The network and its settings from a model folder, or a network with given settings.

    A model folder inside a run folder (``runs/<experiment>/models/<name>``) takes the
    normalization, task and input axes from the run's split manifest and, for instance models,
    the post-processing saved beside the model (defaults when not tuned). Arguments given
    explicitly win. A bare network gets :class:`PercentileNormalization` defaults.

    Raises
    ------
    RunOrderError if the model folder holds no trained model.
    """
    from microseg.transforms.normalization import PercentileNormalization

    if not isinstance(model, (str, Path)):
        return PredictionModel(model, normalization or PercentileNormalization(), postprocessing)
    from microseg.inference.instances import load_postprocessing
    from microseg.training.checkpoint import load_model

    network, _, _ = load_model(model, device="cpu")
    manifest = _run_manifest(Path(model))
    if manifest is not None:
        normalization = normalization or manifest.normalization_config()
        if postprocessing is None and manifest.task == "instance":
            postprocessing = load_postprocessing(model)
    return PredictionModel(network, normalization or PercentileNormalization(), postprocessing,
                           manifest.input_axes if manifest is not None else None)


def _run_manifest(model_dir: Path) -> Any:
    from microseg.data.split import SplitManifest

    path = model_dir.resolve().parent.parent / "data" / "split.json"
    if not path.is_file():
        logger.info("%s is not inside a run folder with a split manifest: using the default "
                    "normalization and class labels", model_dir)
        return None
    return SplitManifest.load(path)


def predict_folder(
    model: str | Path | Any,
    input_path: str | Path,
    output_dir: str | Path,
    tile_shape: int | Sequence[int],
    halo: int | Sequence[int],
    output: Literal["labels", "probabilities", "both"] = "labels",
    format: Literal["tif", "zarr"] = "tif",
    overwrite: bool = False,
    *,
    axes: str | None = None,
    normalization: Any = None,
    postprocessing: Any = None,
    batch_size: int = 4,
    device: Any = None,
    scheduler: Any = None,
) -> dict[str, Any]:
    """Predict every image in ``input_path`` (a folder or one image) into ``output_dir``.

    Parameters
    ----------
    model : a model folder, a network, or a :class:`PredictionModel` (see
        :func:`prediction_model` for where normalization and post-processing come from).
    input_path : folder of images (TIFF, PNG, JPEG, .npy, Zarr/OME-Zarr) or one image file.
    output_dir : a new or empty folder, not inside the input folder.
    tile_shape, halo : inner tile and context per side (per axis or one value), as for
        :func:`~microseg.inference.tiling.predict_tiled`; take the halo from the receptive-field
        diagnostics (notebook 06).
    output : "labels", "probabilities" or "both".
    format : "tif" (in memory per image) or "zarr" (out of core); layouts in the module docstring.
    overwrite : write into an ``output_dir`` that already holds files (they are replaced one by
        one as new results are written).
    axes : axes of the input files as stored, when metadata and the guess are wrong.
    normalization, postprocessing : override the model folder's settings.
    batch_size : tiles per forward pass.
    device : torch device (None: CUDA if available, else CPU).
    scheduler : Dask scheduler for ``format="zarr"`` (see predict_volume_to_zarr).

    Returns
    -------
    dict with ``n_inputs``, ``outputs`` (one dict per predicted image: ``input``, ``labels``,
    ``probabilities``, ``shape``, ``seconds``), ``errors`` (one line per image that failed,
    naming the file), ``voxels_per_second`` (pixels predicted per second of prediction) and
    ``peak_memory_mb`` (peak resident memory of this process).

    Raises
    ------
    OutputExistsError for an ``output_dir`` inside the input folder or (without ``overwrite``)
    one that holds files; ConfigError for an unknown output or format; DataError if
    ``input_path`` does not exist or holds no images.
    """
    from microseg.runs import atomic_write_json, create_output_dir

    _check_choices(output, format)
    inputs, input_folder = _inputs(Path(input_path))
    _refuse_output_inside(Path(output_dir), input_folder)
    settings = model if isinstance(model, PredictionModel) else prediction_model(
        model, normalization, postprocessing)
    out = create_output_dir(output_dir, overwrite)
    outputs, errors = [], []
    for path in inputs:
        try:
            outputs.append(_predict_one(settings, path, out, tile_shape, halo, output, format,
                                        axes or settings.input_axes, batch_size, device,
                                        scheduler, overwrite))
        except DataError as err:
            logger.warning("skipping %s: %s", path, err)
            errors.append(f"{path}: {err}")
    result = _summary(inputs, outputs, errors)
    atomic_write_json(out / "predictions.json", result)
    return result


def _check_choices(output: str, format: str) -> None:
    from microseg.inference.ooc import OUTPUTS

    if output not in OUTPUTS:
        raise ConfigError(f"output {output!r} is not known; choose one of {', '.join(OUTPUTS)}")
    if format not in FORMATS:
        raise ConfigError(f"format {format!r} is not known; choose one of {', '.join(FORMATS)}")


def _inputs(input_path: Path) -> tuple[list[Path], Path]:
    """The images to predict and the folder they are in."""
    from microseg.io import SUPPORTED_EXTENSIONS, list_images

    if not input_path.exists():
        raise DataError(f"{input_path} does not exist; give a folder of images or one image")
    if input_path.is_dir() and input_path.suffix != ".zarr":
        images = list_images(input_path)
        if not images:
            raise DataError(f"{input_path} holds no images ({', '.join(SUPPORTED_EXTENSIONS)})")
        return images, input_path
    return [input_path], input_path.parent


def _refuse_output_inside(output_dir: Path, input_folder: Path) -> None:
    source, target = input_folder.resolve(), output_dir.resolve()
    if target == source or source in target.parents:
        raise OutputExistsError(
            f"the output folder {output_dir} is inside the input folder {input_folder}; inputs "
            f"are never written to: choose a folder elsewhere, e.g. in the run folder"
        )


def _predict_one(settings: PredictionModel, path: Path, out: Path, tile_shape: Any, halo: Any,
                 output: str, format: str, axes: str | None, batch_size: int, device: Any,
                 scheduler: Any, overwrite: bool) -> dict[str, Any]:
    from microseg.io import image_stem

    started = time.perf_counter()
    stem = image_stem(path)
    if format == "zarr":
        written = _predict_zarr(settings, path, out / stem, tile_shape, halo, output, axes,
                                batch_size, device, scheduler, overwrite)
    else:
        written = _predict_tif(settings, path, out, stem, tile_shape, halo, output, axes,
                               batch_size, device, overwrite)
    return {"input": str(path), **written, "seconds": time.perf_counter() - started}


def _predict_tif(settings: PredictionModel, path: Path, out: Path, stem: str, tile_shape: Any,
                 halo: Any, output: str, axes: str | None, batch_size: int, device: Any,
                 overwrite: bool) -> dict[str, Any]:
    """Predict one image in memory and write TIFF files."""
    from microseg.io import read_image, write_image

    image = read_image(path, axes)
    probabilities = predict_image(settings, image, tile_shape, halo, batch_size, device)
    spatial_axes = "ZYX"[-(image.ndim - 1):]
    written = {"shape": list(image.shape), "labels": None, "probabilities": None}
    if output != "labels":
        target = out / "probabilities" / f"{stem}.tif"
        written["probabilities"] = str(write_image(target, probabilities, axes="C" + spatial_axes,
                                                   overwrite=overwrite))
    if output != "probabilities":
        target = out / "labels" / f"{stem}.tif"
        labels = labels_from_probabilities(probabilities, settings.postprocessing)
        written["labels"] = str(write_image(target, labels, axes=spatial_axes,
                                            overwrite=overwrite))
    return written


def predict_image(settings: PredictionModel, image: np.ndarray, tile_shape: Any, halo: Any,
                  batch_size: int = 4, device: Any = None) -> np.ndarray:
    """Class probabilities (K, *spatial) float32 of one image (C, *spatial), normalized with the
    percentiles of the whole image and predicted tile by tile.

    Raises :class:`DataError` if the image does not fit the network.
    """
    import functools

    from microseg.inference.ooc import check_volume_fits_model
    from microseg.inference.tiling import predict_tiled
    from microseg.transforms.normalization import normalize, percentile_statistics

    check_volume_fits_model(image, settings.network)
    low, high = percentile_statistics(image, settings.normalization)
    normalizer = functools.partial(normalize, low=low, high=high,
                                   clip=settings.normalization.clip)
    return predict_tiled(settings.network, image, tile_shape, halo, batch_size=batch_size,
                         device=device, tile_transform=normalizer)


def labels_from_probabilities(probabilities: np.ndarray, postprocessing: Any = None) -> np.ndarray:
    """int32 labels (*spatial): instances when ``postprocessing`` is given (three-class
    probabilities), else the class of highest probability."""
    if postprocessing is None:
        return probabilities.argmax(axis=0).astype(np.int32)
    from microseg.inference.instances import probabilities_to_instances

    return probabilities_to_instances(probabilities, postprocessing)


def _predict_zarr(settings: PredictionModel, path: Path, target: Path, tile_shape: Any,
                  halo: Any, output: str, axes: str | None, batch_size: int, device: Any,
                  scheduler: Any, overwrite: bool) -> dict[str, Any]:
    """Predict one image out of core into ``target`` (a prediction folder)."""
    from microseg.inference.ooc import VolumeSource, predict_volume_to_zarr

    volume = VolumeSource(path, axes)
    result = predict_volume_to_zarr(
        settings.network, volume, target, tile_shape, halo, normalization=settings.normalization,
        output=output, postprocessing=settings.postprocessing, batch_size=batch_size,
        device=device, scheduler=scheduler, overwrite=overwrite)
    return {"shape": list(volume.shape), "labels": result["labels"],
            "probabilities": result["probabilities"]}


def _summary(inputs: list[Path], outputs: list[dict[str, Any]], errors: list[str]
             ) -> dict[str, Any]:
    from microseg.inference.ooc import peak_memory_mb

    voxels = sum(math.prod(o["shape"][1:]) for o in outputs)
    seconds = sum(o["seconds"] for o in outputs)
    return {
        "n_inputs": len(inputs),
        "outputs": outputs,
        "errors": errors,
        "voxels_per_second": voxels / seconds if seconds > 0 else 0.0,
        "peak_memory_mb": peak_memory_mb(),
    }
