"""Label images → the class maps a network is trained on, for the three tasks.

- ``"binary"``: 2 classes, 0 background and 1 foreground (any object).
- ``"semantic"``: the label values are class ids (0 background, 1..K-1 classes).
- ``"instance"``, one of two *heads* (:data:`INSTANCE_HEADS`):

  - ``"three_class"``: 3 classes as in the tiling paper: 0 background, 1 foreground (an object
    minus its boundary), 2 boundary (object pixels next to another object or to background), so
    touching objects are separated by boundary pixels and can be told apart after prediction;
  - ``"distance"``: 0 background and ``levels`` classes 1..levels of the distance of each object
    pixel to its object's border, normalized per object (its centre is 1) and cut into equal
    steps: level 1 is the rim, level ``levels`` the core. A watershed from the cores separates
    touching objects even where the border between them is faint (the discretized "energy" of
    the Deep Watershed Transform, Bai & Urtasun, CVPR 2017).

  ``"auto"`` (:func:`choose_instance_head`) picks one from the training labels: objects that
  cover most of the image (cells filling a tissue or an EM section, told apart by visible
  membranes) → ``"three_class"``; objects on background (cultured cells, nuclei) →
  ``"distance"``.

Example
-------
>>> import numpy as np
>>> label = np.zeros((5, 6), np.int32)
>>> label[1:4, 0:3], label[1:4, 3:6] = 1, 2
>>> labels_to_target(label, "instance")[2]    # the image border is not a boundary
array([1, 1, 2, 2, 1, 1], dtype=uint8)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from microseg.errors import ConfigError, DataError

TASKS = ("binary", "semantic", "instance")
INSTANCE_HEADS = ("three_class", "distance")
"""How an instance model represents objects (module docstring)."""
AUTO_HEAD_COVERAGE = 0.5
"""``instance_head="auto"``: labels covering at least this fraction of the image (median over
the training images) choose ``"three_class"``, less ``"distance"``
(:func:`choose_instance_head`)."""
DISTANCE_LEVELS = 4
"""Distance levels of the ``"distance"`` head by default."""

__all__ = ["AUTO_HEAD_COVERAGE", "DISTANCE_LEVELS", "INSTANCE_HEADS", "TASKS", "check_head",
           "check_task", "choose_instance_head", "class_counts", "class_names",
           "labels_to_target", "n_classes_for"]


def check_task(task: str) -> str:
    """``task`` if it is one of :data:`TASKS`, else :class:`ConfigError` listing them."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return task


def check_head(head: str, levels: int = DISTANCE_LEVELS) -> str:
    """``head`` if it is one of :data:`INSTANCE_HEADS` (and ``levels`` >= 2), else ConfigError."""
    if head not in INSTANCE_HEADS:
        raise ConfigError(f"unknown instance head {head!r}; choose one of "
                          f"{', '.join(INSTANCE_HEADS)}")
    if head == "distance" and levels < 2:
        raise ConfigError(f"the distance head needs at least 2 levels, found {levels}")
    return head


def choose_instance_head(labels: Iterable[np.ndarray | None]) -> tuple[str, str]:
    """The instance head for ``instance_head="auto"``, and a sentence saying why.

    Measured on the benchmark's real sets (BENCHMARKS.md): on EM sections, where labelled cells
    cover about 77 % of the image and membranes separate them, ``"three_class"`` segments
    better; on phase-contrast cells on background (about 18 % covered) ``"distance"`` does by
    far. The rule follows that: the median fraction of labelled pixels over the images against
    :data:`AUTO_HEAD_COVERAGE`.

    >>> import numpy as np
    >>> sparse, dense = np.zeros((20, 20), int), np.ones((20, 20), int)
    >>> sparse[2:6, 2:6] = 1
    >>> choose_instance_head([sparse])[0], choose_instance_head([dense, dense, sparse])[0]
    ('distance', 'three_class')

    Raises :class:`DataError` when no image has labels.
    """
    coverage = [float(np.count_nonzero(label)) / label.size for label in labels
                if label is not None and label.size]
    if not coverage:
        raise DataError("instance_head 'auto' needs labelled training images; none has labels")
    median = float(np.median(coverage))
    if median >= AUTO_HEAD_COVERAGE:
        return "three_class", (f"objects cover {median:.0%} of the image (median): they fill "
                               f"the field and borders separate them -> three_class")
    return "distance", (f"objects cover {median:.0%} of the image (median): objects on "
                        f"background -> distance")


def n_classes_for(task: str, labels: np.ndarray | Iterable[np.ndarray] | None = None,
                  head: str = "three_class", levels: int = DISTANCE_LEVELS) -> int:
    """Number of network output classes (background included) for ``task``.

    binary → 2; instance → 3 (``head="three_class"``) or ``levels + 1`` (``"distance"``);
    semantic → 1 + the largest value in ``labels`` (one label image or several), at least 2.
    Raises :class:`ConfigError` for an unknown task or head, or a semantic task without labels.
    """
    check_task(task)
    if task == "instance":
        return 3 if check_head(head, levels) == "three_class" else levels + 1
    if task == "binary":
        return 2
    if labels is None:
        raise ConfigError("task 'semantic' needs the label images to count the classes; pass "
                          "labels=[...] (the class ids are the label values)")
    arrays = [labels] if isinstance(labels, np.ndarray) else list(labels)
    largest = max((int(a.max()) for a in arrays if a.size), default=0)
    return max(2, largest + 1)


def class_names(task: str, n_classes: int, head: str = "three_class") -> list[str]:
    """Readable names of the classes, e.g. ``["background", "foreground", "boundary"]``; for
    the distance head ``["background", "level 1 (rim)", ..., "level 4 (core)"]``."""
    check_task(task)
    if task == "instance" and check_head(head, max(2, n_classes - 1)) == "distance":
        levels = n_classes - 1
        return ["background"] + [f"level {k}" + (" (rim)" if k == 1 else
                                                   " (core)" if k == levels else "")
                                 for k in range(1, levels + 1)]
    if task == "instance":
        return ["background", "foreground", "boundary"]
    if task == "binary":
        return ["background", "foreground"]
    return ["background"] + [f"class_{k}" for k in range(1, n_classes)]


def labels_to_target(label: np.ndarray, task: str, head: str = "three_class",
                     levels: int = DISTANCE_LEVELS) -> np.ndarray:
    """The class map of one label image.

    Parameters
    ----------
    label: integer array ``"YX"`` or ``"ZYX"``, 0 background, values ≥ 0 (instance ids, or
        class ids for ``"semantic"``).
    task: ``"binary"``, ``"semantic"`` or ``"instance"`` (see the module docstring).
    head, levels: the instance representation: ``"three_class"`` or ``"distance"`` with
        ``levels`` distance levels.

    Returns an array of ``label``'s shape: uint8, or int64 for semantic labels above 255.
    Instance boundaries are ``skimage.segmentation.find_boundaries(mode="inner")`` with
    face-connected neighbours (4 in 2D, 6 in 3D); the image border is not a boundary. Distance
    levels: ``ceil(levels · d / d_max)`` of each pixel's Euclidean distance ``d`` to the nearest
    pixel outside its object (background or another object; not the image border), ``d_max``
    the largest in that object.

    Raises :class:`ConfigError` for an unknown task or head, :class:`DataError` for labels that
    are not non-negative integers.
    """
    check_task(task)
    label = np.asarray(label)
    if label.dtype.kind not in "iub" or (label.size and label.min() < 0):
        raise DataError(f"labels must be integers ≥ 0, found dtype {label.dtype} with values "
                        f"from {label.min() if label.size else '-'}; read them with "
                        f"microseg.io.read_label")
    if task == "binary":
        return (label > 0).astype(np.uint8)
    if task == "semantic":
        return label.astype(np.uint8 if label.size == 0 or label.max() < 256 else np.int64)
    if check_head(head, levels) == "distance":
        return _distance_target(label, levels)
    return _instance_target(label)


def _distance_target(label: np.ndarray, levels: int) -> np.ndarray:
    from scipy import ndimage

    target = np.zeros(label.shape, np.uint8)
    for index, box in enumerate(ndimage.find_objects(label), start=1):
        if box is None:
            continue
        grown = tuple(slice(max(0, b.start - 1), b.stop + 1) for b in box)
        inside = label[grown] == index
        if inside.all():  # the object fills the image: no border to measure from
            target[grown][inside] = levels
            continue
        distance = ndimage.distance_transform_edt(inside)
        level = np.ceil(levels * distance / distance.max()).clip(1, levels)
        target[grown][inside] = level[inside].astype(np.uint8)
    return target


def _instance_target(label: np.ndarray) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    target = (label > 0).astype(np.uint8)
    target[find_boundaries(label, connectivity=1, mode="inner")] = 2
    return target


def class_counts(target: np.ndarray, n_classes: int) -> np.ndarray:
    """Pixels per class of a class map: int64 array of length ``n_classes``.

    Raises :class:`DataError` when the map holds a class id ≥ ``n_classes``.
    """
    counts = np.bincount(np.asarray(target).ravel().astype(np.int64), minlength=n_classes)
    if counts.size > n_classes:
        raise DataError(f"the class map holds class {counts.size - 1}, expected classes "
                        f"0..{n_classes - 1}")
    return counts

