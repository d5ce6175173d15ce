"""Input normalization: percentiles of each whole image map the intensities to about [0, 1].

The statistics are computed once per image ("global" mode) and stored in the split manifest, so
every patch, tile and block of an image is normalized with the same numbers: tiled prediction
then matches whole-image prediction. Percentiles of each tile ("tile" mode) make tiles
disagree at their borders (tile mismatch); use them only to show that effect.

Example
-------
>>> import numpy as np
>>> image = np.arange(100, dtype=np.uint16).reshape(1, 10, 10)
>>> low, high = percentile_statistics(image, PercentileNormalization(low=0.0, high=100.0))
>>> low.tolist(), high.tolist()
([0.0], [99.0])
>>> float(normalize(image, low, high)[0, 9, 9])
1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from microseg.config import StageConfig
from microseg.errors import ConfigError, DataError

__all__ = [
    "PercentileNormalization",
    "normalize",
    "normalize_tilewise",
    "percentile_statistics",
]


@dataclass
class PercentileNormalization(StageConfig):
    """Percentile normalization of the network input, ``(x - p_low) / (p_high - p_low)``.

    low: lower percentile (0–100), mapped to 0.
    high: upper percentile (0–100), mapped to 1.
    clip: clip the result to [0, 1]. Off by default: the brightest objects keep their contrast.
    mode: ``"global"``: percentiles of each whole image, computed once (the default; tiled
        prediction is seamless). ``"tile"``: percentiles of each tile or patch (causes tile
        mismatch; for diagnostics).
    max_samples: the percentiles use at most this many pixels per channel; larger images are
        subsampled on a regular grid (deterministic, no random numbers).
    """

    low: float = 1.0
    high: float = 99.8
    clip: bool = False
    mode: Literal["global", "tile"] = "global"
    max_samples: int = 2_000_000

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.low < self.high <= 100.0:
            raise ConfigError(f"PercentileNormalization: low = {self.low} and high = "
                              f"{self.high} must satisfy 0 <= low < high <= 100")
        if self.max_samples < 1:
            raise ConfigError(f"PercentileNormalization.max_samples = {self.max_samples} must "
                              f"be at least 1")


def percentile_statistics(image: Any, config: PercentileNormalization | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel low and high percentiles of a whole image.

    Parameters
    ----------
    image: array (C, Y, X) or (C, Z, Y, X) of any real dtype; NumPy, memory-mapped or Zarr
        (only the subsampled pixels are read).
    config: percentiles and sample cap; None: :class:`PercentileNormalization` defaults.

    Returns ``(low, high)``: float64 arrays of shape (C,). Percentiles use NumPy's default
    (linear) interpolation over all pixels, or over a regular grid of at most ``max_samples``
    pixels per channel (every s-th pixel along each spatial axis) for larger images.

    Raises :class:`DataError` for an image without spatial axes or with no pixels.
    """
    config = config or PercentileNormalization()
    shape = tuple(int(s) for s in image.shape)
    if len(shape) < 3 or math.prod(shape[1:]) == 0:
        raise DataError(f"cannot compute percentiles of an image of shape {shape}: expected "
                        f"(C, Y, X) or (C, Z, Y, X) with pixels (add a channel axis: image[None])")
    grid = _sampling_grid(shape[1:], config.max_samples)
    lows, highs = [], []
    for channel in range(shape[0]):
        values = np.asarray(image[(channel,) + grid], dtype=np.float64)
        low, high = np.percentile(values, (config.low, config.high))
        lows.append(low)
        highs.append(high)
    return np.asarray(lows), np.asarray(highs)


def _sampling_grid(spatial_shape: tuple[int, ...], max_samples: int) -> tuple[slice, ...]:
    """The same step on every axis, the smallest that keeps the sample within ``max_samples``."""
    step = max(1, math.floor((math.prod(spatial_shape) / max_samples) ** (1 / len(spatial_shape))))
    while math.prod(-(-side // step) for side in spatial_shape) > max_samples:
        step += 1
    return tuple(slice(None, None, step) for _ in spatial_shape)


def normalize(image: Any, low: Any, high: Any, clip: bool = False) -> np.ndarray:
    """``(image - low) / (high - low)`` per channel, as float32.

    Parameters
    ----------
    image: array (C, *spatial), any real dtype.
    low, high: per-channel values, shape (C,) (or scalars), e.g. from
        :func:`percentile_statistics`. Where ``high <= low`` (a constant channel) the divisor is
        1, so the channel becomes ``image - low`` instead of infinities.
    clip: clip the result to [0, 1].

    Returns float32 array of the image's shape.

    Raises :class:`DataError` when a result is NaN or infinite (a NaN or infinite pixel, or
    statistics that are not finite): one such pixel would spread through the network's
    receptive field and silently blank the prediction around it.
    """
    values = np.asarray(image, dtype=np.float32)
    per_channel = (-1,) + (1,) * (values.ndim - 1)
    low = np.asarray(low, dtype=np.float64).reshape(per_channel)
    high = np.asarray(high, dtype=np.float64).reshape(per_channel)
    scale = np.where(high > low, high - low, 1.0)
    out = (values - low.astype(np.float32)) * (1.0 / scale).astype(np.float32)
    finite = np.isfinite(out)
    if not finite.all():
        raise DataError(
            f"{out.size - int(np.count_nonzero(finite))} of {out.size} pixel(s) of an image of "
            f"shape {out.shape} are NaN or infinite once normalized (statistics low "
            f"{low.ravel().tolist()}, high {high.ravel().tolist()})",
            ["replace NaN and infinite pixels in the image (e.g. by 0 or the image's median; in "
             "Fiji: Process > Math > Remove NaNs); microseg never guesses values for them"])
    return np.clip(out, 0.0, 1.0, out=out) if clip else out


def normalize_tilewise(tile: Any, config: PercentileNormalization | None = None) -> np.ndarray:
    """Normalize a tile (C, *spatial) with its own percentiles, as float32.

    This is "tile" mode, which makes neighbouring tiles disagree; use it to measure that
    effect. Applied to a whole image it is global normalization of that image.
    """
    config = config or PercentileNormalization()
    low, high = percentile_statistics(tile, config)
    return normalize(tile, low, high, config.clip)
