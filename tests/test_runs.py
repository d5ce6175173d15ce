import errno
import json

import numpy as np
import pytest

from microseg.errors import ConfigError, DataError, OutputExistsError, RunOrderError, WriteError
from microseg.runs import (
    RunFolder,
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    check_outside_inputs,
    create_output_dir,
    environment_record,
    read_json,
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


def test_a_full_disk_names_the_file_and_the_fix_and_leaves_nothing_half_written(tmp_path):
    path = atomic_write_json(tmp_path / "data" / "split.json", {"v": 1})

    def fill_the_disk(tmp):
        tmp.write_text('{"v": 2, "entr')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError) as caught:
        atomic_write(path, fill_the_disk)
    message = str(caught.value)
    assert message.startswith(f"cannot write {path}: the disk holding {path.parent} is full (")
    assert "free space on that disk, or choose a run_dir on another disk" in message
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
    assert read_json(path) == {"v": 1}
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]


def test_a_read_only_run_folder_is_named_with_the_fix(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(WriteError, match=f"cannot write {tmp_path}/s.json: {tmp_path} is "
                       f"read-only for this user .*choose a run_dir you can write to"):
        atomic_write_json(tmp_path / "s.json", {"v": 1})


def test_run_folder_json_that_is_not_a_readable_file_is_named(tmp_path):
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(DataError, match="folder.json cannot be read"):
        read_json(tmp_path / "folder.json")


def test_outputs_inside_an_input_folder_are_refused(tmp_path):
    check_outside_inputs(tmp_path / "runs" / "a", {"data_dir": tmp_path / "data", "x": None})
    for inside in (tmp_path / "data", tmp_path / "data" / "runs" / "a"):
        with pytest.raises(ConfigError, match="is inside data_dir = .*only read"):
            check_outside_inputs(inside, {"data_dir": tmp_path / "data"})


def test_a_parameters_record_of_the_wrong_shape_is_named(tmp_path):
    record = tmp_path / "notebooks" / "02_train_from_scratch.params.json"
    record.parent.mkdir()
    record.write_text("[]")
    with pytest.raises(DataError, match="02_train_from_scratch.params.json is not a parameters "
                                        "record .*delete it"):
        RunFolder(tmp_path).default_model_name()
