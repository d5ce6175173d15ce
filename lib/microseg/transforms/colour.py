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

>>> rgb = np.full((4, 4, 3), 255, np.uint8)      # white: no stain
>>> rgb[1:3, 1:3] = (60, 40, 120)                 # a dark purple nucleus
>>> h = haematoxylin(rgb)
>>> h.shape, h.dtype, bool(h[1, 1] > h[0, 0])
((4, 4), dtype('float32'), True)
"""

from __future__ import annotations

import numpy as np

from microseg.errors import DataError

__all__ = ["haematoxylin"]


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

    array = np.moveaxis(np.asarray(image), channel_axis, -1)
    if array.ndim < 3 or array.shape[-1] not in (3, 4):
        raise DataError("cannot take the haematoxylin stain of this image", [
            f"expected RGB or RGBA on axis {channel_axis}, found shape {np.shape(image)}"])
    rgb = array[..., :3]
    if np.issubdtype(rgb.dtype, np.integer):
        rgb = rgb / float(np.iinfo(rgb.dtype).max)
    return rgb2hed(np.clip(rgb, 0.0, 1.0))[..., 0].astype(np.float32)
