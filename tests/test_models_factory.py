"""build_model for every architecture x norm x ndim; ModelConfig validation; presets and summary."""

import importlib.util

import pytest
import torch
from torch import nn

from microseg.errors import ConfigError
from microseg.models import (
    ModelConfig,
    build_model,
    count_parameters,
    fold_batchrenorm,
    model_preset,
    model_summary,
    preset_names,
    required_input_shape,
    set_renorm_limits,
    size_divisor,
)
from microseg.models.batchrenorm import BatchRenorm2d, BatchRenorm3d
from microseg.models.norms import FittedGroupNorm

NORMS = ["batch", "instance", "batchrenorm", "group", "none"]
HAS_EINOPS = importlib.util.find_spec("einops") is not None


def tiny_config(architecture, norm, ndim):
    if architecture == "unetr":
        return ModelConfig(
            architecture="unetr",
            ndim=ndim,
            norm=norm,
            img_size=(32, 32) if ndim == 2 else (16, 16, 16),
            feature_size=4,
            hidden_size=32,
            num_heads=2,
            mlp_dim=64,
            group_norm_groups=4,
        )
    return ModelConfig(
        architecture=architecture,
        ndim=ndim,
        norm=norm,
        channels=(4, 8, 16),
        strides=(2, 2),
        num_res_units=1,
        group_norm_groups=4,
    )


def architectures():
    unetr = pytest.param(
        "unetr", marks=pytest.mark.skipif(not HAS_EINOPS, reason="MONAI's UNETR needs einops")
    )
    return ["unet", "classic_unet", unetr]


def norm_layers(model):
    kinds = (nn.modules.batchnorm._NormBase, nn.GroupNorm, BatchRenorm2d, BatchRenorm3d)
    return [m for m in model.modules() if isinstance(m, kinds)]


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("architecture", architectures())
def test_every_architecture_norm_and_ndim_builds_and_runs(architecture, norm, ndim):
    config = tiny_config(architecture, norm, ndim)
    model = build_model(config)
    spatial = (32, 32) if ndim == 2 else (16, 16, 16)
    x = torch.randn(2, 1, *spatial)
    assert model(x).shape == (2, 3, *spatial)
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 3, *spatial)
    assert model.size_divisor == size_divisor(config)
    layers = [m for m in norm_layers(model) if not isinstance(m, nn.LayerNorm)]
    expected = {
        "batch": (nn.BatchNorm2d, nn.BatchNorm3d),
        "instance": (nn.InstanceNorm2d, nn.InstanceNorm3d),
        "batchrenorm": (BatchRenorm2d, BatchRenorm3d),
        "group": (FittedGroupNorm,),
        "none": (),
    }[norm]
    assert bool(layers) == bool(expected)
    assert all(
        type(m) in expected and (ndim == 3) == ("3d" in type(m).__name__) or norm == "group"
        for m in layers
    )
    for layer in layers:
        if norm in ("batch", "batchrenorm"):
            assert layer.momentum == 0.01
        if norm == "instance":
            assert layer.affine
        if norm == "batchrenorm":
            assert float(layer.r_max) == 1.0 and float(layer.d_max) == 0.0, "built as BatchNorm"


def test_batchrenorm_model_folds_with_equal_eval_output():
    config = tiny_config("classic_unet", "batchrenorm", 2)
    model = build_model(config)
    set_renorm_limits(model, 3.0, 5.0)
    for _ in range(3):
        model(torch.randn(2, 1, 32, 32) * 2 + 1)
    model.eval()
    folded = fold_batchrenorm(model)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(folded(x), model(x))
    assert not any(isinstance(m, BatchRenorm2d) for m in folded.modules())
    assert folded.size_divisor == 4


def test_config_and_weights_round_trip(tmp_path):
    config = tiny_config("unet", "batchrenorm", 3)
    model = build_model(config)
    set_renorm_limits(model, 2.0, 1.0)
    model(torch.randn(2, 1, 16, 16, 16))
    config.save(tmp_path / "config.json")
    torch.save(model.state_dict(), tmp_path / "best.pt")
    loaded = ModelConfig.load(tmp_path / "config.json")
    assert loaded == config
    again = build_model(loaded)
    again.load_state_dict(torch.load(tmp_path / "best.pt", weights_only=True))
    model.eval()
    again.eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert all(float(m.r_max) == 2.0 for m in again.modules() if isinstance(m, BatchRenorm3d))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"channels": (8, 16), "strides": (2, 2)}, r"must have len\(channels\) - 1 = 1 values"),
        ({"channels": (8,), "strides": ()}, "at least two positive values"),
        ({"ndim": 4}, "ndim must be 2 or 3"),
        ({"norm_momentum": 0.0}, r"norm_momentum must be in \(0, 1\]"),
        ({"norm": "layer"}, "not one of"),
        ({"architecture": "unetr"}, "unetr needs img_size"),
        (
            {"architecture": "unetr", "img_size": (40, 48)},
            r"multiple of the ViT patch size 16 \(e.g. \(48, 48\)\)",
        ),
        (
            {"architecture": "unetr", "img_size": (32, 32), "hidden_size": 30, "num_heads": 4},
            "multiple of num_heads",
        ),
        ({"renorm_r_max": 0.5, "dropout": 1.0}, "renorm_r_max must be >= 1"),
        ({"chanels": (4, 8)}, "did you mean 'channels'"),
    ],
)
def test_invalid_configs_are_explained(changes, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig().replace(**changes)


def test_all_problems_are_listed_at_once():
    with pytest.raises(ConfigError) as info:
        ModelConfig(ndim=5, dropout=2.0, strides=(2,))
    assert str(info.value).count("\n  - ") == 3


def test_size_divisor_and_required_shape():
    assert size_divisor(ModelConfig(channels=(4, 8, 16), strides=(2, 2))) == 4
    assert size_divisor(ModelConfig(channels=(4, 8, 16, 32), strides=(2, 3, 2))) == 12
    unetr = ModelConfig(architecture="unetr", img_size=(64, 32))
    assert size_divisor(unetr) == 16 and required_input_shape(unetr) == (64, 32)
    assert required_input_shape(ModelConfig()) is None


def test_size_divisor_is_enough_for_classic_unet_with_stride_three():
    config = ModelConfig(
        architecture="classic_unet", channels=(4, 8, 16), strides=(3, 2), norm="none"
    )
    side = 2 * size_divisor(config)
    assert build_model(config)(torch.randn(1, 1, side, side + size_divisor(config))).shape[2:] == (
        12,
        18,
    )


def test_count_parameters_known_answer():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), BatchRenorm2d(4))
    assert count_parameters(model) == (48, 48)
    model[0].requires_grad_(False)
    assert count_parameters(model) == (8, 48)


def test_presets():
    assert set(preset_names()) >= {"default2d", "paper3d", "paper3d_unetr", "tiny2d", "tiny3d"}
    paper = model_preset("paper3d")
    assert (paper.architecture, paper.ndim, paper.channels, paper.strides) == (
        "classic_unet",
        3,
        (32, 64, 128),
        (2, 2),
    )
    assert (paper.norm, paper.norm_momentum, paper.out_classes) == ("batchrenorm", 0.01, 3)
    model = build_model(paper)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 3)]
    renorms = [m for m in model.modules() if isinstance(m, BatchRenorm3d)]
    assert len(convs) == len(renorms) == 2 * 3 + 2 * 2, (
        "two conv blocks per level, encoder and decoder"
    )
    assert sum(isinstance(m, nn.MaxPool3d) for m in model.modules()) == 2
    default = model_preset("default2d")
    assert default.ndim == 2 and default.norm == "batchrenorm"
    for name in preset_names():
        config = model_preset(name)
        assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="did you mean 'paper3d'"):
        model_preset("paper_3d")


def test_model_summary_names_what_matters():
    config = model_preset("tiny2d").replace(norm="batchrenorm")
    model = build_model(config)
    text = model_summary(model, config)
    trainable, total = count_parameters(model)
    assert "unet (MONAI UNet, 1 residual unit(s) per level)" in text
    assert "3 (8 -> 16 -> 32 features; strides 2, 2)" in text
    assert "batchrenorm (momentum 0.01" in text
    renorms = sum(isinstance(m, BatchRenorm2d) for m in model.modules())
    assert f"{renorms} x BatchRenorm2d" in text
    assert f"{trainable:,} trainable of {total:,}" in text and "multiples of 4" in text


def test_unetr_without_einops_gives_an_actionable_error(monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "einops" or m.startswith(("einops.", "monai.networks.nets.unetr", "monai.networks.blocks"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "einops", None)
    with pytest.raises(ConfigError, match="needs the package einops"):
        build_model(tiny_config("unetr", "batch", 2))
