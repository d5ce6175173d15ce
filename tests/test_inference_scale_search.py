"""The scale search: plateaus against a brute-force search, and diameters found for objects the
network fragments (too large) or loses (too small)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from microseg.inference.scale_search import (
    CONFIDENT_RUN,
    PLATEAU_SPREAD,
    SOLIDITY_MARGIN,
    Measurement,
    find_plateau,
    measure_objects,
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


# Trials and the median solidity of their objects, measured on held-out images (the search of
# TrainedModel without TTA): (factor, estimate, solidity).
CLUSTERS_AT_1X = [  # DSB 1a115525: dense 16-pixel nuclei; shrunk, the clusters merge
    (1.0, 16.0, 0.938), (0.707, 18.6, 0.933), (0.5, 20.6, 0.919), (0.354, 24.2, 0.892),
    (0.25, 28.2, 0.854), (0.177, 40.9, 0.86), (0.125, 119.1, 0.818), (0.088, 135.7, 0.852),
    (0.062, 132.0, 0.827)]
NUCLEI_AT_5X = [  # DSB 8d05fb18 enlarged 5 times: 99-pixel nuclei, fragments at 0.5 and 0.35
    (1.0, 17.0, 0.813), (0.707, 24.7, 0.811), (0.5, 38.0, 0.814), (0.354, 43.9, 0.901),
    (0.25, 53.2, 0.924), (0.177, 77.7, 0.935), (0.125, 96.4, 0.932), (0.088, 102.9, 0.929),
    (0.062, 125.4, 0.924), (1.414, None, None)]
CELLS = [  # Usiigaci val_set50 (phase contrast, cells of 40 pixels; shrunk, they merge)
    (0.618, 40.1, 0.779), (0.437, 47.4, 0.812), (0.309, 121.7, 0.49), (0.219, 122.2, 0.656),
    (0.155, None, None), (0.874, 33.7, 0.76), (1.237, 19.6, 0.787), (1.749, 10.6, 0.776),
    (2.473, 6.1, 0.759)]


@pytest.mark.parametrize(("measured", "diameter"), [
    (CLUSTERS_AT_1X, 18.6), (NUCLEI_AT_5X, 99.65), (CELLS, 43.75)])
def test_of_runs_as_long_the_most_solid_objects_win(measured, diameter):
    """Each image has two runs as long; the estimates alone pick the clusters in the first and
    the third (they agree better), the solidity of the objects picks what was annotated."""
    trials = [(f, d) for f, d, _ in measured]
    solidity = [s for _, _, s in measured]
    assert find_plateau(trials, solidity=solidity).diameter == pytest.approx(diameter)
    without_shapes = find_plateau(trials).diameter
    assert (without_shapes == pytest.approx(diameter)) == (measured is NUCLEI_AT_5X)


def test_solidity_is_measured_only_for_runs_that_tie():
    """Measuring solidity costs a convex hull per object: trials of runs that do not tie are
    never measured, and the choice is the same as with every value given."""
    asked = []

    def lazy(k, value):
        def measure():
            asked.append(k)
            return value
        return measure

    for measured in (CLUSTERS_AT_1X, NUCLEI_AT_5X, CELLS):
        asked.clear()
        trials = [(f, d) for f, d, _ in measured]
        given = find_plateau(trials, solidity=[v for _, _, v in measured])
        found = find_plateau(trials, solidity=[lazy(k, v) for k, (_, _, v) in enumerate(measured)])
        assert found.diameter == given.diameter
        assert len(asked) == len(set(asked)), "each trial measured once"
        assert found.solidity == tuple(v if k in asked else None
                                       for k, (_, _, v) in enumerate(measured))
    asked.clear()
    alone = [(1.0, 20.0, 0.9), (0.71, 21.0, 0.9), (0.5, 22.0, 0.9), (0.35, 60.0, 0.5)]
    find_plateau([(f, d) for f, d, _ in alone],
                 solidity=[lazy(k, v) for k, (_, _, v) in enumerate(alone)])
    assert asked == [], "one longest run: nothing to measure"


def _brute_force_choice(values, shapes):
    """The rule written out over every (start, stop): from each start the longest agreeing run;
    the longest of those; of them the ones whose median solidity is within the margin of the
    most solid; then the tightest, then the one at the larger factors."""
    maximal = []
    for start in range(len(values)):
        stops = [stop for stop in range(start + 1, len(values) + 1)
                 if max(values[start:stop]) / min(values[start:stop]) <= PLATEAU_SPREAD]
        maximal.append((start, max(stops)))
    longest = max(stop - start for start, stop in maximal)
    tied = [(a, b) for a, b in maximal if b - a == longest]
    solid = [float(np.median(shapes[a:b])) for a, b in tied]
    if len(tied) > 1:
        tied = [r for r, v in zip(tied, solid, strict=True) if v >= max(solid) - SOLIDITY_MARGIN]
    return min(tied, key=lambda r: (max(values[r[0]:r[1]]) / min(values[r[0]:r[1]]), r[0]))


@pytest.mark.parametrize("seed", range(40))
def test_solidity_decides_between_runs_as_long_as_a_brute_force_rule_does(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 10))
    values = [float(np.exp(rng.normal(3, 0.3))) for _ in range(n)]
    shapes = [float(rng.uniform(0.5, 1.0)) for _ in range(n)]
    factors = [2 ** (-k / 2) for k in range(n)]
    start, stop = _brute_force_choice(values, shapes)
    plateau = find_plateau(list(zip(factors, values, strict=True)), solidity=shapes)
    assert plateau.consistent == stop - start
    assert plateau.diameter == pytest.approx(float(np.median(values[start:stop])))


# An EM section (ISBI slice_25, cells of 24 pixels) searched with the default post-processing:
# (factor, estimate, objects clear of the border). From 0.25 on, the cells merge into one object
# filling the view, whose estimate is the view's size at every factor: the longest run.
MERGED_FIELD = [
    (1.0, 24.8, 65), (0.707, 23.3, 70), (0.5, 26.5, 44), (0.354, 67.4, 1), (0.25, 564.5, 0),
    (0.177, 575.6, 0), (0.125, 576.9, 0), (0.088, 567.5, 0), (0.062, 575.5, 0)]


def test_a_view_filled_by_one_merged_object_measures_nothing():
    recorded = {f: (d, clear) for f, d, clear in MERGED_FIELD}
    assert find_plateau([(f, d) for f, d, _ in MERGED_FIELD]).diameter > 500, \
        "estimates alone take the merged field"
    estimate = search_object_diameter(
        lambda f: Measurement(recorded[round(f, 3)][0] * f, whole=recorded[round(f, 3)][1] > 0),
        start=1.0, smallest=0.06, largest=4.0)
    assert estimate.diameter == pytest.approx(24.8)
    assert estimate.consistent == 3
    assert [round(f, 3) for f, _ in estimate.trials] == list(recorded), \
        "the search goes on shrinking past factors that measure nothing"
    assert [d is None for _, d in estimate.trials] == [c == 0 for _, _, c in MERGED_FIELD]


def test_objects_coming_clear_of_the_border_further_down_are_measured():
    """Objects of 300 pixels in a view of 256: at 1 and 0.707 every one touches the border."""
    def measure(factor):
        size = 300.0 * factor
        return Measurement(size, whole=size < 180)
    estimate = search_object_diameter(measure, start=1.0, smallest=0.05, largest=4.0)
    assert estimate.trials[0] == (1.0, None)
    assert estimate.diameter == pytest.approx(300.0)
    assert estimate.confidence == "high"


def _brute_force_whole(labels):
    """Whether some object has no pixel on the border, object by object."""
    border = np.zeros(labels.shape, bool)
    for axis in range(labels.ndim):
        index = [slice(None)] * labels.ndim
        for end in (0, -1):
            index[axis] = end
            border[tuple(index)] = True
    return any(not border[labels == k].any() for k in np.unique(labels) if k != 0)


@pytest.mark.parametrize("seed", range(12))
def test_measure_objects_against_a_loop_over_objects(seed):
    from microseg.transforms.scale import median_diameter

    rng = np.random.default_rng(seed)
    shape = (24, 30) if seed % 3 else (8, 12, 10)
    labels = np.zeros(shape, np.int32)
    for k in range(1, int(rng.integers(1, 6))):
        corner = [int(rng.integers(0, n - 2)) for n in shape]
        size = [int(rng.integers(2, 8)) for _ in shape]
        labels[tuple(slice(c, c + w) for c, w in zip(corner, size, strict=True))] = k
    found = measure_objects(labels)
    if not labels.any():
        assert found is None
        return
    assert found.whole == _brute_force_whole(labels)
    assert found.diameter == median_diameter(labels)
    assert (found.solidity() is None) == (labels.ndim == 3)


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


def test_no_enlarging_past_or_from_objects_cut_by_the_border():
    """Enlarging only makes objects larger: once every object touches the border, looking at
    larger factors is wasted predictions (an untrained network's blob filling the view)."""
    calls = []

    def blob(factor):
        calls.append(factor)
        return Measurement(200.0 * factor, whole=False)
    estimate = search_object_diameter(blob, start=1.0, smallest=0.25, largest=4.0)
    assert estimate.confidence == "none"
    assert max(calls) == 1.0, "no enlargement from a start whose objects are all cut"

    calls.clear()

    def small_then_cut(factor):
        calls.append(factor)
        return Measurement(4.0 * factor, whole=factor < 1.9)   # tiny objects, one view
    search_object_diameter(small_then_cut, start=1.0, smallest=1.0, largest=4.0)
    assert calls == pytest.approx([1.0, 2 ** 0.5, 2.0]), "stops at the first cut factor"
