"""The haematoxylin stain of colour images, checked against images made from known stains."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import hed2rgb

from microseg.errors import DataError
from microseg.transforms.colour import haematoxylin


def stained(rng, shape=(32, 40)):
    """An RGB image made from known haematoxylin, eosin and DAB concentrations (skimage's
    inverse of the deconvolution), and the haematoxylin concentration."""
    hed = np.zeros((*shape, 3))
    hed[..., 0] = rng.uniform(0.0, 0.08, shape)
    hed[..., 1] = rng.uniform(0.0, 0.05, shape)
    return hed2rgb(hed), hed[..., 0]


def test_the_known_haematoxylin_comes_back(rng):
    rgb, h = stained(rng)
    found = haematoxylin(rgb)
    assert found.shape == h.shape and found.dtype == np.float32
    np.testing.assert_allclose(found, h, atol=1e-5)


def test_integer_images_and_channels_first_give_the_same_stain(rng):
    rgb, _ = stained(rng)
    as_uint8 = np.round(rgb * 255).astype(np.uint8)
    as_uint16 = np.round(rgb * 65535).astype(np.uint16)
    reference = haematoxylin(as_uint16.astype(np.float64) / 65535)
    np.testing.assert_allclose(haematoxylin(as_uint16), reference, atol=1e-6)
    np.testing.assert_allclose(haematoxylin(np.moveaxis(as_uint8, -1, 0), channel_axis=0),
                               haematoxylin(as_uint8), atol=0)
    with_alpha = np.concatenate([as_uint8, np.full((*as_uint8.shape[:2], 1), 255, np.uint8)], -1)
    np.testing.assert_array_equal(haematoxylin(with_alpha), haematoxylin(as_uint8))


def test_nuclei_dark_on_bright_come_out_bright_on_dark():
    rgb = np.full((20, 20, 3), 240, np.uint8)
    rgb[5:15, 5:15] = (70, 50, 130)  # haematoxylin purple
    found = haematoxylin(rgb)
    assert found[10, 10] > found[0, 0] + 0.05


@pytest.mark.parametrize("shape", [(20, 20), (20, 20, 2), (20, 20, 5)])
def test_an_image_without_colour_channels_is_refused(shape):
    with pytest.raises(DataError, match="expected RGB or RGBA"):
        haematoxylin(np.zeros(shape))
