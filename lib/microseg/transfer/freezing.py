"""Freeze and unfreeze parts of a segmentation network by named layer group or by depth.

Transfer learning keeps the early layers of a pretrained network (they detect edges, textures and
simple shapes that carry over to new images) and retrains the rest. Our networks are split into
four named groups, in the order data flows through them:

- ``"encoder"`` — the down-sampling path (MONAI UNet: the down blocks of every level but the
  lowest; classic U-Net: ``encoders`` but the lowest; UNETR: the ViT patch embedding,
  transformer blocks and final LayerNorm plus the convolutional skip encoders ``encoder1–4``);
- ``"bottleneck"`` — the lowest-resolution block (UNETR: ``decoder5``, where the ViT output
  enters the decoder);
- ``"decoder"`` — the up-sampling path except the last block;
- ``"head"`` — the block that outputs the class logits (MONAI UNet: the top up block, whose
  transposed convolution already has ``out_classes`` channels; classic U-Net and UNETR: the
  final 1×1 convolution).

:func:`layer_blocks` lists the same modules one block at a time in forward order, for freezing
by depth ("all but the last k blocks").

Frozen parameters get ``requires_grad = False``; optimizers skip them because their gradient
stays None. Normalization layers with running statistics (BatchNorm, BatchRenorm) inside frozen
blocks keep those statistics by default: a forward pre-hook puts the layer in eval mode before
every call, so a trainer's ``model.train()`` cannot undo it and the statistics learnt on the
pretrained data are neither updated nor replaced by those of a small batch.

Example
-------
>>> from microseg.models import ModelConfig, build_model
>>> model = build_model(ModelConfig(channels=(4, 8, 16), strides=(2, 2)))
>>> layer_groups(model)["bottleneck"]
['model.1.submodule.1.submodule']
>>> report = freeze(model, groups=("encoder",))
>>> report.frozen_groups
('encoder',)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from torch import nn

from microseg.errors import ConfigError

__all__ = [
    "FreezeReport",
    "GROUP_NAMES",
    "GradualUnfreezing",
    "freeze",
    "frozen_modules",
    "layer_blocks",
    "layer_groups",
    "unfreeze",
]

log = logging.getLogger(__name__)

GROUP_NAMES = ("encoder", "bottleneck", "decoder", "head")
"""Layer groups, in the order data flows through the network."""


@dataclasses.dataclass(frozen=True)
class FreezeReport:
    """What :func:`freeze` did.

    frozen_groups: the named groups frozen (empty when freezing by depth or module name).
    frozen_modules: module names whose parameters are frozen, in forward order.
    trainable_params, total_params: number of parameter values that train, and in all.
    held_norm_layers: normalization layers in frozen blocks kept in eval mode (their running
        statistics do not change during training).
    """

    frozen_groups: tuple[str, ...]
    frozen_modules: tuple[str, ...]
    trainable_params: int
    total_params: int
    held_norm_layers: int

    @property
    def trainable_fraction(self) -> float:
        """Share of parameter values that train, between 0 and 1."""
        return self.trainable_params / self.total_params if self.total_params else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (lists instead of tuples), with the trainable fraction."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        out["trainable_fraction"] = self.trainable_fraction
        return out

    def __str__(self) -> str:
        what = ", ".join(self.frozen_groups) or f"{len(self.frozen_modules)} block(s)"
        if not self.frozen_modules:
            what = "nothing (every layer trains)"
        held = (f"; {self.held_norm_layers} normalization layer(s) in frozen blocks keep their "
                f"running statistics" if self.held_norm_layers else "")
        return (f"frozen: {what}; trainable parameters: {self.trainable_params:,} of "
                f"{self.total_params:,} ({100 * self.trainable_fraction:.1f} %){held}")


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """Module names of each layer group (:data:`GROUP_NAMES`) of one of our networks.

    Works for the networks :func:`microseg.models.build_model` makes (MONAI ``UNet``,
    :class:`~microseg.models.unet.ClassicUNet`, MONAI ``UNETR``) at any depth; the module names are
    those of ``model.named_modules()``, so a parameter belongs to a group when its name starts
    with one of the group's module names followed by a dot. Every parameter is in exactly one
    group.

    Raises
    ------
    ConfigError
        For another kind of network (freeze its modules by name with :func:`freeze` instead).

    Example
    -------
    >>> from microseg.models import ModelConfig, build_model
    >>> groups = layer_groups(build_model(ModelConfig(channels=(4, 8, 16), strides=(2, 2))))
    >>> groups["encoder"], groups["head"]
    (['model.0', 'model.1.submodule.0'], ['model.2'])
    """
    return {name: [m for m in modules if m] for name, modules in _groups_and_blocks(model)[0].items()}


def layer_blocks(model: nn.Module) -> list[str]:
    """Module names of the network's blocks in forward order, from the input to the output.

    A block is one level of the down or up path (MONAI UNet), one encoder, up-sampler or decoder
    (classic U-Net), or one transformer block, skip encoder or decoder stage (UNETR). Freezing
    "all but the last k blocks" freezes the first ``len(blocks) - k``. Errors as
    :func:`layer_groups`.
    """
    return _groups_and_blocks(model)[1]


def _groups_and_blocks(model: nn.Module) -> tuple[dict[str, list[str]], list[str]]:
    from monai.networks.nets import UNETR, UNet

    from microseg.models.unet import ClassicUNet

    if isinstance(model, UNet):
        return _monai_unet_layout(model)
    if isinstance(model, ClassicUNet):
        return _classic_unet_layout(model)
    if isinstance(model, UNETR):
        return _unetr_layout(model)
    raise ConfigError(
        f"cannot tell the layer groups of a {type(model).__name__}: microseg knows MONAI UNet, "
        f"ClassicUNet and UNETR. Freeze modules by name instead, e.g. freeze(model, "
        f"groups=[{next((n for n, _ in model.named_children()), 'first_module')!r}])"
    )


def _monai_unet_layout(model: nn.Module) -> tuple[dict[str, list[str]], list[str]]:
    """MONAI nests each level as Sequential(down, SkipConnection(next level), up)."""
    from monai.networks.layers import SkipConnection

    node, prefix, down, up = model.model, "model", [], []
    while isinstance(node, nn.Sequential) and len(node) == 3 and isinstance(node[1], SkipConnection):
        down.append(f"{prefix}.0")
        up.append(f"{prefix}.2")
        node, prefix = node[1].submodule, f"{prefix}.1.submodule"
    groups = {"encoder": down, "bottleneck": [prefix], "decoder": up[:0:-1], "head": up[:1]}
    return groups, [*down, prefix, *up[::-1]]


def _classic_unet_layout(model: nn.Module) -> tuple[dict[str, list[str]], list[str]]:
    levels = len(model.encoders)
    decoder = [name for i in range(levels - 1) for name in (f"upsamplers.{i}", f"decoders.{i}")]
    groups = {
        "encoder": [f"encoders.{i}" for i in range(levels - 1)],
        "bottleneck": [f"encoders.{levels - 1}"],
        "decoder": decoder,
        "head": ["head"],
    }
    return groups, [*groups["encoder"], *groups["bottleneck"], *decoder, "head"]


def _unetr_layout(model: nn.Module) -> tuple[dict[str, list[str]], list[str]]:
    transformer = [f"vit.blocks.{i}" for i in range(len(model.vit.blocks))]
    encoder = ["vit.patch_embedding", *transformer, "vit.norm",
               "encoder1", "encoder2", "encoder3", "encoder4"]
    groups = {
        "encoder": encoder,
        "bottleneck": ["decoder5"],
        "decoder": ["decoder4", "decoder3", "decoder2"],
        "head": ["out"],
    }
    return groups, [*encoder, "decoder5", "decoder4", "decoder3", "decoder2", "out"]


def _resolve_modules(model: nn.Module, groups: Sequence[str]) -> list[str]:
    """Group names → their modules; other names must be modules of ``model``."""
    names = dict(model.named_modules())
    known = layer_groups(model) if any(g in GROUP_NAMES for g in groups) else {}
    modules, unknown = [], []
    for group in groups:
        if group in GROUP_NAMES:
            modules += known[group]
        elif group in names and group:
            modules.append(group)
        else:
            unknown.append(group)
    if unknown:
        raise ConfigError(
            f"freeze: {', '.join(map(repr, unknown))} is neither a layer group "
            f"({', '.join(GROUP_NAMES)}) nor a module of this {type(model).__name__} "
            f"(module names: {', '.join(list(names)[1:6])}, ...)"
        )
    return modules


def _depth_modules(model: nn.Module, keep_last: int) -> list[str]:
    blocks = layer_blocks(model)
    if not 0 <= keep_last <= len(blocks):
        raise ConfigError(
            f"keep_last={keep_last}: this network has {len(blocks)} blocks; choose 0 (freeze all) "
            f"to {len(blocks)} (freeze nothing)"
        )
    return blocks[: len(blocks) - keep_last]


def freeze(
    model: nn.Module,
    groups: Sequence[str] = ("encoder",),
    keep_last: int | None = None,
    keep_norm_statistics: bool = True,
) -> FreezeReport:
    """Freeze exactly the given part of ``model`` (in place); every other parameter trains.

    Parameters
    ----------
    model : one of our networks (any module when ``groups`` names modules).
    groups : layer groups (:data:`GROUP_NAMES`) and/or module names (``model.named_modules()``)
        to freeze; ``()`` freezes nothing (classic fine-tuning). Ignored when ``keep_last`` is set.
    keep_last : freeze by depth instead: all blocks (:func:`layer_blocks`) but the last
        ``keep_last`` ones.
    keep_norm_statistics : keep BatchNorm/BatchRenorm layers in frozen blocks in eval mode during
        training (their running statistics stay those of the pretrained data). False: they follow
        ``model.train()`` like the rest and update their statistics (their weights stay frozen).

    Returns
    -------
    FreezeReport, also logged: trainable versus total parameters.

    Raises
    ------
    ConfigError
        For an unknown group or module name, a ``keep_last`` out of range, or a network whose
        layer groups are unknown.

    Example
    -------
    >>> from microseg.models import ModelConfig, build_model
    >>> model = build_model(ModelConfig(channels=(4, 8, 16), strides=(2, 2)))
    >>> freeze(model, keep_last=2).frozen_modules
    ('model.0', 'model.1.submodule.0', 'model.1.submodule.1.submodule')
    """
    modules = _depth_modules(model, keep_last) if keep_last is not None else _resolve_modules(model, groups)
    _set_frozen(model, modules, keep_norm_statistics)
    named = () if keep_last is not None else tuple(g for g in groups if g in GROUP_NAMES)
    report = _report(model, named, modules)
    log.info("%s", report)
    return report


def unfreeze(model: nn.Module) -> FreezeReport:
    """Make every parameter trainable and let every normalization layer follow train()/eval()."""
    return freeze(model, groups=())


def frozen_modules(model: nn.Module) -> list[str]:
    """Names of the modules whose normalization statistics are held by :func:`freeze`."""
    return [name for name, module in model.named_modules() if _is_held(module)]


def _set_frozen(model: nn.Module, modules: Sequence[str], keep_norm_statistics: bool) -> None:
    prefixes = tuple(f"{m}." for m in modules)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not name.startswith(prefixes))
    for name, module in model.named_modules():
        _release_statistics(module)
        if keep_norm_statistics and f"{name}.".startswith(prefixes) and _has_running_statistics(module):
            module.register_forward_pre_hook(_hold_statistics)


def _has_running_statistics(module: nn.Module) -> bool:
    return getattr(module, "running_mean", None) is not None and hasattr(module, "momentum")


def _hold_statistics(module: nn.Module, args: Any) -> None:
    """Forward pre-hook: normalize with the stored running statistics and do not update them."""
    module.training = False


def _is_held(module: nn.Module) -> bool:
    return any(hook is _hold_statistics for hook in module._forward_pre_hooks.values())


def _release_statistics(module: nn.Module) -> None:
    hooks = module._forward_pre_hooks
    for key in [k for k, hook in hooks.items() if hook is _hold_statistics]:
        del hooks[key]


def _report(model: nn.Module, groups: tuple[str, ...], modules: Sequence[str]) -> FreezeReport:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return FreezeReport(groups, tuple(modules), trainable, total, len(frozen_modules(model)))


class GradualUnfreezing:
    """Training callback: unfreeze one more layer group every ``every_epochs`` epochs.

    Starts from the model as frozen now and unfreezes the frozen groups from the output side
    towards the input (head, decoder, bottleneck, encoder), so the layers nearest the task adapt
    first and the general early features last. Call it at the end of every epoch with the number
    of epochs done, or pass it to the trainer as a callback (see :meth:`__call__`);
    frozen parameters have no gradient, so the optimizer starts updating them as soon as they
    are unfrozen.

    Example
    -------
    >>> from microseg.models import ModelConfig, build_model
    >>> model = build_model(ModelConfig(channels=(4, 8, 16), strides=(2, 2)))
    >>> _ = freeze(model, groups=("encoder", "bottleneck"))
    >>> schedule = GradualUnfreezing(model, every_epochs=2)
    >>> schedule.on_epoch(2)
    ['bottleneck']
    """

    def __init__(self, model: nn.Module, every_epochs: int, keep_norm_statistics: bool = True):
        if every_epochs < 1:
            raise ConfigError(f"every_epochs={every_epochs}: unfreeze after at least 1 epoch")
        groups = layer_groups(model)
        self.model = model
        self.every_epochs = int(every_epochs)
        self.keep_norm_statistics = keep_norm_statistics
        self.frozen = [g for g in GROUP_NAMES if groups[g] and not _trainable(model, groups[g])]
        self.unfrozen: list[tuple[int, str]] = []

    def on_epoch(self, epochs_done: int) -> list[str]:
        """Unfreeze the groups due after ``epochs_done`` epochs; returns the newly unfrozen ones."""
        due = self.frozen[::-1][: epochs_done // self.every_epochs]
        newly = [g for g in due if g not in {name for _, name in self.unfrozen}]
        if newly:
            still_frozen = [g for g in self.frozen if g not in due]
            freeze(self.model, groups=still_frozen, keep_norm_statistics=self.keep_norm_statistics)
            self.unfrozen += [(epochs_done, g) for g in newly]
            log.info("after epoch %d: unfroze %s", epochs_done, ", ".join(newly))
        return newly

    def __call__(self, trainer: Any, record: dict[str, Any]) -> None:
        """The trainer's ``on_epoch_end`` callback: ``record["epoch"]`` epochs are done."""
        self.on_epoch(int(record["epoch"]))


def _trainable(model: nn.Module, modules: Sequence[str]) -> bool:
    prefixes = tuple(f"{m}." for m in modules)
    return any(p.requires_grad for n, p in model.named_parameters() if n.startswith(prefixes))
