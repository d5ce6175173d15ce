"""Label images → the class maps a network is trained on, for the three tasks.

- ``"binary"``: 2 classes, 0 background and 1 foreground (any object).
- ``"semantic"``: the label values are class ids (0 background, 1..K-1 classes).
- ``"instance"``: 3 classes as in the tiling paper: 0 background, 1 foreground (an object minus
  its boundary), 2 boundary (object pixels next to another object or to background), so touching
  objects are separated by boundary pixels and can be told apart after prediction.

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


def check_task(task: str) -> str:
    """``task`` if it is one of :data:`TASKS`, else :class:`ConfigError` listing them."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return task


def n_classes_for(task: str, labels: np.ndarray | Iterable[np.ndarray] | None = None) -> int:
    """Number of network output classes (background included) for ``task``.

    binary → 2, instance → 3; semantic → 1 + the largest value in ``labels`` (one label image
    or several), at least 2. Raises :class:`ConfigError` for an unknown task or a semantic task
    without labels.
    """
    check_task(task)
    if task != "semantic":
        return 2 if task == "binary" else 3
    if labels is None:
        raise ConfigError("task 'semantic' needs the label images to count the classes; pass "
                          "labels=[...] (the class ids are the label values)")
    arrays = [labels] if isinstance(labels, np.ndarray) else list(labels)
    largest = max((int(a.max()) for a in arrays if a.size), default=0)
    return max(2, largest + 1)


def class_names(task: str, n_classes: int) -> list[str]:
    """Readable names of the classes, e.g. ``["background", "foreground", "boundary"]``."""
    check_task(task)
    if task == "instance":
        return ["background", "foreground", "boundary"]
    if task == "binary":
        return ["background", "foreground"]
    return ["background"] + [f"class_{k}" for k in range(1, n_classes)]


def labels_to_target(label: np.ndarray, task: str) -> np.ndarray:
    """The class map of one label image.

    Parameters
    ----------
    label: integer array ``"YX"`` or ``"ZYX"``, 0 background, values ≥ 0 (instance ids, or
        class ids for ``"semantic"``).
    task: ``"binary"``, ``"semantic"`` or ``"instance"`` (see the module docstring).

    Returns an array of ``label``'s shape: uint8, or int64 for semantic labels above 255.
    Instance boundaries are ``skimage.segmentation.find_boundaries(mode="inner")`` with
    face-connected neighbours (4 in 2D, 6 in 3D); the image border is not a boundary.

    Raises :class:`ConfigError` for an unknown task, :class:`DataError` for labels that are not
    non-negative integers.
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
    return _instance_target(label)


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

