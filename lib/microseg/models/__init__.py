"""Segmentation networks and our Batch Renormalization layer.

Importing this package imports torch and MONAI and registers ``"batchrenorm"``, ``"none"``/
``"identity"`` and ``"fittedgroup"`` in MONAI's ``Norm`` factory (:mod:`microseg.models.norms`),
so any MONAI network accepts ``norm="batchrenorm"``.

>>> from microseg.models import ModelConfig, TrainedModel, build_model
>>> from microseg.models.batchrenorm import RenormSchedule, fold_batchrenorm
"""

from microseg.models.batchrenorm import (
    BatchRenorm1d,
    BatchRenorm2d,
    BatchRenorm3d,
    RenormSchedule,
    fold_batchrenorm,
    set_renorm_limits,
)
from microseg.models.factory import (
    ModelConfig,
    build_model,
    count_parameters,
    model_preset,
    model_summary,
    preset_names,
    required_input_shape,
    size_divisor,
)
from microseg.models.norms import register_monai_norms
from microseg.models.prediction import PredictionSettings, receptive_field_halo
from microseg.models.trained import TrainedModel

register_monai_norms()

__all__ = [
    "BatchRenorm1d",
    "BatchRenorm2d",
    "BatchRenorm3d",
    "ModelConfig",
    "PredictionSettings",
    "RenormSchedule",
    "TrainedModel",
    "build_model",
    "count_parameters",
    "fold_batchrenorm",
    "model_preset",
    "model_summary",
    "preset_names",
    "receptive_field_halo",
    "required_input_shape",
    "set_renorm_limits",
    "size_divisor",
]
