"""How a trained model predicts: its saved settings, the plan for one image, the result.

:class:`PredictionSettings` is what a model folder's ``prediction.json`` holds;
:func:`saved_settings` reads it (or, for older folders, the run's split manifest).
:class:`PredictionPlan` says how one image is cut for the network and :class:`Prediction` what
came out. :class:`microseg.models.TrainedModel` uses them; they live here to keep that module
to the model itself.

Example
-------
>>> PredictionPlan("tiled", (512, 512), (24, 24)).describe()
'in tiles of (512, 512) pixels with a halo of (24, 24)'
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from microseg.config import StageConfig
from microseg.errors import ConfigError
from microseg.runs import PREDICTION_FILE

__all__ = [
    "DEFAULT_TILE",
    "Prediction",
    "PredictionPlan",
    "PredictionSettings",
    "check_task",
    "class_names_for",
    "normalization_dict",
    "receptive_field_halo",
    "saved_settings",
    "scale_summary",
]

log = logging.getLogger(__name__)

DEFAULT_TILE = MappingProxyType({2: 512, 3: 128})
"""Images whose sides are all at most this are predicted whole; larger ones in such tiles."""

TASKS = ("binary", "semantic", "instance")


@dataclasses.dataclass
class PredictionSettings(StageConfig):
    """How to predict with a model, saved as ``prediction.json`` in its model folder.

    Fields
    ------
    task : ``"binary"``, ``"semantic"`` or ``"instance"`` — what the outputs mean.
    class_names : names of the output classes, background first.
    normalization : the :class:`~microseg.transforms.normalization.PercentileNormalization` of
        the training data, as a dict: new images are normalized the same way.
    input_axes : axes the training images were read with (``"YX"``, ``"YXC"``...); None: the
        files' metadata or the guess.
    halo : context per spatial axis for tiled prediction: the receptive-field radius rounded up
        to the size divisor; None: measured when first needed.
    instance_head : instance models: ``"three_class"`` or ``"distance"``
        (:mod:`microseg.transforms.targets`).
    canonical_diameter : the object diameter (pixels) the network was trained at: every image
        is resampled so that its objects have this diameter (:mod:`microseg.transforms.scale`);
        None: images are used at their own scale.
    object_diameter : median object diameter of the training images at their own scale
        (pixels): what new images are assumed to have unless told or estimated otherwise.
    trained_diameters : the object sizes the network was trained on (pixels, after the
        training images were resampled): the median and the 90th percentile of the images'
        median diameters. New images whose objects are smaller than the first or larger than
        the second (by a margin) are resampled to the first; in between they are predicted as
        they are. (Both were measured better than the alternatives — enlarging to the 10th
        percentile, shrinking to the 90th: BENCHMARKS.md, scale test.) None (models
        saved before it was recorded): the training median up to the canonical diameter.
    colour_input : what a model of one channel does with a colour (RGB/RGBA) image:
        ``"refuse"`` (a :class:`~microseg.errors.DataError` saying how to make it one
        channel) or ``"nuclei"`` (a model of fluorescence nuclei: stained tissue and
        bright-field images are read as their haematoxylin stain,
        :func:`microseg.transforms.colour.nuclei_channel`; fluorescence composites are
        still refused). The built-in ``"nuclei"`` model has ``"nuclei"``.
    """

    task: Literal["binary", "semantic", "instance"] = "instance"
    class_names: tuple[str, ...] | None = None
    normalization: dict[str, Any] = dataclasses.field(default_factory=dict)
    input_axes: str | None = None
    halo: tuple[int, ...] | None = None
    instance_head: Literal["three_class", "distance"] = "three_class"
    canonical_diameter: float | None = None
    object_diameter: float | None = None
    trained_diameters: tuple[float, float] | None = None
    colour_input: Literal["refuse", "nuclei"] = "refuse"

    def normalization_config(self) -> Any:
        """The normalization as a :class:`PercentileNormalization` object."""
        from microseg.transforms.normalization import PercentileNormalization

        return PercentileNormalization.from_dict(self.normalization)


@dataclasses.dataclass(frozen=True)
class PredictionPlan:
    """How one image is predicted (:meth:`TrainedModel.plan_prediction`).

    kind : ``"whole"`` (one forward pass), ``"tiled"`` (exact stitching with a halo) or
        ``"fixed"`` (windows of the network's fixed input shape, blended).
    tile : inner tile per axis (None when whole).
    halo : context per axis.
    """

    kind: Literal["whole", "tiled", "fixed"]
    tile: tuple[int, ...] | None
    halo: tuple[int, ...]

    def describe(self) -> str:
        """One line for a summary, e.g. ``"in tiles of (512, 512) pixels with a halo of ..."``."""
        if self.kind == "whole":
            return "on whole images"
        if self.kind == "tiled":
            return f"in tiles of {self.tile} pixels with a halo of {self.halo}"
        window = tuple(t + 2 * h for t, h in zip(self.tile, self.halo, strict=True))
        return f"in windows of the model's fixed input shape {window}, with Gaussian blending"


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The probabilities of one image and how they were made (:meth:`TrainedModel.predict_with_info`).

    probabilities : (K, *spatial) float32 on the image's own pixel grid.
    object_diameter : the object diameter (pixels of the image) it was predicted for; None for a
        model that works at the image's own scale.
    scale_factor : how the image was resampled for the network (1.0: not at all).
    tta : whether the prediction is the mean over flips and rotations.
    passes : predictions of the whole image made (more than one when the diameter was
        estimated).
    scale_estimate : how the diameter was estimated (a
        :class:`~microseg.inference.scale_search.ScaleEstimate`), None when it was given.
    """

    probabilities: np.ndarray
    object_diameter: float | None
    scale_factor: float
    tta: bool
    passes: int
    scale_estimate: Any = None

    @property
    def diameter_confidence(self) -> str | None:
        """``"given"`` (the diameter was given or assumed), the scale search's ``"high"`` /
        ``"low"`` / ``"none"``, or None for a model that works at the image's own scale."""
        if self.scale_estimate is not None:
            return self.scale_estimate.confidence
        return None if self.object_diameter is None else "given"

    def describe(self) -> dict[str, Any]:
        """The facts for a summary (everything but the probabilities)."""
        facts = {"object_diameter": self.object_diameter, "scale_factor": self.scale_factor,
                 "tta": self.tta, "passes": self.passes}
        if self.scale_estimate is not None:
            facts.update(self.scale_estimate.describe())
        return facts


UNCERTAIN_DIAMETER = ("low", "none")
"""Diameter confidences of an image whose object size the scale search was not sure of."""


def scale_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How a set of images was predicted, from their records (as :meth:`Prediction.describe`
    gives them, or with ``diameter_confidence``): the median ``object_diameter`` (None without
    one), the median ``scale_factor`` (1.0 without records), ``n_rescaled`` (factor not 1)
    and ``n_uncertain_diameter`` (:data:`UNCERTAIN_DIAMETER`)."""
    diameters = [r["object_diameter"] for r in records if r.get("object_diameter") is not None]
    factors = [r.get("scale_factor", 1.0) for r in records]
    return {"object_diameter": float(np.median(diameters)) if diameters else None,
            "scale_factor": float(np.median(factors)) if factors else 1.0,
            "n_rescaled": sum(f != 1.0 for f in factors),
            "n_uncertain_diameter": sum(r.get("diameter_confidence") in UNCERTAIN_DIAMETER
                                        for r in records)}


def receptive_field_halo(network: Any, config: Any, quick: bool = False
                         ) -> tuple[tuple[int, ...], str]:
    """The halo a network needs for seamless tiles, and a sentence saying why.

    U-Nets: the theoretical receptive-field radius (:mod:`microseg.inference.receptive_field`,
    4 random inputs, 1 when ``quick``) rounded up to the size divisor. Networks with a fixed
    input shape (UNETR) are not measured (their attention reaches every input pixel): a quarter
    of each side of ``img_size``, rounded down to the divisor.

    Returns
    -------
    (halo per spatial axis, description)
    """
    from microseg.models.factory import required_input_shape, size_divisor

    divisor = size_divisor(config)
    fixed = required_input_shape(config)
    if fixed is not None:
        halo = tuple(side // 4 // divisor * divisor for side in fixed)
        return halo, (f"fixed input shape {tuple(fixed)} (global attention: every output "
                      f"depends on the whole window); a quarter of each side, {halo}, is context")
    from microseg.inference.receptive_field import recommended_halo, theoretical_receptive_field

    field = theoretical_receptive_field(network, config.ndim, config.in_channels,
                                        n_trials=1 if quick else 4)
    halo = recommended_halo(field, divisor)
    text = f"receptive field {field.extent} pixels -> halo {halo} for tiled prediction"
    if field.whole_input:
        log.warning("every output of this model depends on the whole tile (tile-wise "
                    "normalization): tiled predictions will show seams whatever the halo; use "
                    "a model trained with norm='batchrenorm' for seamless tiles")
        text += " (outputs also depend on the whole tile: tiles will not stitch exactly)"
    return halo, text


def saved_settings(folder: Path, config: Any) -> PredictionSettings:
    """``prediction.json``, or for older folders the settings of the run's split manifest."""
    path = folder / PREDICTION_FILE
    if path.is_file():
        return PredictionSettings.load(path)
    manifest_path = folder.resolve().parent.parent / "data" / "split.json"
    if not manifest_path.is_file():
        log.info("%s has no %s and is not inside a run folder with a split manifest: predicting "
                 "with the default normalization, task %s", folder, PREDICTION_FILE,
                 "instance" if config.out_classes == 3 else "semantic")
        task = "instance" if config.out_classes == 3 else (
            "binary" if config.out_classes == 2 else "semantic")
        return PredictionSettings(task=task, class_names=class_names_for(task, config),
                                  normalization=normalization_dict(None))
    from microseg.data.split import SplitManifest

    manifest = SplitManifest.load(manifest_path)
    task = manifest.task if config.out_classes == manifest.n_classes else (
        "instance" if config.out_classes == 3 else "semantic")
    return PredictionSettings(task=task, class_names=class_names_for(task, config),
                              normalization=dict(manifest.normalization),
                              input_axes=manifest.input_axes)


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return task


def class_names_for(task: str, config: Any, head: str = "three_class"
                 ) -> tuple[str, ...] | None:
    if config is None:
        return None
    from microseg.transforms.targets import class_names

    return tuple(class_names(task, config.out_classes, head))


def normalization_dict(normalization: Any) -> dict[str, Any]:
    from microseg.transforms.normalization import PercentileNormalization

    if normalization is None:
        return PercentileNormalization().to_dict()
    if isinstance(normalization, dict):
        return PercentileNormalization.from_dict(normalization).to_dict()
    return normalization.to_dict()
