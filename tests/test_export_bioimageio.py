"""bioimage.io export: the package passes bioimageio.core's own test, loads back, and predicts
what microseg predicts (global percentile normalization, softmax)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microseg.errors import ConfigError, DataError, MicrosegError
from microseg.export.bioimageio import (
    BioimageioMetadata,
    bioimageio_unavailable_reason,
    export_bioimageio,
)
from microseg.inference.tiling import predict_whole
from microseg.models import ModelConfig, build_model, set_renorm_limits
from microseg.transforms.normalization import PercentileNormalization

UNAVAILABLE = bioimageio_unavailable_reason()


def _trained_like(ndim: int = 2) -> tuple[torch.nn.Module, ModelConfig]:
    config = ModelConfig(ndim=ndim, channels=(4, 8, 16), strides=(2, 2), num_res_units=1,
                         norm="batchrenorm", norm_momentum=0.5)
    model = build_model(config)
    set_renorm_limits(model, 3.0, 5.0)
    model.train()
    with torch.no_grad():
        model(3.0 * torch.randn((4, 1) + (16,) * ndim) + 1.0)
    return model.eval(), config


def _raw_image(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).gamma(2.0, 200.0, size=shape) + 80).astype(np.uint16)


@pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))
def test_package_passes_bioimageio_core_and_predicts_like_microseg(tmp_path):
    from bioimageio.core import predict
    from bioimageio.spec import load_description

    model, config = _trained_like()
    metadata = BioimageioMetadata(name="tiny test net", authors=("A. Tester",))

    result = export_bioimageio((model, config), tmp_path / "tiny.zip", _raw_image((1, 48, 48), 0),
                               PercentileNormalization(), halo=8, metadata=metadata)

    assert result["test_passed"], result["errors"]
    assert result["torchscript_max_abs_diff"] <= 1e-4
    description = load_description(tmp_path / "tiny.zip")
    assert description.name == "tiny test net"
    assert [a.halo for a in description.outputs[0].axes[2:]] == [8, 8]
    assert description.inputs[0].preprocessing[1].kwargs.max_percentile == 99.8
    other = _raw_image((1, 64, 80), 1)
    found = predict(model=description, inputs=other[None]).members["probabilities"].data.values
    # bioimageio.core pads by the halo (reflect) before it computes the percentiles and predicts
    low, high = np.percentile(np.pad(other, ((0, 0), (8, 8), (8, 8)), mode="reflect"), (1, 99.8))
    expected = predict_whole(model, ((other - low) / (high - low)).astype(np.float32), halo=8,
                             border="extend")
    np.testing.assert_allclose(found[0], expected, atol=1e-4, rtol=0)


def test_incompatible_environment_is_explained(tmp_path, monkeypatch):
    from importlib import metadata

    real_version = metadata.version
    monkeypatch.setattr(
        metadata, "version", lambda name: "2.14.3" if name == "pydantic" else real_version(name)
    )
    model, config = _trained_like()
    with pytest.raises(MicrosegError, match="pydantic"):
        export_bioimageio((model, config), tmp_path / "tiny.zip", _raw_image((1, 48, 48), 0),
                          None, 8)
    assert not (tmp_path / "tiny.zip").exists()


def test_inputs_that_cannot_be_exported_are_explained(tmp_path):
    from microseg.models.checkpoint import save_checkpoint

    model, config = _trained_like()
    model_dir = tmp_path / "models" / "unet"
    config.save(model_dir / "config.json")
    save_checkpoint(model_dir / "best.pt", {"model": model.state_dict()})
    image = _raw_image((1, 48, 48), 0)
    with pytest.raises(DataError, match="multiple of 4"):
        export_bioimageio(model_dir, tmp_path / "a.zip", image[:, :46], None, halo=8)
    with pytest.raises(DataError, match="2 channels"):
        export_bioimageio((model, config), tmp_path / "a.zip", np.concatenate([image, image]),
                          None, 8)
    with pytest.raises(ConfigError, match="tile"):
        export_bioimageio((model, config), tmp_path / "a.zip", image,
                          PercentileNormalization(mode="tile"), 8)
    with pytest.raises(ConfigError, match=".zip"):
        export_bioimageio((model, config), tmp_path / "a.bioimage", image, None, 8)
    assert not list(tmp_path.glob("a.*"))
