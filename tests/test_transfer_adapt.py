"""Replacing the first/last layers for other channels/classes; learning rates per layer group."""

import pytest
import torch

from microseg.errors import ConfigError
from microseg.models import ModelConfig, build_model
from microseg.transfer.adapt import AdaptConfig, adapt_model, parameter_groups
from microseg.transfer.freezing import freeze, layer_groups

CONFIGS = {
    "unet": ModelConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1, norm="batch"),
    "unet_plain": ModelConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=0),
    "classic": ModelConfig(architecture="classic_unet", channels=(4, 8, 16), strides=(2, 2)),
    "unetr": ModelConfig(architecture="unetr", img_size=(32, 32), feature_size=4, hidden_size=32,
                         num_heads=2, mlp_dim=32),
}


def pretrained(name):
    torch.manual_seed(3)
    model = build_model(CONFIGS[name])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


@pytest.mark.parametrize("name", list(CONFIGS))
def test_new_classes_replace_only_the_head(name):
    model = pretrained(name)
    new_model, config, report = adapt_model(model, CONFIGS[name], out_classes=5)
    assert config.out_classes == 5 and config.in_channels == 1
    head = tuple(m + "." for m in layer_groups(new_model)["head"])
    assert report.output_tensors and all(t.startswith(head) for t in report.output_tensors)
    assert report.input_tensors == ()
    old, new = model.state_dict(), new_model.state_dict()
    for key, value in new.items():
        if key in report.output_tensors:
            assert value.shape != old[key].shape
        else:
            assert torch.equal(value, old[key]), key
    x = torch.randn(1, 1, 32, 32)
    assert new_model(x).shape == (1, 5, 32, 32)
    assert "output classes 3 -> 5" in str(report)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_new_channels_start_from_the_averaged_kernel(name):
    model = pretrained(name)
    new_model, config, report = adapt_model(model, CONFIGS[name], in_channels=3)
    assert config.in_channels == 3 and report.input_tensors and not report.output_tensors
    old, new = model.state_dict(), new_model.state_dict()
    for key in report.input_tensors:
        expected = old[key].double().mean(dim=1, keepdim=True) / 3
        assert torch.allclose(new[key].double(), expected.expand_as(new[key]), atol=1e-7)
    # a grey image repeated over the three new channels gives the pretrained response
    model.eval()
    new_model.eval()
    grey = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(new_model(grey.repeat(1, 3, 1, 1)), model(grey), atol=1e-5)


def test_fresh_input_weights_and_both_changes():
    model = pretrained("unet")
    new_model, config, report = adapt_model(model, CONFIGS["unet"], in_channels=2, out_classes=2,
                                            input_weights="fresh")
    assert (config.in_channels, config.out_classes) == (2, 2)
    assert report.in_channels == (1, 2) and report.out_classes == (3, 2)
    assert set(report.input_tensors).isdisjoint(report.output_tensors)
    first = report.input_tensors[0]
    averaged = model.state_dict()[first].mean(dim=1, keepdim=True) / 2
    assert not torch.allclose(new_model.state_dict()[first], averaged.expand(-1, 2, -1, -1))
    assert new_model(torch.randn(2, 2, 16, 16)).shape == (2, 2, 16, 16)
    assert report.to_dict()["input_weights"] == "fresh"


def test_nothing_to_change_returns_the_same_model():
    model = pretrained("unet")
    same, config, report = adapt_model(model, CONFIGS["unet"], in_channels=1, out_classes=3)
    assert same is model and config is CONFIGS["unet"] and not report.changed
    with pytest.raises(ConfigError, match="input_weights"):
        adapt_model(model, CONFIGS["unet"], out_classes=2, input_weights="copy")


def test_parameter_groups_cover_every_parameter_once():
    model = pretrained("unet")
    groups = parameter_groups(model, 1e-3, {"encoder": 1e-5, "head": 1e-2})
    assert [g["name"] for g in groups] == ["encoder", "bottleneck", "decoder", "head"]
    assert [g["lr"] for g in groups] == [1e-5, 1e-3, 1e-3, 1e-2]
    in_groups = [id(p) for g in groups for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in model.parameters())
    optimizer = torch.optim.Adam(groups)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-5, 1e-3, 1e-3, 1e-2]


def test_frozen_groups_wait_in_the_optimizer_until_unfrozen():
    model = pretrained("unet")
    freeze(model, groups=("encoder",))
    optimizer = torch.optim.Adam(parameter_groups(model, 1e-2))
    encoder = model.get_submodule("model.0").conv.unit0.conv.weight
    head = model.get_submodule("model.2")[1].conv.unit0.conv.weight
    before = encoder.detach().clone(), head.detach().clone()

    def step():
        optimizer.zero_grad()
        model(torch.randn(2, 1, 16, 16)).square().mean().backward()
        optimizer.step()

    step()
    assert torch.equal(encoder, before[0]) and not torch.equal(head, before[1])
    freeze(model, groups=())
    step()
    assert not torch.equal(encoder, before[0])
    with pytest.raises(ConfigError, match="layer groups"):
        parameter_groups(model, 1e-3, {"backbone": 1e-5})
    with pytest.raises(ConfigError, match="rates > 0"):
        parameter_groups(model, 0.0)


def test_adapt_config_round_trip_and_checks(tmp_path):
    config = AdaptConfig(mode="finetune", freeze=" encoder ,bottleneck,",
                         group_learning_rates={"encoder": 1e-5})
    assert config.freeze == ("encoder", "bottleneck")
    assert config.effective_learning_rate(2e-3) == pytest.approx(2e-4)
    assert AdaptConfig.load(config.save(tmp_path / "adapt.json")) == config
    assert AdaptConfig(learning_rate=1e-3).effective_learning_rate(2e-3) == 1e-3
    with pytest.raises(ConfigError, match="keep_last must be >= 0"):
        AdaptConfig(keep_last=-1)
    with pytest.raises(ConfigError, match="'partial'"):
        AdaptConfig(mode="partial")
