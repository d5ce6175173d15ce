"""Benchmark logic: FLOP counts against hand counts, fractions of the measured ceilings, error
rows of the training benchmark's switch matrix, and the real-data benchmark's split, label
conversion and scores (on data made here: the shared real data sets are never needed)."""

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import fine_tune_curve  # noqa: E402
import flops  # noqa: E402
import gpu_ceilings  # noqa: E402
import imaging_test  # noqa: E402
import real_data  # noqa: E402
import train_throughput  # noqa: E402

from microseg.models import ModelConfig, model_preset  # noqa: E402
from microseg.transforms.colour import haematoxylin  # noqa: E402


def test_one_convolution_counts_as_a_hand_count():
    # 2 FLOPs x batch 2 x 5 output channels x 6*7*8 voxels x 3 input channels x 27 taps
    expected = 2 * 2 * 5 * 336 * 3 * 27
    conv = torch.nn.Conv3d(3, 5, kernel_size=3, padding=1).to("meta")
    assert flops.count_flops(conv, (2, 3, 6, 7, 8)) == expected == 544_320
    assert flops.conv_flops(3, 5, (3, 3, 3), (6, 7, 8), batch=2) == expected
    # the input needs no gradient: backward computes the weight gradient only, as many FLOPs
    assert flops.count_flops(conv, (2, 3, 6, 7, 8), backward=True) == 2 * expected


def test_one_transposed_convolution_counts_as_a_hand_count():
    # every one of 4 * 5*6 input values meets a 2x2 kernel for each of 2 output channels
    expected = 2 * 4 * 30 * 2 * 4
    up = torch.nn.ConvTranspose2d(4, 2, kernel_size=2, stride=2).to("meta")
    assert flops.count_flops(up, (1, 4, 5, 6)) == expected == 1920
    assert flops.transposed_conv_flops(4, 2, (2, 2), (5, 6)) == expected


@pytest.mark.parametrize("config, patch, batch", [
    (model_preset("paper3d"), (96, 96, 96), 1),
    (ModelConfig(architecture="classic_unet", ndim=2, in_channels=2, out_classes=4,
                 channels=(4, 8, 16, 8), strides=(2, 2, 2)), (16, 24), 3),
])
def test_classic_unet_hand_count_equals_the_counter(config, patch, batch):
    model = flops.meta_network(config)
    counted = flops.count_flops(model, (batch, config.in_channels, *patch))
    assert counted == flops.classic_unet_flops(config, patch, batch)


def test_flops_per_voxel_do_not_depend_on_the_patch():
    small = flops.network_costs("default2d", 1, (32, 32))
    large = flops.network_costs("default2d", 2, (64, 96))
    for key in ("forward_flops_per_voxel", "training_flops_per_voxel"):
        assert small[key] == pytest.approx(large[key], rel=1e-12)
    assert large["training_flops"] > 2 * large["forward_flops"]
    assert large["training_bytes"] > large["forward_bytes"] > 0


CEILINGS = {"device_type": "cuda", "fp32_flops_per_s": 5e13, "tf32_flops_per_s": 4e14,
            "bf16_flops_per_s": 8e14, "copy_bytes_per_s": 3e12, "cudnn_allow_tf32": True}


def train_row(**changes):
    row = {"setting": "3d-paper", "model": "paper3d", "patch": [96, 96, 96], "batch": 1,
           "accumulation": 8, "precision": "bf16", "compute_dtype": "bfloat16",
           "channels_last": False, "compile": True, "device_type": "cuda", "status": "ok",
           "patches_per_second": 4.0, "data_wait_fraction": 0.01}
    return row | changes


def costs(work):
    return {"flops_per_voxel": 1e6 if work["pass"] == "training" else 5e5,
            "bytes_per_voxel": 2e4}


def test_fraction_of_the_ceiling_per_row():
    tiled = {"method": "microseg", "ndim": 2, "tile": 256, "windows": 400, "seconds": 10.0,
             "valid_pixels_per_s": 1.0, "device": "cuda"}
    rows = gpu_ceilings.fraction_rows(
        [train_row(), train_row(precision="fp32", compute_dtype="float32"), tiled,
         train_row(status="error"), train_row(device_type="cpu")], CEILINGS, costs)
    assert len(rows) == 4
    bf16, fp32, inference, other_device = rows
    voxels = 4.0 * 96**3
    assert bf16["voxels_per_second"] == voxels
    assert bf16["ceiling"] == "bf16"
    assert bf16["achieved_flops_per_s"] == pytest.approx(voxels * 1e6)
    assert bf16["compute_fraction"] == pytest.approx(3_538_944e6 / 8e14)
    assert bf16["memory_fraction"] == pytest.approx(3_538_944 * 2e4 / 3e12)
    assert bf16["bottleneck"] == "overhead"
    assert fp32["ceiling"] == "tf32"
    assert fp32["compute_fraction"] == pytest.approx(3_538_944e6 / 4e14)
    assert bf16["label"] == "train 3d-paper bf16 compile"
    # 400 windows of 256² per 10 s, forward FLOPs
    assert inference["voxels_per_second"] == pytest.approx(400 * 65536 / 10)
    assert inference["compute_fraction"] == pytest.approx(2_621_440 * 5e5 / 4e14)
    assert inference["memory_fraction"] == pytest.approx(2_621_440 * 2e4 / 3e12)
    assert inference["bottleneck"] == "overhead"
    assert "no fraction" in other_device["note"] and "compute_fraction" not in other_device


def test_float32_on_the_cpu_is_bounded_by_the_float32_rate():
    ceilings = CEILINGS | {"device_type": "cpu", "tf32_flops_per_s": None,
                           "cudnn_allow_tf32": None}
    assert gpu_ceilings.ceiling_for("float32", ceilings) == ("fp32", 5e13)
    assert gpu_ceilings.ceiling_for("bfloat16", ceilings) == ("bf16", 8e14)
    no_tf32 = CEILINGS | {"cudnn_allow_tf32": False}
    assert gpu_ceilings.ceiling_for("float32", no_tf32) == ("fp32", 5e13)


@pytest.mark.parametrize("compute, memory, data_wait, expected", [
    (0.6, 0.3, 0.01, "compute"),
    (0.3, 0.7, None, "memory bandwidth"),
    (0.1, 0.2, 0.1, "overhead"),
    (0.9, 0.1, 0.5, "data loading"),
])
def test_bottleneck(compute, memory, data_wait, expected):
    assert gpu_ceilings.bottleneck(compute, memory, data_wait) == expected


def test_a_failing_combination_becomes_an_error_row():
    stub = {"setting": "2d-default", "precision": "bf16", "compile": True}
    failed = train_throughput.run_worker(
        [sys.executable, "-c", "import sys; sys.exit('torch.compile: no C++ compiler')"],
        stub, timeout=60)
    assert failed == stub | {"status": "error",
                             "error": "exit status 1: torch.compile: no C++ compiler"}
    ran = train_throughput.run_worker(
        [sys.executable, "-c", "print('warming up'); print('{\"status\": \"ok\", \"x\": 2}')"],
        stub, timeout=60)
    assert ran == {"status": "ok", "x": 2}
    slow = train_throughput.run_worker([sys.executable, "-c", "import time; time.sleep(5)"],
                                       stub, timeout=0.5)
    assert slow["status"] == "error" and slow["error"].startswith("timed out")


# ----------------------------------------------------------------------------- real data


def test_the_frozen_validation_images_are_the_documented_draw():
    usiigaci = [f"train_set{k}" for k in range(1, 46)]
    isbi = [f"slice_{k:02d}" for k in range(25)]
    assert real_data.draw_validation(usiigaci, 5) == list(real_data.SPLITS["usiigaci_phase"].val)
    assert real_data.draw_validation(isbi, 3) == list(real_data.SPLITS["isbi2012_em"].val)


def test_the_draw_is_the_one_the_library_splits_with():
    from microseg.data.split import split_pairs

    stems = [f"slice_{k:02d}" for k in range(25)]
    assert split_pairs(stems, (22 / 25, 3 / 25, 0.0), seed=0)["val"] == \
        real_data.draw_validation(stems, 3, seed=0)


def test_interior_becomes_four_connected_objects_and_membrane_background():
    binary = np.array([[255, 255, 0, 0],
                       [255, 255, 0, 255],
                       [0, 0, 255, 255],
                       [255, 0, 0, 0]], np.uint8)
    labels, counts = real_data.interior_instances(binary)
    # the two squares touch only diagonally: a diagonal membrane separates them
    assert counts == {"objects": 3}
    assert labels.tolist() == [[1, 1, 0, 0], [1, 1, 0, 2], [0, 0, 2, 2], [3, 0, 0, 0]]


def test_each_id_keeps_its_largest_eight_connected_piece():
    labels = np.zeros((6, 8), np.uint16)
    labels[0:2, 0:3] = 1          # 6 pixels
    labels[4, 6:8] = 1            # a detached speck of the same id: 2 pixels
    labels[3, 0] = labels[4, 1] = 2   # diagonal neighbours: one 8-connected piece
    labels[0, 6] = 3
    cleaned, counts = real_data.keep_largest_piece(labels)
    expected = labels.copy()
    expected[4, 6:8] = 0
    np.testing.assert_array_equal(cleaned, expected)
    assert cleaned.dtype == labels.dtype
    assert counts == {"ids": 3, "ids_in_pieces": 1, "pixels_removed": 2}


def _brute_force_tp(truth, pred, threshold):
    """Most pairs with IoU >= threshold, trying every one-to-one assignment."""
    t_ids, p_ids = np.unique(truth[truth > 0]), np.unique(pred[pred > 0])
    iou = np.zeros((len(t_ids), len(p_ids)))
    for i, t in enumerate(t_ids):
        for j, p in enumerate(p_ids):
            a, b = truth == t, pred == p
            iou[i, j] = (a & b).sum() / (a | b).sum()
    best, best_iou = 0, 0.0
    small, large = (t_ids, p_ids) if len(t_ids) <= len(p_ids) else (p_ids, t_ids)
    for chosen in itertools.permutations(range(len(large)), len(small)):
        pairs = [(k, c) if len(t_ids) <= len(p_ids) else (c, k) for k, c in enumerate(chosen)]
        good = [iou[i, j] for i, j in pairs if iou[i, j] >= threshold]
        if (len(good), sum(good)) > (best, best_iou):
            best, best_iou = len(good), sum(good)
    return best, best_iou, len(t_ids), len(p_ids)


def _random_labels(rng, shape=(12, 12), n=4):
    labels = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        y, x = rng.integers(0, shape[0] - 2), rng.integers(0, shape[1] - 2)
        h, w = rng.integers(2, 6), rng.integers(2, 6)
        labels[y:y + h, x:x + w] = k + 10 * (k % 2)   # ids with gaps, later ones on top
    return labels


def _shifted(rng, labels):
    moved = np.roll(labels, tuple(rng.integers(-1, 2, size=2)), axis=(0, 1))
    moved[rng.random(labels.shape) < 0.05] = 0
    return moved


def test_scores_equal_a_brute_force_count():
    rng = np.random.default_rng(7)
    pairs = []
    for k in range(4):
        truth = _random_labels(rng)
        pairs.append((f"image{k}", _shifted(rng, truth), truth))
    scores = real_data.score_instances(pairs)
    per_image, tp, fp, fn, sum_iou = [], 0, 0, 0, 0.0
    for _, pred, truth in pairs:
        counts = [_brute_force_tp(truth, pred, t) for t in real_data.DSB_THRESHOLDS]
        per_image.append(np.mean([c[0] / (c[2] + c[3] - c[0]) for c in counts]))
        tp0, iou0, n_true, n_pred = counts[0]
        tp, fp, fn, sum_iou = tp + tp0, fp + n_pred - tp0, fn + n_true - tp0, sum_iou + iou0
    assert (scores["tp"], scores["fp"], scores["fn"]) == (tp, fp, fn)
    assert scores["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert scores["precision"] == pytest.approx(tp / (tp + fp))
    assert scores["recall"] == pytest.approx(tp / (tp + fn))
    assert scores["panoptic_quality"] == pytest.approx(sum_iou / (tp + fp / 2 + fn / 2))
    assert scores["dsb_score"] == pytest.approx(np.mean(per_image))
    assert [r["dsb_score"] for r in scores["per_image"]] == pytest.approx(per_image)
    assert 0 < scores["dsb_score"] < scores["f1"] < 1   # a test that can tell them apart


def test_scoring_folders_reads_what_the_peers_write(tmp_path):
    rng = np.random.default_rng(3)
    truth, pred = tmp_path / "truth", tmp_path / "pred"
    truth.mkdir(), pred.mkdir()
    pairs = []
    for k in range(2):
        t = _random_labels(rng)
        p = _shifted(rng, t)
        tifffile.imwrite(truth / f"s{k}.tif", t.astype(np.uint16))
        tifffile.imwrite(pred / f"s{k}.tif", p.astype(np.uint16))
        pairs.append((f"s{k}", p, t))
    from_files = real_data.score_folders(pred, truth)
    assert from_files["dsb_score"] == pytest.approx(real_data.score_instances(pairs)["dsb_score"])
    (pred / "s1.tif").unlink()
    with pytest.raises(SystemExit, match="s1"):
        real_data.score_folders(pred, truth)


def _fake_isbi(root: Path) -> Path:
    data = root / "isbi2012_em"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    binary = np.full((16, 16), 255, np.uint8)
    binary[:, 7] = 0                                     # a membrane: two objects
    for k in range(30):
        tifffile.imwrite(data / "images" / f"slice_{k:02d}.tif", np.full((16, 16), k, np.uint8))
        tifffile.imwrite(data / "labels" / f"slice_{k:02d}.tif", binary)
    return data


def _listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_layout_holds_the_fixed_split_and_never_writes_into_the_data(tmp_path):
    data = _fake_isbi(tmp_path)
    before = _listing(data)
    work = tmp_path / "work"
    layout = real_data.write_layout(data, work)
    assert layout["test"] == [f"slice_{k}" for k in range(25, 30)]
    assert layout["val"] == list(real_data.SPLITS["isbi2012_em"].val)
    assert len(layout["train"]) == 22 and not set(layout["train"]) & set(layout["val"])
    assert layout["label_counts"]["test"] == {"objects": 10}
    link = work / "data" / "trainval" / "images" / "slice_00.tif"
    assert link.is_symlink() and link.resolve() == (data / "images" / "slice_00.tif").resolve()
    labels = tifffile.imread(work / "data" / "test" / "labels" / "slice_27.tif")
    assert sorted(np.unique(labels)) == [0, 1, 2] and (labels[:, 7] == 0).all()
    assert not (work / "data" / "test" / "images" / "slice_00.tif").exists()
    assert real_data.write_layout(data, work) == json.loads((work / "split.json").read_text())
    assert _listing(data) == before
    record = json.loads((work / "split.json").read_text())
    record["val"] = ["slice_00", "slice_02", "slice_03"]
    (work / "split.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="another split"):
        real_data.write_layout(data, work)


def test_the_manifest_gets_the_fixed_validation_images(tmp_path):
    from microseg.data.split import load_manifest
    from microseg.recipes.prepare import prepare_data

    work = tmp_path / "work"
    layout = real_data.write_layout(_fake_isbi(tmp_path), work)
    run = tmp_path / "run"
    # another seed than the fixed draw's, so that prepare_data's own split differs
    prepare_data(run, data_dir=work / "data" / "trainval", fractions=(22 / 25, 3 / 25, 0.0),
                 seed=5)
    assert load_manifest(run).stems("val") != layout["val"]
    norm = {e["stem"]: e["norm_high"] for s in ("train", "val") for e in
            load_manifest(run).entries(s)}
    assert real_data.enforce_split(run, layout) is True
    manifest = load_manifest(run)
    assert manifest.stems("val") == layout["val"] and manifest.stems("train") == layout["train"]
    assert {e["stem"]: e["norm_high"] for e in manifest.entries("val")} == \
        {s: norm[s] for s in layout["val"]}
    assert real_data.enforce_split(run, layout) is False
    with pytest.raises(SystemExit, match="differ"):
        real_data.enforce_split(run, {**layout, "train": layout["train"][1:]})


def test_settings_are_python_literals_or_strings():
    assert real_data.parse_settings(["epochs=40", "tile_shape=(256, 256)", "head=distance",
                                     "tta=True", "max_minutes=None", "name='a=b'"]) == {
        "epochs": 40, "tile_shape": (256, 256), "head": "distance", "tta": True,
        "max_minutes": None, "name": "a=b"}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        real_data.parse_settings(["epochs"])


class _Trainer:
    stopped_early = False


def test_the_budget_stops_training_once():
    unlimited, trainer = real_data.TrainingBudget(), _Trainer()
    unlimited(trainer, {"epoch": 1})
    assert not trainer.stopped_early and unlimited.stopped_at_epoch is None
    spent = real_data.TrainingBudget(wall_seconds=0.0)
    spent(trainer, {"epoch": 3})
    spent(trainer, {"epoch": 4})
    assert trainer.stopped_early and spent.stopped_at_epoch == 3


def test_evaluating_again_names_the_missing_row(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "peer.json").write_text(json.dumps(
        {"label": "x", "tool": "StarDist", "run_dir": str(tmp_path / "runs" / "x")}))
    with pytest.raises(SystemExit, match="no microseg row 'x'"):
        real_data.evaluate_again(tmp_path, "x", "x, TTA", {"tta": True})


def test_hashed_split_is_stratified_disjoint_and_independent_of_order():
    strata = {f"{k:03d}": "small" if k < 80 else "large" for k in range(100)}
    split = real_data.hashed_split(strata)
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(strata)
    assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
    assert [len(split[k]) for k in ("train", "val", "test")] == [80, 10, 10]
    assert sum(strata[s] == "large" for s in split["test"]) == 2, "10 % of each stratum"
    shuffled = dict(reversed(list(strata.items())))
    assert real_data.hashed_split(shuffled) == split
    # Adding images to a stratum never moves a test image to training.
    grown = real_data.hashed_split({**strata, **{f"new{k}": "small" for k in range(10)}})
    assert not set(split["test"]) & set(grown["train"])
    assert real_data.hashed_split(strata, salt="another") != split


def test_dsb_split_grey_and_colour_variants_are_the_same_split_restricted(tmp_path):
    rows = ["id,shape,n_nuclei,grayscale"] + [
        f"img{k:03d},\"[256, 256, 3]\",5,{k % 5 != 0}" for k in range(60)]
    (tmp_path / "index.csv").write_text("\n".join(rows) + "\n")
    stems = [f"img{k:03d}" for k in range(60)]
    full = real_data.dsb_split(tmp_path, stems)
    grey = real_data.dsb_split(tmp_path, stems, grey_only=True)
    colour = real_data.dsb_split(tmp_path, stems, colour_only=True)
    for subset in ("train", "val", "test"):
        assert grey[subset] == [s for s in full[subset] if int(s[3:]) % 5 != 0]
        assert colour[subset] == [s for s in full[subset] if int(s[3:]) % 5 == 0]
    with pytest.raises(SystemExit, match="no row for"):
        real_data.dsb_split(tmp_path, [*stems, "unknown"])


def test_worst_images_are_the_lowest_f1_first():
    row = {"scores": {"per_image": [
        {"stem": "a", "n_true": 4, "n_pred": 28, "f1": 0.2, "dsb_score": 0.1},
        {"stem": "b", "n_true": 98, "n_pred": 65, "f1": 0.7, "dsb_score": 0.4},
        {"stem": "c", "n_true": 10, "n_pred": 10, "f1": 1.0, "dsb_score": 0.8},
        {"stem": "d", "n_true": 0, "n_pred": 0, "f1": None, "dsb_score": None}]}}
    assert [r["stem"] for r in real_data.worst_images(row, 2)] == ["a", "b"]


def test_scaled_test_images_keep_dtype_and_labels_keep_their_ids(tmp_path):
    work = tmp_path / "work"
    image = np.zeros((20, 30, 3), np.uint8)
    image[5:15, 5:25] = 200
    label = np.zeros((20, 30), np.uint16)
    label[5:15, 5:12], label[5:15, 14:25] = 3, 7
    tifffile.imwrite(work_file(work, "images"), image)
    tifffile.imwrite(work_file(work, "labels"), label)
    folder = real_data.write_scaled_test(work, 2.0)
    big_image = tifffile.imread(folder / "images" / "a.tif")
    big_label = tifffile.imread(folder / "labels" / "a.tif")
    assert big_image.shape == (40, 60, 3) and big_image.dtype == np.uint8
    assert big_label.shape == (40, 60) and big_label.dtype == np.uint16
    assert set(np.unique(big_label)) == {0, 3, 7}, "nearest neighbour: no mixed ids"
    # an object's area grows by the factor squared (up to its border pixels)
    assert abs(int((big_label == 7).sum()) - 4 * int((label == 7).sum())) <= 2 * 2 * 11
    assert big_image[20, 30].tolist() == [200, 200, 200] and big_image[0, 0].tolist() == [0, 0, 0]
    small = tifffile.imread(real_data.write_scaled_test(work, 0.5) / "labels" / "a.tif")
    assert small.shape == (10, 15)
    assert real_data.write_scaled_test(work, 2.0) == folder, "written once, reused"


def work_file(work, kind):
    path = work / "data" / "test" / kind / "a.tif"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_a_peer_is_scored_on_the_scaled_test_images(tmp_path):
    import json

    work = tmp_path / "work"
    label = np.zeros((20, 30), np.uint16)
    label[5:15, 5:12], label[5:15, 14:25] = 3, 7
    tifffile.imwrite(work_file(work, "images"), np.zeros((20, 30), np.uint8))
    tifffile.imwrite(work_file(work, "labels"), label)
    peer = tmp_path / "peer"
    peer.mkdir()
    (peer / "run.json").write_text(json.dumps({"tool": "X"}))
    big = tifffile.imread(real_data.write_scaled_test(work, 2.0) / "labels" / "a.tif")
    one_lost = np.where(big == 7, 0, big).astype(np.uint16)
    (peer / "predictions_x2").mkdir()
    tifffile.imwrite(peer / "predictions_x2" / "a.tif", one_lost)
    row = real_data.score_peer(work, peer, 2.0)
    assert row["test_scale"] == 2.0 and row["tool"] == "X"
    image = row["scores"]["per_image"][0]
    assert (image["n_true"], image["n_pred"], image["f1"]) == (2, 1, pytest.approx(2 / 3))
    with pytest.raises(SystemExit, match="no predicted labels"):
        real_data.score_peer(work, peer, 3.0)


def test_fine_tune_curve_targets_are_grey_and_hold_n_training_images_and_the_validation_ones(
        tmp_path):
    rng = np.random.default_rng(0)
    stems = [f"s{k}" for k in range(6)]
    for stem in stems:
        for sub, array in (("images", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)),
                           ("labels", np.arange(256, dtype=np.uint16).reshape(16, 16))):
            (tmp_path / "data" / "trainval" / sub).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(tmp_path / "data" / "trainval" / sub / f"{stem}.tif", array)
    split = {"train": stems[:4], "val": stems[4:], "test": []}
    folder, n_val = fine_tune_curve.target_folder(tmp_path, split, 2)
    assert n_val == 2
    assert sorted(p.stem for p in (folder / "images").iterdir()) == ["s0", "s1", "s2", "s4", "s5"]
    rgb = tifffile.imread(tmp_path / "data" / "trainval" / "images" / "s1.tif").astype(float)
    luminance = rgb @ np.array([0.2125, 0.7154, 0.0721])  # ITU-R BT.709, as rgb2gray
    grey = tifffile.imread(folder / "images" / "s1.tif")
    assert grey.dtype == np.uint8 and grey.shape == (16, 16)
    assert np.abs(grey - luminance).max() <= 0.5 + 1e-9
    assert np.array_equal(tifffile.imread(folder / "labels" / "s1.tif"),
                          np.arange(256).reshape(16, 16))
    stained, _ = fine_tune_curve.target_folder(tmp_path, split, 2, "haematoxylin")
    assert stained.name == "haematoxylin-n2"
    found = tifffile.imread(stained / "images" / "s1.tif")
    assert found.dtype == np.float32
    np.testing.assert_allclose(found, haematoxylin(rgb.astype(np.uint8)), atol=1e-6)


def test_imaging_changes_against_their_definitions():
    """Each change of the imaging test computed another way: the dim 16-bit image is the same
    image up to an affine map (so the same after percentile normalization), Poisson photons
    average to the intensity times the peak, gamma and shading are pixel-wise formulas."""
    from microseg.transforms.normalization import (
        PercentileNormalization,
        normalize,
        percentile_statistics,
    )

    rng = np.random.default_rng(1)
    image = rng.integers(5, 200, (64, 80)).astype(np.uint8)
    unit = (image.astype(np.float64) - image.min()) / (image.max() - image.min())
    ways = imaging_test.changes()
    dim = ways["16-bit, dim"](image, rng)
    assert dim.dtype == np.uint16 and dim.min() == 100 and dim.max() == 100 + round(0.01 * 65535)
    norm = PercentileNormalization()
    a = normalize(image[None].astype(np.float32), *percentile_statistics(image[None], norm), False)
    b = normalize(dim[None].astype(np.float32), *percentile_statistics(dim[None], norm), False)
    np.testing.assert_allclose(a, b, atol=0.02)  # 656 grey levels instead of 195
    np.testing.assert_allclose(ways["gamma 2"](image, rng), unit ** 2, rtol=1e-6)
    np.testing.assert_allclose(ways["gamma 0.5"](image, rng), np.sqrt(unit), rtol=1e-6)
    shaded = ways["uneven illumination"](image, rng)
    np.testing.assert_allclose(shaded[:, 0], image[:, 0], rtol=1e-6)
    np.testing.assert_allclose(shaded[:, -1], 0.4 * image[:, -1], rtol=1e-6)
    flat = np.full((300, 300), 7, np.uint8)
    flat[0, 0], flat[0, 1] = 0, 14  # unit value 0.5 everywhere else
    counts = imaging_test._photons(10.0)(flat, np.random.default_rng(2))
    assert abs(counts[1:].mean() - 5.0) < 0.05 and abs(counts[1:].var() - 5.0) < 0.2
    blurred = ways["defocus"](image, rng)
    assert abs(float(blurred.mean()) - float(image.mean())) < 1.0
    assert blurred.std() < image.std() / 2


def test_side_benchmark_scores_are_written_without_per_image_rows(tmp_path):
    scores = {"a": {"f1": 0.5, "per_image": [{"stem": "x"}]}, "b": {"f1": 0.25}}
    record = real_data.write_scores(tmp_path / "results" / "side.json", scores, model="nuclei")
    written = json.loads((tmp_path / "results" / "side.json").read_text())
    assert written == record
    assert written["scores"] == {"a": {"f1": 0.5}, "b": {"f1": 0.25}}
    assert written["model"] == "nuclei" and {"date", "command", "machine"} <= set(written)
