"""The scale search: plateaus against a brute-force search, and diameters found for objects the
network fragments (too large) or loses (too small)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from microseg.inference.scale_search import (
    CONFIDENT_RUN,
    PLATEAU_SPREAD,
    find_plateau,
    search_object_diameter,
)


def _brute_force_longest(values):
    """Length of the longest run of consecutive non-None values within PLATEAU_SPREAD, trying
    every (start, stop)."""
    best = 0
    for start, stop in itertools.combinations(range(len(values) + 1), 2):
        run = values[start:stop]
        if any(v is None for v in run):
            continue
        if max(run) / min(run) <= PLATEAU_SPREAD:
            best = max(best, stop - start)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_plateau_is_the_longest_agreeing_run(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 10))
    values = [None if rng.random() < 0.15 else float(np.exp(rng.normal(3, 0.4)))
              for _ in range(n)]
    factors = [2 ** (-k / 2) for k in range(n)]
    trials = list(zip(factors, values, strict=True))
    rng.shuffle(trials)  # the order of the trials does not matter, the factors do
    plateau = find_plateau(trials)
    longest = _brute_force_longest(values)
    assert plateau.consistent == longest
    if longest == 0:
        assert plateau.diameter is None and plateau.confidence == "none"
    else:
        runs = [values[i:i + longest] for i in range(n - longest + 1)
                if None not in values[i:i + longest]
                and max(values[i:i + longest]) / min(values[i:i + longest]) <= PLATEAU_SPREAD]
        assert any(plateau.diameter == pytest.approx(float(np.median(r))) for r in runs)
        assert plateau.confidence == ("high" if longest >= CONFIDENT_RUN else "low")


def _network_view(diameter, seen=(6.0, 40.0), fragment=20.0):
    """What a network trained on 20-pixel objects measures in an image of ``diameter``-pixel
    objects resampled by a factor: the objects while they measure 6 to 40 pixels, fragments of
    20 pixels when larger, nothing when smaller."""
    calls = []

    def measure(factor):
        calls.append(factor)
        size = diameter * factor
        if size < seen[0]:
            return None
        return size if size <= seen[1] else fragment
    return measure, calls


@pytest.mark.parametrize("diameter", [3.0, 5.0, 12.0, 20.0, 45.0, 100.0, 190.0, 300.0])
def test_search_finds_objects_the_network_fragments_or_loses(diameter):
    measure, calls = _network_view(diameter)
    estimate = search_object_diameter(measure, start=1.0, smallest=0.05, largest=4.0)
    assert estimate.diameter == pytest.approx(diameter, rel=1e-6)
    assert estimate.confidence == "high"
    assert [f for f, _ in estimate.trials] == calls, "one prediction per trial"
    assert sum(f * f for f in calls if f <= 1.0) < 2.1, "going down costs < 2 predictions at 1x"


def test_fixed_point_of_fragments_is_not_taken_for_the_objects():
    """One prediction at the training scale sees 20-pixel fragments of 100-pixel objects; an
    estimate from it confirms itself, the search does not."""
    measure, _ = _network_view(100.0)
    assert measure(1.0) == 20.0
    estimate = search_object_diameter(measure, start=1.0, smallest=0.05, largest=4.0)
    assert estimate.diameter == pytest.approx(100.0)
    assert (1.0, 20.0) in estimate.trials


def test_fragments_agreeing_as_long_as_the_objects_do_not_win():
    """Estimates measured on a held-out DSB image enlarged 5 times (nuclei of 99 pixels):
    fragments agree at 0.5 and 0.35 as long as the nuclei at 0.125 and 0.088; the nuclei's
    estimates agree better."""
    trials = [(1.0, 17.15), (0.707, 24.46), (0.5, 38.03), (0.354, 43.85), (0.25, 53.17),
              (0.177, 77.65), (0.125, 96.38), (0.088, 102.92), (0.062, 125.35), (1.414, None)]
    plateau = find_plateau(trials)
    assert plateau.consistent == 2 and plateau.diameter == pytest.approx(99.65)


def test_nothing_found_at_any_scale():
    estimate = search_object_diameter(lambda f: None, start=1.0, smallest=0.1, largest=4.0)
    assert estimate.diameter is None and estimate.confidence == "none"
    assert estimate.describe()["diameter_confidence"] == "none"


def test_a_trained_model_segments_its_objects_at_three_scales(tmp_path):
    """The scale test in small: a U-Net trained for a minute on synthetic objects of one size
    predicts them enlarged 2x and 3x with object_diameter="auto" about as well as at 1x, and
    clearly better than when the image is taken to have the training size."""
    from microseg.data.synthetic import synthetic_sample
    from microseg.metrics.instance import match_instances
    from microseg.models import TrainedModel
    from microseg.recipes.prepare import prepare_data
    from microseg.recipes.train import train_model
    from microseg.transforms.scale import median_diameter, rescale_image, rescale_labels

    run = tmp_path / "run"
    prepare_data(run, n_synthetic=24, synthetic_shape=(128, 128))
    model = TrainedModel.load(train_model(run, max_minutes=1.0, device="cpu")["model_dir"])
    pairs = [synthetic_sample((192, 192), seed=100 + k) for k in range(3)]

    def f1_and_diameters(factor, object_diameter="auto"):
        counts, found, true = np.zeros(3), [], []
        for image, label in pairs:
            image = rescale_image(image.astype(np.float32), factor)
            label = rescale_labels(label, factor)
            info = model.predict_with_info(image, object_diameter=object_diameter)
            score = match_instances(model.labels(info.probabilities), label, (0.5,)).scores[0]
            counts += (score.tp, score.fp, score.fn)
            found.append(info.object_diameter)
            true.append(median_diameter(label))
        tp, fp, fn = counts
        return 2 * tp / (2 * tp + fp + fn), np.array(found), np.array(true)

    at_1x, found, true = f1_and_diameters(1.0)
    assert at_1x > 0.5, "the model has learnt the objects"
    for factor in (2.0, 3.0):
        f1, found, true = f1_and_diameters(factor)
        np.testing.assert_allclose(found, true, rtol=0.2)
        assert f1 >= at_1x - 0.1, (factor, f1, at_1x)
    assumed, _, _ = f1_and_diameters(3.0, object_diameter=None)
    assert assumed < f1 - 0.1, "predicted at the training size, 3x objects are lost"
