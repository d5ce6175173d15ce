"""Adapt a pretrained network to new data: other input channels or output classes, learning rates.

A pretrained network may expect another number of input channels (e.g. one fluorescence channel
where the new images have two) or output classes (e.g. three for instances where the new task is
binary). :func:`adapt_model` rebuilds the network with the new numbers and copies every pretrained
tensor whose shape still fits. The tensors that no longer fit are exactly those of the first
layer(s), which read the input channels, and of the last layer(s), which write the classes; they
get a fresh initialization, except that the first layer's kernels can start from the average of
the pretrained kernels over the old input channels (``input_weights="average"``). The returned
:class:`AdaptReport` names every replaced tensor.

:func:`parameter_groups` builds optimizer parameter groups with a learning rate per layer group,
for fine-tuning with lower rates in the early layers.

Example
-------
>>> from microseg.models import ModelConfig, build_model
>>> config = ModelConfig(channels=(4, 8, 16), strides=(2, 2), out_classes=3)
>>> model, new_config, report = adapt_model(build_model(config), config, out_classes=2)
>>> new_config.out_classes, report.changed
(2, True)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, Literal

from torch import nn

from microseg.config import StageConfig
from microseg.errors import ConfigError

__all__ = ["AdaptConfig", "AdaptReport", "adapt_model", "parameter_groups"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class AdaptConfig(StageConfig):
    """How a pretrained model is adapted; saved as ``adapt_config.json`` in its model folder.

    Fields
    ------
    mode : ``"transfer"`` — transfer learning: the layers in ``freeze`` (or all blocks but the
        last ``keep_last``) keep their pretrained weights, the rest trains; ``"finetune"`` —
        classic fine-tuning: every layer trains, starting from the pretrained weights.
    freeze : layer groups (``"encoder"``, ``"bottleneck"``, ``"decoder"``, ``"head"``) or module
        names frozen in ``"transfer"`` mode; a comma-separated string is split.
    keep_last : freeze by depth instead: every block but the last ``keep_last``.
    keep_norm_statistics : BatchNorm/BatchRenorm layers in frozen blocks keep their running
        statistics (stay in eval mode) while the rest trains.
    unfreeze_every : gradual unfreezing: one more frozen group (from the head towards the input)
        trains every this many epochs; None: the frozen part stays frozen.
    learning_rate : None: a tenth of training from scratch (the TrainConfig default / 10), as
        usual for pretrained weights.
    group_learning_rates : a learning rate per layer group, e.g. ``{"encoder": 2e-5}``; other
        groups use ``learning_rate``.
    input_weights : first-layer kernels when the number of input channels changes: ``"average"``
        (the mean of the pretrained kernels) or ``"fresh"`` (random).

    Example
    -------
    >>> AdaptConfig(freeze="encoder, bottleneck").freeze
    ('encoder', 'bottleneck')
    """

    mode: Literal["transfer", "finetune"] = "transfer"
    freeze: tuple[str, ...] = ("encoder",)
    keep_last: int | None = None
    keep_norm_statistics: bool = True
    unfreeze_every: int | None = None
    learning_rate: float | None = None
    group_learning_rates: dict[str, float] | None = None
    input_weights: Literal["average", "fresh"] = "average"

    def __post_init__(self) -> None:
        if isinstance(self.freeze, str):
            self.freeze = tuple(g.strip() for g in self.freeze.split(",") if g.strip())
        super().__post_init__()
        problems = [f"{name} must be >= {low} or None, found {value}" for name, value, low in (
            ("keep_last", self.keep_last, 0), ("unfreeze_every", self.unfreeze_every, 1))
            if value is not None and value < low]
        if self.learning_rate is not None and self.learning_rate <= 0:
            problems.append(f"learning_rate must be > 0 or None, found {self.learning_rate}")
        if problems:
            raise ConfigError("AdaptConfig is not valid: " + "; ".join(problems))

    def effective_learning_rate(self, scratch_learning_rate: float) -> float:
        """``learning_rate``, or a tenth of ``scratch_learning_rate`` (training from scratch)
        when it is None."""
        if self.learning_rate is not None:
            return self.learning_rate
        return scratch_learning_rate / 10


@dataclasses.dataclass(frozen=True)
class AdaptReport:
    """What :func:`adapt_model` changed.

    in_channels, out_classes: (pretrained, new) numbers.
    input_tensors: state-dict names of the first-layer tensors replaced for the new channels.
    output_tensors: state-dict names of the last-layer tensors replaced for the new classes.
    input_weights: how the new first-layer kernels started: "average" or "fresh".
    """

    in_channels: tuple[int, int]
    out_classes: tuple[int, int]
    input_tensors: tuple[str, ...]
    output_tensors: tuple[str, ...]
    input_weights: str

    @property
    def changed(self) -> bool:
        """True when some layer was replaced."""
        return bool(self.input_tensors or self.output_tensors)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def __str__(self) -> str:
        if not self.changed:
            return "the pretrained network fits the data: no layer replaced"
        lines = []
        if self.input_tensors:
            lines.append(
                f"input channels {self.in_channels[0]} -> {self.in_channels[1]}: replaced "
                f"{', '.join(self.input_tensors)} ({self.input_weights} initialization)")
        if self.output_tensors:
            lines.append(
                f"output classes {self.out_classes[0]} -> {self.out_classes[1]}: replaced "
                f"{', '.join(self.output_tensors)} (fresh initialization; train them)")
        return "\n".join(lines)


def adapt_model(
    model: nn.Module,
    config: Any,
    in_channels: int | None = None,
    out_classes: int | None = None,
    input_weights: Literal["average", "fresh"] = "average",
) -> tuple[nn.Module, Any, AdaptReport]:
    """A copy of ``model`` with other input channels and/or output classes, pretrained elsewhere.

    Parameters
    ----------
    model : a network built by :func:`microseg.models.build_model` from ``config``.
    config : its :class:`~microseg.models.ModelConfig`.
    in_channels, out_classes : the new numbers; None keeps the pretrained one.
    input_weights : ``"average"`` — each new first-layer kernel is the mean of the pretrained
        kernels over the old input channels, scaled by old/new channels, so an image whose new
        channels all equal one grey image gives the same response as that grey image in every old
        channel; ``"fresh"`` — the layer's default random initialization.

    Returns
    -------
    (new model, new config, AdaptReport). When nothing changes, ``model`` itself is returned.
    The new model is in the same train/eval mode as ``model``; the report is also logged.

    Raises
    ------
    ConfigError
        For numbers below 1 or an unknown ``input_weights``.
    """
    old_in, old_out = config.in_channels, config.out_classes
    new_in, new_out = in_channels or old_in, out_classes or old_out
    if min(new_in, new_out) < 1 or input_weights not in ("average", "fresh"):
        raise ConfigError(f"adapt_model: need in_channels, out_classes >= 1 and input_weights "
                          f"'average' or 'fresh', found {new_in}, {new_out}, {input_weights!r}")
    if (new_in, new_out) == (old_in, old_out):
        return model, config, AdaptReport((old_in, new_in), (old_out, new_out), (), (), input_weights)
    pretrained = model.state_dict()
    input_config = config.replace(in_channels=new_in)
    input_names = _differing(pretrained, _state_shapes(input_config))
    new_config = input_config.replace(out_classes=new_out)
    new_model = _build(new_config)
    state = new_model.state_dict()
    output_names = _differing(_state_shapes(input_config), state)
    for name, tensor in pretrained.items():
        if name in output_names:
            continue
        if name in input_names:
            if input_weights == "average":
                state[name] = _averaged_input_kernel(tensor, new_in, old_in)
        else:
            state[name] = tensor
    new_model.load_state_dict(state)
    new_model.train(model.training)
    report = AdaptReport((old_in, new_in), (old_out, new_out), tuple(input_names),
                         tuple(output_names), input_weights)
    log.info("%s", report)
    return new_model, new_config, report


def _build(config: Any) -> nn.Module:
    from microseg.models import build_model

    return build_model(config)


def _state_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in _build(config).state_dict().items()}


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def _differing(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """Names whose shapes differ between two state dicts (or shape maps) of the same layout."""
    return [n for n in first if n in second and _shape(first[n]) != _shape(second[n])]


def _averaged_input_kernel(weight: Any, new_in: int, old_in: int) -> Any:
    """(out, old_in, *k) → (out, new_in, *k): the mean over old channels, times old_in / new_in."""
    if weight.ndim < 2 or weight.shape[1] != old_in:
        raise ConfigError(
            f"cannot average a first-layer tensor of shape {tuple(weight.shape)} over "
            f"{old_in} input channels; use input_weights='fresh'")
    mean = weight.mean(dim=1, keepdim=True) * (old_in / new_in)
    return mean.expand(-1, new_in, *weight.shape[2:]).clone()


def parameter_groups(
    model: nn.Module,
    learning_rate: float,
    group_learning_rates: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: one per layer group with its own learning rate.

    Parameters
    ----------
    model : one of our networks (see :func:`microseg.transfer.freezing.layer_groups`).
    learning_rate : the rate of every layer group not named in ``group_learning_rates``.
    group_learning_rates : e.g. ``{"encoder": 1e-5}`` for a lower rate in the early layers.

    Returns
    -------
    ``[{"params": [...], "lr": rate, "name": group}, ...]`` in forward order, empty groups left
    out; pass it to ``torch.optim.Adam`` and friends. Frozen parameters are included: they have
    no gradient, so the optimizer leaves them alone until they are unfrozen (gradual
    unfreezing), and then updates them at their group's rate.

    Raises
    ------
    ConfigError
        For a key that is not a layer group, or a rate that is not positive.

    Example
    -------
    >>> from microseg.models import ModelConfig, build_model
    >>> model = build_model(ModelConfig(channels=(4, 8, 16), strides=(2, 2)))
    >>> [(g["name"], g["lr"]) for g in parameter_groups(model, 1e-4, {"encoder": 1e-5})]
    [('encoder', 1e-05), ('bottleneck', 0.0001), ('decoder', 0.0001), ('head', 0.0001)]
    """
    from microseg.transfer.freezing import GROUP_NAMES, layer_groups

    rates = dict(group_learning_rates or {})
    unknown = sorted(set(rates) - set(GROUP_NAMES))
    if unknown or any(r <= 0 for r in [learning_rate, *rates.values()]):
        raise ConfigError(f"group learning rates {rates} (default {learning_rate}): keys must be "
                          f"layer groups ({', '.join(GROUP_NAMES)}) and rates > 0")
    groups = layer_groups(model)
    out = []
    for name in GROUP_NAMES:
        prefixes = tuple(f"{m}." for m in groups[name])
        params = [p for n, p in model.named_parameters() if n.startswith(prefixes)]
        if params:
            out.append({"params": params, "lr": rates.get(name, learning_rate), "name": name})
    return out
