"""Segmentation networks from one typed config: U-Nets (2D/3D) and UNETR with a selectable norm.

A :class:`ModelConfig` says which network to build; :func:`build_model` builds it, outputting
logits (N, out_classes, *spatial) for input (N, in_channels, *spatial). The feature normalization
is one of ``"batch"``, ``"instance"``, ``"batchrenorm"``, ``"group"`` and ``"none"``, for every
architecture. Presets (:func:`model_preset`) hold the sizes used by the notebooks and the tiling paper.

Example
-------
>>> import torch
>>> config = ModelConfig(ndim=2, channels=(4, 8, 16), strides=(2, 2), norm="batchrenorm")
>>> model = build_model(config)
>>> model(torch.zeros(1, 1, 32, 32)).shape
torch.Size([1, 3, 32, 32])
>>> size_divisor(config)
4
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import math
from typing import Literal

from torch import nn

from microseg.config import StageConfig
from microseg.errors import ConfigError
from microseg.models.batchrenorm import _BatchRenorm

__all__ = [
    "ModelConfig",
    "build_model",
    "count_parameters",
    "model_preset",
    "model_summary",
    "preset_names",
    "required_input_shape",
    "size_divisor",
]

UNETR_PATCH_SIZE = 16
"""Side of the ViT patches in MONAI's UNETR (fixed there, as are its 12 transformer layers)."""


@dataclasses.dataclass
class ModelConfig(StageConfig):
    """Which network to build, saved as ``config.json`` in a model folder.

    Fields
    ------
    architecture : ``"unet"`` — MONAI ``UNet``: strided convolutions down, transposed convolutions
        up, ``num_res_units`` residual units per level; ``"classic_unet"`` —
        :class:`~microseg.models.unet.ClassicUNet`, two conv blocks (conv → norm → non-linearity)
        per level, max-pooling, as in the tiling paper's 3D U-Net; ``"unetr"`` — MONAI ``UNETR``, a ViT
        encoder (LayerNorm inside, as in the tiling paper) and a convolutional decoder.
    ndim : spatial dimensions, 2 (YX) or 3 (ZYX).
    in_channels : input channels C.
    out_classes : output channels K: 2 for "binary", the number of classes including background
        for "semantic", 3 (background, foreground, boundary) for "instance".
    channels : U-Nets: features per level, top to bottom; one level per entry.
    strides : U-Nets: down-sampling factor between consecutive levels, ``len(channels) - 1``
        values. Input sides must be multiples of their product (:func:`size_divisor`).
    num_res_units : "unet" only: residual units per level (0: one plain conv per level).
    norm : feature normalization in every conv block: ``"batch"`` (BatchNorm), ``"instance"``
        (InstanceNorm with affine parameters; statistics of each tile, hence tiling artifacts),
        ``"batchrenorm"`` (Batch Renormalization; see :mod:`microseg.models.batchrenorm`),
        ``"group"`` (GroupNorm, see ``group_norm_groups``) or ``"none"``.
    group_norm_groups : groups of GroupNorm; a layer whose width it does not divide uses the
        largest common divisor (:class:`~microseg.models.norms.FittedGroupNorm`).
    norm_momentum : running-average momentum of "batch" and "batchrenorm"
        (``new = (1 − m) · old + m · batch``; the tiling paper uses 0.01, PyTorch's default is 0.1).
    act : non-linearity of the U-Nets: ``"relu"`` (default, as in the tiling paper's U-Net and cheap),
        ``"leakyrelu"``, ``"prelu"`` (MONAI UNet's own default), ``"elu"`` or ``"gelu"``.
        MONAI's UNETR always uses LeakyReLU in its decoder and GELU in its encoder.
    dropout : dropout probability (U-Nets: channel dropout in every block; UNETR: in the ViT).
    renorm_r_max, renorm_d_max : final BatchRenorm limits that the training schedule ramps to
        (the layers are built with 1 and 0, plain BatchNorm; publication values 3 and 5).
    img_size : "unetr" only, required: the fixed input shape (one value per spatial axis), each a
        multiple of 16 (the ViT patch size). UNETR accepts exactly this shape.
    feature_size : "unetr" only: decoder features at full resolution (×2, ×4, ×8 below).
    hidden_size : "unetr" only: ViT embedding size (the tiling paper: 768).
    mlp_dim : "unetr" only: ViT feed-forward size (MONAI's default 3072).
    num_heads : "unetr" only: attention heads; must divide ``hidden_size`` (the tiling paper: 12).

    Example
    -------
    >>> ModelConfig(channels=(8, 16), strides=(2, 2))
    Traceback (most recent call last):
    ...
    microseg.errors.ConfigError: ModelConfig is not valid:
      - strides (2, 2) must have len(channels) - 1 = 1 values, one between consecutive levels of channels (8, 16)
    """

    architecture: Literal["unet", "classic_unet", "unetr"] = "unet"
    ndim: int = 2
    in_channels: int = 1
    out_classes: int = 3
    channels: tuple[int, ...] = (32, 64, 128)
    strides: tuple[int, ...] = (2, 2)
    num_res_units: int = 2
    norm: Literal["batch", "instance", "batchrenorm", "group", "none"] = "batchrenorm"
    group_norm_groups: int = 8
    norm_momentum: float = 0.01
    act: Literal["relu", "leakyrelu", "prelu", "elu", "gelu"] = "relu"
    dropout: float = 0.0
    renorm_r_max: float = 3.0
    renorm_d_max: float = 5.0
    img_size: tuple[int, ...] | None = None
    feature_size: int = 16
    hidden_size: int = 768
    mlp_dim: int = 3072
    num_heads: int = 12

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = _general_problems(self)
        problems += _unetr_problems(self) if self.architecture == "unetr" else _unet_problems(self)
        if problems:
            raise ConfigError(
                "ModelConfig is not valid:\n" + "\n".join(f"  - {p}" for p in problems)
            )


def _general_problems(config: ModelConfig) -> list[str]:
    checks = [
        (config.ndim in (2, 3), f"ndim must be 2 or 3, found {config.ndim}"),
        (config.in_channels >= 1, f"in_channels must be >= 1, found {config.in_channels}"),
        (config.out_classes >= 1, f"out_classes must be >= 1, found {config.out_classes}"),
        (
            config.group_norm_groups >= 1,
            f"group_norm_groups must be >= 1, found {config.group_norm_groups}",
        ),
        (
            0 < config.norm_momentum <= 1,
            f"norm_momentum must be in (0, 1], found {config.norm_momentum}",
        ),
        (0 <= config.dropout < 1, f"dropout must be in [0, 1), found {config.dropout}"),
        (config.renorm_r_max >= 1, f"renorm_r_max must be >= 1, found {config.renorm_r_max}"),
        (config.renorm_d_max >= 0, f"renorm_d_max must be >= 0, found {config.renorm_d_max}"),
    ]
    return [message for ok, message in checks if not ok]


def _unet_problems(config: ModelConfig) -> list[str]:
    problems = []
    if len(config.channels) < 2 or min(config.channels) < 1:
        problems.append(
            f"channels must hold at least two positive values (levels), found {config.channels}"
        )
    if len(config.strides) != len(config.channels) - 1:
        problems.append(
            f"strides {config.strides} must have len(channels) - 1 = {len(config.channels) - 1} values, "
            f"one between consecutive levels of channels {config.channels}"
        )
    if config.strides and min(config.strides) < 1:
        problems.append(f"strides must be >= 1, found {config.strides}")
    if config.num_res_units < 0:
        problems.append(f"num_res_units must be >= 0, found {config.num_res_units}")
    return problems


def _unetr_problems(config: ModelConfig) -> list[str]:
    problems = []
    patch = UNETR_PATCH_SIZE
    if config.img_size is None:
        problems.append(
            f"unetr needs img_size, the fixed input shape, e.g. img_size={(4 * patch,) * config.ndim}"
        )
    elif len(config.img_size) != config.ndim or any(
        s < patch or s % patch for s in config.img_size
    ):
        fixed = [max(patch, math.ceil(s / patch) * patch) for s in config.img_size] or [4 * patch]
        fixed = (fixed + fixed[-1:] * config.ndim)[: config.ndim]
        problems.append(
            f"unetr img_size {config.img_size} must have {config.ndim} values, each a multiple of "
            f"the ViT patch size {patch} (e.g. {tuple(fixed)})"
        )
    if config.num_heads < 1 or config.hidden_size % config.num_heads:
        problems.append(
            f"unetr hidden_size {config.hidden_size} must be a multiple of num_heads {config.num_heads}"
        )
    if min(config.feature_size, config.mlp_dim) < 1:
        problems.append(
            f"feature_size and mlp_dim must be >= 1, found {config.feature_size}, {config.mlp_dim}"
        )
    return problems


def _norm_argument(config: ModelConfig) -> str | tuple[str, dict]:
    """The MONAI norm specification for ``config.norm``."""
    arguments = {
        "batch": ("batch", {"momentum": config.norm_momentum}),
        "batchrenorm": ("batchrenorm", {"momentum": config.norm_momentum}),
        "instance": ("instance", {"affine": True}),
        "group": ("fittedgroup", {"num_groups": config.group_norm_groups}),
        "none": "none",
    }
    return arguments[config.norm]


def build_model(config: ModelConfig) -> nn.Module:
    """Build the network ``config`` describes, with freshly initialized weights.

    The model maps float32 (N, in_channels, *spatial) to logits (N, out_classes, *spatial);
    spatial sides must be multiples of :func:`size_divisor` (UNETR: exactly ``img_size``). The
    model carries ``size_divisor`` as an int attribute for tiling code. BatchRenorm layers start
    as BatchNorm (r_max 1, d_max 0); :class:`~microseg.models.batchrenorm.RenormSchedule` raises
    the limits during training.

    Example
    -------
    >>> model = build_model(model_preset("paper3d"))
    >>> model.size_divisor, sum(p.numel() for p in model.parameters())
    (4, 1356707)
    """
    from microseg.models.norms import register_monai_norms

    register_monai_norms()
    builders = {"unet": _monai_unet, "classic_unet": _classic_unet, "unetr": _monai_unetr}
    model = builders[config.architecture](config)
    model.size_divisor = size_divisor(config)
    return model


def _monai_unet(config: ModelConfig) -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=config.ndim,
        in_channels=config.in_channels,
        out_channels=config.out_classes,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        act=config.act,
        norm=_norm_argument(config),
        dropout=config.dropout,
    )


def _classic_unet(config: ModelConfig) -> nn.Module:
    from microseg.models.unet import ClassicUNet

    return ClassicUNet(
        spatial_dims=config.ndim,
        in_channels=config.in_channels,
        out_channels=config.out_classes,
        channels=config.channels,
        strides=config.strides,
        norm=_norm_argument(config),
        act=config.act,
        dropout=config.dropout,
    )


def _monai_unetr(config: ModelConfig) -> nn.Module:
    import importlib.util

    from monai.networks.nets import UNETR

    if importlib.util.find_spec("einops") is None:
        raise ConfigError(
            "architecture 'unetr' needs the package einops (MONAI's attention blocks use it), "
            "which is not installed; install it with `pip install einops` or choose 'unet'"
        )

    return UNETR(
        in_channels=config.in_channels,
        out_channels=config.out_classes,
        img_size=config.img_size,
        feature_size=config.feature_size,
        hidden_size=config.hidden_size,
        mlp_dim=config.mlp_dim,
        num_heads=config.num_heads,
        proj_type="conv",
        norm_name=_norm_argument(config),
        dropout_rate=config.dropout,
        spatial_dims=config.ndim,
    )


def size_divisor(config: ModelConfig) -> int:
    """Every spatial side of a model input must be a multiple of this.

    U-Nets: the product of the strides (4 for two down-samplings by 2); UNETR: its patch size 16
    (and the input must moreover equal ``img_size``, see :func:`required_input_shape`).
    """
    if config.architecture == "unetr":
        return UNETR_PATCH_SIZE
    return math.prod(config.strides)


def required_input_shape(config: ModelConfig) -> tuple[int, ...] | None:
    """The only spatial input shape the model accepts (UNETR: ``img_size``), or None if any fits."""
    return config.img_size if config.architecture == "unetr" else None


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) number of parameter values of ``model``."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def model_summary(model: nn.Module, config: ModelConfig) -> str:
    """A readable two-column table: architecture, levels, normalization, parameters, input sizes.

    Example
    -------
    >>> config = model_preset("tiny2d")
    >>> print(model_summary(build_model(config), config))  # doctest: +ELLIPSIS
    architecture     unet (MONAI UNet, 1 residual unit(s) per level)
    ...
    """
    trainable, total = count_parameters(model)
    rows = [
        ("architecture", _architecture_text(config)),
        (
            "dimensions",
            f"{config.ndim}D, {config.in_channels} input channel(s), {config.out_classes} output classes",
        ),
        ("levels", _levels_text(config)),
        ("normalization", _norm_text(config)),
        ("norm layers", _norm_layers_text(model)),
        (
            "activation",
            "LeakyReLU/GELU (fixed by UNETR)" if config.architecture == "unetr" else config.act,
        ),
        ("dropout", f"{config.dropout:g}"),
        ("parameters", f"{trainable:,} trainable of {total:,}"),
        ("input sides", _input_text(config)),
    ]
    width = max(len(name) for name, _ in rows) + 4
    return "\n".join(f"{name:<{width}}{value}" for name, value in rows)


def _architecture_text(config: ModelConfig) -> str:
    return {
        "unet": f"unet (MONAI UNet, {config.num_res_units} residual unit(s) per level)",
        "classic_unet": "classic_unet (two conv blocks per level, max-pooling)",
        "unetr": "unetr (MONAI UNETR: ViT encoder, convolutional decoder)",
    }[config.architecture]


def _levels_text(config: ModelConfig) -> str:
    if config.architecture == "unetr":
        return (
            f"ViT 12 layers, hidden {config.hidden_size}, {config.num_heads} heads, mlp {config.mlp_dim}, "
            f"patches {UNETR_PATCH_SIZE}; decoder features {config.feature_size}-{8 * config.feature_size}"
        )
    features = " -> ".join(str(c) for c in config.channels)
    return f"{len(config.channels)} ({features} features; strides {', '.join(map(str, config.strides))})"


def _norm_text(config: ModelConfig) -> str:
    if config.norm == "batchrenorm":
        return (
            f"batchrenorm (momentum {config.norm_momentum:g}; limits ramp to "
            f"r_max {config.renorm_r_max:g}, d_max {config.renorm_d_max:g})"
        )
    if config.norm == "batch":
        return f"batch (momentum {config.norm_momentum:g})"
    if config.norm == "group":
        return f"group ({config.group_norm_groups} groups, fewer where a layer's width needs it)"
    return config.norm


def _norm_layers_text(model: nn.Module) -> str:
    kinds = (_BatchRenorm, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    counts = collections.Counter(type(m).__name__ for m in model.modules() if isinstance(m, kinds))
    return ", ".join(f"{n} x {name}" for name, n in sorted(counts.items())) or "none"


def _input_text(config: ModelConfig) -> str:
    shape = required_input_shape(config)
    if shape is not None:
        return f"exactly {tuple(shape)}"
    return f"multiples of {size_divisor(config)}"


def _presets() -> dict[str, ModelConfig]:
    return {
        "default2d": ModelConfig(
            architecture="unet", ndim=2, channels=(16, 32, 64), strides=(2, 2), num_res_units=2,
            norm_momentum=0.1,
        ),
        "paper3d": ModelConfig(
            architecture="classic_unet", ndim=3, channels=(32, 64, 128), strides=(2, 2), act="relu"
        ),
        "paper3d_unetr": ModelConfig(architecture="unetr", ndim=3, img_size=(96, 96, 96)),
        "tiny2d": ModelConfig(
            architecture="unet", ndim=2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1
        ),
        "tiny3d": ModelConfig(
            architecture="unet", ndim=3, channels=(8, 16, 32), strides=(2, 2), num_res_units=1
        ),
    }


def preset_names() -> list[str]:
    """Names accepted by :func:`model_preset`."""
    return list(_presets())


def model_preset(name: str) -> ModelConfig:
    """A named model configuration; change fields with ``.replace(...)``.

    - ``"default2d"`` — notebook 02's default: 2D MONAI UNet, 16/32/64 features, two
      down-samplings, 2 residual units per level, BatchRenorm with running-average momentum 0.1
      (0.01, the tiling paper's value for long GPU trainings, leaves the running statistics far
      behind the weights in a training of minutes: the model in eval mode predicts background
      for the first epochs); trains in minutes on a CPU.
    - ``"paper3d"`` — the tiling paper's 3D U-Net: two down-samplings, 32/64/128 features, two conv blocks
      (conv → BatchRenorm → ReLU) per level, momentum 0.01 (``classic_unet``, because MONAI's UNet
      has residual units and strided convolutions instead).
    - ``"paper3d_unetr"`` — the tiling paper's UNETR: hidden size 768, 12 heads, patches of 16,
      BatchRenorm in the decoder, 96³ input.
    - ``"tiny2d"``, ``"tiny3d"`` — 8/16/32 features, 1 residual unit: smoke runs and tests.

    Raises
    ------
    ConfigError
        For an unknown name (with the closest known name).

    Example
    -------
    >>> model_preset("paper3d").replace(in_channels=2).channels
    (32, 64, 128)
    """
    presets = _presets()
    if name not in presets:
        close = difflib.get_close_matches(name, presets, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"no model preset {name!r}{hint}; known presets: {', '.join(presets)}")
    return presets[name]
