"""Test-time augmentation: predict flipped and rotated copies of an image and average.

A network is not exactly invariant to flips and 90° rotations even when trained with them; the
mean of its predictions over those transforms is smoother and usually a little better. In 2D the
eight symmetries of the square are used (four rotations, each with and without a mirror), in 3D
the eight mirrorings of the three axes (no rotations: Z is often sampled differently). The
prediction engine (:func:`microseg.inference.tiling.predict_tiled` and friends, ``tta=True``)
predicts every window under each symmetry and maps it back before averaging; a symmetry of a
window is a window of the same symmetry of the image, so tiles still stitch exactly.

Example
-------
>>> import numpy as np
>>> image = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
>>> len(symmetries(2)), len(symmetries(3))
(8, 8)
>>> turned = symmetries(2)[1]
>>> turned.apply(image).shape, bool((turned.undo(turned.apply(image)) == image).all())
((1, 4, 3), True)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from microseg.errors import ConfigError

__all__ = ["Symmetry", "symmetries"]


@dataclass(frozen=True)
class Symmetry:
    """A flip of some spatial axes, then ``rotations`` quarter turns in the YX plane.

    Arrays are channel-first (C, *spatial); :meth:`apply` and :meth:`undo` are inverses.
    """

    flips: tuple[int, ...]
    rotations: int = 0

    def apply(self, array: np.ndarray, leading: int = 1) -> np.ndarray:
        """The transformed view of ``array``: ``leading`` non-spatial axes (1 for (C, *S),
        2 for a batch (N, C, *S)), then the spatial axes."""
        axes = tuple(leading + a for a in self.flips)
        out = np.flip(array, axis=axes) if self.flips else array
        return np.rot90(out, self.rotations, axes=(-2, -1)) if self.rotations else out

    def undo(self, array: np.ndarray, leading: int = 1) -> np.ndarray:
        """Map a prediction (K, *transformed spatial) — or a batch of them, ``leading=2`` —
        back to the original orientation."""
        out = np.rot90(array, -self.rotations, axes=(-2, -1)) if self.rotations else array
        axes = tuple(leading + a for a in self.flips)
        return np.flip(out, axis=axes) if self.flips else out


def symmetries(ndim: int) -> list[Symmetry]:
    """The transforms averaged over: 8 in 2D (dihedral group of the square), 8 in 3D (mirrors).

    The identity comes first. Raises :class:`ConfigError` for ``ndim`` other than 2 or 3.
    """
    if ndim == 2:
        return [Symmetry((0,) if mirrored else (), turns)
                for mirrored in (False, True) for turns in range(4)]
    if ndim == 3:
        return [Symmetry(tuple(a for a, f in enumerate(flags) if f))
                for flags in itertools.product((False, True), repeat=3)]
    raise ConfigError(f"test-time augmentation works on 2D or 3D images, found {ndim}D")
