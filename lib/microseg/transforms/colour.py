"""Colour images made one channel for models of grey images: the haematoxylin stain.

A model trained on fluorescence nuclei (bright nuclei on a dark background, like the built-in
``"nuclei"``) reads one channel. Stained tissue (H&E) and bright-field images show nuclei dark on
a bright background, so the plain grey value (``skimage.color.rgb2gray``) turns them into the
opposite of what the model learned. Colour deconvolution (Ruifrok & Johnston 2001, as
``skimage.color.rgb2hed``) separates the haematoxylin stain, which binds the nuclei: its
concentration is bright where the nuclei are, as in fluorescence.

Measured with the built-in ``"nuclei"`` model as it is on the 11 colour test images of the Data
Science Bowl 2018 colour split (``benchmarks/real_data.py``, ``dsb2018_colour``): F1@0.5 0.609
(DSB score 0.249) from the haematoxylin channel, 0.589 (0.255) from the inverted grey value,
0.336 (0.117) from the grey value (BENCHMARKS.md).

A model can take colour images this way by itself (``colour_input="nuclei"`` in its
``prediction.json``, as the built-in ``"nuclei"`` has): :func:`nuclei_channel` takes the
haematoxylin stain of an image on a bright background (stained tissue, bright-field) and refuses
one on a dark background (a fluorescence composite), whose nuclear channel only the user knows.

>>> rgb = np.full((4, 4, 3), 255, np.uint8)      # white: no stain
>>> rgb[1:3, 1:3] = (60, 40, 120)                 # a dark purple nucleus
>>> h = haematoxylin(rgb)
>>> h.shape, h.dtype, bool(h[1, 1] > h[0, 0])
((4, 4), dtype('float32'), True)
"""

from __future__ import annotations

import numpy as np

from microseg.errors import DataError

__all__ = ["BRIGHT_BACKGROUND", "haematoxylin", "nuclei_channel"]


def haematoxylin(image: np.ndarray, channel_axis: int = -1) -> np.ndarray:
    """The haematoxylin concentration of an RGB(A) image of stained tissue or bright-field:
    float32 of the image's shape without the channel axis, higher where there is more stain.

    ``image``: uint8, uint16 or float RGB, the channels on ``channel_axis`` (an alpha channel
    is dropped). The optical densities of the three stains (haematoxylin, eosin, DAB) are the
    standard ones; every stain of another lab differs a little, and the percentile
    normalization of the model that reads the result absorbs most of it.

    Raises :class:`DataError` for an image without 3 or 4 channels on ``channel_axis``.
    """
    from skimage.color import rgb2hed

    rgb = _rgb(image, channel_axis, "cannot take the haematoxylin stain of this image")
    if np.issubdtype(rgb.dtype, np.integer):
        rgb = rgb / float(np.iinfo(rgb.dtype).max)
    return rgb2hed(np.clip(rgb, 0.0, 1.0))[..., 0].astype(np.float32)


BRIGHT_BACKGROUND = 0.25
"""An image whose median grey value is at least this fraction of its full range (the dtype's
maximum for integers, 1 for floats up to 1) has a bright background: stained tissue or
bright-field. Fluorescence composites lie far below (a dark background); H&E tissue filling the
whole field lies above (the densest of the Data Science Bowl 2018's 107 colour images: 0.54)."""


def nuclei_channel(image: np.ndarray, channel_axis: int = -1, source: str = "the image"
                   ) -> np.ndarray:
    """One channel of a colour image in which nuclei are bright on dark, for a model of
    fluorescence nuclei: the :func:`haematoxylin` stain of an image on a bright background
    (:data:`BRIGHT_BACKGROUND`), float32 without the channel axis.

    Raises :class:`DataError` naming ``source`` for an image on a dark background (a
    fluorescence composite: the nuclei are in one of its channels, DAPI or Hoechst usually
    blue, and only the user knows which) and for one without 3 or 4 channels.
    """
    rgb = _rgb(image, channel_axis, f"cannot take the nuclei of {source} as one channel")
    full = (float(np.iinfo(rgb.dtype).max) if np.issubdtype(rgb.dtype, np.integer)
            else max(1.0, float(np.max(rgb))))
    background = float(np.median(rgb.mean(axis=-1))) / full
    if background < BRIGHT_BACKGROUND:
        raise DataError(f"{source} is a colour image on a dark background", [
            f"its median grey value is {background:.0%} of the full range (stained tissue and "
            f"bright-field: {BRIGHT_BACKGROUND:.0%} or more): a fluorescence composite, "
            "whose nuclei are in one channel",
            "give the model that channel alone (DAPI or Hoechst, usually blue: e.g. "
            "image[..., 2] for YXC)"])
    return haematoxylin(rgb)


def _rgb(image: np.ndarray, channel_axis: int, problem: str) -> np.ndarray:
    """The red, green and blue channels of an RGB(A) image, last; :class:`DataError` with
    ``problem`` as its title for an image without 3 or 4 channels on ``channel_axis``."""
    array = np.moveaxis(np.asarray(image), channel_axis, -1)
    if array.ndim < 3 or array.shape[-1] not in (3, 4):
        raise DataError(problem, [
            f"expected RGB or RGBA on axis {channel_axis}, found shape {np.shape(image)}"])
    return array[..., :3]
