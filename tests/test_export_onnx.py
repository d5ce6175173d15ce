"""ONNX export: the file passes onnx.checker and ONNX Runtime reproduces the PyTorch model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microseg.errors import OutputExistsError
from microseg.export.onnx import export_onnx, run_onnx


@pytest.mark.parametrize(("norm", "ndim"), [("batch", 2), ("batchrenorm", 2), ("batchrenorm", 3)])
def test_onnx_runtime_matches_pytorch_on_other_shapes_too(tmp_path, norm, ndim, trained_like_unet):
    import onnx

    model = trained_like_unet(norm, ndim)
    example = np.random.default_rng(0).normal(size=(2, 1) + (16,) * ndim).astype(np.float32)

    result = export_onnx(model, example, tmp_path / "model.onnx")

    assert result["max_abs_diff"] <= 1e-4
    other = np.random.default_rng(1).normal(size=(3, 1) + (8, 24, 16)[-ndim:]).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(other)).numpy()
    found = run_onnx(tmp_path / "model.onnx", other)
    np.testing.assert_allclose(found, expected, atol=1e-4, rtol=0)
    assert np.abs(expected).max() > 1e-2
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["logits"]


def test_existing_file_is_refused(tmp_path, trained_like_unet):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"earlier")
    with pytest.raises(OutputExistsError):
        export_onnx(trained_like_unet("batch", 2), np.zeros((1, 1, 16, 16), np.float32), path)
    assert path.read_bytes() == b"earlier"


def test_a_fixed_input_shape_network_exports_with_static_spatial_axes(tmp_path):
    """UNETR's position embeddings fix its input shape: exported for that shape (batch still
    dynamic), ONNX Runtime reproduces it on another batch of that shape."""
    from microseg.models import ModelConfig, build_model

    config = ModelConfig(architecture="unetr", img_size=(32, 32), hidden_size=16, mlp_dim=16,
                         num_heads=2, feature_size=4)
    model = build_model(config).eval()
    example = np.random.default_rng(0).normal(size=(1, 1, 32, 32)).astype(np.float32)

    result = export_onnx(model, example, tmp_path / "unetr.onnx", dynamic_spatial=False)

    assert result["max_abs_diff"] <= 1e-4
    other = np.random.default_rng(1).normal(size=(3, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(other)).numpy()
    np.testing.assert_allclose(run_onnx(tmp_path / "unetr.onnx", other), expected, atol=1e-4,
                               rtol=0)
