"""TorchScript export: the reloaded file reproduces the PyTorch model (BatchRenorm folded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microseg.errors import DataError, OutputExistsError
from microseg.export.torchscript import export_torchscript, load_torchscript


@pytest.mark.parametrize(("norm", "ndim"), [("batch", 2), ("batchrenorm", 2), ("batchrenorm", 3)])
def test_reloaded_torchscript_matches_pytorch(tmp_path, norm, ndim, trained_like_unet):
    model = trained_like_unet(norm, ndim)
    example = np.random.default_rng(0).normal(size=(2, 1) + (16,) * ndim).astype(np.float32)

    result = export_torchscript(model, example, tmp_path / "model.pt")

    assert result["max_abs_diff"] <= 1e-4
    reloaded = load_torchscript(tmp_path / "model.pt")
    layer_names = {module.original_name for module in reloaded.modules()}
    assert f"BatchNorm{ndim}d" in layer_names and not any("Renorm" in n for n in layer_names)
    other_shape = torch.randn((1, 1) + (24,) * ndim)
    with torch.no_grad():
        expected = model(other_shape).numpy()
        found = reloaded(other_shape).numpy()
    np.testing.assert_allclose(found, expected, atol=1e-4, rtol=0)
    assert np.abs(expected).max() > 1e-2


def test_export_leaves_the_model_unchanged(tmp_path, trained_like_unet):
    model = trained_like_unet("batchrenorm", 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_torchscript(model, np.zeros((1, 1, 16, 16), np.float32), tmp_path / "model.pt")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training


def test_existing_file_is_refused_unless_overwrite(tmp_path, trained_like_unet):
    model = trained_like_unet("batch", 2)
    path = tmp_path / "model.pt"
    path.write_bytes(b"earlier")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        export_torchscript(model, np.zeros((1, 1, 16, 16), np.float32), path)
    assert path.read_bytes() == b"earlier"
    export_torchscript(model, np.zeros((1, 1, 16, 16), np.float32), path, overwrite=True)
    assert path.read_bytes() != b"earlier"


def test_input_without_batch_axis_is_refused(tmp_path, trained_like_unet):
    with pytest.raises(DataError, match=r"image\[None\]"):
        export_torchscript(trained_like_unet("batch", 2), np.zeros((1, 16, 16)),
                           tmp_path / "m.pt")
