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


def test_nuclei_channel_of_stained_tissue_is_the_haematoxylin(rng):
    from microseg.transforms.colour import nuclei_channel

    rgb, _ = stained(rng)
    as_uint8 = np.round(rgb * 255).astype(np.uint8)
    np.testing.assert_array_equal(nuclei_channel(as_uint8), haematoxylin(as_uint8))
    np.testing.assert_array_equal(nuclei_channel(np.moveaxis(as_uint8, -1, 0), channel_axis=0),
                                  haematoxylin(as_uint8))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_a_fluorescence_composite_is_refused_naming_the_file(rng, dtype):
    """Dark background, bright blue nuclei and green cytoplasm: no stain to separate."""
    from microseg.transforms.colour import BRIGHT_BACKGROUND, nuclei_channel

    full = 1.0 if dtype == np.float32 else float(np.iinfo(dtype).max)
    image = np.zeros((40, 40, 3))
    image[..., 1] = rng.uniform(0.0, 0.1, (40, 40))
    image[10:20, 10:20, 2] = 0.9
    image[5:30, 5:30, 1] += 0.3
    assert np.median(image.mean(-1)) < BRIGHT_BACKGROUND
    with pytest.raises(DataError, match="cells.tif is a colour image on a dark background"):
        nuclei_channel((image * full).astype(dtype), source="cells.tif")


def test_dense_tissue_counts_as_bright_background(rng):
    """Tissue filling the field (purple everywhere, darker nuclei): still stained tissue."""
    from microseg.transforms.colour import nuclei_channel

    hed = np.zeros((32, 32, 3))
    hed[..., 0] = 0.04
    hed[8:16, 8:16, 0] = 0.15
    hed[..., 1] = 0.03
    rgb = np.round(hed2rgb(hed) * 255).astype(np.uint8)
    assert 0.3 < np.median(rgb.mean(-1)) / 255 < 0.7
    found = nuclei_channel(rgb)
    assert found[12, 12] > found[0, 0]
