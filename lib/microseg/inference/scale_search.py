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

Two runs as long are where the search can go wrong, and both ways were seen on held-out images:
fragments of 99-pixel nuclei agreeing at factors 0.5 and 0.35 as well as the nuclei at 0.125 and
0.088 (the tighter run is the nuclei); clusters of dense 16-pixel nuclei merged by shrinking
that agree at 0.125 to 0.06 (tighter) as long as the nuclei at 1 to 0.5, and touching
phase-contrast cells merged in the same way (the run at the larger factors is right). The
estimates alone cannot tell these apart; the shapes can. Merged clusters are concave where their
members meet, and cuts through an object leave ragged pieces, while whole nuclei and cells are
close to convex: of runs as long, the one whose objects are the most **solid** (area over convex
hull area, median over the objects and the run; :data:`SOLIDITY_MARGIN`) wins, and the tighter
run only among runs as solid. Measured on the three images above: nuclei 0.93 against clusters
0.83 and fragments 0.86, cells 0.80 against merged cells 0.57. Objects that are concave by
nature (neurons, branched cells) are where this is least sure; it decides ties only.

A size is measured only on objects seen whole. Shrunk far enough, densely packed objects (cells
of an EM section) merge into one object filling the view, whose estimate (the view's size) is
the same at every further factor: a long, perfect plateau of nothing. A prediction whose objects
all touch the border of the view measures nothing (:func:`measure_objects`): the search goes on
shrinking past it (smaller objects may come clear of the border further down), but no plateau
runs through it.

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
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "CONFIDENT_RUN",
    "Measurement",
    "PLATEAU_SPREAD",
    "SEARCH_STEP",
    "SOLIDITY_MARGIN",
    "ScaleEstimate",
    "find_plateau",
    "measure_objects",
    "search_object_diameter",
]

SEARCH_STEP = math.sqrt(2.0)
"""Consecutive factors of the search differ by this (two steps halve the image side)."""
PLATEAU_SPREAD = 1.3
"""Estimates of one plateau lie within this ratio of each other (largest / smallest)."""
SOLIDITY_MARGIN = 0.03
"""Runs whose objects' solidity is within this of the most solid run's count as equally solid."""
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
    solidity : the median solidity of the objects of each trial (same order; None where it was
        not measured — only trials of runs that tie are — or nothing was found).
    """

    diameter: float | None
    confidence: str
    consistent: int
    trials: tuple[tuple[float, float | None], ...]
    solidity: tuple[float | None, ...] = ()

    def describe(self) -> dict[str, Any]:
        """The facts for a summary: confidence, plateau length and the trials (rounded)."""
        return {"diameter_confidence": self.confidence, "consistent_scales": self.consistent,
                "scale_trials": [[round(f, 3), None if d is None else round(d, 1)]
                                 for f, d in self.trials]}


Solidity = float | Callable[[], float | None] | None
"""A trial's median solidity: a number, a function that measures it when first asked (only
trials of runs that tie are measured: it costs a convex hull per object), or None."""


def find_plateau(trials: Sequence[tuple[float, float | None]],
                 spread: float = PLATEAU_SPREAD,
                 solidity: Sequence[Solidity] = ()) -> ScaleEstimate:
    """The longest run of consecutive trials (ordered by factor, largest first) whose estimates
    agree within ``spread``; of runs as long, the one whose objects are the most solid
    (``solidity``: per trial, in the order of ``trials``; within :data:`SOLIDITY_MARGIN`), then
    the one whose estimates agree best. A trial without objects (None) ends a run."""
    shapes = list(solidity) or [None] * len(trials)
    measured: dict[int, float | None] = {}

    def shape_of(k: int) -> float | None:
        if not callable(shapes[k]):
            return shapes[k]
        if k not in measured:
            measured[k] = shapes[k]()
        return measured[k]

    order = sorted(range(len(trials)), key=lambda k: -trials[k][0])
    values = [trials[k][1] for k in order]
    run = _plateau_run(values, spread, lambda i: shape_of(order[i]))
    known = tuple(measured.get(k) if callable(v) else v for k, v in enumerate(shapes))
    if run is None:
        return ScaleEstimate(None, "none", 0, tuple(trials), known)
    start, stop = run
    diameter = float(np.median(values[start:stop]))
    return ScaleEstimate(diameter, "high" if stop - start >= CONFIDENT_RUN else "low",
                         stop - start, tuple(trials), known)


def _plateau_run(values: Sequence[float | None], spread: float,
                 solidity: Callable[[int], float | None]) -> tuple[int, int] | None:
    """``(start, stop)`` of the plateau of ``values``; None when every value is None.
    ``solidity(i)``: the solidity of the ``i``-th value, asked only of runs that tie."""
    runs = []  # (length, tightness, start, stop) of the run from each start
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
        runs.append((stop - start, -high / low, start, stop))
    if not runs:
        return None
    longest = max(r[0] for r in runs)
    tied = [r for r in runs if r[0] == longest]
    if len(tied) > 1:
        shapes = []
        for _, _, start, stop in tied:
            found = [v for v in map(solidity, range(start, stop)) if v is not None]
            shapes.append(float(np.median(found)) if found else None)
        if None not in shapes:
            best = max(shapes)
            tied = [r for r, v in zip(tied, shapes, strict=True) if v >= best - SOLIDITY_MARGIN]
    _, _, start, stop = max(tied, key=lambda r: (r[1], -r[2]))
    return start, stop


@dataclasses.dataclass(frozen=True)
class Measurement:
    """What one prediction of the search found.

    diameter : median equivalent diameter of its objects (pixels of the prediction).
    solidity : their median solidity (:data:`Solidity`: a number, a function measuring it when
        asked, or None: not measured, as for volumes).
    whole : some object lies clear of the border of the view; without one, nothing was
        measured (an object cut by the border, or one object filling the view, has no size).
    """

    diameter: float
    solidity: Solidity = None
    whole: bool = True


def measure_objects(labels: np.ndarray) -> Measurement | None:
    """The :class:`Measurement` of an instance label image (2D or 3D); None without objects.

    >>> labels = np.zeros((12, 12), np.int32)
    >>> labels[:4, :4] = 1                          # touches the border
    >>> measure_objects(labels).whole
    False
    >>> labels[6:10, 6:10] = 2                      # clear of it
    >>> measure_objects(labels).whole, measure_objects(labels).solidity()
    (True, 1.0)

    The solidity is a function, measured only when the search asks (runs that tie).
    """
    from microseg.transforms.scale import median_diameter, median_solidity

    labels = np.asarray(labels)
    diameter = median_diameter(labels)
    if diameter is None:
        return None
    present = np.bincount(labels.ravel().astype(np.int64)) > 0
    present[0] = False
    for axis in range(labels.ndim):
        for end in (0, -1):
            present[np.take(labels, end, axis=axis).ravel()] = False
    return Measurement(diameter, functools.partial(median_solidity, labels), bool(present.any()))


def search_object_diameter(measure: Callable[[float], Measurement | float | None], start: float,
                           smallest: float, largest: float) -> ScaleEstimate:
    """Estimate the object diameter by predicting at factors ``start, start/√2, …``.

    Parameters
    ----------
    measure : ``factor ->`` the :class:`Measurement` of the objects found in the image
        resampled by ``factor`` (:func:`measure_objects`), or just their median diameter
        (pixels of the resampled image); None when nothing is found.
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
    if that finds objects (an empty image costs one prediction at twice the size). A factor
    whose objects all touch the border is a trial without an estimate (None) that does not stop
    the search going down; going up, where objects only grow, it does (and the search does not
    go up from a training scale whose objects all touch the border).
    """
    trials: list[tuple[float, float | None]] = []
    shapes: list[float | None] = []

    def trial(factor: float) -> str:
        """Predict at ``factor``: ``"nothing"`` found, objects all ``"cut"`` by the border, or
        some ``"whole"``."""
        found = measure(factor)
        if found is not None and not isinstance(found, Measurement):
            found = Measurement(float(found))
        whole = found is not None and found.whole
        trials.append((factor, found.diameter / factor if whole else None))
        shapes.append(found.solidity if whole else None)
        return "nothing" if found is None else "whole" if whole else "cut"

    at_start = trial(start)
    factor = start / SEARCH_STEP
    while at_start != "nothing" and factor >= smallest * (1 - 1e-9):
        if trial(factor) == "nothing":
            break
        factor /= SEARCH_STEP
    # upwards, where objects only grow: not past objects all cut by the border (nor from them);
    # nothing at the training scale: the first look is at twice the size
    factor = start * (2.0 if at_start == "nothing" else SEARCH_STEP)
    while (at_start != "cut" and factor <= largest * (1 + 1e-9)
           and find_plateau(trials).confidence != "high"):
        if trial(factor) != "whole":
            break
        factor *= SEARCH_STEP
    return find_plateau(trials, solidity=shapes)
