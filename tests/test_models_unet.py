"""ClassicUNet: two conv blocks (conv -> norm -> non-linearity) per level, exact shapes."""

import pytest
import torch
from torch import nn

from microseg.models.batchrenorm import BatchRenorm3d
from microseg.models.unet import ClassicUNet


def test_two_conv_norm_act_blocks_per_level():
    net = ClassicUNet(
        3, 1, 3, channels=(4, 8, 16), strides=(2, 2), norm=("batchrenorm", {"momentum": 0.01})
    )
    levels = [*net.encoders, *net.decoders]
    assert len(net.encoders) == 3 and len(net.decoders) == 2 and len(net.pools) == 2
    for level in levels:
        assert len(level) == 2
        for block in level:
            conv, norm, act = block
            assert (
                isinstance(conv, nn.Conv3d)
                and conv.kernel_size == (3, 3, 3)
                and conv.bias is not None
            )
            assert isinstance(norm, BatchRenorm3d) and norm.num_features == conv.out_channels
            assert norm.momentum == 0.01 and isinstance(act, nn.ReLU)
    assert [level[0][0].in_channels for level in net.decoders] == [16, 8], (
        "skip concatenation doubles the width"
    )


@pytest.mark.parametrize(
    "ndim, strides, channels, shape",
    [
        (2, (2, 2), (4, 8, 16), (36, 20)),
        (2, (3,), (4, 8), (9, 21)),
        (3, (2, 2), (4, 8, 16), (8, 12, 16)),
    ],
)
def test_output_has_input_spatial_shape(ndim, strides, channels, shape):
    net = ClassicUNet(ndim, 2, 5, channels=channels, strides=strides, norm="batch", dropout=0.1)
    x = torch.randn(2, 2, *shape)
    y = net(x)
    assert y.shape == (2, 5, *shape)
    y.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_sizes_not_divisible_by_the_strides_fail():
    net = ClassicUNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), norm="none")
    with pytest.raises(RuntimeError):
        net(torch.randn(1, 1, 30, 32))


def test_eval_output_is_translation_equivariant_by_the_divisor():
    """Shifting the input by a multiple of prod(strides) shifts the output (away from borders)."""
    torch.manual_seed(0)
    net = ClassicUNet(2, 1, 2, channels=(4, 8), strides=(2,), norm="none").double().eval()
    image = torch.randn(1, 1, 48, 48, dtype=torch.float64)
    with torch.no_grad():
        whole = net(image)
        shifted = net(image[..., 4:, 4:])
    torch.testing.assert_close(
        shifted[..., 8:-8, 8:-8], whole[..., 12:-8, 12:-8], rtol=0, atol=1e-12
    )


def test_invalid_levels_are_explained():
    with pytest.raises(ValueError, match="one stride between consecutive levels"):
        ClassicUNet(2, 1, 2, channels=(4, 8), strides=(2, 2))
