"""Checks of images and label images before a split is saved, with messages that name each file.

A split records what every later notebook trains and evaluates on, so what would silently spoil
a result is stopped here, once, when the data are read:

- images with NaN or infinite pixels (one such pixel makes the normalization, and with it the
  whole prediction of the image, NaN);
- label images that hold no object (only background), unless they are allowed;
- semantic labels whose class ids leave more gaps than they use (a stray pixel of 60000 would
  make 60001 classes, 0/255 masks 256); a few unused ids are only logged;
- semantic labels that are really instance labels (every value one connected object);
  these two are guesses, so declaring the number of classes (``n_classes``) replaces them by
  the plain check that every value is below it;
- instance labels that are really masks or class maps (one value marks many separate objects).

Example
-------
>>> import numpy as np
>>> label = np.zeros((8, 8), np.int32)
>>> label[1:3, 1:3], label[5:7, 5:7] = 1, 60000
>>> summary = summarize_label("a", "labels/a.tif", label)
>>> summary.ids.tolist(), summary.regions
([1, 60000], 2)
>>> label_problems([summary], "semantic")[0][:60]
'semantic labels must hold class ids 1, 2, ... without gaps: '
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import DataError

__all__ = ["INSTANCE_LIKE_MIN_IDS", "LabelSummary", "check_labels", "label_problems",
           "nonfinite_problem", "require_finite", "summarize_label"]

log = logging.getLogger(__name__)

INSTANCE_LIKE_MIN_IDS = 5
"""Semantic labels with at least this many different values, nearly each one connected object
in every image, are taken for instance labels."""
_SINGLE_REGION_SHARE = 0.9
_MASK_MIN_REGIONS = 5
_SHOWN = 5


def nonfinite_problem(image: Any, source: str | Path) -> str | None:
    """A line naming ``source`` and its NaN and infinite pixels, or None when all are finite.

    ``image``: any array; integer images are finite by construction and not scanned.
    """
    values = np.asarray(image)
    if values.dtype.kind not in "fc":
        return None
    finite = np.isfinite(values)
    if finite.all():
        return None
    nan = int(np.count_nonzero(np.isnan(values)))
    infinite = values.size - int(np.count_nonzero(finite)) - nan
    return (f"{source}: {nan} NaN and {infinite} infinite pixel(s) of {values.size}; replace "
            f"them (e.g. by 0 or the image's median; in Fiji: Process > Math > Remove NaNs) — "
            f"microseg never guesses values for them")


def require_finite(image: Any, source: str | Path) -> None:
    """Raise :class:`DataError` (see :func:`nonfinite_problem`) unless every pixel is finite."""
    problem = nonfinite_problem(image, source)
    if problem is not None:
        raise DataError("an image has NaN or infinite pixels, so it cannot be normalized",
                        [problem])


@dataclasses.dataclass(frozen=True)
class LabelSummary:
    """What the checks need of one label image.

    stem, path: its name and file. ids: the object or class values above 0, sorted (int64).
    counts: pixels per value in ``ids``. regions: connected regions of equal value above 0
    (face, edge and corner neighbours). pixels: all pixels, background included.
    """

    stem: str
    path: str
    ids: np.ndarray
    counts: np.ndarray
    regions: int
    pixels: int


def summarize_label(stem: str, path: str | Path, label: np.ndarray) -> LabelSummary:
    """The :class:`LabelSummary` of one integer label image (Y, X) or (Z, Y, X)."""
    from skimage.measure import label as connected

    ids, counts = np.unique(label[label > 0], return_counts=True)
    regions = int(connected(label, background=0).max()) if ids.size else 0
    return LabelSummary(stem, str(path), ids.astype(np.int64), counts.astype(np.int64), regions,
                        int(label.size))


def label_problems(summaries: Sequence[LabelSummary], task: str, allow_empty: bool = False,
                   n_classes: int | None = None) -> list[str]:
    """Every problem of the label images for ``task`` (one line each; empty when they fit).

    ``n_classes``: for ``"semantic"``, the number of classes the user declares (background
    included); then every value must be below it, and the guesses about gaps and instance
    labels are not made.
    """
    problems = [] if allow_empty else _empty_problems(summaries)
    if task == "semantic" and n_classes is not None:
        problems += _beyond_classes(summaries, n_classes)
    elif task == "semantic":
        problems += _semantic_problems(summaries)
    elif task == "instance":
        problems += _mask_problems(summaries)
    return problems


def check_labels(summaries: Sequence[LabelSummary], task: str, allow_empty: bool = False,
                 problems: Sequence[str] = (), n_classes: int | None = None) -> None:
    """Raise one :class:`DataError` listing ``problems`` and :func:`label_problems`, if any."""
    found = [*problems, *label_problems(summaries, task, allow_empty, n_classes)]
    if found:
        raise DataError(f"{len(found)} problem(s) with the images and labels; fix them, then "
                        f"run again", found)


def _empty_problems(summaries: Sequence[LabelSummary]) -> list[str]:
    empty = [s.path for s in summaries if s.ids.size == 0]
    if not empty:
        return []
    return [f"{len(empty)} of {len(summaries)} label image(s) hold no object (only 0 = "
            f"background): {_listed(empty)}. A network trained on them learns that nothing "
            f"there is an object. Annotate them; or, if these images really show no object, "
            f"pass allow_empty_labels=True"]


def _beyond_classes(summaries: Sequence[LabelSummary], n_classes: int) -> list[str]:
    beyond = [s for s in summaries if s.ids.size and s.ids[-1] >= n_classes]
    return [f"{s.path}: class ids {_values(s.ids[s.ids >= n_classes])} are not below "
            f"n_classes = {n_classes} (ids 0..{n_classes - 1}); fix the stray values or "
            f"declare more classes" for s in beyond]


def _semantic_problems(summaries: Sequence[LabelSummary]) -> list[str]:
    present = np.unique(np.concatenate([s.ids for s in summaries] or [np.zeros(0, np.int64)]))
    if present.size == 0:
        return []
    if _instance_like(summaries, present):
        example = max(summaries, key=lambda s: s.ids.size)
        return [f"the labels look like instance labels, not class ids: nearly every value is one "
                f"connected object (e.g. {example.path}: {example.ids.size} values, "
                f"{example.regions} objects), and task='semantic' would make "
                f"{int(present[-1]) + 1} classes of them. Use task='instance' (objects) or "
                f"task='binary' (object or not); if they are class ids, pass n_classes = "
                f"{int(present[-1]) + 1}"]
    missing = int(present[-1]) - present.size
    if missing <= present.size:
        if missing:
            log.warning("semantic labels: %d of the class ids 1..%d have no pixel (found %s)",
                        missing, int(present[-1]), _values(present))
        return []
    return [f"semantic labels must hold class ids 1, 2, ... without gaps: found "
            f"{_values(present)}, so {int(present[-1]) + 1} classes of which {missing} have no "
            f"pixel; rarest: {_rarest(summaries)}. Renumber the classes 1..K (for masks of "
            f"0 and 255 use task='binary'), remove stray values, or pass n_classes if that "
            f"many classes are meant"]


def _instance_like(summaries: Sequence[LabelSummary], present: np.ndarray) -> bool:
    if present.size < INSTANCE_LIKE_MIN_IDS:
        return False
    values = sum(s.ids.size for s in summaries)
    # Each value is at least one region, so at most regions - ids values are split in several.
    single = sum(max(0, 2 * s.ids.size - s.regions) for s in summaries)
    return single >= _SINGLE_REGION_SHARE * values


def _mask_problems(summaries: Sequence[LabelSummary]) -> list[str]:
    masks = [s for s in summaries
             if s.regions >= _MASK_MIN_REGIONS and s.regions >= 2 * s.ids.size]
    if not masks:
        return []
    shown = "; ".join(f"{s.path}: {s.ids.size} value(s) mark {s.regions} separate regions"
                      for s in masks[:_SHOWN])
    return [f"{len(masks)} label image(s) are masks or class maps, not instance labels "
            f"(one value per object): {shown}{_more(masks)}. Objects that touch would merge and "
            f"object counts would be wrong. Use task='binary' (or 'semantic' for class maps), "
            f"or number the objects 1, 2, ... (e.g. skimage.measure.label, or Fiji's ROI Map)"]


def _rarest(summaries: Sequence[LabelSummary]) -> str:
    pixels: dict[int, int] = {}
    where: dict[int, list[str]] = {}
    for s in summaries:
        for value, count in zip(s.ids.tolist(), s.counts.tolist(), strict=True):
            pixels[value] = pixels.get(value, 0) + count
            where.setdefault(value, []).append(s.path)
    rare = sorted(pixels, key=lambda v: (pixels[v], v))[:3]
    return "; ".join(f"{v} ({pixels[v]} pixel(s), in {_listed(where[v])})" for v in rare)


def _values(values: np.ndarray) -> str:
    shown = ", ".join(str(v) for v in values[:8].tolist())
    return shown + (f", ... ({values.size} values)" if values.size > 8 else "")


def _listed(paths: Sequence[str]) -> str:
    return ", ".join(paths[:_SHOWN]) + (f" and {len(paths) - _SHOWN} more"
                                        if len(paths) > _SHOWN else "")


def _more(items: Sequence[Any]) -> str:
    return f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
