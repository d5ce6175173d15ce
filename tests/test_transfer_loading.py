"""Loading pretrained models from every source, safely, with readable errors."""

import hashlib
import stat
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from microseg.errors import ConfigError, DataError, MicrosegError
from microseg.export.torchscript import export_torchscript
from microseg.models import ModelConfig, build_model
from microseg.models.checkpoint import load_weights
from microseg.transfer.loading import (
    check_zip_members,
    load_pretrained,
    read_state_dict,
    safe_extract,
)

CONFIG = ModelConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


@pytest.fixture
def trained():
    """A tiny network with non-trivial weights and running statistics, in eval mode."""
    torch.manual_seed(5)
    model = build_model(CONFIG)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 1, 32, 32) * 2 + 1)
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.eval()


def same_outputs(first, second, atol=0.0):
    """Equal logits; TorchScript files hold BatchRenorm folded into BatchNorm (rounding only)."""
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.allclose(first.eval()(x), second.eval()(x), rtol=0, atol=atol)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_model_folder(folder, model, config=CONFIG):
    from microseg.models.checkpoint import save_checkpoint

    folder.mkdir(parents=True)
    config.save(folder / "config.json")
    save_checkpoint(folder / "best.pt", {"model": model.state_dict(), "epoch": 3, "best_epoch": 2})
    return folder


def write_package(folder, model, config=CONFIG, architecture=None, torchscript=True):
    """A bioimage.io 0.5 package folder laid out as microseg.export writes it."""
    folder.mkdir(parents=True)
    torch.save(model.state_dict(), folder / "weights.pt")
    architecture = architecture or {"callable": "build_from_kwargs",
                                    "import_from": "microseg.export.bioimageio_arch",
                                    "kwargs": config.to_dict()}
    weights = {"pytorch_state_dict": {"source": "weights.pt", "sha256": sha256(folder / "weights.pt"),
                                      "architecture": architecture, "pytorch_version": "2.13.0"}}
    if torchscript:
        export_torchscript(model, torch.zeros(1, 1, 32, 32), folder / "weights_torchscript.pt")
        weights["torchscript"] = {"source": "weights_torchscript.pt", "pytorch_version": "2.13.0"}
    rdf = {"type": "model", "format_version": "0.5.4", "name": "tiny nuclei", "weights": weights}
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    return folder


def zip_folder(folder, zip_path):
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    return zip_path


def test_model_folder_round_trip(tmp_path, trained):
    folder = write_model_folder(tmp_path / "models" / "unet", trained)
    loaded = load_pretrained(folder)
    assert loaded.kind == "model_folder" and loaded.config == CONFIG
    assert loaded.details["best_epoch"] == 2
    assert same_outputs(loaded.model, trained)
    assert "model_folder" in loaded.describe() and "unet 2D" in loaded.describe()


def test_state_dict_with_config_beside_or_given(tmp_path, trained):
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ConfigError, match="the architecture is missing"):
        load_pretrained(tmp_path / "weights.pt")
    given = load_pretrained(tmp_path / "weights.pt", config=CONFIG)
    assert given.kind == "state_dict" and same_outputs(given.model, trained)
    CONFIG.save(tmp_path / "config.json")
    beside = load_pretrained(tmp_path / "weights.pt")
    assert same_outputs(beside.model, trained)
    torch.save({"model": trained.state_dict(), "epoch": 4}, tmp_path / "checkpoint.pt")
    assert same_outputs(load_pretrained(tmp_path / "checkpoint.pt").model, trained)


def test_mismatched_weights_name_every_layer_and_both_shapes(tmp_path, trained):
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    wider = CONFIG.replace(channels=(4, 8, 32), out_classes=2)
    with pytest.raises(DataError) as caught:
        load_pretrained(tmp_path / "weights.pt", config=wider)
    expected = build_model(wider).state_dict()
    stored = trained.state_dict()
    mismatched = [k for k in expected if expected[k].shape != stored[k].shape]
    assert len(caught.value.problems) == len(mismatched) > 2
    for key in mismatched:
        line = (f"layer {key}: the file has shape {tuple(stored[key].shape)}, the network "
                f"expects {tuple(expected[key].shape)}")
        assert line in caught.value.problems


def test_missing_and_unexpected_tensors_are_listed_and_nothing_loads(trained):
    state = dict(trained.state_dict())
    state.pop("model.2.1.conv.unit0.conv.bias")
    state["extra.weight"] = torch.zeros(1)
    target = build_model(CONFIG)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(DataError) as caught:
        load_weights(target, state, "w.pt")
    assert "layer model.2.1.conv.unit0.conv.bias: missing from the file" in caught.value.problems
    assert "layer extra.weight: in the file but not in the network" in caught.value.problems
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


class NotWeights:
    pass


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"model": NotWeights()}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match="cannot be read as PyTorch weights"):
        read_state_dict(tmp_path / "evil.pt")
    torch.save({"note": "hello"}, tmp_path / "empty.pt")
    with pytest.raises(DataError, match="holds no state dict"):
        read_state_dict(tmp_path / "empty.pt")


def test_torchscript_only_when_allowed(tmp_path, trained):
    path = tmp_path / "scripted.pt"
    export_torchscript(trained, torch.zeros(1, 1, 32, 32), path)
    with pytest.raises(MicrosegError, match="allow_torchscript=True"):
        load_pretrained(path)
    with pytest.raises(MicrosegError, match="TorchScript program"):
        read_state_dict(path)
    loaded = load_pretrained(path, allow_torchscript=True)
    assert loaded.kind == "torchscript" and loaded.config is None
    assert same_outputs(loaded.model, trained, atol=1e-5)


@pytest.mark.parametrize("zipped", [False, True])
def test_bioimageio_package_with_our_architecture(tmp_path, trained, zipped):
    source = write_package(tmp_path / "package", trained)
    if zipped:
        source = zip_folder(source, tmp_path / "package.zip")
    loaded = load_pretrained(source)
    assert loaded.kind == "bioimageio" and loaded.config == CONFIG
    assert loaded.details["weights_format"] == "pytorch_state_dict"
    assert loaded.details["name"] == "tiny nuclei"
    assert same_outputs(loaded.model, trained)


def test_bioimageio_foreign_architecture_needs_torchscript(tmp_path, trained):
    foreign = {"callable": "Net", "import_from": "somebody.models", "kwargs": {}}
    source = write_package(tmp_path / "package", trained, architecture=foreign)
    with pytest.raises(MicrosegError) as caught:
        load_pretrained(source)
    message = str(caught.value)
    assert "somebody.models:Net" in message and "allow_torchscript=True" in message
    loaded = load_pretrained(source, allow_torchscript=True)
    assert loaded.kind == "torchscript" and same_outputs(loaded.model, trained, atol=1e-5)
    bare = write_package(tmp_path / "bare", trained, architecture=foreign, torchscript=False)
    with pytest.raises(MicrosegError, match="formats in the package: pytorch_state_dict"):
        load_pretrained(bare, allow_torchscript=True)


def test_bioimageio_damaged_or_missing_weights(tmp_path, trained):
    source = write_package(tmp_path / "package", trained, torchscript=False)
    with open(source / "weights.pt", "ab") as stream:
        stream.write(b"tampered")
    with pytest.raises(DataError, match="sha256 differs"):
        load_pretrained(source)
    rdf = yaml.safe_load((source / "rdf.yaml").read_text())
    rdf["weights"]["pytorch_state_dict"]["source"] = "../outside.pt"
    (source / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    with pytest.raises(DataError, match="missing from the package"):
        load_pretrained(source)
    (source / "rdf.yaml").write_text(yaml.safe_dump({"type": "dataset", "weights": {}}))
    with pytest.raises(DataError, match="not a model"):
        load_pretrained(source)


def unsafe_zip(path, member):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("rdf.yaml", "type: model\nweights: {}\n")
        if member == "symlink":
            info = zipfile.ZipInfo("link")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
        else:
            archive.writestr(member, "not for you")
    return path


@pytest.mark.parametrize("member, reason", [("../escape.txt", "leaves the package"),
                                            ("/tmp/absolute.txt", "absolute path"),
                                            ("a/../../b.txt", "leaves the package"),
                                            ("C:/windows.txt", "absolute path"),
                                            ("symlink", "symbolic link")])
def test_unsafe_zip_members_are_refused_before_extraction(tmp_path, member, reason):
    path = unsafe_zip(tmp_path / "evil.zip", member)
    destination = tmp_path / "out" / "inner"
    destination.mkdir(parents=True)
    with pytest.raises(DataError) as caught:
        safe_extract(path, destination)
    assert reason in caught.value.problems[0]
    assert list(destination.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.zip", "out"]
    with pytest.raises(DataError, match="was not extracted"):
        load_pretrained(path)


def test_safe_zip_members_pass(tmp_path):
    with zipfile.ZipFile(tmp_path / "ok.zip", "w") as archive:
        archive.writestr("rdf.yaml", "type: model\n")
        archive.writestr("sub/weights.pt", "x")
        assert check_zip_members(archive) == []
    safe_extract(tmp_path / "ok.zip", tmp_path / "out")
    assert (tmp_path / "out" / "sub" / "weights.pt").read_text() == "x"


def test_unknown_source(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_pretrained(tmp_path / "nothing")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="found in it: notes.txt"):
        load_pretrained(tmp_path / "folder")


def test_package_written_by_microseg_export(tmp_path, trained):
    from microseg.export.bioimageio import bioimageio_unavailable_reason, export_bioimageio

    reason = bioimageio_unavailable_reason()
    if reason:
        pytest.skip(reason)
    image = torch.rand(1, 32, 32).numpy() * 1000
    result = export_bioimageio((trained, CONFIG), tmp_path / "model.zip", image, None, halo=4)
    loaded = load_pretrained(result["path"])
    assert loaded.kind == "bioimageio" and same_outputs(loaded.model, trained)


def test_a_zip_bomb_is_refused_before_extracting(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("rdf.yaml", "type: model\n")
        archive.writestr("zeros.npy", bytes(80 * 2**20))
    assert path.stat().st_size < 2**20, "80 MiB of zeros pack into well under 1 MiB"
    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(DataError, match="larger than a model package should be") as caught:
        safe_extract(path, destination)
    assert "80.0 MiB once extracted from" in caught.value.problems[0]
    assert "zip bomb" in caught.value.problems[0]
    assert list(destination.iterdir()) == []
    with pytest.raises(DataError, match="was not extracted"):
        load_pretrained(path)


def test_package_size_and_member_count_are_limited(tmp_path):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for k in range(30):
            archive.writestr(f"part{k}.bin", bytes(100))
    with pytest.raises(DataError) as caught:
        safe_extract(path, tmp_path / "out", max_bytes=1000, max_members=20)
    assert caught.value.problems == ["30 members, more than the 20 allowed",
                                     "2.9 KiB once extracted, more than the 1000 bytes allowed"]
    assert not (tmp_path / "out").exists()
    assert safe_extract(path, tmp_path / "out") == tmp_path / "out"
    assert len(list((tmp_path / "out").iterdir())) == 30
