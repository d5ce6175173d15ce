"""What every export shares: an exportable copy of the model, and the comparison after reloading.

An exported model is only trusted once it has been written, read back with the runtime that will
use it, and run on a test input whose output matches the PyTorch model's. These helpers prepare
the copy that is exported and measure that match.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from microseg.errors import DataError, MicrosegError, OutputExistsError

if TYPE_CHECKING:
    import torch

__all__ = [
    "as_input_tensor",
    "check_tolerance",
    "exportable_copy",
    "max_abs_difference",
    "reference_output",
    "refuse_existing",
]


def exportable_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` on the CPU, in eval mode, with every BatchRenorm folded into BatchNorm.

    In eval mode BatchRenorm computes exactly what BatchNorm computes with the same running
    statistics, so the folded copy gives the same output while using only layers that TorchScript,
    ONNX and every bioimage.io consumer know. ``model`` itself is not changed.
    """
    from microseg.models.batchrenorm import fold_batchrenorm

    return fold_batchrenorm(model).cpu().eval()


def as_input_tensor(example_input: Any) -> torch.Tensor:
    """``example_input`` (NumPy array or tensor, (N, C, *spatial)) as a float32 CPU tensor.

    Raises
    ------
    DataError when the input is not 4D (batch of 2D images) or 5D (batch of 3D volumes).
    """
    import torch

    if hasattr(example_input, "detach"):
        example_input = example_input.detach().cpu().numpy()
    tensor = torch.as_tensor(np.asarray(example_input, dtype=np.float32))
    if tensor.ndim not in (4, 5):
        raise DataError(
            f"example input has shape {tuple(tensor.shape)}; expected (N, C, Y, X) or "
            f"(N, C, Z, Y, X), e.g. image[None] for one channel-first image"
        )
    return tensor


def reference_output(model: torch.nn.Module, example_input: torch.Tensor) -> np.ndarray:
    """The PyTorch model's logits for ``example_input`` (eval mode, CPU, no gradient), float32."""
    import copy

    import torch

    reference = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        return reference(example_input).numpy().astype(np.float32)


def max_abs_difference(exported: np.ndarray, reference: np.ndarray, what: str) -> float:
    """Largest absolute difference between two outputs of the same shape.

    Raises
    ------
    MicrosegError if the shapes differ (naming ``what`` was exported).
    """
    if exported.shape != reference.shape:
        raise MicrosegError(
            f"{what} returned an output of shape {exported.shape}, the PyTorch model "
            f"{reference.shape}; the export is broken"
        )
    return float(np.max(np.abs(exported.astype(np.float64) - reference.astype(np.float64))))


def check_tolerance(difference: float, tolerance: float | None, what: str, path: Path) -> None:
    """Raise :class:`MicrosegError` when the reloaded export differs from PyTorch by more than
    ``tolerance`` (``None`` skips the check)."""
    if tolerance is not None and not difference <= tolerance:
        raise MicrosegError(
            f"{what} at {path} differs from the PyTorch model by up to {difference:.3g} "
            f"(tolerance {tolerance:.3g}) on the test input; check that the model contains "
            f"no training-only layers, or pass a larger tolerance if this is expected"
        )


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``overwrite`` is false."""
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists; choose another file name or pass overwrite=True"
        )
