"""Instance post-processing: perfect probabilities give back the true objects, tuning, saving."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from microseg.data.synthetic import synthetic_sample
from microseg.errors import ConfigError, DataError
from microseg.inference.instances import (
    POSTPROCESSING_FILE,
    InstancePostprocessing,
    load_postprocessing,
    probabilities_to_instances,
    save_postprocessing,
    tune_postprocessing,
)
from microseg.metrics.instance import match_instances
from microseg.transforms.targets import labels_to_target

EXACT = InstancePostprocessing(min_size=0, min_seed_size=1)


def perfect_probabilities(labels: np.ndarray) -> np.ndarray:
    """One-hot (3, *spatial) probabilities of the instance target (1 interior, 2 boundary)."""
    target = labels_to_target(labels, "instance")
    return np.moveaxis(np.eye(3, dtype=np.float32)[target], -1, 0)


def brute_force_best_iou(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """For every true object, the best IoU with any predicted object, by boolean masks."""
    best = []
    for i in np.unique(truth[truth > 0]):
        mask = truth == i
        ious = [np.logical_and(mask, pred == j).sum() / np.logical_or(mask, pred == j).sum()
                for j in np.unique(pred[mask]) if j]
        best.append(max(ious, default=0.0))
    return best


@pytest.mark.parametrize("shape", [(128, 128), (24, 48, 48)])
def test_perfect_probabilities_give_back_every_object(shape):
    _, labels = synthetic_sample(shape, seed=3)
    result = probabilities_to_instances(perfect_probabilities(labels), EXACT)
    assert result.dtype == np.int32 and result.shape == labels.shape
    assert np.array_equal(np.unique(result), np.arange(result.max() + 1))
    scores = match_instances(result, labels, thresholds=(0.5,)).at(0.5)
    assert scores.f1 == 1.0 and scores.n_pred == scores.n_true > 5
    best = brute_force_best_iou(result, labels)
    assert len(best) == scores.n_true and min(best) > 0.5
    assert np.count_nonzero(result != 0) == np.count_nonzero(labels)


def test_touching_objects_are_separated():
    labels = np.zeros((20, 30), np.int32)
    labels[4:16, 3:15] = 7
    labels[4:16, 15:27] = 9
    result = probabilities_to_instances(perfect_probabilities(labels), EXACT)
    assert result.max() == 2
    for true_id in (7, 9):
        ids, counts = np.unique(result[labels == true_id], return_counts=True)
        assert len(ids) == 1 and counts[0] == 144


def test_small_objects_and_seeds_are_removed():
    labels = np.zeros((30, 30), np.int32)
    labels[2:12, 2:12] = 1
    labels[20:23, 20:23] = 2
    probabilities = perfect_probabilities(labels)
    assert probabilities_to_instances(probabilities, EXACT).max() == 2
    assert probabilities_to_instances(probabilities, EXACT.replace(min_size=10)).max() == 1
    assert probabilities_to_instances(probabilities, EXACT.replace(min_seed_size=2)).max() == 1


def test_interior_landscape_and_interior_seed_score_also_recover_objects():
    _, labels = synthetic_sample((96, 96), seed=5)
    config = EXACT.replace(seed_score="interior", landscape="interior")
    result = probabilities_to_instances(perfect_probabilities(labels), config)
    assert match_instances(result, labels, (0.5,)).at(0.5).f1 == 1.0


def test_bad_probabilities_are_explained():
    with pytest.raises(DataError, match=r"\(3, Y, X\).*\(2, 8, 8\)"):
        probabilities_to_instances(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(DataError, match="not a class map"):
        probabilities_to_instances(np.zeros((3, 8, 8), np.int64))
    with pytest.raises(ConfigError, match="foreground_threshold"):
        InstancePostprocessing(foreground_threshold=1.5)


def weak_probabilities(labels: np.ndarray) -> np.ndarray:
    """Interiors with P = (0.25, 0.45, 0.30): seed score 0.15, object probability 0.75."""
    probabilities = perfect_probabilities(labels)
    inside = labels_to_target(labels, "instance") == 1
    probabilities[:, inside] = np.array([[0.25], [0.45], [0.30]], np.float32)
    return probabilities


def test_tuning_finds_thresholds_that_work_and_ranks_the_grid():
    samples = [synthetic_sample((64, 64), seed=s)[1] for s in (1, 2)]
    probabilities = [weak_probabilities(labels) for labels in samples]
    grid = {"foreground_threshold": [0.5, 0.8], "seed_threshold": [0.4, 0.1]}
    best, table = tune_postprocessing(probabilities, samples, grid=grid, base=EXACT)
    assert (best.foreground_threshold, best.seed_threshold) == (0.5, 0.1)
    assert table["f1"].iloc[0] == 1.0
    assert list(table["f1"]) == sorted(table["f1"].fillna(-1), reverse=True)
    assert len(table) == 4
    too_strict = table[(table.foreground_threshold == 0.8)]
    assert too_strict["f1"].fillna(0).max() == 0.0
    direct = [match_instances(probabilities_to_instances(p, best), t, (0.5,)).at(0.5).f1
              for p, t in zip(probabilities, samples, strict=True)]
    assert np.mean(direct) == table["f1"].iloc[0]


def test_tuning_needs_matching_inputs():
    with pytest.raises(DataError, match="1 probability maps and 0 label"):
        tune_postprocessing([np.zeros((3, 4, 4), np.float32)], [])


def test_save_and_load_round_trip(tmp_path):
    config = InstancePostprocessing(foreground_threshold=0.35, seed_threshold=0.1, min_size=4)
    path = save_postprocessing(config, tmp_path)
    assert path == tmp_path / POSTPROCESSING_FILE
    loaded = load_postprocessing(tmp_path)
    assert loaded == config
    _, labels = synthetic_sample((64, 64), seed=2)
    probabilities = weak_probabilities(labels)
    assert np.array_equal(probabilities_to_instances(probabilities, config),
                          probabilities_to_instances(probabilities, loaded))


def test_missing_file_falls_back_to_defaults_with_a_message(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="microseg"):
        assert load_postprocessing(tmp_path) == InstancePostprocessing()
    assert POSTPROCESSING_FILE in caplog.text and "tune" in caplog.text


def test_unreadable_file_names_the_file(tmp_path):
    (tmp_path / POSTPROCESSING_FILE).write_text('{"foreground_treshold": 0.3}')
    with pytest.raises(ConfigError, match=f"{POSTPROCESSING_FILE}.*foreground_threshold"):
        load_postprocessing(tmp_path)


def test_distance_head_separates_touching_objects_from_their_cores():
    from microseg.inference.instances import expected_distance
    from microseg.transforms.targets import labels_to_target

    truth = np.zeros((24, 40), np.int32)
    yy, xx = np.mgrid[:24, :40]
    truth[(yy - 12) ** 2 + (xx - 12) ** 2 <= 81] = 1
    truth[((yy - 12) ** 2 + (xx - 27) ** 2 <= 81) & (truth == 0)] = 2  # touching discs
    levels = 4
    target = labels_to_target(truth, "instance", head="distance", levels=levels)
    probabilities = np.eye(levels + 1, dtype=np.float32)[target].transpose(2, 0, 1)
    config = InstancePostprocessing(head="distance", seed_threshold=0.5, min_size=1)
    found = probabilities_to_instances(probabilities, config)
    assert found.max() == 2
    assert match_instances(found, truth, (0.9,)).at(0.9).f1 == 1.0
    assert np.array_equal(found > 0, truth > 0)
    centres = (np.arange(1, levels + 1) - 0.5) / levels
    np.testing.assert_allclose(expected_distance(probabilities)[truth > 0],
                               centres[target[truth > 0] - 1], rtol=1e-6)


def test_distance_head_checks_its_channels():
    with pytest.raises(DataError, match="distance levels"):
        probabilities_to_instances(np.zeros((2, 8, 8), np.float32),
                                   InstancePostprocessing(head="distance"))
