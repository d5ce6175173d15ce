"""Segmentation quality: pixel metrics per class and object matching at IoU thresholds.

Each metric is defined in the docstring of its module (:mod:`microseg.metrics.pixel`,
:mod:`microseg.metrics.instance`). Only NumPy is imported here; SciPy is imported when a matching
needs the Hungarian algorithm.

>>> from microseg.metrics import match_instances, pixel_metrics
"""

from microseg.metrics.instance import (
    DEFAULT_IOU_THRESHOLDS,
    DSB_THRESHOLDS,
    InstanceMatching,
    OverlapTable,
    ThresholdScores,
    aggregate,
    dsb_score,
    match_instances,
    object_error_map,
    overlap_table,
)
from microseg.metrics.pixel import (
    ClassMetrics,
    aggregate_pixel,
    confusion_matrix,
    pixel_error_map,
    pixel_metrics,
)

__all__ = [
    "ClassMetrics",
    "DEFAULT_IOU_THRESHOLDS",
    "DSB_THRESHOLDS",
    "InstanceMatching",
    "OverlapTable",
    "ThresholdScores",
    "aggregate",
    "aggregate_pixel",
    "confusion_matrix",
    "dsb_score",
    "match_instances",
    "object_error_map",
    "overlap_table",
    "pixel_error_map",
    "pixel_metrics",
]
