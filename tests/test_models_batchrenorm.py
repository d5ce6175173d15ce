"""BatchRenorm against an independent float64 implementation of Ioffe (2017), and against BatchNorm."""

import pytest
import torch
from torch import nn

from microseg.errors import ConfigError
from microseg.models.batchrenorm import (
    BatchRenorm1d,
    BatchRenorm2d,
    BatchRenorm3d,
    RenormSchedule,
    fold_batchrenorm,
    set_renorm_limits,
)

SHAPES = {
    "1d-flat": (BatchRenorm1d, nn.BatchNorm1d, (16, 6)),
    "1d": (BatchRenorm1d, nn.BatchNorm1d, (4, 6, 10)),
    "2d": (BatchRenorm2d, nn.BatchNorm2d, (4, 6, 5, 7)),
    "3d": (BatchRenorm3d, nn.BatchNorm3d, (2, 6, 4, 5, 3)),
}


def reference_renorm(x, weight, bias, mean, var, r_max, d_max, eps, momentum, detach=True):
    """Ioffe's algorithm, written out per channel on float64 tensors.

    Returns output, new running mean, new running var, r, d.
    """
    channels = x.shape[1]
    per_channel = x.transpose(0, 1).reshape(channels, -1)
    n = per_channel.shape[1]
    mu_b = per_channel.sum(dim=1) / n
    var_b = ((per_channel - mu_b[:, None]) ** 2).sum(dim=1) / n
    sigma_b = (var_b + eps) ** 0.5
    sigma = (var + eps) ** 0.5
    r = torch.minimum(
        torch.maximum(sigma_b / sigma, torch.full_like(sigma, 1 / r_max)),
        torch.full_like(sigma, r_max),
    )
    d = torch.minimum(
        torch.maximum((mu_b - mean) / sigma, torch.full_like(sigma, -d_max)),
        torch.full_like(sigma, d_max),
    )
    if detach:
        r, d = r.detach(), d.detach()
    x_hat = (per_channel - mu_b[:, None]) / sigma_b[:, None] * r[:, None] + d[:, None]
    y = weight[:, None] * x_hat + bias[:, None]
    y = y.reshape(channels, x.shape[0], *x.shape[2:]).transpose(0, 1)
    new_mean = (1 - momentum) * mean + momentum * mu_b.detach()
    new_var = (1 - momentum) * var + momentum * var_b.detach() * n / (n - 1)
    return y, new_mean, new_var, r, d


def random_state(layer, generator):
    """Non-trivial parameters and running statistics, also returned as float64 copies."""
    c = layer.num_features
    with torch.no_grad():
        layer.weight.copy_(torch.rand(c, generator=generator) + 0.5)
        layer.bias.copy_(torch.randn(c, generator=generator))
        layer.running_mean.copy_(torch.randn(c, generator=generator))
        layer.running_var.copy_(torch.rand(c, generator=generator) * 4 + 0.2)
    return {k: v.detach().double().clone() for k, v in layer.named_parameters()} | {
        "mean": layer.running_mean.double().clone(),
        "var": layer.running_var.double().clone(),
    }


@pytest.mark.parametrize("limits", [(1.0, 0.0), (3.0, 5.0), (1.5, 0.2)])
@pytest.mark.parametrize("kind", list(SHAPES))
def test_training_matches_float64_reference(kind, limits):
    layer_class, _, shape = SHAPES[kind]
    generator = torch.Generator().manual_seed(7)
    layer = layer_class(shape[1], momentum=0.1)
    state = random_state(layer, generator)
    set_renorm_limits(layer, *limits)
    clipped_r = clipped_d = 0
    for _ in range(3):
        x = torch.randn(shape, generator=generator, dtype=torch.float64) * 2.5 + 0.7
        y = layer(x.float())
        expected, state["mean"], state["var"], r, d = reference_renorm(
            x, state["weight"], state["bias"], state["mean"], state["var"], *limits, 1e-5, 0.1
        )
        torch.testing.assert_close(y.double(), expected, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(layer.running_mean.double(), state["mean"], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(layer.running_var.double(), state["var"], atol=1e-6, rtol=1e-6)
        clipped_r += int(
            ((r - limits[0]).abs() < 1e-12).sum() + ((r - 1 / limits[0]).abs() < 1e-12).sum()
        )
        clipped_d += int(((d.abs() - limits[1]).abs() < 1e-12).sum())
    assert int(layer.num_batches_tracked) == 3
    if limits == (1.5, 0.2):
        assert clipped_r > 0 and clipped_d > 0, "the test data must engage the clipping"
        assert clipped_r < 3 * shape[1], "and leave some channels unclipped"


@pytest.mark.parametrize("kind", list(SHAPES))
def test_equals_batchnorm_when_limits_are_one_and_zero(kind):
    layer_class, batchnorm_class, shape = SHAPES[kind]
    generator = torch.Generator().manual_seed(3)
    renorm = layer_class(shape[1], momentum=0.05)
    batchnorm = batchnorm_class(shape[1], momentum=0.05)
    random_state(renorm, generator)
    batchnorm.load_state_dict(
        {k: v for k, v in renorm.state_dict().items() if k not in ("r_max", "d_max")}
    )
    for _ in range(3):
        x = (torch.randn(shape, generator=generator) * 3 + 1).requires_grad_()
        x_bn = x.detach().clone().requires_grad_()
        y, y_bn = renorm(x), batchnorm(x_bn)
        torch.testing.assert_close(y, y_bn, atol=1e-5, rtol=1e-5)
        upstream = torch.randn(shape, generator=generator)
        (y * upstream).sum().backward()
        (y_bn * upstream).sum().backward()
        torch.testing.assert_close(x.grad, x_bn.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(renorm.weight.grad, batchnorm.weight.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(renorm.bias.grad, batchnorm.bias.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(renorm.running_mean, batchnorm.running_mean, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(renorm.running_var, batchnorm.running_var, atol=1e-6, rtol=1e-6)
    renorm.eval()
    batchnorm.eval()
    batchnorm.load_state_dict(
        {k: v for k, v in renorm.state_dict().items() if k not in ("r_max", "d_max")}
    )
    x = torch.randn(shape, generator=generator)
    assert torch.equal(renorm(x), batchnorm(x)), "eval is BatchNorm eval with the same statistics"


def test_eval_is_batchnorm_eval_with_running_statistics_and_folds_exactly():
    generator = torch.Generator().manual_seed(5)
    layer = BatchRenorm2d(4)
    state = random_state(layer, generator)
    set_renorm_limits(layer, 3.0, 5.0)
    layer.eval()
    x = torch.randn(3, 4, 6, 6, generator=generator, dtype=torch.float64)
    expected = (x - state["mean"].view(1, -1, 1, 1)) / (
        state["var"].view(1, -1, 1, 1) + 1e-5
    ) ** 0.5
    expected = expected * state["weight"].view(1, -1, 1, 1) + state["bias"].view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x.float()).double(), expected, atol=1e-5, rtol=1e-5)
    folded = layer.to_batchnorm()
    assert type(folded) is nn.BatchNorm2d and not folded.training
    assert torch.equal(folded(x.float()), layer(x.float()))


def test_fold_batchrenorm_replaces_every_layer_in_a_copy():
    torch.manual_seed(0)
    shared = BatchRenorm3d(4)
    model = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), shared, nn.ReLU(), nn.Sequential(nn.Conv3d(4, 4, 1), shared)
    )
    set_renorm_limits(model, 2.0, 1.0)
    for _ in range(4):
        model(torch.randn(2, 1, 6, 6, 6) * 2 + 1)
    model.eval()
    folded = fold_batchrenorm(model)
    x = torch.randn(1, 1, 6, 6, 6)
    assert torch.equal(folded(x), model(x))
    assert not any(isinstance(m, BatchRenorm3d) for m in folded.modules())
    assert folded[1] is folded[3][1], "a layer used twice stays one layer"
    assert isinstance(model[1], BatchRenorm3d), "the original model is unchanged"


def test_eval_forward_leaves_running_statistics_untouched():
    generator = torch.Generator().manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), BatchRenorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), BatchRenorm2d(4)
    )
    set_renorm_limits(model, 3.0, 5.0)
    model(torch.randn(2, 1, 12, 12, generator=generator))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 1, 12, 12, generator=generator) * 5 + 3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_r_and_d_are_detached_from_the_graph():
    generator = torch.Generator().manual_seed(11)
    layer = BatchRenorm2d(5).double()
    state = random_state(layer, generator)
    set_renorm_limits(layer, 3.0, 5.0)
    with torch.no_grad():
        layer.running_var.copy_(torch.linspace(0.8, 1.6, 5, dtype=torch.float64))
        state["var"] = layer.running_var.clone()
    x = (torch.randn(4, 5, 6, 6, generator=generator, dtype=torch.float64) + 0.3).requires_grad_()
    upstream = torch.randn(4, 5, 6, 6, generator=generator, dtype=torch.float64)
    (layer(x) * upstream).sum().backward()

    def reference_grads(detach):
        x_ref = x.detach().clone().requires_grad_()
        weight = state["weight"].clone().requires_grad_()
        bias = state["bias"].clone().requires_grad_()
        y, *_, r, d = reference_renorm(
            x_ref, weight, bias, state["mean"], state["var"], 3.0, 5.0, 1e-5, 0.01, detach
        )
        assert (r < 3.0).all() and (r > 1 / 3.0).all() and (d.abs() < 5.0).all(), "no clipping here"
        (y * upstream).sum().backward()
        return x_ref.grad, weight.grad

    detached_x, detached_weight = reference_grads(detach=True)
    torch.testing.assert_close(x.grad, detached_x, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(layer.weight.grad, detached_weight, atol=1e-10, rtol=1e-9)
    attached_x, _ = reference_grads(detach=False)
    assert (x.grad - attached_x).abs().max() > 1e-3


def test_statistics_in_float32_under_bfloat16_autocast():
    generator = torch.Generator().manual_seed(4)
    conv = nn.Conv2d(2, 3, 3)
    layer = BatchRenorm2d(3, momentum=0.5)
    x = torch.randn(2, 2, 10, 10, generator=generator) * 40 + 300
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = conv(x)
        y = layer(features)
    assert features.dtype == torch.bfloat16 and y.dtype == torch.bfloat16
    values = features.detach().double().transpose(0, 1).reshape(3, -1)
    expected_mean = 0.5 * values.mean(dim=1)
    expected_var = 0.5 + 0.5 * values.var(dim=1, unbiased=True)
    assert layer.running_mean.dtype == torch.float32
    torch.testing.assert_close(layer.running_mean.double(), expected_mean, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(layer.running_var.double(), expected_var, rtol=1e-5, atol=1e-4)


def test_half_precision_input_with_large_values_gives_no_nan():
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 16, 16, generator=generator) * 600 + 2000
    layer = BatchRenorm2d(3)
    set_renorm_limits(layer, 3.0, 5.0)
    naive_var = x.half().var(dim=(0, 2, 3))
    assert not torch.isfinite(naive_var).all(), "float16 statistics would overflow here"
    y = layer(x.half())
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    reference = BatchRenorm2d(3)
    set_renorm_limits(reference, 3.0, 5.0)
    torch.testing.assert_close(y.float(), reference(x.half().float()), atol=2e-3, rtol=2e-3)
    assert torch.isfinite(layer.running_var).all()


def test_schedule_limits_warmup_ramp_and_end():
    schedule = RenormSchedule(warmup_steps=100, ramp_steps=40, r_max=3.0, d_max=5.0)
    assert schedule.limits(0) == (1.0, 0.0)
    assert schedule.limits(99) == (1.0, 0.0)
    assert schedule.limits(100) == (1.0, 0.0)
    assert schedule.limits(110) == pytest.approx((1.5, 1.25))
    assert schedule.limits(120) == pytest.approx((2.0, 2.5))
    assert schedule.limits(140) == (3.0, 5.0)
    assert schedule.limits(10_000) == (3.0, 5.0)
    assert RenormSchedule(5, 0, r_max=2.0, d_max=1.0).limits(5) == (2.0, 1.0)


def test_schedule_apply_changes_the_training_output():
    generator = torch.Generator().manual_seed(8)
    layer = BatchRenorm2d(4)
    state = random_state(layer, generator)
    schedule = RenormSchedule(warmup_steps=10, ramp_steps=10)
    x = torch.randn(2, 4, 5, 5, generator=generator, dtype=torch.float64) * 2 + 1
    outputs = {}
    for step in (0, 15, 20):
        probe = BatchRenorm2d(4)
        probe.load_state_dict(layer.state_dict())
        limits = schedule.apply(probe, step)
        assert (float(probe.r_max), float(probe.d_max)) == pytest.approx(limits)
        outputs[step] = probe(x.float()).double()
        expected = reference_renorm(
            x, state["weight"], state["bias"], state["mean"], state["var"], *limits, 1e-5, 0.01
        )[0]
        torch.testing.assert_close(outputs[step], expected, atol=2e-5, rtol=1e-5)
    assert (outputs[0] - outputs[15]).abs().max() > 0.1
    assert (outputs[15] - outputs[20]).abs().max() > 0.01
    assert schedule.step == 20


def test_schedule_state_dict_round_trip_and_validation():
    schedule = RenormSchedule(warmup_steps=50, ramp_steps=20, r_max=2.5, d_max=1.0)
    schedule.apply(nn.Identity(), 37)
    restored = RenormSchedule(0, 0)
    restored.load_state_dict(schedule.state_dict())
    assert restored == schedule and restored.step == 37
    with pytest.raises(ConfigError, match="keys"):
        restored.load_state_dict({"warmup_steps": 1})
    with pytest.raises(ConfigError, match="r_max >= 1"):
        RenormSchedule(1, 1, r_max=0.5)
    with pytest.raises(ConfigError, match=">= 0"):
        RenormSchedule(-1, 1)


def test_layer_state_dict_round_trip_restores_limits(tmp_path):
    generator = torch.Generator().manual_seed(9)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), BatchRenorm2d(3))
    set_renorm_limits(model, 2.5, 1.5)
    model(torch.randn(2, 1, 8, 8, generator=generator))
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    again = nn.Sequential(nn.Conv2d(1, 3, 3), BatchRenorm2d(3))
    again.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    assert float(again[1].r_max) == 2.5 and float(again[1].d_max) == 1.5
    x = torch.randn(2, 1, 8, 8, generator=generator)
    assert torch.equal(again(x), model(x))


def test_invalid_arguments_are_explained():
    with pytest.raises(ValueError, match="momentum must be in"):
        BatchRenorm2d(3, momentum=0.0)
    with pytest.raises(ValueError, match="r_max >= 1"):
        set_renorm_limits(BatchRenorm2d(3), 0.9, 0.0)
    with pytest.raises(ValueError, match="expects a 4-D input"):
        BatchRenorm2d(3)(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="got 2 channels"):
        BatchRenorm2d(3)(torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="more than one value per channel"):
        BatchRenorm1d(3)(torch.zeros(1, 3))
