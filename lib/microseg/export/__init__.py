"""Export a trained model so it runs outside microseg: TorchScript, ONNX and bioimage.io packages.

Every export is written, loaded back with the runtime that will use it, and run on a test input;
the result reports the largest absolute difference from the PyTorch model. BatchRenorm layers are
folded into BatchNorm first (identical in eval mode), so exported files hold only standard layers.

Importing this package is cheap; torch, ONNX and bioimageio are imported when an export runs.

>>> from microseg.export import export_bioimageio, export_onnx, export_torchscript
>>> export_onnx(model, image[None], "model.onnx")["max_abs_diff"]      # doctest: +SKIP
"""

from microseg.export.bioimageio import BioimageioMetadata, export_bioimageio
from microseg.export.onnx import export_onnx
from microseg.export.torchscript import export_torchscript

__all__ = ["BioimageioMetadata", "export_bioimageio", "export_onnx", "export_torchscript"]
