"""Estimate an image's object size by predicting it at several scales.

A network sees a fixed neighbourhood (its receptive field). Objects much larger than it come out
as fragments about the size of the training objects, so measuring the objects of one
prediction and resampling until the measurement agrees with itself confirms the training size
(a model trained on 20-pixel nuclei finds "20 pixels" in an image of 100-pixel nuclei).

What fragments cannot fake is how sizes change with the scale. Predicted at a factor ``f``, real
objects measure ``f`` times their diameter, so the estimate ``measured / f`` stays the same from
one factor to the next; fragments keep the network's size whatever the factor, so their
estimate grows as ``1 / f``; objects shrunk to a few pixels vanish or merge. The search
(:func:`search_object_diameter`) predicts at factors ``1, 1/√2, 1/2, …`` (without test-time
augmentation), estimates the diameter at each, and takes the **plateau**: the longest run of
consecutive factors whose estimates agree within :data:`PLATEAU_SPREAD` (:func:`find_plateau`;
of runs as long, the one that agrees best). Its median is the estimate; its length is the confidence (``"high"`` from
:data:`CONFIDENT_RUN` factors on). Shrinking makes each further prediction cheaper (a quarter
of the pixels every two steps), so the whole search costs about twice one prediction at the
training scale when objects are at most that large.

Two runs as long are where the search can go wrong, and both ways were seen on held-out DSB
images: fragments of 99-pixel nuclei agreeing at factors 0.5 and 0.35 as well as the nuclei at
0.125 and 0.088 (the tighter run is the nuclei), and clusters of dense 16-pixel nuclei merged by
shrinking that agree at 0.125 to 0.06 (tighter) as long as the nuclei at 1 to 0.5 (the run at
the larger factors is the nuclei). The estimates alone cannot tell these apart; the tighter run
is kept because it is right in the first, the case this search exists for.

Example (estimates that a model trained on 20-pixel objects makes of 100-pixel objects: fragments
at factors 1 to 1/2, the objects themselves from 1/2.8 on)
>>> trials = [(1.0, 21.0), (0.71, 30.0), (0.5, 44.0), (0.35, 98.0), (0.25, 101.0),
...           (0.18, 104.0), (0.125, 160.0)]
>>> plateau = find_plateau(trials)
>>> plateau.diameter, plateau.confidence, plateau.consistent
(101.0, 'high', 3)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "CONFIDENT_RUN",
    "PLATEAU_SPREAD",
    "SEARCH_STEP",
    "ScaleEstimate",
    "find_plateau",
    "search_object_diameter",
]

SEARCH_STEP = math.sqrt(2.0)
"""Consecutive factors of the search differ by this (two steps halve the image side)."""
PLATEAU_SPREAD = 1.3
"""Estimates of one plateau lie within this ratio of each other (largest / smallest)."""
CONFIDENT_RUN = 3
"""A plateau of at least this many factors is a confident estimate; shorter ones are "low"."""
MIN_SEARCH_SIDE = 24
"""The search stops shrinking when the image's shortest side would fall below this (pixels)."""


@dataclasses.dataclass(frozen=True)
class ScaleEstimate:
    """The object diameter estimated by the scale search, and how sure it is.

    diameter : median of the plateau's estimates (pixels of the image); None when no factor
        found objects.
    confidence : ``"high"`` (a plateau of :data:`CONFIDENT_RUN` factors or more), ``"low"``
        (shorter: the estimate rests on one or two predictions) or ``"none"`` (no objects).
    consistent : factors on the plateau.
    trials : ``(factor, estimated diameter or None)`` of every prediction, in search order.
    """

    diameter: float | None
    confidence: str
    consistent: int
    trials: tuple[tuple[float, float | None], ...]

    def describe(self) -> dict[str, Any]:
        """The facts for a summary: confidence, plateau length and the trials (rounded)."""
        return {"diameter_confidence": self.confidence, "consistent_scales": self.consistent,
                "scale_trials": [[round(f, 3), None if d is None else round(d, 1)]
                                 for f, d in self.trials]}


def find_plateau(trials: Sequence[tuple[float, float | None]],
                 spread: float = PLATEAU_SPREAD) -> ScaleEstimate:
    """The longest run of consecutive trials (ordered by factor, largest first) whose estimates
    agree within ``spread``; ties go to the run whose estimates agree best. A trial without
    objects (None) ends a run."""
    ordered = sorted(trials, key=lambda t: -t[0])
    run = _longest_run([d for _, d in ordered], spread)
    if run is None:
        return ScaleEstimate(None, "none", 0, tuple(trials))
    start, stop = run
    diameter = float(np.median([d for _, d in ordered[start:stop]]))
    return ScaleEstimate(diameter, "high" if stop - start >= CONFIDENT_RUN else "low",
                         stop - start, tuple(trials))


def _longest_run(values: Sequence[float | None], spread: float) -> tuple[int, int] | None:
    """``(start, stop)`` of the plateau of ``values``; None when every value is None."""
    best: tuple[int, float] | None = None
    run: tuple[int, int] | None = None
    for start, first in enumerate(values):
        if first is None:
            continue
        low = high = first
        stop = start + 1
        while stop < len(values) and values[stop] is not None:
            value = values[stop]
            if max(high, value) / min(low, value) > spread:
                break
            low, high, stop = min(low, value), max(high, value), stop + 1
        key = (stop - start, -high / low)
        if best is None or key > best:
            best, run = key, (start, stop)
    return run


def search_object_diameter(measure: Callable[[float], float | None], start: float,
                           smallest: float, largest: float) -> ScaleEstimate:
    """Estimate the object diameter by predicting at factors ``start, start/√2, …``.

    Parameters
    ----------
    measure : ``factor -> median object diameter found`` in the image resampled by ``factor``
        (pixels of the resampled image; None when nothing is found).
    start : the first factor (the training scale: 1.0).
    smallest : no factor below this (the image would become too small, or objects would be
        shrunk more than the model allows).
    largest : the search may go above ``start`` up to this when it has found no confident
        plateau below (images of objects smaller than the network was trained on).

    Going down, the search stops below ``smallest`` or at a factor that finds no objects (each
    step down costs half the one before, so going all the way costs about one more prediction
    at ``start``; stopping at the first plateau would take fragments that happen to agree at
    three factors for the objects). Without a confident plateau (objects too small to be
    measured reliably) it goes on above ``start`` until it finds one or a factor finds nothing;
    when ``start`` found nothing, it looks once at twice the size and goes on from there only
    if that finds objects (an empty image costs one prediction at twice the size).
    """
    trials: list[tuple[float, float | None]] = []

    def trial(factor: float) -> float | None:
        found = measure(factor)
        estimate = None if found is None else found / factor
        trials.append((factor, estimate))
        return estimate

    factor = start
    while factor >= smallest * (1 - 1e-9):
        if trial(factor) is None:
            break
        factor /= SEARCH_STEP
    # upwards; nothing at the training scale: the first look is at twice the size
    factor = start * (2.0 if trials[0][1] is None else SEARCH_STEP)
    while factor <= largest * (1 + 1e-9) and find_plateau(trials).confidence != "high":
        if trial(factor) is None:
            break
        factor *= SEARCH_STEP
    return find_plateau(trials)
