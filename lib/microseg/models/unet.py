"""The classic U-Net: two conv blocks (conv → norm → non-linearity) per level.

This is the network of Ronneberger et al. (2015) and Çiçek et al. (2016, 3D) with 'same' padding,
the layout the tiling/normalization paper trains ("3D U-Net with 2 downsampling steps and 2
convolutional blocks per level"). MONAI's ``UNet`` differs (strided convolutions, residual units,
one block per level in the decoder) and ``DynUNet`` has no convolution biases, which matters when
the network runs without feature normalization; hence this small implementation. Normalization and
activation layers come from MONAI's factories, so every name in ``monai.networks.layers.Norm``
works, ``"batchrenorm"`` included.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from microseg.errors import ConfigError

__all__ = ["ClassicUNet"]


def _conv_block(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    norm: str | tuple,
    act: str | tuple,
    dropout: float,
) -> nn.Sequential:
    from monai.networks.layers.factories import Conv, Dropout
    from monai.networks.layers.utils import get_act_layer, get_norm_layer

    layers = [
        Conv["conv", spatial_dims](in_channels, out_channels, kernel_size=3, padding=1),
        get_norm_layer(norm, spatial_dims=spatial_dims, channels=out_channels),
        get_act_layer(act),
    ]
    if dropout > 0:
        layers.append(Dropout["dropout", spatial_dims](dropout))
    return nn.Sequential(*layers)


def _double_conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    norm: str | tuple,
    act: str | tuple,
    dropout: float,
) -> nn.Sequential:
    return nn.Sequential(
        _conv_block(spatial_dims, in_channels, out_channels, norm, act, dropout),
        _conv_block(spatial_dims, out_channels, out_channels, norm, act, dropout),
    )


class ClassicUNet(nn.Module):
    """U-Net with two conv blocks per level, max-pooling down, transposed convolutions up.

    Parameters
    ----------
    spatial_dims : 2 or 3.
    in_channels : input channels C.
    out_channels : output channels K (logits, no activation).
    channels : features per level, top to bottom, e.g. (32, 64, 128): three levels.
    strides : pooling factor between consecutive levels; ``len(channels) - 1`` values.
    norm : MONAI norm name or (name, kwargs), e.g. ``"batchrenorm"`` or ``("batch", {"momentum": 0.01})``.
    act : MONAI activation name or (name, kwargs).
    dropout : channel dropout after every block (0 for none).

    Input (N, C, *spatial) float with every spatial size divisible by ``prod(strides)``; output
    (N, K, *spatial). Other sizes fail in the skip concatenation.

    Example
    -------
    >>> import microseg.models  # registers "batchrenorm"
    >>> net = ClassicUNet(3, 1, 3, channels=(32, 64, 128), strides=(2, 2), norm="batchrenorm")
    >>> net.eval()(torch.zeros(1, 1, 16, 16, 16)).shape
    torch.Size([1, 3, 16, 16, 16])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        from monai.networks.layers.factories import Conv, Pool

        if len(strides) != len(channels) - 1 or len(channels) < 2:
            raise ConfigError(
                f"ClassicUNet needs at least two levels and one stride between consecutive levels, "
                f"found channels={tuple(channels)} and strides={tuple(strides)}; give one stride fewer "
                f"than channels, e.g. channels=(16, 32, 64), strides=(2, 2)"
            )
        blocks = dict(spatial_dims=spatial_dims, norm=norm, act=act, dropout=dropout)
        widths = [in_channels, *channels]
        self.encoders = nn.ModuleList(
            _double_conv(in_channels=a, out_channels=b, **blocks)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.pools = nn.ModuleList(
            Pool["max", spatial_dims](kernel_size=s, stride=s) for s in strides
        )
        self.upsamplers = nn.ModuleList(
            Conv["convtrans", spatial_dims](channels[i + 1], channels[i], kernel_size=s, stride=s)
            for i, s in reversed(list(enumerate(strides)))
        )
        self.decoders = nn.ModuleList(
            _double_conv(in_channels=2 * channels[i], out_channels=channels[i], **blocks)
            for i in reversed(range(len(strides)))
        )
        self.head = Conv["conv", spatial_dims](channels[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, *spatial) for input (N, C, *spatial)."""
        skips = []
        features = x
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                features = self.pools[level - 1](features)
            features = encoder(features)
            skips.append(features)
        for upsampler, decoder, skip in zip(
            self.upsamplers, self.decoders, reversed(skips[:-1]), strict=True
        ):
            features = decoder(torch.cat([skip, upsampler(features)], dim=1))
        return self.head(features)
