"""Where computations run: one place that turns a user's ``device`` value into a torch device.

Every stage (training, prediction, diagnostics, export checks) takes ``device`` as ``"auto"``
(the first GPU if CUDA is available, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
``"mps"``, or a :class:`torch.device`. Anything else stops with a message naming the choices,
before any work is done.

Example
-------
>>> resolve_device("cpu")
device(type='cpu')
>>> resolve_device("gpu0")
Traceback (most recent call last):
...
microseg.errors.ConfigError: device 'gpu0' is not known: use "auto" (a GPU if there is one, else the CPU), "cpu", "cuda" or "cuda:N" (the N-th GPU, from 0), or "mps" (Apple)
"""

from __future__ import annotations

import re
from typing import Any

from microseg.errors import ConfigError

__all__ = ["DEVICE_CHOICES", "resolve_device"]

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
"""The device names a notebook offers; ``"cuda:N"`` picks one of several GPUs."""

_PATTERN = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
_HELP = ('use "auto" (a GPU if there is one, else the CPU), "cpu", "cuda" or "cuda:N" (the '
         'N-th GPU, from 0), or "mps" (Apple)')


def resolve_device(device: Any = "auto") -> Any:
    """The :class:`torch.device` for ``device`` (module docstring for the accepted values).

    Raises
    ------
    ConfigError
        For an unknown name (e.g. ``"gpu0"``), for ``"cuda"`` on a machine where torch finds no
        CUDA GPU, or for a GPU index beyond the GPUs found.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not _PATTERN.match(device.strip().lower()):
        raise ConfigError(f"device {device!r} is not known: {_HELP}")
    name = device.strip().lower()
    if name.startswith("cuda"):
        _check_cuda(name, torch)
    return torch.device(name)


def _check_cuda(name: str, torch: Any) -> None:
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: torch finds no CUDA GPU on this machine (torch "
                          f"{torch.__version__}, built for CUDA {torch.version.cuda}); use "
                          f"device='auto' or 'cpu', or check the NVIDIA driver (nvidia-smi)")
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} "
                          f"GPU(s), numbered from 0")
