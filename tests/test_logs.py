"""microseg.logs: notes about single files, one line per kind for a folder."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tifffile

from microseg.logs import NOTES_FILE, file_note, summarised

log = logging.getLogger("microseg.test")


def test_outside_a_block_each_note_is_logged_at_once(caplog):
    with caplog.at_level(logging.INFO, logger="microseg"):
        file_note(log, "k", "a.tif", "a note", "files with a note")
        file_note(log, "k", "b.tif", "a note", "files with a note")
    assert [r.getMessage() for r in caplog.records] == ["a.tif: a note", "b.tif: a note"]


def test_a_block_says_each_kind_once_with_a_count_and_lists_every_file(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="microseg"), summarised(tmp_path):
        for k in range(30):
            file_note(log, "grey", f"/data/img_{k:02d}.tif", "grey", "grey RGB images")
        file_note(log, "grey", "/data/img_00.tif", "grey", "grey RGB images")  # read twice
        file_note(log, "empty", "/data/lab_07.tif", "no object", "empty label images",
                  level=logging.WARNING)
    record = json.loads((tmp_path / NOTES_FILE).read_text())
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", f"30 grey RGB images: img_00.tif, img_01.tif, ... (all listed in "
                 f"{tmp_path / NOTES_FILE})"),
        ("WARNING", "/data/lab_07.tif: no object")]
    assert record["grey"]["count"] == 30 and len(record["grey"]["files"]) == 30
    assert record["grey"]["files"][:2] == ["/data/img_00.tif", "/data/img_01.tif"]


def test_an_inner_block_adds_to_the_outer_one(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="microseg"), summarised(tmp_path / "outer"):
        for k in range(3):
            with summarised(tmp_path / "inner"):
                file_note(log, "k", f"f{k}", "x", "files")
        assert caplog.records == []
    assert [r.getMessage() for r in caplog.records] == [
        f"3 files: f0, f1, ... (all listed in {tmp_path / 'outer' / NOTES_FILE})"]
    assert not (tmp_path / "inner").exists()


@pytest.mark.slow
def test_a_folder_of_rgb_saved_grey_images_gives_one_line(tmp_path, caplog):
    """What Fiji or a vendor viewer exports: grey images saved as RGB. Preparing the data
    reads each more than once; the user is told once, with the count."""
    from microseg.data.synthetic import write_synthetic_dataset
    from microseg.recipes.prepare import prepare_data

    source = write_synthetic_dataset(tmp_path / "synthetic", n_images=12, shape=(64, 64))
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for path in sorted((source / "images").glob("*.tif")):
        grey = tifffile.imread(path)[0]
        grey = (255 * (grey - grey.min()) / max(1, np.ptp(grey))).astype(np.uint8)
        tifffile.imwrite(data / "images" / path.name, np.stack([grey] * 3, axis=-1),
                         photometric="rgb")
        (data / "labels" / path.name).write_bytes((source / "labels" / path.name).read_bytes())
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="microseg"):
        prepare_data(run_dir, data_dir=data, fractions=(0.5, 0.25, 0.25))
    lines = [r.getMessage() for r in caplog.records if "colour channels" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("12 RGB images with identical colour channels")
    record = json.loads((run_dir / "data" / NOTES_FILE).read_text())
    assert sorted(record["grey-rgb"]["files"]) == sorted(
        str(p) for p in (data / "images").glob("*.tif"))
