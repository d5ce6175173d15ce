"""Samples as a model sees them: at the canonical object size, with the model's target classes.

Notebook 01 stores images with their labels and, for instance data, the tiling paper's three-class
targets. A model may be trained on another *instance head* (:mod:`microseg.transforms.targets`:
``"three_class"`` or ``"distance"``) and at a *canonical object diameter*
(:mod:`microseg.transforms.scale`): :func:`represent` resamples every labelled sample so that
its median object diameter becomes the canonical one (each image by its own factor, so images
of different magnifications look alike to the network) and builds the targets of the head.

Example
-------
>>> import numpy as np
>>> from microseg.data.dataset import Sample
>>> label = np.zeros((64, 64), np.int32)
>>> label[8:28, 8:28], label[30:50, 30:50] = 1, 2
>>> sample = Sample("a", np.zeros((1, 64, 64), np.float32), label, None)
>>> plan = Representation(task="instance", head="distance", levels=4, canonical_diameter=11.3)
>>> scaled, facts = represent([sample], plan)
>>> scaled[0].image.shape, int(scaled[0].target.max()), round(facts.factors[0], 2)
((1, 32, 32), 4, 0.5)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from microseg.data.dataset import Sample

__all__ = ["Representation", "ScaleFacts", "represent"]


@dataclasses.dataclass(frozen=True)
class Representation:
    """What the model is trained to see.

    task : ``"binary"``, ``"semantic"`` or ``"instance"``.
    head, levels : the instance head and its distance levels (ignored for other tasks).
    canonical_diameter : object diameter (pixels) every image is resampled to; None: images
        keep their scale.
    object_diameter : for every image, its median object diameter in pixels when known
        (e.g. from the microscope's magnification); None: measured on each image's labels.
    """

    task: str
    head: str = "three_class"
    levels: int = 4
    canonical_diameter: float | None = None
    object_diameter: float | None = None


@dataclasses.dataclass(frozen=True)
class ScaleFacts:
    """How samples were resampled: per sample its measured diameter (None without objects)
    and factor, and the median diameter over all objects of all samples (original pixels)."""

    diameters: tuple[float | None, ...]
    factors: tuple[float, ...]
    median_diameter: float | None

    def trained_range(self) -> tuple[float, float] | None:
        """The median and the 90th percentile of the samples' median diameters after
        resampling (the sizes the network sees); None without diameters."""
        seen = [d * f for d, f in zip(self.diameters, self.factors, strict=True) if d]
        if not seen:
            return None
        low, high = np.percentile(seen, [50, 90])
        return round(float(low), 2), round(float(high), 2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: the median diameter, the median factor and the range of factors."""
        return {"object_diameter": self.median_diameter,
                "scale_factor": float(np.median(self.factors)) if self.factors else 1.0,
                "scale_factor_min": min(self.factors, default=1.0),
                "scale_factor_max": max(self.factors, default=1.0)}


def represent(samples: Sequence[Sample], plan: Representation
              ) -> tuple[list[Sample], ScaleFacts]:
    """Resample labelled samples to the canonical diameter and build the head's targets.

    Every sample is resampled by ``canonical / its own median diameter`` (images linearly,
    labels by nearest neighbour); a sample without objects takes the median diameter of all
    samples. Without a canonical diameter nothing is resampled. Unlabelled samples are
    returned unchanged.

    Returns
    -------
    (new samples, :class:`ScaleFacts`).
    """
    from microseg.transforms.scale import median_diameter

    labels = [s.label for s in samples if s.label is not None]
    overall = plan.object_diameter or median_diameter(labels) if labels else None
    diameters, factors, out = [], [], []
    for sample in samples:
        diameter, factor = _diameter_and_factor(sample, plan, overall)
        diameters.append(diameter)
        factors.append(factor)
        out.append(_resampled(sample, factor, plan))
    return out, ScaleFacts(tuple(diameters), tuple(factors), overall)


def _diameter_and_factor(sample: Sample, plan: Representation,
                         overall: float | None) -> tuple[float | None, float]:
    from microseg.transforms.scale import median_diameter, scale_factor

    if plan.canonical_diameter is None or sample.label is None:
        return None, 1.0
    diameter = plan.object_diameter or median_diameter(sample.label)
    return diameter, scale_factor(diameter or overall, plan.canonical_diameter)


def _resampled(sample: Sample, factor: float, plan: Representation) -> Sample:
    from microseg.transforms.scale import rescale_image, rescale_labels
    from microseg.transforms.targets import labels_to_target

    if sample.label is None:
        return sample
    image = rescale_image(sample.image, factor)
    label = np.ascontiguousarray(rescale_labels(sample.label, factor))
    target = labels_to_target(label, plan.task, plan.head, plan.levels)
    return Sample(sample.stem, image, label, target)
