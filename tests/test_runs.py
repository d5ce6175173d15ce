import json

import numpy as np
import pytest

from microseg.errors import OutputExistsError, RunOrderError
from microseg.runs import (
    RunFolder,
    atomic_torch_save,
    atomic_write_json,
    create_output_dir,
    environment_record,
    unique_name,
)


def test_atomic_json_converts_numpy_and_leaves_no_temporary(tmp_path):
    path = atomic_write_json(tmp_path / "a" / "s.json", {"x": np.float32(0.5), "y": np.arange(3)})
    assert json.loads(path.read_text()) == {"x": 0.5, "y": [0, 1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = atomic_write_json(tmp_path / "s.json", {"v": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"v": object()})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_atomic_torch_save_round_trip(tmp_path):
    import torch

    state = {"w": torch.arange(4.0)}
    path = atomic_torch_save(state, tmp_path / "best.pt")
    assert torch.equal(torch.load(path, weights_only=True)["w"], state["w"])


def test_output_dir_refuses_to_overwrite(tmp_path):
    out = create_output_dir(tmp_path / "out")
    (out / "result.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="already holds results"):
        create_output_dir(out)
    assert create_output_dir(out, overwrite=True) == out
    assert (out / "result.txt").read_text() == "x"
    assert unique_name(tmp_path, "out") == "out-2"
    assert unique_name(tmp_path, "fresh") == "fresh"
    (tmp_path / "file").write_text("x")
    assert unique_name(tmp_path, "file") == "file-2"


def test_run_folder_says_which_notebook_to_run_first(tmp_path):
    run = RunFolder(tmp_path)
    with pytest.raises(RunOrderError, match="01_prepare_data"):
        run.require_split()
    with pytest.raises(RunOrderError, match="02_train_from_scratch"):
        run.require_model("unet")
    (run.model_dir("unet")).mkdir(parents=True)
    (run.model_dir("unet") / "best.pt").write_bytes(b"")
    assert run.model_names() == ["unet"]
    assert run.require_model("unet") == run.model_dir("unet")


def test_environment_record_names_versions():
    record = environment_record()
    assert record["packages"]["torch"].startswith("2.13.0")
    assert record["device"] == "cpu" or record["gpu_count"] > 0
