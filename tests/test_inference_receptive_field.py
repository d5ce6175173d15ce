"""Receptive field by gradients: known answers for MONAI UNets, asymmetric fields, halo checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

from microseg.inference.receptive_field import (
    HaloTooSmallWarning,
    ReceptiveField,
    check_halo,
    effective_receptive_field,
    recommended_halo,
    theoretical_receptive_field,
)
from microseg.inference.tiling import predict_tiled, predict_whole


def monai_unet(channels=(4, 8, 16), num_res_units=2, norm="batch", ndim=2):
    torch.manual_seed(0)
    model = UNet(
        spatial_dims=ndim,
        in_channels=1,
        out_channels=3,
        channels=channels,
        strides=(2, 2),
        num_res_units=num_res_units,
        norm=norm,
    )
    model.size_divisor = 4
    return model


@pytest.mark.parametrize("channels", [(4, 8, 16), (32, 64, 128)])
def test_unet_with_two_residual_units_has_trf_47_and_halo_24(channels):
    rf = theoretical_receptive_field(monai_unet(channels, 2), ndim=2, in_channels=1)
    assert rf.extent == (47, 47) and rf.radius == (23, 23) and not rf.whole_input
    assert recommended_halo(rf, 4) == (24, 24)


def test_unet_without_residual_units_has_trf_21_and_15_from_the_centre_only():
    model = monai_unet(num_res_units=0)
    assert theoretical_receptive_field(model, 2, 1).extent == (21, 21)
    assert theoretical_receptive_field(model, 2, 1, positions="all").extent == (21, 21)
    assert theoretical_receptive_field(model, 2, 1, positions="centre").extent == (15, 15)


def test_3d_field_matches_the_2d_one_per_axis():
    rf = theoretical_receptive_field(monai_unet(num_res_units=0, ndim=3), ndim=3, in_channels=1)
    assert rf.extent == (21, 21, 21) and rf.input_size == (32, 32, 32)


def test_left_and_right_extents_are_kept_apart():
    # ZeroPad2d takes (left, right, top, bottom): output (y, x) reads rows y..y+2, columns x-3..x+1.
    model = nn.Sequential(nn.ZeroPad2d((3, 1, 0, 2)), nn.Conv2d(1, 1, (3, 5)))
    rf = theoretical_receptive_field(model, 2, 1, positions="centre")
    assert rf.left == (0, 3) and rf.right == (2, 1)
    assert rf.extent == (3, 5) and rf.radius == (2, 3)
    assert recommended_halo(rf, 4) == (4, 4) and recommended_halo(rf) == (2, 3)


def test_instance_norm_depends_on_the_whole_input_and_reports_the_conv_field():
    rf = theoretical_receptive_field(monai_unet(norm="instance"), 2, 1)
    assert rf.whole_input
    assert rf.extent == (47, 47), "the convolutions alone, as for the BatchNorm model"


def test_a_global_operation_is_reported_as_whole_input():
    class GlobalMean(nn.Module):
        def forward(self, x):
            return x + x.mean(dim=(2, 3), keepdim=True)

    rf = theoretical_receptive_field(GlobalMean(), 2, 1, size=16)
    assert rf.whole_input and rf.input_size == (16, 16)


def test_measurement_leaves_the_model_unchanged():
    model = monai_unet(num_res_units=0).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    theoretical_receptive_field(model, 2, 1)
    assert model.training and next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_recommended_halo_makes_tiling_exact_and_a_smaller_one_does_not(rng):
    model = monai_unet(num_res_units=1).double().eval()
    halo = recommended_halo(theoretical_receptive_field(model, 2, 1), 4)
    assert halo == (16, 16)  # radius 13, rounded up to the divisor
    # With a halo of 8, windows of 16 + 2·8 lie at 0, 12, 28, 40, 56: the cuts between windows
    # 16 apart have only 8 of context. (Cuts fall on multiples of the divisor, where this
    # network's radius is 12, not 13: a halo of 12 happens to be exact too.)
    image = rng.normal(size=(1, 88, 88))
    for used, exact in [(halo[0], True), (halo[0] - 8, False)]:
        whole = predict_whole(model, image, halo=used, activation=None)
        tiled = predict_tiled(model, image, 16, used, activation=None)
        assert (np.abs(whole - tiled).max() <= 1e-12) == exact  # float64: equal up to sum order


def test_effective_field_is_inside_the_theoretical_one_and_equal_at_fraction_one():
    model = monai_unet(num_res_units=2)
    erf = effective_receptive_field(model, 2, 1, fraction=0.95)
    centre_trf = theoretical_receptive_field(model, 2, 1, positions="centre")
    assert all(0 < e < t for e, t in zip(erf.extent, centre_trf.extent, strict=True))
    assert effective_receptive_field(model, 2, 1, fraction=1.0).extent == centre_trf.extent


def test_check_halo_warns_with_the_recommended_value():
    rf = ReceptiveField(left=(23, 10), right=(22, 13))
    with pytest.warns(HaloTooSmallWarning, match=r"use halo=\(24, 16\)"):
        assert check_halo(16, rf, divisor=4) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_halo((23, 13), rf) is True


def test_check_halo_warns_that_no_halo_suffices_for_whole_input_fields():
    rf = ReceptiveField(left=(2, 2), right=(2, 2), whole_input=True)
    with pytest.warns(HaloTooSmallWarning, match="no halo"):
        assert check_halo(64, rf) is False


def test_to_dict_holds_every_derived_value():
    rf = ReceptiveField(left=(1, 2), right=(3, 0), input_size=(64, 64))
    assert rf.to_dict() == {
        "left": [1, 2],
        "right": [3, 0],
        "extent": [5, 3],
        "radius": [3, 2],
        "whole_input": False,
        "input_size": [64, 64],
    }
