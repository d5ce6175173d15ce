"""Export a model to ONNX, checked with ``onnx.checker`` and run with ONNX Runtime on the CPU.

The ONNX file has a dynamic batch axis and dynamic spatial axes, so it predicts tiles of any size
the network accepts (multiples of its size divisor).

Example
-------
>>> result = export_onnx(model, image[None], "predictions/unet/model.onnx")  # doctest: +SKIP
>>> result["max_abs_diff"] <= 1e-4                                    # doctest: +SKIP
True
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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
    "INPUT_NAME",
    "OUTPUT_NAME",
    "export_onnx",
    "run_onnx",
]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


def export_onnx(
    model: torch.nn.Module,
    example_input: Any,
    path: str | Path,
    *,
    opset: int = 18,
    tolerance: float | None = 1e-4,
    overwrite: bool = False,
    dynamic_spatial: bool = True,
) -> dict[str, Any]:
    """Write ``model`` as ONNX, validate the file, run it with ONNX Runtime and compare outputs.

    The exported copy is on the CPU, in eval mode, with BatchRenorm folded into BatchNorm;
    ``model`` is not changed. The graph's input is named ``"input"`` (N, C, *spatial) and its
    output ``"logits"`` (N, K, *spatial); the batch axis is dynamic, and the spatial axes unless
    ``dynamic_spatial`` is false (networks of fixed input shape, e.g. UNETR).

    Parameters
    ----------
    model : network returning logits (N, K, *spatial).
    example_input : float array or tensor (N, C, Y, X) or (N, C, Z, Y, X), already normalized.
    path : file to write (``.onnx``); written atomically.
    opset : ONNX opset version (18 is read by ONNX Runtime 1.14 and later).
    tolerance : largest accepted absolute difference between ONNX Runtime's output and the
        PyTorch model's; ``None`` only measures it.
    overwrite : replace an existing file at ``path``.
    dynamic_spatial : export spatial axes of any size; false: the example's shape only.

    Returns
    -------
    dict with ``format`` ("onnx"), ``path``, ``opset``, ``max_abs_diff`` and ``input_shape``.

    Raises
    ------
    OutputExistsError if ``path`` exists and ``overwrite`` is false; DataError for an input that
    is not 4D/5D; ``onnx.checker.ValidationError`` for an invalid graph; MicrosegError when ONNX
    Runtime's output differs by more than ``tolerance``.
    """
    import onnx

    path = Path(path)
    refuse_existing(path, overwrite)
    inputs = as_input_tensor(example_input)
    expected = reference_output(model, inputs)
    program = _onnx_program(exportable_copy(model), inputs, opset, dynamic_spatial)
    atomic_write(path, lambda tmp: program.save(str(tmp)))
    onnx.checker.check_model(str(path), full_check=True)
    found = run_onnx(path, inputs.numpy())
    difference = max_abs_difference(found, expected, "the ONNX file")
    check_tolerance(difference, tolerance, "the ONNX file", path)
    return {
        "format": "onnx",
        "path": str(path),
        "opset": opset,
        "max_abs_diff": difference,
        "input_shape": list(inputs.shape),
    }


def run_onnx(path: str | Path, batch: np.ndarray) -> np.ndarray:
    """Run an ONNX file written by :func:`export_onnx` on ``batch`` (N, C, *spatial) float32 with
    ONNX Runtime's CPU provider; returns the logits (N, K, *spatial) float32."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, np.float32)})[0]


def _onnx_program(model: torch.nn.Module, inputs: torch.Tensor, opset: int,
                  dynamic_spatial: bool = True) -> Any:
    import torch
    from torch.export import Dim

    axes = [0, *range(2, inputs.ndim)] if dynamic_spatial else [0]
    dynamic = {axis: Dim.DYNAMIC for axis in axes}
    # The torch.export-based exporter reports deprecations inside its own dependencies and logs
    # that optional torchvision operators are unavailable; neither concerns this graph, which
    # is validated and run after export.
    with warnings.catch_warnings(), _logger_level(_REGISTRATION_LOGGER, logging.ERROR):
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        return torch.onnx.export(
            model,
            (inputs,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(dynamic,),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )


@contextlib.contextmanager
def _logger_level(name: str, level: int) -> Iterator[None]:
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
