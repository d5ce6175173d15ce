"""Prediction of an image or volume larger than memory with a trained model, at its object scale.

:meth:`microseg.models.TrainedModel.predict_volume` calls :func:`predict_volume`. A model that
works at the image's own scale predicts straight into the output folder
(:func:`microseg.inference.ooc.predict_volume_to_zarr`). A model trained at a canonical object
size needs three out-of-core steps, all block by block:

1. the input is resampled to the canonical size into ``output/_scaled/input.zarr``
   (:func:`microseg.inference.resampling.resample_to_zarr`; normalization statistics come from
   the original input);
2. that is predicted into ``output/_scaled/prediction/`` (resumable, as any out-of-core
   prediction);
3. the probabilities are resampled back (linearly) to the input's grid into
   ``output/probabilities.zarr``, and labels are made from them there, block by block
   (instances stitched across blocks) into ``output/labels.zarr``; ``output/scale.json``
   records the scale, and ``_scaled/`` is removed.

The probabilities equal resampling, predicting and resampling back the whole image in memory;
labels are made on the input's grid as in memory.

Example
-------
>>> model.predict_volume("huge.tif", "runs/demo/predictions/unet/huge", tile_shape=512,
...                      object_diameter=40.0)                         # doctest: +SKIP
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from microseg.errors import OutputExistsError

__all__ = [
    "SCALE_RECORD",
    "predict_volume",
]

SCALE_RECORD = "scale.json"
"""In an output folder of a resampled prediction: the scale it was predicted at."""
_WORK = "_scaled"


def predict_volume(model: Any, source: Any, output_path: str | Path, tile_shape: Any,
                   halo: Any = None, object_diameter: float | str | None = None,
                   **options: Any) -> dict[str, Any]:
    """Predict ``source`` out of core into ``output_path`` (module docstring).

    ``object_diameter``: as :meth:`~microseg.models.TrainedModel.predict_with_info`;
    ``"auto"`` estimates it on a central crop of at most 1024² (2D) or 128³ pixels. Other
    options as :func:`microseg.inference.ooc.predict_volume_to_zarr` (``output``,
    ``scheduler``, ``tta``, ``overwrite`` ...). Returns that function's result, with
    ``object_diameter`` and ``scale_factor`` added and the paths of the final arrays.
    """
    from microseg.inference.ooc import VolumeSource

    volume = source if isinstance(source, VolumeSource) else VolumeSource(
        source, options.pop("axes", None) or model.settings.input_axes)
    options.pop("axes", None)
    diameter, confidence = _diameter(model, volume, object_diameter)
    factor = model.scale_factor(diameter)
    halo = model.halo if halo is None else halo
    if factor == 1.0:
        result = _predict(model, volume, Path(output_path), tile_shape, halo, options)
    else:
        result = _predict_scaled(model, volume, Path(output_path), tile_shape, halo, factor,
                                 options)
    return {**result, "object_diameter": diameter, "diameter_confidence": confidence,
            "scale_factor": factor}


def _predict(model: Any, volume: Any, output: Path, tile_shape: Any, halo: Any,
             options: dict[str, Any]) -> dict[str, Any]:
    from microseg.inference.ooc import predict_volume_to_zarr

    if model.task == "instance":
        model.instance_postprocessing()
    return predict_volume_to_zarr(
        model.windowed_network, volume, output, tile_shape, halo, normalization=model.normalization,
        instance_labels=model.labels if model.task == "instance" else None, **options)


def _predict_scaled(model: Any, volume: Any, output: Path, tile_shape: Any, halo: Any,
                    factor: float, options: dict[str, Any]) -> dict[str, Any]:
    import zarr

    from microseg.inference.resampling import resample_to_zarr
    from microseg.runs import atomic_write_json, read_json
    from microseg.transforms.scale import scaled_shape

    record = output / SCALE_RECORD
    if record.is_file() and read_json(record).get("complete") and not options.get("overwrite"):
        raise OutputExistsError(f"{output} holds a complete prediction; pass overwrite=True "
                                f"to predict again, or choose another output folder")
    wanted = options.pop("output", "probabilities")
    scheduler = options.get("scheduler")
    options.setdefault("normalization_stats", model.normalization_statistics(volume))
    work = output / _WORK
    work.mkdir(parents=True, exist_ok=True)
    shape = scaled_shape(volume.spatial_shape, factor)
    scaled = resample_to_zarr(volume, work / "input.zarr", shape, order=1, smooth=factor < 1,
                              scheduler=scheduler)
    inner = _predict_volume_to_zarr_plain(model, scaled, work / "prediction", tile_shape, halo,
                                          options)
    probabilities = resample_to_zarr(zarr.open_array(inner["probabilities"], mode="r"),
                                     output / "probabilities.zarr", volume.spatial_shape,
                                     order=1, scheduler=scheduler)
    n_objects = None
    if wanted != "probabilities":
        n_objects = _labels(model, probabilities, output, work, halo, factor, scheduler)
    if wanted == "labels":
        shutil.rmtree(output / "probabilities.zarr")
    atomic_write_json(record, {"scale_factor": factor, "scaled_shape": list(shape),
                               "complete": True})
    shutil.rmtree(work, ignore_errors=True)
    return {**inner, "output_path": str(output), "n_objects": n_objects,
            "probabilities": None if wanted == "labels" else str(output / "probabilities.zarr"),
            "labels": None if wanted == "probabilities" else str(output / "labels.zarr")}


def _predict_volume_to_zarr_plain(model: Any, volume: Any, output: Path, tile_shape: Any,
                                  halo: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Probabilities only, at the scale ``volume`` is given in (step 2)."""
    from microseg.inference.ooc import predict_volume_to_zarr

    return predict_volume_to_zarr(model.windowed_network, volume, output, tile_shape, halo,
                                  normalization=model.normalization, output="probabilities",
                                  **options)


def _labels(model: Any, probabilities: Any, output: Path, work: Path, halo: Any,
            factor: float, scheduler: Any) -> int | None:
    """Labels on the input's grid, block by block: instances stitched across blocks (as the
    unscaled path does), else the class of highest probability. Returns the object count."""
    import zarr

    from microseg.inference.stitching import stitch_block_labels
    from microseg.inference.tiling import per_axis

    spatial = probabilities.shape[1:]
    block = probabilities.chunks[1:]
    labels = zarr.create_array(str(output / "labels.zarr"), shape=spatial, chunks=block,
                               dtype="int32", overwrite=True)
    if model.task != "instance":
        _argmax_blocks(probabilities, labels)
        return None
    model.instance_postprocessing()
    reach = [max(8, int(2 * h / factor)) for h in per_axis(halo, len(spatial), "halo")]
    overlap = tuple(max(1, min(b // 2, r)) for b, r in zip(block, reach, strict=True))
    return stitch_block_labels(probabilities, labels, block, overlap, model.labels,
                               work / "labels", scheduler)


def _argmax_blocks(probabilities: Any, labels: Any) -> None:
    import numpy as np

    from microseg.inference.tiling import tile_grid

    for region in tile_grid(labels.shape, labels.chunks):
        labels[region] = np.asarray(probabilities[(slice(None), *region)]).argmax(0)


def _diameter(model: Any, volume: Any, given: float | str | None
              ) -> tuple[float | None, str | None]:
    """The object diameter to predict for and how sure it is (as
    :attr:`~microseg.models.prediction.Prediction.diameter_confidence`); ``"auto"``: estimated
    on a central crop."""
    if given != "auto" or model.settings.canonical_diameter is None:
        diameter = model.assumed_diameter(given)
        return diameter, None if diameter is None else "given"
    import numpy as np

    from microseg.inference.tiling import central_box

    side = 1024 if len(volume.spatial_shape) == 2 else 128
    crop = np.asarray(volume[(slice(None), *central_box(volume.spatial_shape, side))])
    found = model.predict_with_info(crop, object_diameter="auto")
    return found.object_diameter, found.diameter_confidence
