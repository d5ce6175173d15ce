"""Axes strings: the letters that say what each dimension of an image array is.

An axes string has one letter per dimension: ``Y`` and ``X`` (always), ``Z`` for volumes, ``C``
for channels and an optional leading ``T`` of size 1 (:data:`VALID_AXES`). Images are read into
canonical channel-first axes, ``"CYX"`` or ``"CZYX"`` (:func:`to_canonical`); without axes from the
caller or the file, :func:`guess_axes` guesses them from the shape by documented rules and says
when it cannot. Used by :mod:`microseg.io.images` and every reader of other tools' formats.

>>> guess_axes((512, 512, 3))
'YXC'
>>> to_canonical(np.zeros((4, 64, 64)), "ZYX").shape
(1, 4, 64, 64)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError

__all__ = ["VALID_AXES", "canonical_axes", "canonical_shape", "guess_axes", "is_grey_rgb",
           "normalize_letters", "to_canonical", "validate_axes"]

_BASE_AXES = ("YX", "CYX", "YXC", "ZYX", "CZYX", "ZCYX", "ZYXC")
VALID_AXES = _BASE_AXES + tuple("T" + axes for axes in _BASE_AXES)
"""Every axes string accepted (a leading T must have size 1)."""
_ASK_FOR_AXES = "pass axes=... with one letter per dimension, e.g. 'CYX', 'ZYX' or 'CZYX'"


def guess_axes(shape: Sequence[int], ndim: int | None = None) -> str:
    """Guess the axes of an array read from a file without axes metadata.

    Rules, by number of dimensions (``ndim`` is the number of spatial dimensions, 2 or 3, if known):

    - 2 dims: ``"YX"`` (``ndim=3`` is an error).
    - 3 dims: ``"ZYX"`` if ``ndim=3``; else ``"YXC"`` if the last dim is 3 or 4 and both others
      are larger (an RGB/RGBA image); else ``"CYX"`` if the first dim is at most 4; else ``"ZYX"``,
      unless ``ndim=2`` (then no axis looks like channels: error).
    - 4 dims (never 2D): ``"ZYXC"`` if the last dim is 3 or 4 and the middle two are larger;
      ``"CZYX"`` if the first dim is at most 8 and the second larger; ``"ZCYX"`` if the second is at
      most 8; else error.
    - 5 dims with a leading singleton (a single time point): ``"T"`` + the 4-dims guess.

    Raises :class:`DataError` asking for explicit axes when no rule applies, and
    :class:`ConfigError` for an ``ndim`` other than 2, 3 or None.

    >>> guess_axes((512, 512)), guess_axes((512, 512, 3)), guess_axes((2, 512, 512))
    ('YX', 'YXC', 'CYX')
    >>> guess_axes((40, 256, 256)), guess_axes((2, 40, 256, 256)), guess_axes((40, 2, 256, 256))
    ('ZYX', 'CZYX', 'ZCYX')
    """
    shape = tuple(int(size) for size in shape)
    if ndim not in (None, 2, 3):
        raise ConfigError(f"ndim must be 2, 3 or None, got {ndim!r}")
    if len(shape) == 5 and shape[0] == 1:
        return "T" + guess_axes(shape[1:], ndim)
    guessers = {2: _guess_two_dims, 3: _guess_three_dims, 4: _guess_four_dims}
    if len(shape) not in guessers:
        raise DataError(f"cannot guess the axes of an array of shape {shape}: {_ASK_FOR_AXES}")
    return guessers[len(shape)](shape, ndim)


def _guess_two_dims(shape: tuple[int, ...], ndim: int | None) -> str:
    if ndim == 3:
        raise DataError(f"an array of shape {shape} has only 2 dimensions, it cannot be 3D: "
                        f"check the file, or pass ndim=2")
    return "YX"


def _guess_three_dims(shape: tuple[int, ...], ndim: int | None) -> str:
    if ndim == 3:
        return "ZYX"
    if shape[2] in (3, 4) and min(shape[:2]) > shape[2]:
        return "YXC"
    if shape[0] <= 4:
        return "CYX"
    if ndim == 2:
        raise DataError(
            f"shape {shape} has 3 dimensions but none small enough (at most 4) to be channels of a "
            f"2D image: {_ASK_FOR_AXES}"
        )
    return "ZYX"


def _guess_four_dims(shape: tuple[int, ...], ndim: int | None) -> str:
    if ndim == 2:
        raise DataError(f"an array of shape {shape} has 4 dimensions, it cannot be 2D: "
                        f"{_ASK_FOR_AXES}")
    if shape[3] in (3, 4) and min(shape[1:3]) > shape[3]:
        return "ZYXC"
    if shape[0] <= 8 and shape[1] > shape[0]:
        return "CZYX"
    if shape[1] <= 8:
        return "ZCYX"
    raise DataError(f"cannot tell channels from z-slices in shape {shape}: {_ASK_FOR_AXES}")


def validate_axes(axes: str, shape: Sequence[int]) -> str:
    """Check that ``axes`` describes an array of ``shape``; return it normalized (upper case).

    Valid axes strings are those in :data:`VALID_AXES`: ``"YX"``, ``"CYX"``, ``"YXC"``, ``"ZYX"``,
    ``"CZYX"``, ``"ZCYX"``, ``"ZYXC"``, each optionally with a leading ``"T"`` of size 1. An ``"S"``
    (samples, as tifffile names RGB components) is read as ``"C"``. Raises :class:`DataError` naming the
    valid strings and the shape, or, for more than one time point, how to proceed.

    >>> validate_axes("yxs", (64, 64, 3))
    'YXC'
    """
    shape = tuple(int(size) for size in shape)
    normalized = normalize_letters(axes)
    if normalized not in VALID_AXES or len(normalized) != len(shape):
        raise DataError(
            f"axes {axes!r} do not fit an array of shape {shape}: give one letter per dimension, "
            f"one of {', '.join(VALID_AXES)} (a leading T must have size 1)"
        )
    if normalized[0] == "T" and shape[0] != 1:
        raise DataError(_time_points_message(normalized, shape))
    return normalized


def normalize_letters(axes: Any) -> str:
    """``axes`` in upper case, with tifffile's sample axis ``S`` read as channels ``C``."""
    if not isinstance(axes, str):
        raise ConfigError(f"axes must be a string such as 'CYX', got {axes!r}")
    normalized = axes.upper()
    if "S" in normalized and "C" not in normalized:
        normalized = normalized.replace("S", "C")
    return normalized


def _time_points_message(axes: str, shape: tuple[int, ...]) -> str:
    message = (f"axes {axes!r} with shape {shape} hold {shape[0]} time points; microseg segments "
               f"one time point at a time: save each time point as its own file")
    if "Z" not in axes:
        message += (f", or, if the frames are really z-slices (a common mix-up, fixed in Fiji with "
                    f"Image > Properties), pass axes={axes.replace('T', 'Z')!r}")
    return message


def canonical_shape(shape: Sequence[int], axes: str) -> tuple[int, tuple[int, ...]]:
    """``(n_channels, spatial_shape)`` of an array of ``shape`` in ``axes``, without reading data.

    >>> canonical_shape((40, 2, 256, 256), "ZCYX")
    (2, (40, 256, 256))
    """
    axes = validate_axes(axes, shape)
    sizes = dict(zip(axes, (int(size) for size in shape), strict=True))
    return sizes.get("C", 1), tuple(sizes[axis] for axis in "ZYX" if axis in sizes)


def to_canonical(array: Any, axes: str) -> Any:
    """Reorder ``array`` from ``axes`` to channel-first ``"CYX"`` / ``"CZYX"``.

    Adds a channel axis of size 1 when ``axes`` has none and drops a singleton time axis; more
    than one time point raises ``ValueError`` (see :func:`validate_axes`). NumPy arrays come back as
    views (no copy), Dask arrays stay lazy; other array-likes (e.g. Zarr) are read into NumPy.

    >>> to_canonical(np.zeros((64, 48, 3)), "YXC").shape
    (3, 64, 48)
    """
    axes = validate_axes(axes, array.shape)
    if not hasattr(array, "transpose"):
        array = np.asarray(array)
    if axes[0] == "T":
        array, axes = array[0], axes[1:]
    if "C" not in axes:
        array, axes = array[None], "C" + axes
    return array.transpose([axes.index(axis) for axis in "CZYX" if axis in axes])


def canonical_axes(array: Any) -> str:
    """``"CYX"`` for a 3-dim canonical image, ``"CZYX"`` for a 4-dim one."""
    return {3: "CYX", 4: "CZYX"}[len(array.shape)]


def is_grey_rgb(array: Any, axes: str) -> bool:
    """Whether an RGB(A) image is really grey: red, green and blue identical (alpha constant).

    Only images with 3 or 4 channels can be grey RGB.

    >>> grey = np.repeat(np.arange(12, dtype=np.uint8).reshape(3, 4, 1), 3, axis=2)
    >>> is_grey_rgb(grey, "YXC")
    True
    """
    axes = validate_axes(axes, array.shape)
    if "C" not in axes or array.shape[axes.index("C")] not in (3, 4):
        return False
    channels = np.moveaxis(np.asarray(array), axes.index("C"), 0)
    grey = np.array_equal(channels[0], channels[1]) and np.array_equal(channels[0], channels[2])
    if len(channels) == 4:
        grey = grey and bool(np.all(channels[3] == channels[3].flat[0]))
    return bool(grey)
