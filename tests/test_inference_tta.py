"""Test-time augmentation: the 8 symmetries invert exactly; tiles still stitch exactly."""

from __future__ import annotations

import numpy as np
import pytest

from microseg.errors import ConfigError
from microseg.inference.tta import symmetries


@pytest.mark.parametrize("ndim", [2, 3])
def test_every_symmetry_is_undone_and_they_are_all_different(ndim):
    image = np.random.default_rng(0).random((2,) + (5, 6, 7)[:ndim])
    seen = set()
    for symmetry in symmetries(ndim):
        transformed = symmetry.apply(image)
        np.testing.assert_array_equal(symmetry.undo(transformed), image)
        seen.add(transformed.tobytes() + bytes(transformed.shape))
    assert len(seen) == 8


def test_the_engine_averages_every_symmetry_and_tiles_still_stitch(trained_like_unet):
    from microseg.inference.tiling import predict_tiled, predict_whole

    model = trained_like_unet("batch", 2)
    image = np.random.default_rng(2).normal(size=(1, 40, 56)).astype(np.float32)
    brute = np.mean([s.undo(predict_whole(model, np.ascontiguousarray(s.apply(image)),
                                          device="cpu")) for s in symmetries(2)], axis=0)
    whole = predict_whole(model, image, device="cpu", tta=True)
    tiled = predict_tiled(model, image, (16, 24), 16, device="cpu", tta=True)
    np.testing.assert_allclose(whole, brute, atol=1e-6)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    assert np.abs(whole - predict_whole(model, image, device="cpu")).max() > 1e-3


def test_only_2d_and_3d():
    with pytest.raises(ConfigError, match="2D or 3D"):
        symmetries(4)
