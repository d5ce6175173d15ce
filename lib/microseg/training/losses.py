"""Training losses on logits (N, K, *spatial) and class maps (N, *spatial).

Soft Dice follows the tiling paper: computed per patch and per channel, averaged over the (patch,
channel) pairs, leaving out every channel that is empty in that patch's target — Dice is not
defined there, and counting it as 0 or 1 would push the network towards or away from predicting
nothing. The background channel counts like any other.

Example
-------
>>> import torch
>>> logits = torch.zeros(2, 3, 8, 8)
>>> target = torch.zeros(2, 8, 8, dtype=torch.long)
>>> round(float(soft_dice_loss(logits, target)), 4)   # only background present: p = 1/3
0.5
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from microseg.errors import ConfigError

__all__ = ["SegmentationLoss", "cross_entropy_loss", "make_loss", "soft_dice_loss"]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor,
                   exclude_empty: bool = True) -> torch.Tensor:
    """1 − mean soft Dice over (patch, channel) pairs, leaving out channels empty in the target.

    Parameters
    ----------
    logits : (N, K, *spatial) float; softmax over K gives the probabilities p.
    target : (N, *spatial) integer class map with values in [0, K).
    exclude_empty : leave out (n, c) pairs whose target channel c is empty in patch n (the
        paper's rule). With False they count with Dice 0 when anything is predicted there.

    Returns
    -------
    Scalar tensor: ``1 − mean_{(n,c)} 2 Σ p·t / (Σ p + Σ t)`` with t the one-hot target, sums over
    the pixels of patch n. Computed in float32 (float64 for float64 logits). 0 when every pair is
    left out.
    """
    probabilities = torch.softmax(_float(logits), dim=1)
    one_hot = _one_hot(target, logits.shape[1], probabilities.dtype)
    spatial = tuple(range(2, logits.dim()))
    intersection = (probabilities * one_hot).sum(spatial)
    true_sum = one_hot.sum(spatial)
    denominator = probabilities.sum(spatial) + true_sum
    dice = 2 * intersection / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)
    keep = true_sum > 0 if exclude_empty else torch.ones_like(true_sum, dtype=torch.bool)
    if not bool(keep.any()):
        return probabilities.sum() * 0
    return 1 - dice[keep].mean()


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor,
                       class_weights: Sequence[float] | None = None) -> torch.Tensor:
    """Pixel-wise cross-entropy, averaged (weighted mean with ``class_weights``; K values)."""
    weight = None
    if class_weights is not None:
        weight = torch.as_tensor(class_weights, dtype=_float(logits).dtype, device=logits.device)
    return F.cross_entropy(_float(logits), target.long(), weight=weight)


class SegmentationLoss(nn.Module):
    """``dice_weight · soft Dice loss + ce_weight · cross-entropy`` (either weight may be 0).

    Called as ``loss(logits (N, K, *spatial), target (N, *spatial) long) -> scalar``.
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0,
                 class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.class_weights = None if class_weights is None else tuple(class_weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = _float(logits).sum() * 0
        if self.dice_weight:
            total = total + self.dice_weight * soft_dice_loss(logits, target)
        if self.ce_weight:
            total = total + self.ce_weight * cross_entropy_loss(logits, target,
                                                                self.class_weights)
        return total

    def extra_repr(self) -> str:
        return f"dice_weight={self.dice_weight:g}, ce_weight={self.ce_weight:g}"


def make_loss(loss: str, dice_weight: float = 1.0, ce_weight: float = 1.0,
              class_weights: Sequence[float] | None = None) -> SegmentationLoss:
    """The loss a :class:`~microseg.training.config.TrainConfig` names.

    ``"dice"`` and ``"ce"`` are the single terms (weight 1); ``"dice+ce"`` uses the weights.

    Example
    -------
    >>> make_loss("dice")
    SegmentationLoss(dice_weight=1, ce_weight=0)
    """
    weights = {"dice": (1.0, 0.0), "ce": (0.0, 1.0), "dice+ce": (dice_weight, ce_weight)}
    if loss not in weights:
        raise ConfigError(f"unknown loss {loss!r}; choose one of {', '.join(weights)}")
    return SegmentationLoss(*weights[loss], class_weights=class_weights)


def _float(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.dtype == torch.float64 else logits.float()


def _one_hot(target: torch.Tensor, n_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, *spatial) class map → (N, K, *spatial) one-hot of ``dtype``."""
    one_hot = F.one_hot(target.long(), n_classes)
    return one_hot.movedim(-1, 1).to(dtype)
