"""The architecture callable named in microseg's bioimage.io packages (PyTorch state-dict weights).

A bioimage.io consumer with microseg installed rebuilds the network from the package's
``architecture.kwargs`` (a :class:`~microseg.models.ModelConfig` as a dict) and then loads the
state dict; consumers without microseg use the package's TorchScript weights instead.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "build_from_kwargs",
]


def build_from_kwargs(**kwargs: Any) -> Any:
    """Build the network described by ``kwargs`` (the fields of a ModelConfig), untrained.

    Example
    -------
    >>> net = build_from_kwargs(ndim=2, channels=[4, 8, 16], strides=[2, 2])
    >>> type(net).__name__, net.size_divisor
    ('UNet', 4)
    """
    from microseg.models import ModelConfig, build_model

    return build_model(ModelConfig.from_dict(kwargs))
