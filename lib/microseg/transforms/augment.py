"""Augmentation of training patches, built from MONAI dictionary transforms.

Flips, 90° rotations, small rotations and scaling move image and target together (the target
with nearest-neighbour interpolation, so it keeps its class ids); contrast (gamma) and Gaussian
noise change the image only. Each transform has its own switch, strength and probability in an
:class:`AugmentConfig`. The chapter's warning applies: unrealistic augmentation teaches patterns
that do not exist in real data, so strengths are modest by default.

Example
-------
>>> import numpy as np
>>> augment = Augmenter(AugmentConfig(), ndim=2, seed=0)
>>> image, target = augment(np.zeros((1, 64, 64), np.float32), np.zeros((64, 64), np.uint8))
>>> image.shape, image.dtype, target.shape, target.dtype
((1, 64, 64), dtype('float32'), (64, 64), dtype('uint8'))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from microseg.config import StageConfig
from microseg.errors import ConfigError, DataError

__all__ = [
    "AugmentConfig",
    "Augmenter",
]


@dataclass
class AugmentConfig(StageConfig):
    """Which augmentations to apply, how strong, and how often (each probability per patch).

    flip: random flips, each spatial axis independently with probability ``flip_prob``.
    rotate90: random rotations by 90°, 180° or 270° in the YX plane (never through Z, which is
        often sampled more coarsely), with probability ``rotate90_prob``.
    affine: a random small rotation (in the YX plane, up to ± ``rotate_degrees``) and scaling
        (each axis by a factor drawn from ``scale_range``) with probability ``affine_prob``;
        borders are filled by reflection.
    contrast: a random gamma from ``gamma_range`` on the image (min and max kept), with
        probability ``contrast_prob``.
    noise: Gaussian noise with a standard deviation drawn from [0, ``noise_std``] (in units of
        the normalized image) with probability ``noise_prob``.
    """

    flip: bool = True
    flip_prob: float = 0.5
    rotate90: bool = True
    rotate90_prob: float = 0.5
    affine: bool = True
    affine_prob: float = 0.3
    rotate_degrees: float = 15.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    contrast: bool = True
    contrast_prob: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise: bool = True
    noise_prob: float = 0.2
    noise_std: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = [f"{name} = {getattr(self, name)} must be in [0, 1]"
                    for name in ("flip_prob", "rotate90_prob", "affine_prob", "contrast_prob",
                                 "noise_prob") if not 0.0 <= getattr(self, name) <= 1.0]
        for name in ("scale_range", "gamma_range"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                problems.append(f"{name} = {(low, high)} must satisfy 0 < min <= max")
        if self.rotate_degrees < 0 or self.noise_std < 0:
            problems.append("rotate_degrees and noise_std must be at least 0")
        if problems:
            raise ConfigError("AugmentConfig: " + "; ".join(problems))

    @classmethod
    def flips_only(cls) -> AugmentConfig:
        """Random flips and nothing else (the tiling paper's training setup)."""
        return cls(rotate90=False, affine=False, contrast=False, noise=False)

    @classmethod
    def disabled(cls) -> AugmentConfig:
        """No augmentation at all: the Augmenter returns its inputs unchanged."""
        return cls(flip=False, rotate90=False, affine=False, contrast=False, noise=False)


class Augmenter:
    """Random augmentation of an (image, target) pair, reproducible for a seed.

    Parameters
    ----------
    config: what to apply; None: :class:`AugmentConfig` defaults.
    ndim: 2 or 3 spatial dimensions.
    seed: seeds the random state of every transform: two Augmenters with the same config and
        seed give the same results for the same sequence of calls.

    Calling it with ``image`` float32 (C, *spatial) and ``target`` integer (*spatial) returns
    new arrays of the same shapes and dtypes (image float32). Raises :class:`DataError` for
    inputs of the wrong shape. MONAI is imported when the Augmenter is made.
    """

    def __init__(self, config: AugmentConfig | None = None, ndim: int = 2, seed: int = 0):
        if ndim not in (2, 3):
            raise ConfigError(f"ndim = {ndim}: augmentation works on 2D or 3D images")
        self.config = config or AugmentConfig()
        self.ndim = ndim
        self._transform = _monai_pipeline(self.config, ndim)
        self._transform.set_random_state(seed=seed)

    def __call__(self, image: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from monai.utils import convert_to_numpy

        image, target = np.asarray(image), np.asarray(target)
        if image.ndim != self.ndim + 1 or image.shape[1:] != target.shape:
            raise DataError(f"augmentation expects image (C, *spatial) and target (*spatial) "
                            f"with {self.ndim} spatial axes and the same spatial shape; found "
                            f"image {image.shape} and target {target.shape}")
        data = {"image": image.astype(np.float32), "target": target[None]}
        out = self._transform(data)
        new_image = convert_to_numpy(out["image"], dtype=np.float32)
        new_target = np.rint(convert_to_numpy(out["target"])[0]).astype(target.dtype)
        return np.ascontiguousarray(new_image), np.ascontiguousarray(new_target)


def _monai_pipeline(config: AugmentConfig, ndim: int) -> Any:
    from monai import transforms as mt

    both = ("image", "target")
    steps: list[Any] = []
    if config.flip:
        steps += [mt.RandFlipd(both, prob=config.flip_prob, spatial_axis=axis)
                  for axis in range(ndim)]
    if config.rotate90:
        steps.append(mt.RandRotate90d(both, prob=config.rotate90_prob, max_k=3,
                                      spatial_axes=(ndim - 2, ndim - 1)))
    if config.affine:
        low, high = config.scale_range
        steps.append(mt.RandAffined(
            both, prob=config.affine_prob, rotate_range=(math.radians(config.rotate_degrees),),
            scale_range=((low - 1.0, high - 1.0),) * ndim, mode=("bilinear", "nearest"),
            padding_mode="reflection"))
    if config.contrast:
        steps.append(mt.RandAdjustContrastd("image", prob=config.contrast_prob,
                                            gamma=config.gamma_range))
    if config.noise:
        steps.append(mt.RandGaussianNoised("image", prob=config.noise_prob, mean=0.0,
                                           std=config.noise_std))
    return mt.Compose(steps)
