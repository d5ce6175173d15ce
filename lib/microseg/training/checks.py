"""Checks before training, with messages that say what is wrong and what to change.

:func:`check_training_data` looks at every training image once (channels, whole-number labels,
any foreground at all, patch size, class balance); :func:`check_first_batch` looks at the first
batch the network will see. Both collect every problem and raise one
:class:`~microseg.errors.DataError` listing them all, and return a :class:`DataReport` with the
class frequencies and warnings (also logged), e.g. for a foreground so rare that a network may
learn to predict background everywhere.

Example
-------
>>> import numpy as np
>>> image = np.zeros((2, 32, 32), np.float32)
>>> target = np.zeros((32, 32), np.int64)
>>> check_training_data([(image, target)], in_channels=1, n_classes=2, patch_size=(16, 16))
Traceback (most recent call last):
...
microseg.errors.DataError: the training data cannot be used with this model
  - sample 0: the image has 2 channel(s) but the model expects 1 (in_channels); ...
  - no training image contains any object (every label is 0 = background)...
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError

__all__ = ["DataReport", "check_first_batch", "check_patch_divisible", "check_training_data",
           "suggested_class_weights"]

log = logging.getLogger(__name__)

RARE_CLASS_FRACTION = 0.02
"""A class below this fraction of the training pixels triggers the imbalance warning."""

UNNORMALIZED_LIMIT = 100.0
"""Input values beyond ±this suggest the images were not normalized."""


@dataclasses.dataclass
class DataReport:
    """What the checks found.

    class_frequencies : fraction of pixels per class 0 .. K-1 (sums to 1).
    image_min, image_max : range of the input values.
    warnings : problems that do not stop training (also logged).
    """

    class_frequencies: list[float]
    image_min: float
    image_max: float
    warnings: list[str]

    def describe(self) -> str:
        """A few readable lines: class frequencies, value range, warnings."""
        classes = ", ".join(f"class {k}: {f:.1%}" for k, f in enumerate(self.class_frequencies))
        lines = [f"pixels per class: {classes}",
                 f"input values from {self.image_min:.3g} to {self.image_max:.3g}"]
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


def check_training_data(samples: Sequence[Any], in_channels: int, n_classes: int,
                        patch_size: Sequence[int], size_divisor: int = 1) -> DataReport:
    """Check every training (image, target) pair against the model and the patch size.

    Parameters
    ----------
    samples : (image (C, *S), target (*S)) pairs or Samples (``.stem``, ``.image``, ``.target``).
    in_channels, n_classes : the model's input channels and output classes K.
    patch_size : training patch side per spatial axis.
    size_divisor : the model's size divisor, for the suggested patch size.

    Raises
    ------
    ConfigError
        A patch side that is not a multiple of ``size_divisor`` (the network's skip
        connections would not line up), naming the divisor and a patch size that works.
    DataError
        Listing every problem: wrong channel count, labels that are not whole numbers or out of
        range, non-finite values, no foreground anywhere, a patch larger than every image.
    """
    from microseg.training.sampling import check_patch_fits

    check_patch_divisible(patch_size, size_divisor)
    named = [(getattr(s, "stem", f"sample {i}"), *_arrays(s)) for i, s in enumerate(samples)]
    problems = [p for name, image, target in named
                for p in _pair_problems(name, image, target, in_channels, n_classes)]
    counts = np.zeros(n_classes, dtype=np.int64)
    for _, _, target in named:
        if target is not None and _is_integer(target):
            counts += np.bincount(np.clip(target.astype(np.int64), 0, n_classes - 1).ravel(),
                                  minlength=n_classes)
    if named and counts[1:].sum() == 0:
        problems.append("no training image contains any object (every label is 0 = background): "
                        "check that the label folder holds the annotations, not empty masks")
    if problems:
        raise DataError("the training data cannot be used with this model", problems)
    check_patch_fits([(image, target) for _, image, target in named], tuple(patch_size),
                      size_divisor)
    images = [image for _, image, _ in named]
    low = min(float(np.min(image)) for image in images)
    high = max(float(np.max(image)) for image in images)
    return _report(counts, low, high)


def check_patch_divisible(patch_size: Sequence[int], size_divisor: int) -> None:
    """Raise :class:`ConfigError` unless every side of ``patch_size`` is a multiple of
    ``size_divisor`` (the product of a U-Net's strides, 4 for two down-samplings by 2).

    >>> check_patch_divisible((30, 32), 4)
    Traceback (most recent call last):
    ...
    microseg.errors.ConfigError: patch_size (30, 32) is not a multiple of the model's size divisor 4 (its down-sampling steps must divide every side so that the skip connections line up): use patch_size=(28, 32) or (32, 32)
    """
    patch = tuple(int(p) for p in patch_size)
    if all(p % size_divisor == 0 for p in patch):
        return
    down = tuple(max(size_divisor, p // size_divisor * size_divisor) for p in patch)
    up = tuple(-(-p // size_divisor) * size_divisor for p in patch)
    raise ConfigError(f"patch_size {patch} is not a multiple of the model's size divisor "
                      f"{size_divisor} (its down-sampling steps must divide every side so "
                      f"that the skip connections line up): use patch_size={down} or {up}")


def check_first_batch(images: Any, targets: Any, in_channels: int, n_classes: int) -> DataReport:
    """Check the first batch: images (N, C, *patch) float, targets (N, *patch) integer.

    Raises
    ------
    DataError
        Listing every problem: wrong channel count, non-float images, non-integer or
        out-of-range targets, non-finite values, shapes that do not match.
    """
    images, targets = _numpy(images), _numpy(targets)
    problems = []
    if images.ndim != targets.ndim + 1 or images.shape[2:] != targets.shape[1:]:
        problems.append(f"batch shapes do not fit: images {images.shape} should be "
                        f"(N, C, *patch) and targets {targets.shape} (N, *patch)")
    elif images.shape[1] != in_channels:
        problems.append(f"the batch has {images.shape[1]} channel(s) but the model expects "
                        f"{in_channels} (in_channels)")
    if images.dtype.kind != "f":
        problems.append(f"images are {images.dtype}, expected normalized float32 values")
    problems += _target_problems("the first batch", targets, n_classes)
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        problems.append("the first batch contains NaN or infinite values: check normalization "
                        "(an image with constant intensity?)")
    if problems:
        raise DataError("the first training batch cannot be used", problems)
    counts = np.bincount(targets.ravel().astype(np.int64), minlength=n_classes)
    return _report(counts, float(images.min()), float(images.max()))


def suggested_class_weights(class_frequencies: Sequence[float]) -> tuple[float, ...]:
    """Cross-entropy weights ∝ 1/frequency, scaled so the most frequent class has weight 1.

    Classes absent from the data get the largest weight found. Rounded to 2 significant digits.

    Example
    -------
    >>> suggested_class_weights([0.9, 0.09, 0.01])
    (1.0, 10.0, 90.0)
    """
    frequencies = np.asarray(class_frequencies, dtype=np.float64)
    present = frequencies > 0
    weights = np.zeros_like(frequencies)
    weights[present] = frequencies[present].max() / frequencies[present]
    weights[~present] = weights[present].max() if present.any() else 1.0
    return tuple(float(f"{w:.2g}") for w in weights)


def _report(counts: np.ndarray, low: float, high: float) -> DataReport:
    frequencies = (counts / max(1, counts.sum())).tolist()
    warnings = []
    rare = [k for k, f in enumerate(frequencies) if f < RARE_CLASS_FRACTION]
    if rare:
        names = ", ".join(f"class {k} ({frequencies[k]:.1%})" for k in rare)
        warnings.append(
            f"severe class imbalance: {names} of the pixels. A network may learn to predict the "
            f"same class everywhere. Set min_foreground (e.g. 0.1: patches with at least 10 % "
            f"objects) or class_weights={suggested_class_weights(frequencies)} (loss 'ce' or "
            f"'dice+ce')")
    if max(abs(low), abs(high)) > UNNORMALIZED_LIMIT:
        warnings.append(f"input values range from {low:.4g} to {high:.4g}: the images look "
                        f"unnormalized (expected about 0 to 1); use the split from notebook 01")
    for warning in warnings:
        log.warning(warning)
    return DataReport(frequencies, low, high, warnings)


def _arrays(sample: Any) -> tuple[np.ndarray, np.ndarray | None]:
    image, target = (sample.image, sample.target) if hasattr(sample, "image") else sample
    return np.asarray(image), None if target is None else np.asarray(target)


def _pair_problems(name: str, image: np.ndarray, target: np.ndarray | None, in_channels: int,
                   n_classes: int) -> list[str]:
    problems = []
    if image.ndim < 3 or image.shape[0] != in_channels:
        channels = image.shape[0] if image.ndim >= 3 else "no channel axis, i.e. 1"
        problems.append(f"{name}: the image has {channels} channel(s) but the model expects "
                        f"{in_channels} (in_channels); set in_channels to match or pick the "
                        f"channel(s) to use when preparing the data")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        problems.append(f"{name}: the image contains NaN or infinite values")
    if target is None:
        return problems + [f"{name}: has no label; every training image needs one"]
    if image.ndim >= 3 and image.shape[1:] != target.shape:
        problems.append(f"{name}: image shape {image.shape} does not match label shape "
                        f"{target.shape}")
    return problems + _target_problems(name, target, n_classes)


def _target_problems(name: str, target: np.ndarray, n_classes: int) -> list[str]:
    if not _is_integer(target):
        example = target.ravel()[np.flatnonzero(target.ravel() != np.round(target.ravel()))[:1]]
        found = f" (e.g. {example[0]:g})" if example.size else ""
        return [f"{name}: labels are {target.dtype}{found}; labels must be whole numbers "
                f"(0 = background, 1, 2, ... = objects or classes). Was the label image saved "
                f"with interpolation or as a probability map?"]
    if target.size and (target.min() < 0 or target.max() >= n_classes):
        return [f"{name}: class values from {target.min()} to {target.max()}, expected 0 to "
                f"{n_classes - 1} for a model with {n_classes} output classes"]
    return []


def _is_integer(values: np.ndarray) -> bool:
    return values.dtype.kind in "iub"


def _numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        return values.detach().cpu().numpy()
    return np.asarray(values)
