"""Layer groups, freezing by group and depth, held normalization statistics, gradual unfreezing."""

import pytest
import torch

from microseg.errors import ConfigError
from microseg.models import ModelConfig, build_model
from microseg.transfer.freezing import (
    GROUP_NAMES,
    GradualUnfreezing,
    freeze,
    frozen_modules,
    layer_blocks,
    layer_groups,
    unfreeze,
)

CONFIGS = {
    "unet": ModelConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1),
    "unet_deep_plain": ModelConfig(channels=(4, 8, 8, 16), strides=(2, 2, 2), num_res_units=0),
    "classic": ModelConfig(architecture="classic_unet", channels=(4, 8, 16), strides=(2, 2)),
    "unetr": ModelConfig(architecture="unetr", img_size=(32, 32), feature_size=4, hidden_size=32,
                         num_heads=2, mlp_dim=32),
}


def brute_force_trainable(model, frozen_prefixes):
    """Count parameter values by name, independently of freeze()'s own bookkeeping."""
    count = 0
    for name, parameter in model.named_parameters():
        if not any(name == p or name.startswith(p + ".") for p in frozen_prefixes):
            count += parameter.numel()
    return count


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_parameter_is_in_exactly_one_group(name):
    model = build_model(CONFIGS[name])
    groups = layer_groups(model)
    assert list(groups) == list(GROUP_NAMES)
    for parameter_name, _ in model.named_parameters():
        owners = [g for g, modules in groups.items()
                  if any(parameter_name.startswith(m + ".") for m in modules)]
        assert len(owners) == 1, (parameter_name, owners)
    flattened = [m for g in GROUP_NAMES for m in groups[g]]
    assert sorted(flattened) == sorted(layer_blocks(model))


def test_monai_unet_groups_follow_the_nesting():
    groups = layer_groups(build_model(CONFIGS["unet_deep_plain"]))
    assert groups["encoder"] == ["model.0", "model.1.submodule.0", "model.1.submodule.1.submodule.0"]
    assert groups["bottleneck"] == ["model.1.submodule.1.submodule.1.submodule"]
    assert groups["decoder"] == ["model.1.submodule.1.submodule.2", "model.1.submodule.2"]
    assert groups["head"] == ["model.2"]


def test_head_is_the_only_group_that_knows_the_classes():
    small = build_model(CONFIGS["unet"])
    other = build_model(CONFIGS["unet"].replace(out_classes=5))
    head = tuple(m + "." for m in layer_groups(small)["head"])
    differing = [k for k, v in small.state_dict().items() if other.state_dict()[k].shape != v.shape]
    assert differing and all(k.startswith(head) for k in differing)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("groups", [("encoder",), ("encoder", "bottleneck"), ("decoder", "head"), ()])
def test_trainable_count_matches_brute_force(name, groups):
    model = build_model(CONFIGS[name])
    report = freeze(model, groups=groups)
    prefixes = [m for g in groups for m in layer_groups(model)[g]]
    assert report.trainable_params == brute_force_trainable(model, prefixes)
    assert report.total_params == sum(p.numel() for p in model.parameters())
    assert report.frozen_groups == tuple(groups)


def test_freeze_by_depth_and_by_module_name():
    model = build_model(CONFIGS["classic"])
    blocks = layer_blocks(model)
    report = freeze(model, keep_last=3)
    assert report.frozen_modules == tuple(blocks[:-3])
    assert report.trainable_params == brute_force_trainable(model, blocks[:-3])
    by_name = freeze(model, groups=["encoders.0", "head"])
    assert by_name.trainable_params == brute_force_trainable(model, ["encoders.0", "head"])
    assert freeze(model, keep_last=len(blocks)).trainable_params == report.total_params
    assert freeze(model, keep_last=0).trainable_params == 0


def test_freeze_refuses_unknown_names_and_depths():
    model = build_model(CONFIGS["unet"])
    with pytest.raises(ConfigError, match="'encodr' is neither a layer group"):
        freeze(model, groups=["encodr"])
    with pytest.raises(ConfigError, match="keep_last=99"):
        freeze(model, keep_last=99)
    with pytest.raises(ConfigError, match="cannot tell the layer groups of a Sequential"):
        layer_groups(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)))


def test_report_text_and_dict():
    model = build_model(CONFIGS["unet"])
    report = freeze(model, groups=("encoder",))
    text = str(report)
    assert "frozen: encoder" in text and f"{report.trainable_params:,}" in text
    assert "keep their running statistics" in text
    assert report.to_dict()["frozen_groups"] == ["encoder"]
    assert 0 < report.to_dict()["trainable_fraction"] < 1


def train_steps(model, steps=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-2)
    for _ in range(steps):
        model.train()
        x = torch.randn(2, 1, 32, 32, generator=generator) * 3 + 1
        y = torch.randint(0, 3, (2, 32, 32), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("norm", ["batchrenorm", "batch"])
def test_frozen_weights_and_statistics_stay_while_the_rest_trains(norm):
    model = build_model(CONFIGS["unet"].replace(norm=norm))
    freeze(model, groups=("encoder",))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    encoder = tuple(m + "." for m in layer_groups(model)["encoder"])
    # the whole model's optimizer (not only trainable parameters) must not move frozen ones either
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for step in range(3):
        model.train()
        x = torch.randn(2, 1, 32, 32) * 3 + step
        loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 3, (2, 32, 32)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith(encoder):
            assert torch.equal(after[key], value), key
    changed = [k for k in before if not k.startswith(encoder) and not torch.equal(after[k], before[k])]
    assert any(k.endswith("running_mean") for k in changed)
    assert any(k.endswith("conv.weight") for k in changed)


def test_statistics_follow_training_when_asked():
    model = build_model(CONFIGS["unet"].replace(norm="batch"))
    freeze(model, groups=("encoder",), keep_norm_statistics=False)
    assert frozen_modules(model) == []
    first_norm = "model.0.conv.unit0.adn.N"
    before = model.state_dict()[f"{first_norm}.running_mean"].clone()
    train_steps(model)
    assert not torch.equal(model.state_dict()[f"{first_norm}.running_mean"], before)
    weight = model.state_dict()[f"{first_norm}.weight"]
    assert torch.equal(weight, torch.ones_like(weight))


def test_unfreeze_releases_everything():
    model = build_model(CONFIGS["unet"])
    freeze(model, groups=("encoder", "decoder"))
    assert frozen_modules(model)
    report = unfreeze(model)
    assert report.trainable_params == report.total_params
    assert frozen_modules(model) == []
    model.train()
    assert all(m.training for m in model.modules())


def test_freezing_again_does_not_stack_hooks():
    model = build_model(CONFIGS["unet"])
    for _ in range(3):
        freeze(model, groups=("encoder",))
    norm = model.get_submodule("model.0.conv.unit0.adn.N")
    assert len(norm._forward_pre_hooks) == 1


def test_gradual_unfreezing_goes_from_output_to_input():
    model = build_model(CONFIGS["unet"])
    freeze(model, groups=("encoder", "bottleneck", "decoder"))
    schedule = GradualUnfreezing(model, every_epochs=2)
    assert schedule.on_epoch(1) == []
    assert schedule.on_epoch(2) == ["decoder"]
    groups = layer_groups(model)
    assert brute_force_trainable(model, groups["encoder"] + groups["bottleneck"]) == sum(
        p.numel() for p in model.parameters() if p.requires_grad)
    schedule(None, {"epoch": 4, "train_loss": 1.0})
    assert schedule.on_epoch(6) == ["encoder"]
    assert all(p.requires_grad for p in model.parameters())
    assert schedule.on_epoch(8) == []
    assert [g for _, g in schedule.unfrozen] == ["decoder", "bottleneck", "encoder"]


def test_trainer_keeps_frozen_statistics_and_unfreezes_gradually():
    import numpy as np

    from microseg.training.config import TrainConfig
    from microseg.training.trainer import Trainer
    from microseg.transfer.adapt import parameter_groups

    rng = np.random.default_rng(0)
    images = [rng.normal(2.0, 1.5, size=(1, 32, 32)).astype(np.float32) for _ in range(3)]
    pairs = [(image, (image[0] > 2).astype(np.int64) + (image[0] > 3)) for image in images]
    config = CONFIGS["unet"].replace(norm="batch")
    model = build_model(config)
    freeze(model, groups=("encoder", "bottleneck", "decoder"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    schedule = GradualUnfreezing(model, every_epochs=1)
    budget = TrainConfig(epochs=2, steps_per_epoch=2, batch_size=2, patch_size=(32, 32),
                         learning_rate=1e-2, scheduler="none")
    trainer = Trainer(model, budget, pairs[:2], pairs[2:], model_config=config, device="cpu",
                      callbacks=[schedule], parameters=parameter_groups(model, 1e-2),
                      progress=False)
    trainer.fit()
    after = model.state_dict()
    groups = layer_groups(model)
    assert [g for _, g in schedule.unfrozen] == ["decoder", "bottleneck"]
    encoder = tuple(m + "." for m in groups["encoder"])
    bottleneck = tuple(m + "." for m in groups["bottleneck"])
    decoder = tuple(m + "." for m in groups["decoder"])
    for key, value in before.items():
        if key.startswith(encoder + bottleneck):
            assert torch.equal(after[key], value), key
    # the decoder, unfrozen after the first epoch, trained in the second, statistics included
    assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith(decoder)
               and k.endswith("running_mean"))
    assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith(decoder)
               and k.endswith("conv.weight"))
