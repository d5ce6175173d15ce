"""ONNX export: the file passes onnx.checker and ONNX Runtime reproduces the PyTorch model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microseg.errors import OutputExistsError
from microseg.export.onnx import export_onnx, run_onnx
from microseg.models import ModelConfig, build_model, set_renorm_limits


def _trained_like_model(norm: str, ndim: int) -> torch.nn.Module:
    """A tiny U-Net whose normalization layers hold non-trivial running statistics."""
    config = ModelConfig(ndim=ndim, channels=(4, 8, 16), strides=(2, 2), num_res_units=1, norm=norm,
                         norm_momentum=0.5)
    model = build_model(config)
    set_renorm_limits(model, 3.0, 5.0)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(3.0 * torch.randn((4, 1) + (16,) * ndim) + 1.0)
    return model.eval()


@pytest.mark.parametrize(("norm", "ndim"), [("batch", 2), ("batchrenorm", 2), ("batchrenorm", 3)])
def test_onnx_runtime_matches_pytorch_on_other_shapes_too(tmp_path, norm, ndim):
    import onnx

    model = _trained_like_model(norm, ndim)
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


def test_existing_file_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"earlier")
    with pytest.raises(OutputExistsError):
        export_onnx(_trained_like_model("batch", 2), np.zeros((1, 1, 16, 16), np.float32), path)
    assert path.read_bytes() == b"earlier"
