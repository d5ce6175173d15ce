"""How well a model segments a few labelled images: the numbers that compare adaptations.

Before adapting a pretrained model, check whether it already works on the new images (zero-shot
quality control); after adapting it, compare it with the pretrained model and with a model
trained from scratch on the same few images. All use the same measure:

- **foreground Dice** — objects against background: every class but 0 counts as object, in the
  prediction (argmax of the tiled prediction) and in the truth. Comparable between models with
  different classes (e.g. a binary pretrained model on an instance task). Pooled over images:
  TP, FP and FN summed over all images, then ``2·TP / (2·TP + FP + FN)``;
- **object F1 at IoU 0.5** (instance task, models with three classes): objects from
  :func:`microseg.inference.instances.probabilities_to_instances` matched one to one to the true
  objects (:func:`microseg.metrics.match_instances`), pooled over images.

Example
-------
>>> quality = measure_quality(model, samples, "zero-shot", task="instance")   # doctest: +SKIP
>>> round(quality.foreground_dice, 3)                                          # doctest: +SKIP
0.712
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Quality", "TilingSettings", "labels_from_probabilities", "measure_quality",
           "predict_probabilities"]

F1_THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class TilingSettings:
    """How images are predicted: inner tile side and halo per axis (multiples of the divisor).

    tile: inner block side; halo: context read around each tile (at least the network's
    receptive-field radius for seamless results); device: ``"auto"``, ``"cpu"``, ``"cuda"``...
    """

    tile: int = 256
    halo: int = 32
    device: str = "auto"


def _size_divisor(model: Any, config: Any) -> int:
    """The model's size divisor; TorchScript models carry none, so assume 16 (four levels)."""
    if getattr(model, "size_divisor", None):
        return int(model.size_divisor)
    if config is not None:
        from microseg.models import size_divisor

        return size_divisor(config)
    return 16


def _tile_and_halo(config: Any, settings: TilingSettings) -> tuple[Any, Any]:
    """UNETR accepts only ``img_size``: tiles are then ``img_size`` minus the halo on each side."""
    from microseg.models import required_input_shape

    fixed = None if config is None else required_input_shape(config)
    if fixed is None:
        return settings.tile, settings.halo
    halo = min(settings.halo, min(fixed) // 4) // 16 * 16
    return tuple(side - 2 * halo for side in fixed), halo


def predict_probabilities(model: Any, image: np.ndarray, config: Any = None,
                          settings: TilingSettings | None = None) -> np.ndarray:
    """Class probabilities (K, *spatial) float32 of one normalized image (C, *spatial).

    Tiled with :func:`microseg.inference.tiling.predict_tiled` (exact stitching for U-Nets when
    the halo covers the receptive field); ``config`` (the ModelConfig, None for TorchScript)
    gives the size divisor and UNETR's fixed input shape.
    """
    from microseg.inference.tiling import predict_tiled

    settings = settings or TilingSettings()
    tile, halo = _tile_and_halo(config, settings)
    return predict_tiled(model, image, tile_shape=tile, halo=halo, device=settings.device,
                         size_divisor=_size_divisor(model, config))


def labels_from_probabilities(probabilities: np.ndarray, task: str,
                              postprocessing: Any = None) -> np.ndarray:
    """An editable label image from probabilities (K, *spatial): int32 (*spatial).

    Instance task with three classes: objects 1..n (:func:`probabilities_to_instances` with
    ``postprocessing``, default thresholds); otherwise the class map (argmax).
    """
    if task == "instance" and probabilities.shape[0] == 3:
        from microseg.inference.instances import probabilities_to_instances

        return probabilities_to_instances(probabilities, postprocessing)
    return probabilities.argmax(0).astype(np.int32)


@dataclasses.dataclass
class Quality:
    """Quality of one model on a few labelled images (definitions in the module docstring).

    name: what was measured, e.g. ``"zero-shot"``, ``"transfer"``, ``"scratch"``.
    foreground_dice: pooled foreground Dice.
    object_f1: pooled object F1 at IoU 0.5, None when the task or the model has no instances.
    per_image: one dict per image: ``stem``, ``foreground_dice``, ``object_f1``.
    predictions: label images (instances or class maps), one per image, for figures.
    """

    name: str
    foreground_dice: float
    object_f1: float | None
    per_image: list[dict[str, Any]]
    predictions: list[np.ndarray] = dataclasses.field(repr=False, default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict without the predictions."""
        return {"name": self.name, "foreground_dice": self.foreground_dice,
                "object_f1": self.object_f1, "per_image": [dict(r) for r in self.per_image]}


def measure_quality(model: Any, samples: Sequence[Any], name: str, task: str, config: Any = None,
                    settings: TilingSettings | None = None, postprocessing: Any = None) -> Quality:
    """Predict every labelled sample and score it (module docstring).

    Parameters
    ----------
    model : network mapping (N, C, *S) to logits; used in eval mode.
    samples : :class:`~microseg.data.dataset.Sample` objects with ``image`` (normalized),
        ``target`` (class map) and ``label`` (instance ids).
    name : label of the result.
    task : the data's task: ``"binary"``, ``"semantic"`` or ``"instance"``.
    config : the model's ModelConfig (None for TorchScript).
    settings : tiling; default :class:`TilingSettings`.
    postprocessing : :class:`~microseg.inference.instances.InstancePostprocessing` or None.

    Raises
    ------
    DataError
        For a sample without labels, or a prediction whose shape differs from the label's.
    """
    from microseg.metrics import aggregate, aggregate_pixel, match_instances, pixel_metrics

    rows, predictions, pixel, matchings = [], [], [], []
    for sample in samples:
        _require_labels(sample)
        probabilities = predict_probabilities(model, sample.image, config, settings)
        labels = labels_from_probabilities(probabilities, task, postprocessing)
        metrics = pixel_metrics(probabilities.argmax(0) > 0, sample.target > 0, n_classes=2)
        matching = None
        if task == "instance" and probabilities.shape[0] == 3:
            matching = match_instances(labels, sample.label, thresholds=(F1_THRESHOLD,))
            matchings.append(matching)
        pixel.append(metrics)
        predictions.append(labels)
        rows.append({"stem": sample.stem, "foreground_dice": _value(metrics[1].dice),
                     "object_f1": None if matching is None else matching.at(F1_THRESHOLD).f1})
    dice = aggregate_pixel(pixel)["pooled"][1]["dice"]
    f1 = aggregate(matchings)["pooled"]["f1"][0] if matchings else None
    return Quality(name, _value(dice), f1, rows, predictions)


def _value(dice: float | None) -> float:
    """Dice is undefined when neither truth nor prediction has objects: count that as perfect."""
    return 1.0 if dice is None else float(dice)


def _require_labels(sample: Any) -> None:
    from microseg.errors import DataError

    if sample.target is None or sample.label is None:
        raise DataError(f"image {sample.stem} has no labels: quality can only be measured on "
                        f"labelled images (the validation and test sets of the target data)")
