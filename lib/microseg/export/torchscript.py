"""Export a model to TorchScript: one file that runs without microseg or MONAI (C++, DeepImageJ).

Example
-------
>>> import tempfile, torch
>>> from microseg.models import ModelConfig, build_model
>>> model = build_model(ModelConfig(channels=(4, 8, 16), num_res_units=1)).eval()
>>> with tempfile.TemporaryDirectory() as folder:
...     result = export_torchscript(model, torch.zeros(1, 1, 32, 32),
...                                 Path(folder) / "model.torchscript.pt")
>>> result["method"], result["max_abs_diff"] <= 1e-4
('script', True)
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from microseg.export.checks import (
    as_input_tensor,
    check_tolerance,
    exportable_copy,
    max_abs_difference,
    reference_output,
    refuse_existing,
)
from microseg.runs import atomic_write

if TYPE_CHECKING:
    import torch

__all__ = [
    "compile_torchscript",
    "export_torchscript",
    "jit_deprecation_silenced",
    "load_torchscript",
]


def export_torchscript(
    model: torch.nn.Module,
    example_input: Any,
    path: str | Path,
    *,
    tolerance: float | None = 1e-4,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``model`` as TorchScript, load it back with ``torch.jit.load`` and compare outputs.

    The exported copy is on the CPU, in eval mode, with BatchRenorm folded into BatchNorm (see
    :func:`microseg.export.checks.exportable_copy`); ``model`` is not changed. The model is
    scripted, so the file accepts any batch size and any spatial size the network accepts; a
    model that cannot be scripted is traced with ``example_input`` instead (``method`` tells
    which).

    Parameters
    ----------
    model : network returning logits (N, K, *spatial).
    example_input : float array or tensor (N, C, Y, X) or (N, C, Z, Y, X), already normalized.
    path : file to write (``.pt``); written atomically.
    tolerance : largest accepted absolute difference between the reloaded file's output and the
        PyTorch model's; ``None`` only measures it.
    overwrite : replace an existing file at ``path``.

    Returns
    -------
    dict with ``format`` ("torchscript"), ``path``, ``method`` ("script" or "trace"),
    ``max_abs_diff`` and ``input_shape``.

    Raises
    ------
    OutputExistsError if ``path`` exists and ``overwrite`` is false; DataError for an input that
    is not 4D/5D; MicrosegError when the reloaded file differs by more than ``tolerance``.
    """
    import torch

    path = Path(path)
    refuse_existing(path, overwrite)
    inputs = as_input_tensor(example_input)
    expected = reference_output(model, inputs)
    compiled, method = compile_torchscript(exportable_copy(model), inputs)
    with jit_deprecation_silenced():
        atomic_write(path, lambda tmp: torch.jit.save(compiled, str(tmp)))
    reloaded = load_torchscript(path)
    with torch.no_grad():
        found = reloaded(inputs).numpy()
    difference = max_abs_difference(found, expected, "the TorchScript file")
    check_tolerance(difference, tolerance, "the TorchScript file", path)
    return {
        "format": "torchscript",
        "path": str(path),
        "method": method,
        "max_abs_diff": difference,
        "input_shape": list(inputs.shape),
    }


def compile_torchscript(
    model: torch.nn.Module, example_input: torch.Tensor
) -> tuple[torch.jit.ScriptModule, str]:
    """``torch.jit.script(model)``, or ``torch.jit.trace(model, example_input)`` if scripting fails.

    Returns the compiled module and the method used ("script" or "trace").
    """
    import torch

    with jit_deprecation_silenced():
        try:
            return torch.jit.script(model), "script"
        except (RuntimeError, torch.jit.frontend.FrontendError, NotImplementedError):
            with torch.no_grad():
                return torch.jit.trace(model, example_input), "trace"


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """Load a TorchScript file onto the CPU, in eval mode (e.g. one :func:`export_torchscript`
    wrote)."""
    import torch

    with jit_deprecation_silenced():
        return torch.jit.load(str(path), map_location="cpu").eval()


@contextlib.contextmanager
def jit_deprecation_silenced() -> Iterator[None]:
    """Silence PyTorch's notice that TorchScript is deprecated, for the duration."""
    # TorchScript is deprecated in favour of torch.export, but it is the format that
    # bioimage.io, DeepImageJ and C++ deployments load; the notice is not actionable here.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning
        )
        yield
