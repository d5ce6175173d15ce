import json

import numpy as np
import pytest

from microseg.data.split import (
    SUBSETS,
    SplitManifest,
    load_manifest,
    manifest_entry,
    region_slices,
    split_pairs,
    split_regions,
    subset_sizes,
)
from microseg.errors import ConfigError, DataError, RunOrderError

STEMS = [f"cell_{i:02d}" for i in range(20)]


def test_every_image_in_exactly_one_set():
    sets = split_pairs(STEMS, seed=3)
    together = [s for subset in SUBSETS for s in sets[subset]]
    assert sorted(together) == sorted(STEMS) and len(set(together)) == len(STEMS)
    assert [len(sets[s]) for s in SUBSETS] == [14, 3, 3]


def test_split_is_reproducible_and_independent_of_input_order():
    first = split_pairs(STEMS, seed=11)
    assert split_pairs(list(reversed(STEMS)), seed=11) == first
    assert split_pairs(STEMS, seed=12) != first


@pytest.mark.parametrize("fractions", [(0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.5, 0.5, 0.0),
                                       (0.6, 0.3, 0.1)])
def test_sizes_follow_the_fractions_for_every_dataset_size(fractions):
    for n in range(3, 60):
        sizes = subset_sizes(n, fractions)
        assert sum(sizes.values()) == n
        # Rounding moves each set by less than 1; each set raised to one image takes one more.
        raised = sum(0 < n * f < 1 for f in fractions)
        for subset, fraction in zip(SUBSETS, fractions, strict=True):
            assert (sizes[subset] == 0) == (fraction == 0)
            assert abs(sizes[subset] - n * fraction) < 1 + raised


def test_three_images_give_one_per_set_and_fewer_suggest_a_region_split():
    sets = split_pairs(["a", "b", "c"])
    assert sorted(len(v) for v in sets.values()) == [1, 1, 1]
    with pytest.raises(DataError, match="at least 3") as caught:
        split_pairs(["a", "b"])
    assert "split_by='region'" in str(caught.value)


def test_invalid_inputs_are_refused():
    with pytest.raises(DataError, match="unique"):
        split_pairs(["a", "b", "b", "c"])
    for fractions in [(0.7, 0.2), (0.7, 0.2, 0.2), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)]:
        with pytest.raises(ConfigError, match="fractions"):
            split_pairs(STEMS, fractions=fractions)


@pytest.mark.parametrize("shape, axis, expected_axis", [((50, 300), None, 1), ((20, 64, 40), None, 1),
                                                        ((20, 64, 40), 0, 0)])
def test_regions_cover_the_image_once_along_the_chosen_axis(shape, axis, expected_axis):
    regions = split_regions(shape, (0.6, 0.2, 0.2), axis=axis)
    painted = np.zeros(shape, int)
    for k, subset in enumerate(SUBSETS, start=1):
        (box,) = regions[subset]
        assert all(box[a] == slice(0, shape[a]) for a in range(len(shape)) if a != expected_axis)
        painted[box] += k * 10
        assert abs((box[expected_axis].stop - box[expected_axis].start)
                   - shape[expected_axis] * (0.6, 0.2, 0.2)[k - 1]) <= 1
    assert set(np.unique(painted)) == {10, 20, 30}
    order = np.moveaxis(painted, expected_axis, 0)[:, *(0,) * (len(shape) - 1)]
    assert np.all(np.diff(order) >= 0), "train, then val, then test along the axis"


def test_regions_need_a_long_enough_axis_and_skip_empty_sets():
    assert split_regions((10, 10), (0.5, 0.5, 0.0))["test"] == []
    with pytest.raises(DataError, match="regions"):
        split_regions((2, 2), (0.7, 0.15, 0.15))


def _manifest(tmp_path):
    entry = manifest_entry("a", tmp_path / "images" / "a.tif", tmp_path / "labels" / "a.tif",
                           [1.5], [200.0], region=(slice(0, 10), slice(5, 20)))
    unlabelled = manifest_entry("b", tmp_path / "images" / "b.tif", None, [0.0], [1.0])
    return SplitManifest(data_dir=str(tmp_path), ndim=2, axes="CYX", n_channels=1,
                         task="instance", n_classes=3, normalization={"low": 1.0},
                         train=[entry], val=[unlabelled], test=[])


def test_manifest_round_trip_and_entries(tmp_path):
    manifest = _manifest(tmp_path)
    path = manifest.save(tmp_path / "run" / "data" / "split.json")
    loaded = load_manifest(tmp_path / "run")
    assert loaded == manifest == load_manifest(path)
    entry = loaded.entries("train")[0]
    assert entry["region"] == [[0, 10], [5, 20]] and entry["image"].startswith("/")
    assert region_slices(entry["region"]) == (slice(0, 10), slice(5, 20))
    assert loaded.entries("val")[0]["label"] is None
    entry["stem"] = "changed"
    assert loaded.stems("train") == ["a"], "entries are copies"
    assert list(loaded.table()["subset"]) == ["train", "val"]
    with pytest.raises(ConfigError, match="subset"):
        loaded.entries("validation")


def test_missing_or_foreign_manifests_are_explained(tmp_path):
    with pytest.raises(RunOrderError, match="01_prepare_data"):
        load_manifest(tmp_path / "run")
    with pytest.raises(RunOrderError, match="01_prepare_data"):
        load_manifest(tmp_path / "nowhere.json")
    data = _manifest(tmp_path).to_dict()
    (tmp_path / "newer.json").write_text(json.dumps({**data, "version": 2}))
    with pytest.raises(ConfigError, match="newer microseg"):
        load_manifest(tmp_path / "newer.json")
    (tmp_path / "other.json").write_text(json.dumps({"epochs": 3}))
    with pytest.raises(ConfigError, match="not a split manifest"):
        load_manifest(tmp_path / "other.json")
