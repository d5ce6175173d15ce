"""Batch Renormalization (Ioffe 2017): BatchNorm whose training uses the running statistics.

BatchNorm normalizes with the statistics of the current batch in training and with running
averages in inference; with the small batches of 3D microscopy the two differ, so a model behaves
differently in ``train()`` and ``eval()`` (train/eval disparity). BatchRenorm corrects the batch
statistics towards the running ones during training, per channel::

    σ_B = sqrt(Var_B + eps),  σ = sqrt(running_var + eps)
    r = clip(σ_B / σ, 1/r_max, r_max)          (detached)
    d = clip((μ_B − μ) / σ, −d_max, d_max)      (detached)
    y = γ · ((x − μ_B) / σ_B · r + d) + β

and normalizes exactly like BatchNorm in ``eval()``: ``y = γ (x − μ) / σ + β``. Hence a trained
layer folds into a plain ``nn.BatchNormNd`` for export (:func:`fold_batchrenorm`). With
``r_max = 1`` and ``d_max = 0`` training is plain BatchNorm; :class:`RenormSchedule` starts there
and raises the limits linearly once the network has converged as BatchNorm.

``r_max`` and ``d_max`` are buffers: saved in state dicts and changed while training (by
:func:`set_renorm_limits`), never frozen at construction.

Example
-------
>>> import torch
>>> layer = BatchRenorm2d(8)
>>> schedule = RenormSchedule(warmup_steps=100, ramp_steps=50)
>>> schedule.apply(layer, step=125)
(2.0, 2.5)
>>> layer(torch.randn(2, 8, 16, 16)).shape
torch.Size([2, 8, 16, 16])
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from microseg.errors import ConfigError

__all__ = [
    "BatchRenorm1d",
    "BatchRenorm2d",
    "BatchRenorm3d",
    "RenormSchedule",
    "batchrenorm_class",
    "fold_batchrenorm",
    "set_renorm_limits",
]


class _BatchRenorm(nn.Module):
    """Shared implementation of :class:`BatchRenorm1d`, ``2d`` and ``3d``.

    Parameters
    ----------
    num_features : number of channels C of the input (N, C, *spatial).
    eps : added to the variances before the square root.
    momentum : weight of the current batch in the running averages:
        ``new = (1 − momentum) · old + momentum · batch`` (PyTorch's convention; 0.01 as in the
        paper). Must be in (0, 1].
    affine : learn a per-channel scale γ (``weight``) and shift β (``bias``).
    r_max, d_max : initial correction limits (1 and 0: BatchNorm); change them with
        :func:`set_renorm_limits` or :class:`RenormSchedule`.

    Notes
    -----
    Statistics are computed in float32 (or float64 for float64 inputs), also under
    ``torch.autocast``: half-precision variances overflow and produce NaNs. The output is cast back
    to the input dtype. Normalization uses the biased batch variance; the running variance is updated
    with the unbiased one, ``Var_B · n / (n − 1)`` with n values per channel, as in
    ``torch.nn.BatchNorm``, so the running statistics match BatchNorm's exactly. Under
    DistributedDataParallel each process uses the statistics of its own batch, like
    ``nn.BatchNorm`` without ``SyncBatchNorm``; DDP broadcasts the buffers (running statistics and
    limits) from the first process.
    """

    _input_ndims: tuple[int, ...] = ()
    _batchnorm_class: type[nn.modules.batchnorm._BatchNorm] = nn.BatchNorm1d

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.01,
        affine: bool = True,
        r_max: float = 1.0,
        d_max: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ConfigError(
                f"{type(self).__name__}: momentum must be in (0, 1], found {momentum!r} "
                "(the tiling paper uses 0.01)"
            )
        _check_limits(r_max, d_max)
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.register_buffer("r_max", torch.tensor(float(r_max), dtype=torch.float32))
        self.register_buffer("d_max", torch.tensor(float(d_max), dtype=torch.float32))

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"r_max={float(self.r_max):g}, d_max={float(self.d_max):g}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` (N, C, *spatial); same shape and dtype out."""
        self._check_input(x)
        compute_dtype = torch.promote_types(x.dtype, torch.float32)
        values = x.to(compute_dtype)
        if self.training:
            out = self._renormalize(values)
        else:
            out = F.batch_norm(
                values,
                self.running_mean.to(compute_dtype),
                self.running_var.to(compute_dtype),
                None if self.weight is None else self.weight.to(compute_dtype),
                None if self.bias is None else self.bias.to(compute_dtype),
                False,
                0.0,
                self.eps,
            )
        return out.to(x.dtype)

    def _renormalize(self, values: torch.Tensor) -> torch.Tensor:
        reduce_dims = [0, *range(2, values.dim())]
        per_channel = (1, -1) + (1,) * (values.dim() - 2)
        count = values.numel() // values.shape[1]
        if count < 2:
            raise ConfigError(
                f"{type(self).__name__} in training needs more than one value per channel, "
                f"found input of shape {tuple(values.shape)}; use a larger batch or patch"
            )
        batch_var, batch_mean = torch.var_mean(values, dim=reduce_dims, correction=0)
        batch_std = torch.sqrt(batch_var + self.eps)
        r, d = self._corrections(batch_mean.detach(), batch_std.detach(), values.dtype)
        scale = r / batch_std
        shift = d
        if self.weight is not None:
            scale = scale * self.weight.to(values.dtype)
            shift = shift * self.weight.to(values.dtype) + self.bias.to(values.dtype)
        centered = values - batch_mean.view(per_channel)
        out = torch.addcmul(shift.view(per_channel), centered, scale.view(per_channel))
        self._update_running_statistics(
            batch_mean.detach(), batch_var.detach() * count / (count - 1)
        )
        return out

    def _corrections(
        self, batch_mean: torch.Tensor, batch_std: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        running_std = torch.sqrt(self.running_var.to(dtype) + self.eps)
        r_max = self.r_max.to(dtype)
        d_max = self.d_max.to(dtype)
        r = torch.clamp(batch_std / running_std, min=1.0 / r_max, max=r_max)
        d = torch.clamp(
            (batch_mean - self.running_mean.to(dtype)) / running_std, min=-d_max, max=d_max
        )
        return r, d

    @torch.no_grad()
    def _update_running_statistics(
        self, batch_mean: torch.Tensor, unbiased_var: torch.Tensor
    ) -> None:
        self.running_mean.lerp_(batch_mean.to(self.running_mean.dtype), self.momentum)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), self.momentum)
        self.num_batches_tracked.add_(1)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() not in self._input_ndims:
            dims = " or ".join(f"{n}-D" for n in self._input_ndims)
            raise ValueError(
                f"{type(self).__name__} expects a {dims} input (N, C, *spatial), "
                f"found shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}) got {x.shape[1]} channels "
                f"(input shape {tuple(x.shape)})"
            )

    def to_batchnorm(self) -> nn.modules.batchnorm._BatchNorm:
        """The equivalent ``nn.BatchNormNd``: same parameters and running statistics.

        Its ``eval()`` output equals this layer's ``eval()`` output; use it for export.
        """
        reference = self.running_mean
        batchnorm = self._batchnorm_class(
            self.num_features,
            eps=self.eps,
            momentum=self.momentum,
            affine=self.affine,
            device=reference.device,
            dtype=reference.dtype,
        )
        state = {k: v for k, v in self.state_dict().items() if k not in ("r_max", "d_max")}
        batchnorm.load_state_dict(state)
        batchnorm.train(self.training)
        return batchnorm


class BatchRenorm1d(_BatchRenorm):
    """Batch Renormalization for (N, C) or (N, C, L) inputs; see :class:`_BatchRenorm`."""

    _input_ndims = (2, 3)
    _batchnorm_class = nn.BatchNorm1d


class BatchRenorm2d(_BatchRenorm):
    """Batch Renormalization for (N, C, H, W) inputs; see :class:`_BatchRenorm`."""

    _input_ndims = (4,)
    _batchnorm_class = nn.BatchNorm2d


class BatchRenorm3d(_BatchRenorm):
    """Batch Renormalization for (N, C, D, H, W) inputs; see :class:`_BatchRenorm`."""

    _input_ndims = (5,)
    _batchnorm_class = nn.BatchNorm3d


def batchrenorm_class(spatial_dims: int) -> type[_BatchRenorm]:
    """``BatchRenorm1d``, ``2d`` or ``3d`` for ``spatial_dims`` 1, 2 or 3 (MONAI's factory signature)."""
    classes = (BatchRenorm1d, BatchRenorm2d, BatchRenorm3d)
    if spatial_dims not in (1, 2, 3):
        raise ValueError(
            f"BatchRenorm exists for 1, 2 or 3 spatial dimensions, not {spatial_dims!r}"
        )
    return classes[spatial_dims - 1]


def _check_limits(r_max: float, d_max: float) -> None:
    if not r_max >= 1.0 or not d_max >= 0.0:
        raise ConfigError(
            f"BatchRenorm limits need r_max >= 1 and d_max >= 0, found r_max={r_max!r}, "
            f"d_max={d_max!r} (r_max=1, d_max=0 is plain BatchNorm; the tiling paper ends at 3 and 5)"
        )


def set_renorm_limits(model: nn.Module, r_max: float, d_max: float) -> int:
    """Set ``r_max`` and ``d_max`` of every BatchRenorm layer in ``model`` (in place).

    Returns the number of layers changed (0 for a model without BatchRenorm).

    Raises
    ------
    ConfigError
        If ``r_max < 1`` or ``d_max < 0``.
    """
    _check_limits(r_max, d_max)
    layers = [m for m in model.modules() if isinstance(m, _BatchRenorm)]
    for layer in layers:
        layer.r_max.fill_(r_max)
        layer.d_max.fill_(d_max)
    return len(layers)


def fold_batchrenorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every BatchRenorm layer replaced by its ``nn.BatchNormNd``.

    The copy computes the same ``eval()`` output and uses only standard PyTorch layers, as
    TorchScript, ONNX and bioimage.io consumers need. ``model`` itself is not changed.

    Example
    -------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), BatchRenorm2d(4))
    >>> type(fold_batchrenorm(net)[1]).__name__
    'BatchNorm2d'
    """
    if isinstance(model, _BatchRenorm):
        return model.to_batchnorm()
    folded = copy.deepcopy(model)
    slots = [
        (parent, name, child)
        for parent in folded.modules()
        for name, child in parent.named_children()
        if isinstance(child, _BatchRenorm)
    ]
    replacements: dict[int, nn.Module] = {}
    for parent, name, child in slots:
        if id(child) not in replacements:
            replacements[id(child)] = child.to_batchnorm()
        setattr(parent, name, replacements[id(child)])
    return folded


@dataclasses.dataclass
class RenormSchedule:
    """When BatchRenorm may correct towards the running statistics, in optimizer steps.

    ``limits(step)`` is (1, 0) — plain BatchNorm — for the first ``warmup_steps`` optimizer steps,
    then rises linearly to (``r_max``, ``d_max``) over ``ramp_steps`` steps, then stays there. The
    paper trains as BatchNorm until the loss has converged, then ramps to 3 and 5.

    The trainer calls ``apply(model, step)`` before training with ``step=0`` and after every
    optimizer step with the number of optimizer steps taken so far; gradient accumulation
    micro-steps and validation passes do not count. ``state_dict``/``load_state_dict`` save and
    restore the schedule with a checkpoint.

    Fields
    ------
    warmup_steps : optimizer steps trained as BatchNorm (>= 0).
    ramp_steps : optimizer steps of the linear ramp (>= 0; 0 jumps to the final limits).
    r_max : final limit of the scale correction r (>= 1).
    d_max : final limit of the shift correction d (>= 0).
    step : the step last applied (kept so that a resumed run knows where it is).

    Example
    -------
    >>> RenormSchedule(warmup_steps=10, ramp_steps=4).limits(12)
    (2.0, 2.5)
    """

    warmup_steps: int
    ramp_steps: int
    r_max: float = 3.0
    d_max: float = 5.0
    step: int = 0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.ramp_steps < 0 or self.step < 0:
            raise ConfigError(
                f"RenormSchedule: warmup_steps, ramp_steps and step must be >= 0, found "
                f"{self.warmup_steps!r}, {self.ramp_steps!r}, {self.step!r}"
            )
        try:
            _check_limits(self.r_max, self.d_max)
        except ValueError as err:
            raise ConfigError(f"RenormSchedule: {err}") from None

    def limits(self, step: int) -> tuple[float, float]:
        """(r_max, d_max) for training after ``step`` optimizer steps."""
        if step < self.warmup_steps:
            return 1.0, 0.0
        if self.ramp_steps == 0:
            fraction = 1.0
        else:
            fraction = min(1.0, (step - self.warmup_steps) / self.ramp_steps)
        return 1.0 + fraction * (self.r_max - 1.0), fraction * self.d_max

    def apply(self, model: nn.Module, step: int) -> tuple[float, float]:
        """Set the limits for ``step`` on every BatchRenorm layer of ``model``; return them."""
        r_max, d_max = self.limits(step)
        set_renorm_limits(model, r_max, d_max)
        self.step = step
        return r_max, d_max

    def state_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON- and ``weights_only``-safe)."""
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the fields saved by :meth:`state_dict`.

        Raises
        ------
        ConfigError
            If keys are missing or unknown, or values are out of range.
        """
        names = {f.name for f in dataclasses.fields(self)}
        if set(state) != names:
            raise ConfigError(
                f"RenormSchedule state must have the keys {sorted(names)}, found {sorted(state)}"
            )
        restored = RenormSchedule(**state)
        for name in names:
            setattr(self, name, getattr(restored, name))
