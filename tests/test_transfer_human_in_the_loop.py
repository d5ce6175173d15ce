"""Correction rounds: written only into the run folder, read back, added to the training set."""

import os

import numpy as np
import pytest

from microseg.data.dataset import load_subset
from microseg.data.split import SplitManifest, manifest_entry
from microseg.errors import DataError, OutputExistsError
from microseg.inference.instances import InstancePostprocessing
from microseg.io import read_image, read_label, write_image
from microseg.metrics import match_instances
from microseg.models import TrainedModel
from microseg.transfer.human_in_the_loop import (
    _changed_share,
    add_corrections_to_split,
    correction_round_dir,
    read_corrections,
    simulate_corrections,
    write_correction_round,
    write_rounds_csv,
)
from microseg.transforms.normalization import PercentileNormalization, percentile_statistics
from microseg.transforms.targets import labels_to_target
from test_transfer_quality import ClassValueOracle, disc_labels, trained


def user_folder(root):
    """images/ hold the class map (values 0..2, what the oracle reads once normalized to 0..1);
    labels/ hold the true objects."""
    truths = {"cell_a": disc_labels(),
              "cell_b": disc_labels(shape=(40, 56), centres=((20, 14), (20, 40)), radius=8)}
    for stem, labels in truths.items():
        write_image(root / "images" / f"{stem}.tif",
                    labels_to_target(labels, "instance")[None].astype(np.uint16), axes="CYX")
        write_image(root / "labels" / f"{stem}.tif", labels.astype(np.uint16), axes="YX")
    return truths


def snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def round_one(tmp_path):
    user = tmp_path / "user_data"
    truths = user_folder(user)
    before = snapshot(user)
    run_dir = tmp_path / "run"
    # percentiles 0 and 100 map the class values 0..2 to 0..1 exactly: the oracle reads 2·x
    model = TrainedModel.from_network(
        ClassValueOracle(scale=2.0), halo=(4, 4), postprocessing=InstancePostprocessing(),
        normalization=PercentileNormalization(low=0.0, high=100.0))
    round_ = write_correction_round(run_dir, 1, model, sorted((user / "images").iterdir()))
    return round_, user, truths, before, run_dir


def test_round_writes_only_into_its_new_folder(round_one):
    round_, user, _, before, run_dir = round_one
    assert snapshot(user) == before
    assert round_.folder == correction_round_dir(run_dir, 1) == run_dir / "corrections" / "round_1"
    names = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert names == sorted(f"corrections/round_1/{n}" for n in [
        "README.txt", "round.json", "images/cell_a.tif", "images/cell_b.tif",
        "labels/cell_a.tif", "labels/cell_b.tif", "predicted/cell_a.tif", "predicted/cell_b.tif",
        "qupath/cell_a.geojson", "qupath/cell_b.geojson", "fiji/cell_a.zip", "fiji/cell_b.zip"])
    for stem in ("cell_a", "cell_b"):
        copied = round_.images_dir / f"{stem}.tif"
        assert not copied.is_symlink()
        assert np.array_equal(read_image(copied), read_image(user / "images" / f"{stem}.tif"))
    assert all(tool in round_.readme.read_text() for tool in ("napari", "Fiji", "QuPath"))


def test_predictions_are_editable_instance_labels(round_one):
    round_, _, truths, _, _ = round_one
    for stem, truth in truths.items():
        predicted = read_label(round_.labels_dir / f"{stem}.tif")
        assert predicted.shape == truth.shape
        assert match_instances(predicted, truth, thresholds=(0.9,)).at(0.9).f1 == 1.0
        assert np.array_equal(predicted, read_label(round_.predicted_dir / f"{stem}.tif"))


def test_a_round_is_never_written_over(round_one):
    round_, user, _, _, run_dir = round_one
    with pytest.raises(OutputExistsError, match="already holds results"):
        write_correction_round(run_dir, 1, trained(ClassValueOracle()),
                               [user / "images" / "cell_a.tif"])


def test_simulated_corrections_round_trip(round_one, tmp_path):
    round_, user, truths, before, _ = round_one
    corrected = {stem: np.where(t > 0, t + 10, 0) for stem, t in truths.items()}
    corrected["cell_b"][:8] = 3
    truth_dir = tmp_path / "truth"
    for stem, labels in corrected.items():
        write_image(truth_dir / f"{stem}.tif", labels.astype(np.uint16), axes="YX")
    simulate_corrections(round_, truth_dir)
    pairs, changed = read_corrections(round_)
    assert [p.stem for p in pairs] == ["cell_a", "cell_b"]
    for pair in pairs:
        assert np.array_equal(read_label(pair.label), corrected[pair.stem])
    # relabelling objects is no change; the painted band is
    assert changed["cell_a"] == 0.0
    predicted = read_label(round_.predicted_dir / "cell_b.tif")
    band = predicted[:8]
    expected = np.sum(band == 0) + np.sum(band > 0) - max(
        np.sum(band == k) for k in np.unique(band[band > 0])) if (band > 0).any() else band.size
    assert changed["cell_b"] == pytest.approx(expected / predicted.size)
    assert snapshot(user) == before


def test_simulation_lists_missing_truth(round_one, tmp_path):
    round_ = round_one[0]
    (tmp_path / "empty_truth").mkdir()
    write_image(tmp_path / "empty_truth" / "cell_a.tif", np.zeros((48, 40), np.uint16), axes="YX")
    with pytest.raises(DataError) as caught:
        simulate_corrections(round_, tmp_path / "empty_truth")
    assert caught.value.problems == ["no label image for 'cell_b'"]


def test_changed_share_against_brute_force(rng):
    predicted = rng.integers(0, 4, size=(20, 20))
    corrected = np.where(rng.random((20, 20)) < 0.2, rng.integers(0, 4, size=(20, 20)), predicted)
    permuted = np.array([0, 3, 1, 2])[corrected]
    flipped = (predicted > 0) != (permuted > 0)
    kept = 0
    for object_id in range(1, 4):
        inside = (predicted == object_id) & (permuted > 0)
        kept += max(np.sum(permuted[inside] == k) for k in range(1, 4))
    expected = (flipped.sum() + np.sum((predicted > 0) & (permuted > 0)) - kept) / 400
    assert _changed_share(predicted, permuted, "instance") == pytest.approx(expected)
    assert _changed_share(predicted, corrected, "semantic") == np.mean(predicted != corrected)


def test_corrections_join_the_training_set(round_one, tmp_path):
    round_, user, truths, _, _ = round_one
    simulate_corrections(round_, user / "labels")
    pairs, _ = read_corrections(round_)
    config = PercentileNormalization()
    train_path = user / "images" / "cell_a.tif"
    entry = manifest_entry("cell_a", train_path, user / "labels" / "cell_a.tif",
                           *percentile_statistics(read_image(train_path), config))
    manifest = SplitManifest(str(user), 2, "CYX", 1, "instance", 3, config.to_dict(),
                             train=[entry], val=[entry], test=[])
    second = [p for p in pairs if p.stem == "cell_b"]
    grown = add_corrections_to_split(manifest, second, 1)
    with pytest.raises(DataError, match="already in the split"):
        add_corrections_to_split(grown, second, 2)
    assert manifest.stems("train") == ["cell_a"]
    assert grown.stems("train") == ["cell_a", "round1/cell_b"]
    assert grown.val == manifest.val
    added = grown.train[1]
    image = read_image(round_.images_dir / "cell_b.tif")
    low, high = percentile_statistics(image, config)
    assert added["norm_low"] == list(low) and added["norm_high"] == list(high)
    samples = load_subset(grown, "train")
    assert np.array_equal(samples[1].label, truths["cell_b"])
    assert os.path.commonpath([added["image"], str(round_.folder)]) == str(round_.folder)


def test_rounds_csv(tmp_path):
    import pandas as pd

    path = write_rounds_csv([{"round": 1, "images_added": ["a", "b"], "dice_after": 0.5}],
                            tmp_path / "rounds.csv")
    table = pd.read_csv(path)
    assert table.to_dict("records") == [{"round": 1, "images_added": "a;b", "dice_after": 0.5}]


def test_exports_hold_the_predictions_for_qupath_and_fiji(round_one):
    from microseg.io.qupath import geojson_to_labels
    from microseg.io.roi import rois_to_labels

    round_ = round_one[0]
    for stem in round_.stems:
        predicted = read_label(round_.predicted_dir / f"{stem}.tif")
        from_qupath = geojson_to_labels(round_.qupath_dir / f"{stem}.geojson", predicted.shape)
        assert np.array_equal(from_qupath.labels > 0, predicted > 0)
        assert match_instances(from_qupath.labels, predicted, thresholds=(0.99,)).at(0.99).f1 == 1
        from_fiji = rois_to_labels(round_.fiji_dir / f"{stem}.zip", predicted.shape)
        assert match_instances(from_fiji, predicted, thresholds=(0.99,)).at(0.99).f1 == 1
    pairs, changed = read_corrections(round_)
    assert [p.label.parent.name for p in pairs] == ["labels", "labels"]
    assert changed == {"cell_a": 0.0, "cell_b": 0.0}


@pytest.mark.parametrize("tool", ["qupath", "fiji"])
def test_corrections_made_in_qupath_or_fiji_are_read_back(round_one, tool):
    from microseg.io.qupath import write_geojson
    from microseg.io.roi_export import write_roiset

    round_, _, truths, _, _ = round_one
    corrected = truths["cell_b"].copy()
    corrected[corrected == 2] = 0                  # the person deletes one object
    corrected[2:6, 2:8] = 7                        # and draws a new one
    if tool == "qupath":
        write_geojson(round_.qupath_dir / "cell_b.geojson", corrected)
    else:
        write_roiset(round_.fiji_dir / "cell_b.zip", corrected, overwrite=True)
    pairs, changed = read_corrections(round_)
    by_stem = {p.stem: p for p in pairs}
    assert by_stem["cell_b"].label == round_.corrected_dir / "cell_b.tif"
    assert match_instances(read_label(by_stem["cell_b"].label), corrected,
                           thresholds=(0.99,)).at(0.99).f1 == 1
    assert np.array_equal(read_label(by_stem["cell_a"].label),
                          read_label(round_.labels_dir / "cell_a.tif"))
    assert changed["cell_b"] > 0 and changed["cell_a"] == 0


def test_corrections_in_two_places_are_refused(round_one):
    from microseg.io.qupath import write_geojson

    round_, _, truths, _, _ = round_one
    write_geojson(round_.qupath_dir / "cell_a.geojson", truths["cell_a"])
    write_image(round_.labels_dir / "cell_a.tif", truths["cell_a"].astype(np.uint16), axes="YX",
                overwrite=True)
    with pytest.raises(DataError) as caught:
        read_corrections(round_)
    assert caught.value.problems == ["cell_a: changed labels/ and qupath/; keep the corrections "
                                     "in one of them (copy the other back from predicted/ or "
                                     "delete it)"]


def test_the_pause_for_corrections_names_every_place_to_correct(round_one, monkeypatch, capsys):
    from microseg.recipes.fine_tune import ask_for_corrections

    round_, prompts = round_one[0], []
    monkeypatch.setattr("builtins.input", lambda prompt="": prompts.append(prompt) or "")
    ask_for_corrections(round_)
    printed = capsys.readouterr().out
    assert round_.readme.read_text() in printed and len(prompts) == 1
    assert f"{round_.folder} in one place: labels/ (label images), qupath/ (QuPath GeoJSON), " \
           f"fiji/ (Fiji ROI sets)" in printed
