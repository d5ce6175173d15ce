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


@pytest.mark.slow
def test_in_a_notebook_each_cell_says_its_file_notes_once(tmp_path):
    """The hook start_notebook sets: a cell that reads five RGB-saved grey images ends with one
    line; a later cell reading one image says it of that one file."""
    import nbformat
    import papermill

    from microseg.notebook.chain import _local_kernel_manager

    images = tmp_path / "images"
    images.mkdir()
    for k in range(5):
        grey = np.random.default_rng(k).integers(0, 255, (32, 32), dtype=np.uint8)
        tifffile.imwrite(images / f"im{k}.tif", np.stack([grey] * 3, axis=-1), photometric="rgb")
    parameters = nbformat.v4.new_code_cell('run_dir = "runs/demo"\nquick = False')
    parameters.metadata["tags"] = ["parameters"]
    notebook = nbformat.v4.new_notebook(cells=[
        parameters,
        nbformat.v4.new_code_cell('from microseg.notebook import start_notebook\n'
                                  'run = start_notebook("05_evaluate", globals())'),
        nbformat.v4.new_code_cell('from pathlib import Path\nfrom microseg.io import read_image\n'
                                  f'shapes = [read_image(p).shape for p in sorted(Path({str(images)!r}).glob("*.tif"))]'),
        nbformat.v4.new_code_cell(f'read_image({str(images / "im0.tif")!r}).shape'),
    ])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, tmp_path / "in.ipynb")
    run_dir = tmp_path / "run"
    papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={"run_dir": str(run_dir)}, progress_bar=False,
                               kernel_manager_class=_local_kernel_manager())
    cells = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells

    def text(cell):
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")

    assert text(cells[-2]).count("colour channels") == 1
    assert "5 RGB images with identical colour channels" in text(cells[-2])
    assert text(cells[-1]).count("colour channels are identical") == 1
    assert "im0.tif" in text(cells[-1])
    record = json.loads((run_dir / NOTES_FILE).read_text())
    assert record["grey-rgb"]["count"] == 5


def test_a_message_repeated_for_every_image_is_said_once_with_the_count(caplog):
    from microseg.logs import said_once

    with caplog.at_level(logging.INFO, logger="microseg"):
        said_once(log, "tile rounded")
        with summarised():
            for _ in range(4):
                said_once(log, "tile rounded")
            said_once(log, "another")
    assert [r.getMessage() for r in caplog.records] == [
        "tile rounded", "tile rounded (the same for 4 images)", "another"]
