"""Predict every image of a folder (or one image) with a trained model, into a new folder.

The model is a :class:`microseg.models.TrainedModel` (or anything with its ``predict``,
``labels``, ``predict_volume`` and ``settings``): each image is normalized with the percentiles
of the whole image (the model's normalization settings), predicted whole or tile by tile with a
halo (:meth:`~microseg.models.TrainedModel.plan_prediction`), and written under the input's
stem:

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
>>> model = TrainedModel.load("runs/demo/models/unet")                  # doctest: +SKIP
>>> result = predict_folder(model, "new_images/", "runs/demo/predictions/new")  # doctest: +SKIP
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

from microseg.errors import ConfigError, DataError, OutputExistsError
from microseg.logs import file_note, progress, summarises

__all__ = ["FORMATS", "predict_folder"]

log = logging.getLogger(__name__)

FORMATS = ("tif", "zarr")
ZARR_TILE = {2: 512, 3: 96}
"""Inner tile of out-of-core prediction when none is given."""


@summarises(lambda a: a["output_dir"])
def predict_folder(
    model: Any,
    input_path: str | Path,
    output_dir: str | Path,
    tile_shape: int | Sequence[int] | None = None,
    halo: int | Sequence[int] | None = None,
    output: Literal["labels", "probabilities", "both"] = "labels",
    format: Literal["tif", "zarr"] = "tif",
    overwrite: bool = False,
    *,
    axes: str | None = None,
    batch_size: int = 4,
    device: Any = None,
    scheduler: Any = None,
    object_diameter: float | str | None = None,
    tta: bool = False,
) -> dict[str, Any]:
    """Predict every image in ``input_path`` (a folder or one image) into ``output_dir``.

    Parameters
    ----------
    model : a :class:`~microseg.models.TrainedModel` (its normalization, halo and instance
        post-processing are used).
    input_path : folder of images (TIFF, PNG, JPEG, .npy, Zarr/OME-Zarr) or one image file.
    output_dir : a new or empty folder, not inside the input folder.
    tile_shape, halo : inner tile and context per side (per axis or one value); None: the
        model's choice (:meth:`~microseg.models.TrainedModel.plan_prediction`). ``"zarr"``
        needs a tile: None there means 512 (2D) or 96 (3D).
    output : "labels", "probabilities" or "both".
    format : "tif" (in memory per image) or "zarr" (out of core); layouts in the module docstring.
    overwrite : write into an ``output_dir`` that already holds files (they are replaced one by
        one as new results are written).
    axes : axes of the input files as stored, when metadata and the guess are wrong; None: the
        axes the model's training images were read with.
    batch_size : tiles per forward pass.
    device : torch device (None: where the model is).
    scheduler : Dask scheduler for ``format="zarr"`` (see predict_volume_to_zarr).
    object_diameter : for a model trained at a canonical object size: the objects' median
        diameter in pixels, None (the training images') or ``"auto"`` (estimated per image);
        see :meth:`~microseg.models.TrainedModel.predict_with_info`.
    tta : test-time augmentation (flips and rotations, averaged).

    Returns
    -------
    dict with ``n_inputs``, ``outputs`` (one dict per predicted image: ``input``, ``labels``,
    ``probabilities``, ``shape``, ``seconds``, ``object_diameter``, ``scale_factor``),
    ``errors`` (one line per image that failed,
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
    out = create_output_dir(output_dir, overwrite)
    request = _Request(model, out, tile_shape, halo, output, axes or model.settings.input_axes,
                       batch_size, device, scheduler, overwrite, object_diameter, tta)
    outputs, errors = [], []
    for path in progress(inputs, "predicting", "image"):
        try:
            outputs.append(_predict_one(request, path, format))
        except DataError as err:
            file_note(log, "skipped-input", path, f"skipped: {err}",
                      "inputs skipped (unreadable or not fitting the model; each reason in "
                      "predictions.json)", level=logging.WARNING)
            errors.append(f"{path}: {err}")
    result = _summary(inputs, outputs, errors)
    atomic_write_json(out / "predictions.json", result)
    return result


@dataclasses.dataclass(frozen=True)
class _Request:
    """What every image of one :func:`predict_folder` call shares."""

    model: Any
    out: Path
    tile_shape: Any
    halo: Any
    output: str
    axes: str | None
    batch_size: int
    device: Any
    scheduler: Any
    overwrite: bool
    object_diameter: float | str | None = None
    tta: bool = False


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


def _predict_one(request: _Request, path: Path, format: str) -> dict[str, Any]:
    from microseg.io import image_stem

    started = time.perf_counter()
    stem = image_stem(path)
    if format == "zarr":
        written = _predict_zarr(request, path, request.out / stem)
    else:
        written = _predict_tif(request, path, stem)
    return {"input": str(path), **written, "seconds": time.perf_counter() - started}


def _predict_tif(request: _Request, path: Path, stem: str) -> dict[str, Any]:
    """Predict one image in memory and write TIFF files."""
    from microseg.io import read_image, write_image

    image = read_image(path, request.axes)
    prediction = request.model.predict_with_info(
        image, tile_shape=request.tile_shape, halo=request.halo, batch_size=request.batch_size,
        device=request.device, object_diameter=request.object_diameter, tta=request.tta)
    probabilities = prediction.probabilities
    spatial_axes = "ZYX"[-(image.ndim - 1):]
    written = {"shape": list(image.shape), "labels": None, "probabilities": None,
               "object_diameter": prediction.object_diameter,
               "diameter_confidence": prediction.diameter_confidence,
               "scale_factor": prediction.scale_factor}
    if request.output != "labels":
        target = request.out / "probabilities" / f"{stem}.tif"
        written["probabilities"] = str(write_image(target, probabilities, axes="C" + spatial_axes,
                                                   overwrite=request.overwrite))
    if request.output != "probabilities":
        target = request.out / "labels" / f"{stem}.tif"
        written["labels"] = str(write_image(target, request.model.labels(probabilities),
                                            axes=spatial_axes, overwrite=request.overwrite))
    return written


def _predict_zarr(request: _Request, path: Path, target: Path) -> dict[str, Any]:
    """Predict one image out of core into ``target`` (a prediction folder)."""
    from microseg.inference.ooc import VolumeSource

    volume = VolumeSource(path, request.axes)
    tile = request.tile_shape or ZARR_TILE[len(volume.shape) - 1]
    result = request.model.predict_volume(
        volume, target, tile_shape=tile, halo=request.halo, output=request.output,
        batch_size=request.batch_size, device=request.device, scheduler=request.scheduler,
        overwrite=request.overwrite, object_diameter=request.object_diameter, tta=request.tta)
    return {"shape": list(volume.shape), "labels": result["labels"],
            "probabilities": result["probabilities"],
            "object_diameter": result["object_diameter"],
            "diameter_confidence": result["diameter_confidence"],
            "scale_factor": result["scale_factor"]}


def _summary(inputs: list[Path], outputs: list[dict[str, Any]], errors: list[str]
             ) -> dict[str, Any]:
    from microseg.inference.scheduling import peak_memory_mb

    voxels = sum(math.prod(o["shape"][1:]) for o in outputs)
    seconds = sum(o["seconds"] for o in outputs)
    return {
        "n_inputs": len(inputs),
        "outputs": outputs,
        "errors": errors,
        "voxels_per_second": voxels / seconds if seconds > 0 else 0.0,
        "peak_memory_mb": peak_memory_mb(),
    }
