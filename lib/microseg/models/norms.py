"""Our normalization layers in MONAI's ``Norm`` factory, so every MONAI network accepts them.

:func:`register_monai_norms` (run when :mod:`microseg.models` is imported) adds:

- ``"batchrenorm"`` — :class:`~microseg.models.batchrenorm.BatchRenorm1d`/``2d``/``3d``;
- ``"identity"`` and ``"none"`` — no normalization (``nn.Identity``, which ignores
  ``num_features`` and any other argument);
- ``"fittedgroup"`` — :class:`FittedGroupNorm`, GroupNorm whose group count adapts to layers whose
  channel count the requested group count does not divide.

Example
-------
>>> import microseg.models  # registers the names
>>> from monai.networks.nets import UNet
>>> net = UNet(2, 1, 3, (4, 8, 16), (2, 2), norm=("batchrenorm", {"momentum": 0.01}))
>>> sorted({type(m).__name__ for m in net.modules() if "norm" in type(m).__name__.lower()})
['BatchRenorm2d']
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from microseg.errors import ConfigError
from microseg.models.batchrenorm import batchrenorm_class

__all__ = ["FittedGroupNorm", "register_monai_norms"]


class FittedGroupNorm(nn.GroupNorm):
    """GroupNorm over ``gcd(num_groups, num_features)`` groups.

    A network normalizes layers of different widths with one setting; MONAI's UNet even normalizes
    its last up-sampling output, whose width is the number of classes (e.g. 3). Plain GroupNorm
    fails there when ``num_groups`` does not divide the width; this layer uses the largest group
    count that divides both (8 groups for 32 channels, 1 group for 3 channels).

    Parameters
    ----------
    num_features : channels C of the (N, C, *spatial) input.
    num_groups : wanted number of groups.
    eps, affine : as in ``nn.GroupNorm``.
    """

    def __init__(
        self, num_features: int, num_groups: int = 8, eps: float = 1e-5, affine: bool = True
    ):
        if num_groups < 1 or num_features < 1:
            raise ConfigError(
                f"FittedGroupNorm needs num_groups >= 1 and num_features >= 1, "
                f"found {num_groups!r} and {num_features!r}"
            )
        super().__init__(math.gcd(num_groups, num_features), num_features, eps=eps, affine=affine)


def _identity_factory(spatial_dims: int | None = None) -> type[nn.Module]:
    """No normalization: ``nn.Identity`` for any number of spatial dimensions."""
    return nn.Identity


def _fitted_group_factory(spatial_dims: int | None = None) -> type[nn.Module]:
    """GroupNorm adapting its group count to each layer's width (:class:`FittedGroupNorm`)."""
    return FittedGroupNorm


def _batchrenorm_factory(spatial_dims: int) -> type[nn.Module]:
    """Batch Renormalization layers (Ioffe 2017) in 1, 2 or 3 spatial dimensions."""
    return batchrenorm_class(spatial_dims)


def _norm_factories() -> dict[str, Callable[..., type[nn.Module]]]:
    return {
        "batchrenorm": _batchrenorm_factory,
        "identity": _identity_factory,
        "none": _identity_factory,
        "fittedgroup": _fitted_group_factory,
    }


def register_monai_norms() -> None:
    """Add our normalization names to ``monai.networks.layers.factories.Norm``.

    Safe to call any number of times: a name already present is pointed at the current factory
    without being listed twice in MONAI's docstring.
    """
    from monai.networks.layers.factories import Norm

    for name, factory in _norm_factories().items():
        if name.upper() in Norm.components:
            Norm.add(name.upper(), factory.__doc__ or "", factory)
        else:
            Norm.add_factory_callable(name, factory)
