"""Receptive field of a network, measured by gradients, and the halo that tiling needs.

The theoretical receptive field (TRF) of an output pixel is the set of input pixels in its
computation graph. It is measured on a float64 copy of the model in eval mode: back-propagate from
one output pixel and take the extent of the non-zero input gradient. ReLUs can zero a gradient
by chance, so the union is taken over several random inputs; a network with total stride D treats
output positions differently depending on their position modulo D, so the union is also taken over
those positions. Extents to the left (towards index 0) and to the right are kept separately per
axis: they can differ.

Tile-wise normalization layers (InstanceNorm, GroupNorm, LayerNorm) make every output depend on the
whole input; for such networks the receptive field of the convolutions alone is reported (measured
with those layers replaced by identities, as the tiling paper does) and ``whole_input`` is True: no halo
makes stitching exact.

Example
-------
>>> from microseg.models import ModelConfig, build_model
>>> config = ModelConfig(channels=(4, 8, 16), num_res_units=2, norm="batch")
>>> model = build_model(config)
>>> rf = theoretical_receptive_field(model, ndim=2, in_channels=1)
>>> rf.extent, recommended_halo(rf, divisor=4)
((47, 47), (24, 24))
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from microseg.errors import ConfigError

__all__ = [
    "HaloTooSmallWarning",
    "ReceptiveField",
    "check_halo",
    "effective_receptive_field",
    "input_gradient_magnitude",
    "recommended_halo",
    "theoretical_receptive_field",
]

START_SIZE = {2: 64, 3: 32}
"""Default input side of the measurement; doubled while the field reaches the input border."""
MAX_SIZE = {2: 256, 3: 64}
"""Largest input side tried by default; a field still reaching the border there is whole-input."""


class HaloTooSmallWarning(UserWarning):
    """A halo smaller than the receptive-field radius: tiles will not stitch seamlessly."""


@dataclass(frozen=True)
class ReceptiveField:
    """Extent of a receptive field around its output pixel, per spatial axis (Z, Y, X order).

    Fields
    ------
    left : input pixels reached towards index 0, per axis.
    right : input pixels reached towards the end, per axis.
    whole_input : True if the output also depends on every input pixel (tile-wise normalization,
        attention); ``left``/``right`` then describe the convolutions alone.
    input_size : spatial input shape the measurement used.
    """

    left: tuple[int, ...]
    right: tuple[int, ...]
    whole_input: bool = False
    input_size: tuple[int, ...] = ()

    @property
    def extent(self) -> tuple[int, ...]:
        """``left + right + 1`` per axis: the side of the box of pixels that matter."""
        return tuple(a + b + 1 for a, b in zip(self.left, self.right, strict=True))

    @property
    def radius(self) -> tuple[int, ...]:
        """``max(left, right)`` per axis: the smallest halo for seamless tiling."""
        return tuple(max(a, b) for a, b in zip(self.left, self.right, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the fields and ``extent`` and ``radius``."""
        return {
            "left": list(self.left),
            "right": list(self.right),
            "extent": list(self.extent),
            "radius": list(self.radius),
            "whole_input": self.whole_input,
            "input_size": list(self.input_size),
        }


def recommended_halo(rf: ReceptiveField, divisor: int = 1) -> tuple[int, ...]:
    """Smallest halo per axis for seamless tiling: ``rf.radius`` rounded up to ``divisor``.

    ``divisor`` is the network's total stride (``size_divisor``), because tiling places windows
    on that grid. For a ``whole_input`` field this covers the convolutions only.

    Example
    -------
    >>> recommended_halo(ReceptiveField(left=(23, 22), right=(23, 23)), divisor=4)
    (24, 24)
    """
    if divisor < 1:
        raise ConfigError(f"divisor must be >= 1, found {divisor}")
    return tuple(math.ceil(r / divisor) * divisor for r in rf.radius)


def check_halo(halo: int | Sequence[int], rf: ReceptiveField, divisor: int = 1) -> bool:
    """True if ``halo`` suffices for seamless tiling; otherwise warn and return False.

    Warns
    -----
    HaloTooSmallWarning
        If ``halo`` is below ``rf.radius`` on some axis (naming the recommended halo), or if the
        field covers the whole input (no halo can make tiles stitch seamlessly).
    """
    halo = (int(halo),) * len(rf.radius) if np.isscalar(halo) else tuple(int(h) for h in halo)
    recommended = recommended_halo(rf, divisor)
    if any(h < r for h, r in zip(halo, rf.radius, strict=True)):
        warnings.warn(
            f"halo {halo} is smaller than the receptive-field radius {rf.radius}: tiles will not "
            f"stitch seamlessly; use halo={recommended}",
            HaloTooSmallWarning,
            stacklevel=2,
        )
        return False
    if rf.whole_input:
        warnings.warn(
            "every output pixel depends on the whole input tile (tile-wise normalization such as "
            "InstanceNorm): no halo makes tiles stitch seamlessly; retrain with norm='batchrenorm'",
            HaloTooSmallWarning,
            stacklevel=2,
        )
        return False
    return True


def theoretical_receptive_field(
    model: Any,
    ndim: int,
    in_channels: int,
    n_trials: int = 4,
    size: int | None = None,
    device: Any = "cpu",
    positions: str = "axes",
) -> ReceptiveField:
    """Measure the theoretical receptive field of ``model`` (see the module docstring).

    Parameters
    ----------
    model : torch module mapping (N, in_channels, *spatial) to (N, K, *spatial); not changed (a
        float64 eval-mode copy is measured).
    ndim : spatial dimensions, 2 or 3.
    in_channels : input channels C.
    n_trials : random inputs (standard normal) whose gradient supports are united.
    size : input side; default 64 (2D) or 32 (3D), doubled up to 256 (2D) or 64 (3D) while the
        field reaches the border. A given ``size`` is used as is.
    device : where to compute.
    positions : output positions tried, as offsets from the centre in ``[0, D)`` (D: the model's
        ``size_divisor``): ``"axes"`` (along one axis at a time, ``1 + ndim·(D − 1)`` positions;
        the same result as ``"all"`` for networks of axis-aligned convolutions, pooling and
        up-sampling, whose dependence along one axis is set by the coordinate on that axis),
        ``"all"`` (every combination, ``D^ndim``) or ``"centre"``.

    Returns
    -------
    ReceptiveField
    """
    probe = _Probe.create(model, ndim, in_channels, device)
    local = probe.without_tile_statistics()
    offsets = _offsets(ndim, probe.divisor, positions)
    for side in _sizes(ndim, size, probe.divisor):
        left, right = local.extents(side, offsets, n_trials)
        reaches_border = _touches_border(left, right, side, probe.divisor, offsets)
        if not reaches_border:
            break
    whole = reaches_border or (local is not probe and probe.reaches_beyond(side, left, right))
    return ReceptiveField(tuple(left), tuple(right), whole, (side,) * ndim)


def input_gradient_magnitude(
    model: Any,
    ndim: int,
    in_channels: int,
    n_trials: int = 4,
    size: int | None = None,
    device: Any = "cpu",
) -> np.ndarray:
    """Mean absolute input gradient of one output pixel near the centre, float64 (*spatial).

    Summed over input channels, averaged over ``n_trials`` random inputs; the output pixel is at
    ``size // 2`` rounded down to the size divisor on every axis. ``size`` as in
    :func:`theoretical_receptive_field` (default: its first size). For figures and the ERF.
    """
    probe = _Probe.create(model, ndim, in_channels, device)
    side = _sizes(ndim, size, probe.divisor)[0]
    return np.abs(probe.gradients(side, [(0,) * ndim], n_trials)).mean(axis=0)


def effective_receptive_field(
    model: Any,
    ndim: int,
    in_channels: int,
    fraction: float = 0.95,
    n_trials: int = 4,
    size: int | None = None,
    device: Any = "cpu",
) -> ReceptiveField:
    """The region holding ``fraction`` of the input-gradient magnitude of the centre output pixel.

    The magnitude (:func:`input_gradient_magnitude`) is summed over all other axes; along each
    axis, ``(1 − fraction)/2`` of the mass is cut from either tail and ``left``/``right`` are the
    distances of what is left from the centre. Usually much smaller than the theoretical field.
    Parameters as :func:`theoretical_receptive_field`; ``whole_input`` is always False.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], found {fraction}")
    magnitude = input_gradient_magnitude(model, ndim, in_channels, n_trials, size, device)
    side = magnitude.shape[0]
    centre = _centre(side, int(getattr(model, "size_divisor", 1)))
    left, right = [], []
    for axis in range(ndim):
        marginal = magnitude.sum(axis=tuple(a for a in range(ndim) if a != axis))
        cumulative = np.cumsum(marginal) / marginal.sum()
        tail = (1.0 - fraction) / 2.0
        low = int(np.searchsorted(cumulative, tail, side="right"))
        high = int(np.searchsorted(cumulative, 1.0 - tail - 1e-12, side="left"))
        left.append(max(0, centre - low))
        right.append(max(0, high - centre))
    return ReceptiveField(tuple(left), tuple(right), False, (side,) * ndim)


def _sizes(ndim: int, size: int | None, divisor: int) -> list[int]:
    if ndim not in START_SIZE:
        raise ConfigError(f"ndim must be 2 or 3, found {ndim}")
    if size is not None:
        return [math.ceil(size / divisor) * divisor]
    side, sizes = START_SIZE[ndim], []
    while side <= max(MAX_SIZE[ndim], START_SIZE[ndim]):
        sizes.append(math.ceil(side / divisor) * divisor)
        side *= 2
    return sizes


def _offsets(ndim: int, divisor: int, positions: str) -> list[tuple[int, ...]]:
    if positions == "centre":
        return [(0,) * ndim]
    if positions == "all":
        return list(itertools.product(range(divisor), repeat=ndim))
    if positions == "axes":
        along_axes = {
            tuple(o if a == axis else 0 for a in range(ndim))
            for axis in range(ndim)
            for o in range(divisor)
        }
        return sorted(along_axes)
    raise ConfigError(f"positions {positions!r} is not known; choose 'axes', 'all' or 'centre'")


def _centre(side: int, divisor: int) -> int:
    """The measured output pixel: near the middle, on the network's stride grid."""
    return side // 2 // divisor * divisor


def _touches_border(
    left: list[int], right: list[int], side: int, divisor: int, offsets: list[tuple[int, ...]]
) -> bool:
    """True if some output position's field reached the first or last input pixel."""
    return any(
        c - lo <= 0 or c + hi >= side - 1
        for axis, (lo, hi) in enumerate(zip(left, right, strict=True))
        for c in {_centre(side, divisor) + o[axis] for o in offsets}
    )


@dataclass(frozen=True)
class _Probe:
    """A float64 eval-mode copy of a model, and how to take input gradients from it."""

    model: Any
    ndim: int
    in_channels: int
    divisor: int
    device: Any

    @classmethod
    def create(cls, model: Any, ndim: int, in_channels: int, device: Any) -> _Probe:
        import torch

        measured = copy.deepcopy(model).to(device=torch.device(device), dtype=torch.float64).eval()
        for parameter in measured.parameters():
            parameter.requires_grad_(False)
        divisor = int(getattr(model, "size_divisor", 1))
        return cls(measured, ndim, in_channels, divisor, torch.device(device))

    def without_tile_statistics(self) -> _Probe:
        """This probe with InstanceNorm/GroupNorm/LayerNorm replaced by identities (self if none)."""
        from torch import nn

        stripped = copy.deepcopy(self.model)
        replaced = 0
        for parent in list(stripped.modules()):
            for name, child in list(parent.named_children()):
                if _uses_tile_statistics(child):
                    setattr(parent, name, nn.Identity())
                    replaced += 1
        if replaced == 0:
            return self
        return _Probe(stripped, self.ndim, self.in_channels, self.divisor, self.device)

    def gradients(self, side: int, offsets: list[tuple[int, ...]], n_trials: int) -> np.ndarray:
        """Input gradients (len(offsets)·n_trials, *spatial) of one output pixel each."""
        import torch

        generator = torch.Generator().manual_seed(0)
        centre = _centre(side, self.divisor)
        results = []
        for offset in offsets:
            shape = (n_trials, self.in_channels, *(side,) * self.ndim)
            x = torch.randn(shape, generator=generator, dtype=torch.float64).to(self.device)
            x.requires_grad_(True)
            y = self.model(x)
            weights = torch.randn(n_trials, y.shape[1], generator=generator, dtype=torch.float64)
            pixel = (slice(None), slice(None), *(centre + o for o in offset))
            (y[pixel] * weights.to(self.device)).sum().backward()
            results.append(x.grad.abs().sum(dim=1).cpu().numpy())
        return np.concatenate(results)

    def extents(
        self, side: int, offsets: list[tuple[int, ...]], n_trials: int
    ) -> tuple[list[int], list[int]]:
        """Largest left and right extent per axis over ``offsets`` and trials."""
        centre = _centre(side, self.divisor)
        support = self.gradients(side, offsets, n_trials) != 0
        left, right = [0] * self.ndim, [0] * self.ndim
        for index, offset in enumerate(np.repeat(np.array(offsets), n_trials, axis=0)):
            if not support[index].any():
                continue
            for axis, reached in enumerate(_support_bounds(support[index])):
                position = centre + int(offset[axis])
                left[axis] = max(left[axis], position - reached[0])
                right[axis] = max(right[axis], reached[1] - position)
        return left, right

    def reaches_beyond(self, side: int, left: list[int], right: list[int]) -> bool:
        """True if the centre pixel's gradient leaves the box ``left``/``right`` (single trial)."""
        centre = _centre(side, self.divisor)
        support = self.gradients(side, [(0,) * self.ndim], 1)[0] != 0
        return any(
            lo < centre - a or hi > centre + b
            for (lo, hi), a, b in zip(_support_bounds(support), left, right, strict=True)
        )


def _support_bounds(support: np.ndarray) -> list[tuple[int, int]]:
    """First and last index of the non-zero region along each axis."""
    bounds = []
    for axis in range(support.ndim):
        hits = np.flatnonzero(support.any(axis=tuple(a for a in range(support.ndim) if a != axis)))
        bounds.append((int(hits[0]), int(hits[-1])) if hits.size else (0, -1))
    return bounds


def _uses_tile_statistics(module: Any) -> bool:
    from torch import nn

    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return not module.track_running_stats
    return isinstance(module, nn.GroupNorm | nn.LayerNorm)
