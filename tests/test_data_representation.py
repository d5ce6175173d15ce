"""Samples at the canonical object size with the head's targets."""

from __future__ import annotations

import numpy as np
import pytest

from microseg.data.dataset import Sample
from microseg.data.representation import Representation, represent
from microseg.transforms.scale import median_diameter


def disc_sample(stem, radius, shape=(96, 96)):
    """Two discs of ``radius``, centred at a quarter and three quarters of the diagonal."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    label = np.zeros(shape, np.int32)
    for k, f in enumerate((0.28, 0.72), start=1):
        inside = (yy - f * shape[0]) ** 2 + (xx - f * shape[1]) ** 2 <= radius**2
        label[inside & (label == 0)] = k
    image = (label > 0).astype(np.float32)[None]
    return Sample(stem, image, label, None)


def test_each_image_is_resampled_to_the_canonical_diameter_by_its_own_factor():
    samples = [disc_sample("small", 16), disc_sample("large", 32, shape=(192, 192))]
    plan = Representation(task="instance", head="distance", levels=3, canonical_diameter=12.0)
    scaled, facts = represent(samples, plan)
    for sample in scaled:
        assert median_diameter(sample.label) == pytest.approx(12.0, rel=0.1)
        assert sample.image.shape[1:] == sample.label.shape == sample.target.shape
        assert sample.target.max() == 3
    assert facts.factors[0] == pytest.approx(2 * facts.factors[1], rel=0.05)
    assert facts.median_diameter == pytest.approx(median_diameter([s.label for s in samples]))


def test_without_a_canonical_diameter_only_the_targets_change():
    sample = disc_sample("a", 10)
    scaled, facts = represent([sample], Representation(task="instance", head="three_class"))
    assert scaled[0].image is sample.image and facts.factors == (1.0,)
    assert set(np.unique(scaled[0].target)) == {0, 1, 2}


def test_unlabelled_samples_pass_through():
    sample = Sample("u", np.zeros((1, 8, 8), np.float32), None, None)
    scaled, _ = represent([sample], Representation(task="instance", canonical_diameter=10.0))
    assert scaled[0] is sample


def test_objects_smaller_than_the_canonical_size_are_not_enlarged():
    sample = disc_sample("small", 5)
    scaled, facts = represent([sample], Representation(task="instance",
                                                       canonical_diameter=30.0))
    assert facts.factors == (1.0,) and scaled[0].image.shape == sample.image.shape
