import json
from pathlib import Path

import numpy as np
import pytest

from microseg.data.split import SUBSETS, load_manifest, region_slices
from microseg.data.synthetic import write_synthetic_dataset
from microseg.errors import ConfigError, DataError, OutputExistsError
from microseg.io import read_image, read_label, write_image
from microseg.recipes.prepare import (
    check_data,
    import_roi_labels,
    initial_labels_for_run,
    pairs_table,
    prepare_data,
)
from microseg.transforms.targets import labels_to_target

SUMMARY_KEYS = {"n_images", "n_train", "n_val", "n_test", "ndim", "task", "axes",
                "split_manifest", "n_classes", "class_frequencies", "data_dir"}


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*"))


@pytest.fixture
def user_data(tmp_path):
    return write_synthetic_dataset(tmp_path / "user", n_images=5, shape=(48, 48), seed=9)


def test_quick_synthetic_run_writes_manifest_and_summary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    summary = prepare_data("run", quick=True)
    on_disk = json.loads((run / "data" / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(on_disk) and summary["reused"] is False
    assert (summary["n_images"], summary["n_train"], summary["n_val"], summary["n_test"]) == (8, 6, 1, 1)
    assert summary["synthetic"] and summary["axes"] == "CYX" and summary["n_classes"] == 3
    manifest = load_manifest(run)
    assert manifest.data_dir == str((run / "data" / "synthetic").resolve())
    stems = [s for subset in SUBSETS for s in manifest.stems(subset)]
    assert len(stems) == len(set(stems)) == 8
    counts = np.zeros(3)
    for entry in manifest.entries("train") + manifest.entries("val") + manifest.entries("test"):
        image = read_image(entry["image"])
        expected = np.percentile(image[0].astype(np.float64), [1.0, 99.8])
        assert [entry["norm_low"][0], entry["norm_high"][0]] == expected.tolist()
        counts += np.bincount(labels_to_target(read_label(entry["label"]), "instance").ravel(),
                              minlength=3)
    frequencies = list(summary["class_frequencies"].values())
    np.testing.assert_allclose(frequencies, counts / counts.sum(), atol=1e-6)


def test_same_parameters_reuse_the_split_and_others_are_refused(tmp_path):
    run = tmp_path / "run"
    prepare_data(run, quick=True, n_synthetic=4, synthetic_shape=(32, 32))
    manifest = run / "data" / "split.json"
    stamp = manifest.stat().st_mtime_ns
    again = prepare_data(run, quick=True, n_synthetic=4, synthetic_shape=(32, 32))
    assert again["reused"] is True and manifest.stat().st_mtime_ns == stamp
    with pytest.raises(OutputExistsError, match="split.json") as caught:
        prepare_data(run, quick=True, n_synthetic=5, synthetic_shape=(32, 32))
    assert "n_synthetic: 4 → 5" in str(caught.value)
    assert manifest.stat().st_mtime_ns == stamp
    replaced = prepare_data(run, quick=True, n_synthetic=5, synthetic_shape=(32, 32),
                            overwrite=True)
    assert replaced["n_images"] == 5 and replaced["reused"] is False
    folders = sorted(p.name for p in (run / "data").glob("synthetic*"))
    assert folders == ["synthetic", "synthetic-2"], "earlier synthetic data are kept"
    assert len(list((run / "data" / "synthetic" / "images").iterdir())) == 4


def test_user_data_folder_is_only_read(tmp_path, user_data):
    before = _listing(user_data)
    summary = prepare_data(tmp_path / "run", data_dir=user_data, fractions=(0.6, 0.2, 0.2))
    assert _listing(user_data) == before
    assert summary["data_dir"] == str(user_data.resolve()) and not summary["synthetic"]
    assert (summary["n_train"], summary["n_val"], summary["n_test"]) == (3, 1, 1)
    with pytest.raises(ConfigError, match="never written"):
        prepare_data(user_data / "run", data_dir=user_data)
    assert _listing(user_data) == before


def test_changed_files_are_noticed(tmp_path, user_data):
    run = tmp_path / "run"
    prepare_data(run, data_dir=user_data)
    label = user_data / "labels" / "synthetic_000.tif"
    write_image(label, read_label(label) * 0, axes="YX", overwrite=True)
    with pytest.raises(OutputExistsError, match="changed"):
        prepare_data(run, data_dir=user_data)
    with pytest.raises(DataError, match="hold no object"):
        prepare_data(run, data_dir=user_data, overwrite=True)
    summary = prepare_data(run, data_dir=user_data, overwrite=True, allow_empty_labels=True)
    assert summary["empty_label_images"] == ["synthetic_000"]


def test_one_image_needs_a_region_split(tmp_path):
    data = write_synthetic_dataset(tmp_path / "one", n_images=1, shape=(40, 100))
    with pytest.raises(DataError, match="split_by='region'"):
        prepare_data(tmp_path / "run", data_dir=data)
    summary = prepare_data(tmp_path / "run", data_dir=data, split_by="region")
    assert (summary["n_train"], summary["n_val"], summary["n_test"]) == (1, 1, 1)
    manifest = load_manifest(tmp_path / "run")
    boxes = [region_slices(manifest.entries(s)[0]["region"]) for s in SUBSETS]
    assert [(b[1].start, b[1].stop) for b in boxes] == [(0, 70), (70, 85), (85, 100)]
    assert all(b[0] == slice(0, 40) for b in boxes)


def test_object_sizes_match_an_independent_measure(tmp_path, user_data):
    from skimage.measure import regionprops

    summary = prepare_data(tmp_path / "run", data_dir=user_data)
    per_image = {}
    for label_path in sorted((user_data / "labels").iterdir()):
        label = read_label(label_path)
        per_image[label_path.name.split(".")[0]] = [r.equivalent_diameter_area
                                                  for r in regionprops(label)]
    every = np.concatenate([np.asarray(d) for d in per_image.values()])
    assert summary["object_diameter"] == pytest.approx(np.median(every))
    assert summary["object_diameter_p10"] == pytest.approx(np.percentile(every, 10))
    assert summary["object_diameter_p90"] == pytest.approx(np.percentile(every, 90))
    assert summary["object_diameter_per_image"] == pytest.approx(
        {stem: float(np.median(d)) for stem, d in per_image.items()})
    binary = prepare_data(tmp_path / "run_binary", data_dir=user_data, task="binary")
    assert "object_diameter_per_image" not in binary


def test_3d_and_semantic_data(tmp_path):
    summary = prepare_data(tmp_path / "run3d", ndim=3, quick=True, n_synthetic=3,
                           synthetic_shape=(12, 24, 24))
    assert summary["axes"] == "CZYX" and summary["ndim"] == 3 and summary["n_images"] == 3
    semantic = tmp_path / "semantic"
    for i in range(3):
        label = np.zeros((16, 16), np.uint8)
        label[2:6, 2:6], label[8:12, 8:12] = 1, 4
        write_image(semantic / "images" / f"s{i}.tif", (label * 50 + i)[None], axes="CYX")
        write_image(semantic / "labels" / f"s{i}.tif", label, axes="YX")
    summary = prepare_data(tmp_path / "run_sem", data_dir=semantic, task="semantic")
    assert summary["n_classes"] == 5
    assert summary["class_names"] == ["background", "class_1", "class_2", "class_3", "class_4"]


def test_invalid_parameters_are_refused_before_writing(tmp_path):
    for bad in [dict(task="panoptic"), dict(ndim=4), dict(fractions=(0.5, 0.5, 0.5)),
                dict(split_by="patch")]:
        with pytest.raises(ConfigError):
            prepare_data(tmp_path / "run", **bad)
    assert not (tmp_path / "run").exists()


def test_pairs_table_initial_labels_and_roi_import(tmp_path, user_data):
    from roifile import ImagejRoi

    pairs = check_data(user_data)
    assert list(pairs_table(pairs)["stem"]) == [f"synthetic_{i:03d}" for i in range(5)]
    run = tmp_path / "run"
    before = _listing(user_data)
    initial = initial_labels_for_run(run, user_data / "images", labels_dir=user_data / "labels")
    assert initial["n_images"] == 5 and initial["foreground_dice"] > 0.8
    assert initial_labels_for_run(run, user_data / "images")["reused"] is True

    rois = tmp_path / "rois"
    rois.mkdir()
    square = ImagejRoi.frompoints(np.array([[5, 5], [15, 5], [15, 15], [5, 15]]), name="sq")
    square.tofile(rois / "synthetic_001.roi")
    labels_dir = import_roi_labels(run, rois, user_data / "images")
    assert import_roi_labels(run, rois, user_data / "images") == labels_dir
    assert [p.name for p in labels_dir.iterdir()] == ["synthetic_001.tif"]
    assert read_label(labels_dir / "synthetic_001.tif").max() == 1
    assert _listing(user_data) == before


def test_annotations_from_another_tool_are_imported_into_the_run_and_split(tmp_path):
    from microseg.io.coco import write_coco
    from microseg.recipes.prepare import import_annotations

    labels = [np.zeros((40, 48), np.int32) for _ in range(4)]
    coco = tmp_path / "coco"
    for k, values in enumerate(labels):
        values[5 + k:15 + k, 10:20] = 1
        values[25:35, 20 + k:30 + k] = 2
        write_image(coco / "images" / f"cell_{k}.png", (values * 60).astype(np.uint8), axes="YX")
    write_coco(coco / "train.json", {f"cell_{k}.png": v for k, v in enumerate(labels)})
    before = _listing(coco)
    run = tmp_path / "run"
    found = import_annotations(run, coco)
    assert (found["format"], found["n_images"], found["n_objects"], found["reused"]) == (
        "coco", 4, 8, False)
    assert found["folder"] == str(run / "data" / "annotation_import")
    assert import_annotations(run, coco)["reused"] is True
    summary = prepare_data(run, data_dir=found["data_dir"], labels_dir=found["labels_dir"],
                           fractions=(0.5, 0.25, 0.25))
    assert summary["n_images"] == 4 and summary["pixel_size"] is None
    assert _listing(coco) == before


def test_an_ambiguous_folder_names_the_candidates(tmp_path):
    from roifile import ImagejRoi

    from microseg.recipes.prepare import import_annotations

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    ImagejRoi.frompoints(np.array([[1, 1], [4, 1], [4, 4]])).tofile(folder / "a.roi")
    with pytest.raises(DataError) as caught:
        import_annotations(tmp_path / "run", folder, tmp_path / "images")
    assert "pass annotation_format= one of 'fiji', 'qupath'" in caught.value.summary
    assert caught.value.problems == ["fiji: 1 ROI file", "qupath: 1 GeoJSON file"]
    with pytest.raises(ConfigError, match="set data_dir to the folder whose images/"):
        import_annotations(tmp_path / "run", folder, None, "qupath")
    assert not (tmp_path / "run").exists()


def test_pixel_size_from_metadata_or_parameter_reaches_summary_and_manifest(tmp_path, user_data):
    from microseg.data.split import SplitManifest
    from microseg.io.ome import write_ome_tiff
    from microseg.recipes.prepare import describe_pixel_size

    data = tmp_path / "calibrated"
    for path in sorted((user_data / "images").iterdir()):
        write_ome_tiff(data / "images" / f"{path.stem}.ome.tif", read_image(path), (0.4, 0.4),
                       ["DAPI"])
    summary = prepare_data(tmp_path / "run", data_dir=data, labels_dir=user_data / "labels")
    assert (summary["pixel_size"], summary["pixel_size_source"], summary["channel_names"]) == (
        [0.4, 0.4], "OME-XML", ["DAPI"])
    assert json.loads((tmp_path / "run" / "data" / "summary.json").read_text())["pixel_size"] \
        == [0.4, 0.4]
    assert load_manifest(tmp_path / "run").pixel_size == [0.4, 0.4]
    assert describe_pixel_size(summary) == ("pixel size: 0.4 × 0.4 µm (Y × X), from the image "
                                            "metadata (OME-XML)")
    given = prepare_data(tmp_path / "run2", data_dir=user_data, pixel_size=0.25)
    assert given["pixel_size"] == [0.25, 0.25] and given["parameters"]["pixel_size"] == [0.25, 0.25]
    plain = prepare_data(tmp_path / "run3", data_dir=user_data)
    assert "pixel_size" not in plain["parameters"] and "pixel_size" not in json.loads(
        (tmp_path / "run3" / "data" / "split.json").read_text())
    assert describe_pixel_size(plain).startswith("pixel size: not found in the image files")
    old = json.loads((tmp_path / "run" / "data" / "split.json").read_text())
    del old["pixel_size"]
    assert SplitManifest.from_dict(old).pixel_size is None
    with pytest.raises(ConfigError, match="pixel_size"):
        prepare_data(tmp_path / "run4", data_dir=user_data, pixel_size=(1.0, 2.0, 3.0))


def test_vendor_images_need_the_extra_and_are_converted_into_the_run(tmp_path, user_data,
                                                                     monkeypatch):
    import sys

    from microseg.io.vendor import FormatsExtraMissing
    from microseg.recipes.prepare import convert_vendor_images
    from test_io_vendor import Sizes, fake_bioio

    assert convert_vendor_images(tmp_path / "run", user_data / "images") is None
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.czi").write_bytes(b"")
    write_image(raw / "b.tif", np.ones((1, 6, 7), np.uint8), axes="CYX")
    monkeypatch.setitem(sys.modules, "bioio", None)
    with pytest.raises(FormatsExtraMissing, match=r"pip install 'microseg\[formats\]'"):
        convert_vendor_images(tmp_path / "run", raw)
    stack = np.arange(42, dtype=np.uint16).reshape(1, 1, 1, 6, 7)
    monkeypatch.setitem(sys.modules, "bioio", fake_bioio(
        {"a.czi": ([stack], Sizes(None, 0.2, 0.2), ["DNA"])}))
    converted = convert_vendor_images(tmp_path / "run", raw)
    images = Path(converted["images_dir"])
    assert sorted(p.name for p in images.iterdir()) == ["a.ome.tif", "b.tif"]
    assert converted["converted"][0]["reader"] == "bioio_fake" and not converted["reused"]
    assert convert_vendor_images(tmp_path / "run", raw)["reused"] is True
    np.testing.assert_array_equal(read_image(images / "a.ome.tif"), stack[0, :, 0])


def test_a_damaged_summary_is_named_and_replaced_with_overwrite(tmp_path, user_data):
    run = tmp_path / "run"
    prepare_data(run, data_dir=user_data)
    summary = run / "data" / "summary.json"
    summary.write_text(summary.read_text()[:40])
    with pytest.raises(DataError, match="split.json has no readable summary beside it .*"
                                        "summary.json is not valid JSON.*overwrite=True"):
        prepare_data(run, data_dir=user_data)
    again = prepare_data(run, data_dir=user_data, overwrite=True)
    assert again["reused"] is False and json.loads(summary.read_text())["n_images"] == 5
    summary.unlink()
    with pytest.raises(DataError, match="did not finish"):
        prepare_data(run, data_dir=user_data)


def test_a_file_name_that_is_not_utf8_is_named_instead_of_a_traceback(tmp_path, user_data):
    import os

    for folder in ("images", "labels"):
        os.rename(user_data / folder / "synthetic_000.tif",
                  os.fsencode(user_data / folder) + b"/caf\xe9.tif")
    with pytest.raises(DataError) as caught:
        prepare_data(tmp_path / "run", data_dir=user_data)
    assert len(caught.value.problems) == 2
    assert all("caf\ufffd.tif: the file name is not valid UTF-8" in p
               for p in caught.value.problems)


def test_a_write_that_fails_midway_leaves_no_split_that_later_runs_misread(tmp_path, user_data):
    """A file size limit (``ulimit -f``) makes the write of split.json fail as a full disk would."""
    import subprocess
    import sys

    run = tmp_path / "run"
    code = ("import resource, sys; from microseg.recipes.prepare import prepare_data\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
            "try:\n    prepare_data(sys.argv[1], data_dir=sys.argv[2])\n"
            "except Exception as err:\n    print(type(err).__name__, err)")
    result = subprocess.run([sys.executable, "-c", code, str(run), str(user_data)],
                            capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.startswith(f"WriteError cannot write {run / 'data' / 'split.json'}: "
                                    f"the file would be larger than this process may write")
    assert sorted(p.name for p in (run / "data").iterdir()) == []
    summary = prepare_data(run, data_dir=user_data)
    assert summary["reused"] is False and load_manifest(run).n_classes == 3


@pytest.mark.parametrize("bad", ["seed", "run_dir"])
def test_a_negative_seed_or_a_run_folder_that_is_a_file_is_refused_first(tmp_path, bad):
    (tmp_path / "notes.txt").write_text("x")
    run = tmp_path / ("notes.txt" if bad == "run_dir" else "run")
    with pytest.raises(ConfigError, match="seed = -1: expected a whole number" if bad == "seed"
                       else "notes.txt is a file, not a folder"):
        prepare_data(run, quick=True, seed=-1 if bad == "seed" else 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("step", ["roi", "annotations", "vendor", "initial_labels"])
def test_imports_into_a_run_folder_inside_the_input_folder_write_nothing(tmp_path, user_data,
                                                                        step):
    from microseg.recipes.prepare import convert_vendor_images, import_annotations

    run = user_data / "images" / "run"
    calls = {"roi": lambda: import_roi_labels(run, user_data / "labels", user_data / "images"),
             "annotations": lambda: import_annotations(run, user_data / "labels",
                                                       user_data / "images"),
             "vendor": lambda: convert_vendor_images(run, user_data / "images"),
             "initial_labels": lambda: initial_labels_for_run(run, user_data / "images")}
    before = _listing(user_data)
    with pytest.raises(ConfigError, match="is inside .* which is only read, never written to"):
        calls[step]()
    assert _listing(user_data) == before


def test_ndim_given_as_text_to_the_library_is_shown_as_text(tmp_path):
    with pytest.raises(ConfigError, match="ndim = '2': choose 2 \\(images\\) or 3 \\(volumes\\)"):
        prepare_data(tmp_path / "run", quick=True, ndim="2")
