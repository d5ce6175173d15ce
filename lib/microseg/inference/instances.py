"""From instance-model probabilities to object labels, by a seeded watershed.

An instance model has one of two heads (:data:`microseg.transforms.targets.INSTANCE_HEADS`).

``"three_class"``: it predicts, per pixel, the probability of background (class 0), of the
inside of an object (class 1, "foreground": an object minus its boundary) and of an object's
boundary (class 2), as in the tiling paper. Objects are recovered by a seeded watershed:

1. mask: pixels whose object probability ``1 − P(background)`` exceeds ``foreground_threshold``;
2. seeds: connected components (face-connected: 4 neighbours in 2D, 6 in 3D) of the mask pixels
   whose seed score exceeds ``seed_threshold`` — the score is ``P(interior) − P(boundary)``
   (``seed_score="interior_minus_boundary"``, so touching objects stay apart) or ``P(interior)``
   — keeping components of at least ``min_seed_size`` pixels;
3. watershed (``skimage.segmentation.watershed``) from the seeds within the mask, flooding the
   boundary probability (``landscape="boundary"``) or ``−P(interior)``;
4. objects smaller than ``min_size`` pixels are removed and ids relabelled 1..n.

``"distance"``: classes 1..L are levels of the distance to the object's border, normalized per
object (level L is the core). The expected normalized distance
``D = Σ_k P(level k) · (k − ½) / L`` (0 for background) is a smooth map that peaks at object
centres: the mask is ``1 − P(background) > foreground_threshold``, seeds are the components of
``D > seed_threshold`` within it, and the watershed floods ``−D``.

A mask region without any seed stays background. The thresholds are tuned on the validation
images (:func:`tune_postprocessing`) and saved beside the model as
``instance_postprocessing.json``, which evaluation and deployment read back
(:func:`load_postprocessing`).

Example
-------
>>> import numpy as np
>>> probabilities = np.zeros((3, 6, 6), np.float32)
>>> probabilities[0] = 1
>>> probabilities[:, 1:5, 1:5] = 0; probabilities[2, 1:5, 1:5] = 1; probabilities[1, 2:4, 2:4] = 1
>>> probabilities[2, 2:4, 2:4] = 0
>>> probabilities_to_instances(probabilities, InstancePostprocessing(min_size=1)).max()
np.int32(1)
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from microseg.config import StageConfig
from microseg.errors import ConfigError, DataError

__all__ = [
    "InstancePostprocessing",
    "POSTPROCESSING_FILE",
    "TUNING_IMAGES_QUICK",
    "TUNING_SEARCH_FILE",
    "default_grid",
    "expected_distance",
    "load_postprocessing",
    "probabilities_to_instances",
    "save_postprocessing",
    "tune_on_samples",
    "tune_postprocessing",
]

log = logging.getLogger(__name__)

POSTPROCESSING_FILE = "instance_postprocessing.json"
"""File name of the tuned post-processing in a model folder."""


@dataclasses.dataclass
class InstancePostprocessing(StageConfig):
    """How object labels are made from three-class probabilities (steps in the module docstring).

    Fields
    ------
    foreground_threshold : a pixel belongs to some object when ``1 − P(background)`` exceeds it.
    seed_threshold : a pixel seeds an object when its seed score exceeds it.
    seed_score : ``"interior_minus_boundary"`` (``P(interior) − P(boundary)``, default) or
        ``"interior"`` (``P(interior)``).
    landscape : what the watershed floods: ``"boundary"`` (``P(boundary)``, default) or
        ``"interior"`` (``−P(interior)``).
    min_seed_size : smallest seed kept, in pixels (voxels in 3D); smaller seeds are noise.
    min_size : smallest object kept, in pixels (voxels in 3D).
    head : the model's instance head, ``"three_class"`` or ``"distance"`` (module docstring;
        ``seed_score`` and ``landscape`` apply to ``"three_class"`` only).
    """

    foreground_threshold: float = 0.5
    seed_threshold: float = 0.5
    seed_score: Literal["interior_minus_boundary", "interior"] = "interior_minus_boundary"
    landscape: Literal["boundary", "interior"] = "boundary"
    min_seed_size: int = 3
    min_size: int = 10
    head: Literal["three_class", "distance"] = "three_class"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.foreground_threshold < 1:
            raise ConfigError(f"InstancePostprocessing.foreground_threshold must be in [0, 1), "
                              f"found {self.foreground_threshold}")
        if not -1 <= self.seed_threshold < 1:
            raise ConfigError(f"InstancePostprocessing.seed_threshold must be in [-1, 1), found "
                              f"{self.seed_threshold}")
        if self.min_seed_size < 1 or self.min_size < 0:
            raise ConfigError(f"InstancePostprocessing: min_seed_size must be >= 1 and min_size "
                              f">= 0, found {self.min_seed_size} and {self.min_size}")


def _check_probabilities(probabilities: Any, head: str) -> np.ndarray:
    probabilities = np.asarray(probabilities)
    channels_ok = probabilities.shape[0] == 3 if head == "three_class" else (
        probabilities.shape[0] >= 3)
    if probabilities.ndim not in (3, 4) or not channels_ok:
        expected = ("(3, Y, X) or (3, Z, Y, X) — background, foreground, boundary"
                    if head == "three_class" else
                    "(L + 1, Y, X) or (L + 1, Z, Y, X) — background and L >= 2 distance levels")
        raise DataError(
            f"expected instance probabilities {expected}, found shape {probabilities.shape}; "
            f"predict with a model trained for task 'instance' ({head!r} head)"
        )
    if not np.issubdtype(probabilities.dtype, np.floating):
        raise DataError(f"expected probabilities as floats in [0, 1], found dtype "
                        f"{probabilities.dtype}: pass the softmax output, not a class map")
    return probabilities


def expected_distance(probabilities: np.ndarray) -> np.ndarray:
    """``Σ_k P(level k) · (k − ½) / L`` over the L distance levels (channels 1..L): the
    expected normalized distance to the object's border, float32 (*spatial), in [0, 1)."""
    levels = probabilities.shape[0] - 1
    centres = (np.arange(1, levels + 1, dtype=np.float32) - 0.5) / levels
    return np.tensordot(centres, probabilities[1:].astype(np.float32), axes=1)


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    if min_size <= 1:
        return labels
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    labels[small[labels]] = 0
    return labels


def probabilities_to_instances(probabilities: Any,
                               config: InstancePostprocessing | None = None) -> np.ndarray:
    """Object labels from three-class probabilities by a seeded watershed (module docstring).

    Parameters
    ----------
    probabilities : (K, Y, X) or (K, Z, Y, X) float array, the softmax output of an instance
        model: P(background), P(interior), P(boundary) for the three-class head; P(background)
        and P(level 1..L) for the distance head (``config.head``).
    config : thresholds and sizes; default :class:`InstancePostprocessing()`.

    Returns
    -------
    int32 label image (Y, X) or (Z, Y, X): 0 background, objects 1..n.

    Raises
    ------
    DataError
        Probabilities of the wrong shape or dtype.
    """
    from scipy import ndimage
    from skimage.segmentation import relabel_sequential, watershed

    config = config or InstancePostprocessing()
    probabilities = _check_probabilities(probabilities, config.head)
    mask = (1 - probabilities[0]) > config.foreground_threshold
    if config.head == "distance":
        score = expected_distance(probabilities)
        landscape = -score
    else:
        _, interior, boundary = probabilities
        score = interior - boundary if config.seed_score == "interior_minus_boundary" else interior
        landscape = boundary if config.landscape == "boundary" else -interior
    seeds, _ = ndimage.label(mask & (score > config.seed_threshold))
    seeds = _remove_small(seeds, config.min_seed_size)
    labels = watershed(landscape, markers=seeds, mask=mask)
    labels = _remove_small(labels.astype(np.int32), config.min_size)
    return relabel_sequential(labels)[0].astype(np.int32)


def default_grid(head: str = "three_class") -> dict[str, list[Any]]:
    """Values tried by :func:`tune_postprocessing`: 3 foreground × 4 seed thresholds (seed
    scores of the distance head are normalized distances, of the three-class head differences
    of probabilities)."""
    seeds = [0.35, 0.45, 0.55, 0.65] if head == "distance" else [0.0, 0.2, 0.4, 0.6]
    return {"foreground_threshold": [0.3, 0.5, 0.7], "seed_threshold": seeds}


def _grid_configs(grid: dict[str, Sequence[Any]],
                  base: InstancePostprocessing) -> list[InstancePostprocessing]:
    names = list(grid)
    return [base.replace(**dict(zip(names, values, strict=True)))
            for values in itertools.product(*(grid[n] for n in names))]


def _score(config: InstancePostprocessing, probabilities: Sequence[np.ndarray],
           labels: Sequence[np.ndarray], metric: str, iou_threshold: float) -> float | None:
    from microseg.metrics.instance import match_instances

    values = []
    for probs, truth in zip(probabilities, labels, strict=True):
        predicted = probabilities_to_instances(probs, config)
        value = getattr(match_instances(predicted, truth, (iou_threshold,)).scores[0], metric)
        if value is not None:
            values.append(value)
    return float(np.mean(values)) if values else None


def tune_postprocessing(
    probabilities: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    grid: dict[str, Sequence[Any]] | None = None,
    metric: Literal["f1", "average_precision", "panoptic_quality"] = "f1",
    iou_threshold: float = 0.5,
    base: InstancePostprocessing | None = None,
) -> tuple[InstancePostprocessing, Any]:
    """Grid search of the post-processing on validation images, maximising the mean ``metric``.

    Parameters
    ----------
    probabilities : per image, (3, *spatial) probabilities predicted by the model.
    labels : per image, the true instance labels (*spatial) int.
    grid : field name → values to try (every combination); default :func:`default_grid` for
        ``base.head``.
        Fields not in the grid keep their value in ``base``.
    metric : instance metric at ``iou_threshold``, averaged over the images where it is defined.
    iou_threshold : IoU threshold of the matching.
    base : the config the grid varies; default :class:`InstancePostprocessing()`.

    Returns
    -------
    (best config, pandas DataFrame of every combination and its score, best first). Ties keep the
    first combination in grid order.

    Raises
    ------
    DataError
        No images, or different numbers of probability maps and label images.
    ConfigError
        A grid key that is not a field of :class:`InstancePostprocessing`.
    """
    import pandas as pd

    if not probabilities or len(probabilities) != len(labels):
        raise DataError(f"tuning needs validation images with labels: found "
                        f"{len(probabilities)} probability maps and {len(labels)} label images")
    base = base or InstancePostprocessing()
    configs = _grid_configs(dict(grid or default_grid(base.head)), base)
    rows = []
    for config in configs:
        score = _score(config, probabilities, labels, metric, iou_threshold)
        rows.append({**{k: v for k, v in config.to_dict().items() if not k.startswith("config_")},
                     metric: score})
    table = pd.DataFrame(rows)
    order = table[metric].fillna(-1.0).to_numpy()
    best = int(np.argmax(order))
    table = table.iloc[np.argsort(-order, kind="stable")].reset_index(drop=True)
    return configs[best], table


QUICK_GRID_SIZE = 2
"""A quick tuning (smoke runs) tries every other seed threshold at the default foreground one."""
TUNING_IMAGES_QUICK = 2
"""Validation images a quick tuning (smoke runs) uses: the first two."""


TUNING_SEARCH_FILE = "instance_postprocessing_search.csv"
"""Beside the tuned post-processing in a model folder: every combination tried, best first."""


def tune_on_samples(predict: Any, samples: Sequence[Any], head: str, quick: bool = False,
                    save_to: str | Path | None = None) -> tuple[InstancePostprocessing, Any]:
    """:func:`tune_postprocessing` on labelled samples (``.image``, ``.label``) whose
    probabilities ``predict(image)`` gives — as StarDist's ``optimize_thresholds``: the
    thresholds that segment the validation images best, with the prediction settings the
    model will be used with. ``quick``: a 2-value grid. ``save_to``: a model folder to write
    the best (:func:`save_postprocessing`) and the search (:data:`TUNING_SEARCH_FILE`) into.
    Returns (best, table best first)."""
    probabilities = [predict(sample.image) for sample in samples]
    grid = ({"foreground_threshold": [0.5],
             "seed_threshold": default_grid(head)["seed_threshold"][1::QUICK_GRID_SIZE]}
            if quick else None)
    best, table = tune_postprocessing(probabilities, [s.label for s in samples], grid=grid,
                                      base=InstancePostprocessing(head=head))
    log.info("instance post-processing tuned on %d validation image(s): foreground threshold "
             "%s, seed threshold %s (mean F1@0.5 %.3f)", len(samples), best.foreground_threshold,
             best.seed_threshold, table["f1"].iloc[0])
    if save_to is not None:
        from microseg.runs import atomic_write_text

        save_postprocessing(best, save_to)
        atomic_write_text(Path(save_to) / TUNING_SEARCH_FILE, table.to_csv(index=False))
    return best, table


def save_postprocessing(config: InstancePostprocessing, model_dir: str | Path) -> Path:
    """Write ``config`` as ``model_dir/instance_postprocessing.json`` (atomically)."""
    return config.save(Path(model_dir) / POSTPROCESSING_FILE)


def load_postprocessing(model_dir: str | Path) -> InstancePostprocessing:
    """The post-processing saved in ``model_dir``, or the defaults (with a logged message).

    Raises
    ------
    ConfigError
        If the file exists but cannot be read (naming the file).
    """
    path = Path(model_dir) / POSTPROCESSING_FILE
    if not path.is_file():
        log.warning("%s not found: using the default instance post-processing %s; tune it on "
                    "the validation images with microseg.inference.instances.tune_postprocessing "
                    "(notebook 05 does this)", path, InstancePostprocessing().to_dict())
        return InstancePostprocessing()
    return InstancePostprocessing.load(path)
