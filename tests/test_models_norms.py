"""Our norm names in MONAI's Norm factory, and the group norm that fits every layer width."""

import importlib.util

import pytest
import torch
from monai.networks.layers.factories import Norm
from monai.networks.layers.utils import get_norm_layer
from torch import nn

from microseg.models.batchrenorm import BatchRenorm1d, BatchRenorm2d, BatchRenorm3d
from microseg.models.norms import FittedGroupNorm, register_monai_norms


def test_factory_returns_our_classes_by_dimension():
    register_monai_norms()
    assert Norm["batchrenorm", 1] is BatchRenorm1d
    assert Norm["batchrenorm", 2] is BatchRenorm2d
    assert Norm["batchrenorm", 3] is BatchRenorm3d
    assert Norm["none", 3] is nn.Identity and Norm["identity", 2] is nn.Identity
    assert Norm["fittedgroup", 2] is FittedGroupNorm


def test_registration_is_idempotent():
    register_monai_norms()
    names, doc = Norm.names, Norm.__doc__
    register_monai_norms()
    assert Norm.names == names and Norm.__doc__ == doc
    assert doc.count("``batchrenorm``") == 1


def test_get_norm_layer_passes_channels_and_arguments():
    layer = get_norm_layer(("batchrenorm", {"momentum": 0.02}), spatial_dims=3, channels=6)
    assert isinstance(layer, BatchRenorm3d) and layer.num_features == 6 and layer.momentum == 0.02
    assert isinstance(
        get_norm_layer(("none", {"momentum": 0.01}), spatial_dims=2, channels=6), nn.Identity
    )
    group = get_norm_layer(("fittedgroup", {"num_groups": 8}), spatial_dims=2, channels=12)
    assert group.num_groups == 4 and group.num_channels == 12


@pytest.mark.parametrize("norm", ["batchrenorm", ("batchrenorm", {"momentum": 0.01}), "none"])
def test_monai_unet_accepts_our_names(norm):
    from monai.networks.nets import UNet

    net = UNet(2, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1, norm=norm)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 3, 32, 32)
    renorms = [m for m in net.modules() if isinstance(m, BatchRenorm2d)]
    if norm == "none":
        assert not renorms
    else:
        assert len(renorms) >= 4 and all(m.momentum == 0.01 for m in renorms)


def test_monai_basic_unet_and_unetr_blocks_accept_batchrenorm():
    from monai.networks.blocks.unetr_block import UnetrBasicBlock, UnetrUpBlock
    from monai.networks.nets import BasicUNet

    net = BasicUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        features=(4, 4, 8, 8, 16, 4),
        norm="batchrenorm",
    )
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 2, 32, 32)
    assert any(isinstance(m, BatchRenorm2d) for m in net.modules())
    block = UnetrBasicBlock(
        3, 2, 4, kernel_size=3, stride=1, norm_name="batchrenorm", res_block=True
    )
    up = UnetrUpBlock(
        3, 8, 4, kernel_size=3, upsample_kernel_size=2, norm_name="batchrenorm", res_block=True
    )
    skip = block(torch.randn(2, 2, 8, 8, 8))
    assert up(torch.randn(2, 8, 4, 4, 4), skip).shape == (2, 4, 8, 8, 8)
    assert sum(isinstance(m, BatchRenorm3d) for m in [*block.modules(), *up.modules()]) >= 4


@pytest.mark.skipif(importlib.util.find_spec("einops") is None, reason="MONAI's UNETR needs einops")
def test_monai_unetr_accepts_batchrenorm():
    from monai.networks.nets import UNETR

    net = UNETR(
        1,
        3,
        img_size=(32, 32),
        feature_size=4,
        hidden_size=32,
        mlp_dim=64,
        num_heads=2,
        norm_name="batchrenorm",
        spatial_dims=2,
    )
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 3, 32, 32)
    assert any(isinstance(m, BatchRenorm2d) for m in net.modules())


@pytest.mark.parametrize(
    "channels, groups, expected", [(32, 8, 8), (3, 8, 1), (12, 8, 4), (6, 4, 2)]
)
def test_fitted_group_norm_equals_group_norm_with_common_divisor(channels, groups, expected):
    generator = torch.Generator().manual_seed(1)
    fitted = FittedGroupNorm(channels, num_groups=groups)
    assert fitted.num_groups == expected
    plain = nn.GroupNorm(expected, channels)
    x = torch.randn(2, channels, 5, 5, generator=generator)
    assert torch.equal(fitted(x), plain(x))
    with pytest.raises(ValueError, match="num_groups >= 1"):
        FittedGroupNorm(channels, num_groups=0)
