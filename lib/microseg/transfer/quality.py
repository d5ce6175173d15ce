"""How well a model segments a few labelled images: the numbers that compare adaptations.

Before adapting a pretrained model, check whether it already works on the new images (zero-shot
quality control); after adapting it, compare it with the pretrained model and with a model
trained from scratch on the same few images. All use the same measure:

- **foreground Dice** — objects against background: every class but 0 counts as object, in the
  prediction (argmax of the tiled prediction) and in the truth. Comparable between models with
  different classes (e.g. a binary pretrained model on an instance task). Pooled over images:
  TP, FP and FN summed over all images, then ``2·TP / (2·TP + FP + FN)``;
- **object F1 at IoU 0.5** (instance task, models with an instance head: three classes or
  distance levels): objects from :meth:`microseg.models.TrainedModel.labels` matched one to
  one to the true objects (:func:`microseg.metrics.match_instances`), pooled over images.

Models trained at a canonical object size predict every image at its own estimated object size
(``object_diameter="auto"``): a pretrained model meets images from other magnifications.

Example
-------
>>> from microseg.data.dataset import Sample
>>> from microseg.models import ModelConfig, TrainedModel, build_model
>>> config = ModelConfig(channels=(4, 8, 16), num_res_units=1)
>>> model = TrainedModel.from_network(build_model(config).eval(), config)
>>> label = np.zeros((64, 64), np.int32)
>>> label[8:20, 8:20], label[30:50, 30:44] = 1, 2
>>> image = np.random.default_rng(0).random((1, 64, 64)).astype(np.float32)
>>> quality = measure_quality(model, [Sample("a", image, label, model.target(label))],
...                           "zero-shot")
>>> quality.name, [row["stem"] for row in quality.per_image], quality.predictions[0].shape
('zero-shot', ['a'], (64, 64))
>>> 0 <= quality.foreground_dice <= 1 and 0 <= quality.object_f1 <= 1
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Quality", "measure_quality"]

F1_THRESHOLD = 0.5


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


def measure_quality(model: Any, samples: Sequence[Any], name: str) -> Quality:
    """Predict every labelled sample with ``model`` and score it (module docstring).

    Parameters
    ----------
    model : a :class:`~microseg.models.TrainedModel` (its task says whether objects are
        scored; its post-processing makes them).
    samples : :class:`~microseg.data.dataset.Sample` objects with ``image`` (normalized),
        ``target`` (class map) and ``label`` (instance ids).
    name : label of the result.

    Raises
    ------
    DataError
        For a sample without labels, or a prediction whose shape differs from the label's.
    """
    from microseg.metrics import aggregate, aggregate_pixel, match_instances, pixel_metrics

    rows, predictions, pixel, matchings = [], [], [], []
    for sample in samples:
        _require_labels(sample)
        probabilities = model.predict(sample.image, normalized=True, object_diameter="auto")
        labels = model.labels(probabilities)
        metrics = pixel_metrics(probabilities.argmax(0) > 0, sample.target > 0, n_classes=2)
        matching = None
        if model.task == "instance" and probabilities.shape[0] >= 3:
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
