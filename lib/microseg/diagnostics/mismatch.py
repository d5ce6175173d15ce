"""Tile mismatch: do two overlapping tiles, predicted independently, agree where they overlap?

Pairs of tiles of side T are taken on a grid over the image (grid step ``stride``, default T); the
second tile of a pair is the first shifted by ``offset`` (default T/2) along one axis. Each tile is
one network input, predicted on its own in eval mode. The hard predictions P1, P2 (argmax over
channels; threshold 0.5 for a single channel) are compared in the *valid overlap*: the overlap
shrunk by ``halo`` on every side, so that differences caused by the tile borders (zero padding)
are excluded and only differences caused by normalization remain. Per channel c::

    mismatch_c = 1 − 2·|P1c ∩ P2c| / (|P1c| + |P2c|)

averaged over pairs, leaving out pairs where the channel is empty in both. Hard Dice, not soft
Dice: the soft Dice of a prediction with itself is not 1. ``max_abs_diff`` of the probabilities is
0 up to the rounding of the softmax (below 1e-15 in float64) when stitching is exact (offsets are
multiples of the size divisor, so a network with global statistics sees the same stride grid in
both tiles).

Example
-------
>>> import numpy as np, torch
>>> model = torch.nn.Conv2d(1, 2, 3, padding=1)
>>> result = tile_mismatch(model, np.random.rand(1, 64, 64).astype(np.float32), tile_shape=32, halo=2)
>>> result["any"], result["max_abs_diff"] < 1e-6
(False, True)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from microseg.errors import ConfigError
from microseg.inference.tiling import per_axis

__all__ = ["channel_dice", "hard_masks", "pair_geometry", "tile_mismatch", "tile_pairs"]

INPUT_NORMS = ("global", "tile")


def hard_masks(probabilities: np.ndarray) -> np.ndarray:
    """One boolean mask per channel: (K, *spatial) probabilities → (K, *spatial) bool.

    K ≥ 2: one-hot of the argmax over channels (softmax outputs); K = 1: ``p > 0.5`` (sigmoid).
    Logits work as well for K ≥ 2 (argmax is the same).

    Example
    -------
    >>> hard_masks(np.array([[0.2, 0.7], [0.8, 0.3]])).astype(int)
    array([[0, 1],
           [1, 0]])
    """
    if probabilities.shape[0] == 1:
        return probabilities > 0.5
    winner = np.argmax(probabilities, axis=0)
    return winner[None] == np.arange(probabilities.shape[0]).reshape((-1,) + (1,) * winner.ndim)


def channel_dice(masks_a: np.ndarray, masks_b: np.ndarray) -> np.ndarray:
    """Hard Dice per channel of two (K, *spatial) bool masks; NaN where both are empty.

    Example
    -------
    >>> a = np.array([[True, True, False], [False, False, False]])
    >>> channel_dice(a, np.array([[True, False, False], [False, False, False]]))
    array([0.66666667,        nan])
    """
    axes = tuple(range(1, masks_a.ndim))
    overlap = np.logical_and(masks_a, masks_b).sum(axis=axes, dtype=np.float64)
    total = masks_a.sum(axis=axes, dtype=np.float64) + masks_b.sum(axis=axes, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * overlap / total, np.nan)


def tile_pairs(
    spatial_shape: Sequence[int],
    tile_shape: Sequence[int],
    offset: Sequence[int],
    stride: Sequence[int],
    axes: Sequence[int] | None = None,
) -> list[tuple[tuple[int, ...], int]]:
    """Pairs as (origin of the first tile, axis of the shift).

    Along the shift axis both tiles lie inside the image. An axis shorter than the tile (a thin
    volume) holds one tile position, centred on the image (the tile reaches beyond the image
    there and is never shifted along it). ``axes``: the axes along which tiles may be shifted
    (default all).

    Example
    -------
    >>> tile_pairs((64, 48), (32, 32), (16, 16), (32, 32))
    [((0, 0), 0), ((0, 0), 1), ((32, 0), 1)]
    >>> tile_pairs((20, 64), (32, 32), (16, 16), (32, 32))
    [((-6, 0), 1)]
    """
    ranges = [
        range(0, n - t + 1, s) if n >= t else [-((t - n) // 2)]
        for n, t, s in zip(spatial_shape, tile_shape, stride, strict=True)
    ]
    axes = range(len(spatial_shape)) if axes is None else axes
    return [
        (origin, axis)
        for origin in itertools.product(*ranges)
        for axis in axes
        if origin[axis] >= 0
        and origin[axis] + offset[axis] + tile_shape[axis] <= spatial_shape[axis]
    ]


def pair_geometry(
    spatial_shape: Sequence[int], side: int, halo: int, divisor: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(tile side, offset) per axis for tile pairs that fit an image of ``spatial_shape``.

    Per axis, the first that fits: tiles of ``side`` shifted by half a tile (the tiling paper's choice);
    the largest tiles shifted by a third of the image; the smallest offset that still leaves a
    valid overlap; otherwise (a thin axis) tiles covering the image plus two halos, not shifted
    along it. Sides and offsets are multiples of ``divisor``. Pass both to :func:`tile_mismatch`.

    Example
    -------
    >>> pair_geometry((48, 256, 512), 176, 24, 4)
    ((96, 172, 176), (88, 84, 88))
    """
    geometry = [_axis_pair(int(n), side, halo, divisor) for n in spatial_shape]
    return tuple(t for t, _ in geometry), tuple(o for _, o in geometry)


def _axis_pair(size: int, side: int, halo: int, divisor: int) -> tuple[int, int]:
    def down(value: float) -> int:
        return int(value) // divisor * divisor

    candidates = [(side, _default_offset(side, divisor))]
    third = max(divisor, down(size / 3))
    candidates.append((down(size - third), third))
    smallest = down((size - 2 * halo - 1) / 2)
    if smallest >= divisor:
        candidates.append((down(size - smallest), smallest))
    for tile, offset in candidates:
        if tile + offset <= size and tile - offset - 2 * halo >= 1:
            return tile, offset
    return math.ceil((size + 2 * halo) / divisor) * divisor, _default_offset(side, divisor)


def tile_mismatch(
    model: Any,
    image: Any,
    tile_shape: int | Sequence[int],
    halo: int | Sequence[int],
    offset: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    input_norm: str = "global",
    tile_normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 4,
    device: Any = None,
    size_divisor: int | None = None,
    pad_mode: str = "reflect",
) -> dict[str, Any]:
    """Compare independent predictions of overlapping tiles (see the module docstring).

    Parameters
    ----------
    model : torch module, logits (N, K, *spatial); run in eval mode, mode restored afterwards.
    image : (C, *spatial) float array (already globally normalized), 2D or 3D, or an array-like.
    tile_shape : side T of each tile (network input) per axis; rounded down to the size divisor.
        Tiles are shifted only along axes where ``T > offset + 2·halo`` (a valid overlap).
    halo : border excluded from the comparison on every side (the receptive-field radius).
    offset : shift between the two tiles of a pair; default T/2, rounded down to the divisor.
    stride : grid step of the first tiles; default T.
    input_norm : ``"global"`` (tiles as they are) or ``"tile"`` (each tile normalized on its own
        by ``tile_normalizer``, as tile-wise input normalization would do in inference).
    tile_normalizer : function (C, *tile) → (C, *tile); required for ``input_norm="tile"``.
    batch_size : tiles per forward pass (at least the 1 + ndim tiles of one grid position).
    device, size_divisor : as in :func:`microseg.inference.tiling.predict_tiled`.
    pad_mode : fills tiles along axes shorter than the tile (see :func:`tile_pairs`); only
        pixels inside the image are compared.

    Returns
    -------
    dict with ``per_channel`` (mean mismatch per channel, None where no pair had the channel),
    ``mean`` (over channels), ``any_mismatch`` (per channel: some pair differs), ``any``,
    ``max_abs_diff`` (probabilities, valid overlaps), ``n_pairs``, ``tile_shape``, ``offset``,
    ``halo``, ``input_norm``, ``map``: int32 (*spatial) count of pairs whose hard predictions
    differ at each pixel, and ``coverage``: int32 (*spatial) count of pairs compared there.

    Raises
    ------
    ConfigError
        If the valid overlap is empty (tile too small for offset and halo), no pair fits in the
        image, or ``input_norm`` is unknown or lacks its normalizer.
    """
    from microseg.inference.tiling import predict_windows

    geometry = _Geometry.create(
        image.shape[1:], tile_shape, halo, offset, stride, _divisor(model, size_divisor)
    )
    transform = _tile_transform(input_norm, tile_normalizer)
    tally = _Tally(image.shape[1:])
    groups = _pairs_by_origin(geometry.pairs())
    per_forward = max(1, int(batch_size) // (1 + len(geometry.tile)))
    for chunk_start in range(0, len(groups), per_forward):
        chunk = groups[chunk_start : chunk_start + per_forward]
        origins = [
            o
            for origin, axes in chunk
            for o in [origin, *(geometry.shifted(origin, a) for a in axes)]
        ]
        windows = [_tile(image, o, geometry.tile, pad_mode) for o in origins]
        predictions = iter(predict_windows(model, windows, device=device, tile_transform=transform))
        for origin, axes in chunk:
            first = next(predictions)
            for axis in axes:
                tally.add(first, next(predictions), origin, axis, geometry)
    return {**tally.summary(), **geometry.to_dict(), "input_norm": input_norm}


def _divisor(model: Any, size_divisor: int | None) -> int:
    return int(size_divisor if size_divisor is not None else getattr(model, "size_divisor", 1))


def _tile_transform(
    input_norm: str, tile_normalizer: Callable[[np.ndarray], np.ndarray] | None
) -> Callable[[np.ndarray], np.ndarray] | None:
    if input_norm not in INPUT_NORMS:
        raise ConfigError(f"input_norm {input_norm!r} is not known; choose 'global' or 'tile'")
    if input_norm == "global":
        return None
    if tile_normalizer is None:
        raise ConfigError(
            "input_norm='tile' needs tile_normalizer, the function that normalizes one tile "
            "(C, *tile) on its own, e.g. the tile-wise normalization the model was trained with"
        )
    return tile_normalizer


def _pairs_by_origin(
    pairs: list[tuple[tuple[int, ...], int]],
) -> list[tuple[tuple[int, ...], list[int]]]:
    grouped: dict[tuple[int, ...], list[int]] = {}
    for origin, axis in pairs:
        grouped.setdefault(origin, []).append(axis)
    return list(grouped.items())


def _tile(image: Any, origin: tuple[int, ...], tile: tuple[int, ...], pad_mode: str) -> np.ndarray:
    from microseg.inference.tiling import read_window

    stop = [o + t for o, t in zip(origin, tile, strict=True)]
    return read_window(image, origin, stop, pad_mode).astype(np.float32, copy=False)


@dataclass(frozen=True)
class _Geometry:
    """Tile side, offset, halo and grid step per axis, checked against the image."""

    spatial: tuple[int, ...]
    tile: tuple[int, ...]
    halo: tuple[int, ...]
    offset: tuple[int, ...]
    stride: tuple[int, ...]

    @classmethod
    def create(
        cls,
        spatial: Sequence[int],
        tile_shape: int | Sequence[int],
        halo: int | Sequence[int],
        offset: int | Sequence[int] | None,
        stride: int | Sequence[int] | None,
        divisor: int,
    ) -> _Geometry:
        spatial = tuple(int(n) for n in spatial)
        ndim = len(spatial)
        tile = tuple(
            max(divisor, t // divisor * divisor) for t in per_axis(tile_shape, ndim, "tile_shape")
        )
        default_offset = tuple(_default_offset(t, divisor) for t in tile)
        offset = default_offset if offset is None else per_axis(offset, ndim, "offset")
        stride = tile if stride is None else per_axis(stride, ndim, "stride")
        geometry = cls(spatial, tile, per_axis(halo, ndim, "halo"), offset, stride)
        geometry.check(divisor, fixed_offset=offset is not default_offset)
        return geometry

    @property
    def shift_axes(self) -> list[int]:
        """Axes along which a shifted tile leaves a valid overlap (tile > offset + 2·halo)."""
        return [
            a
            for a, (t, o, h) in enumerate(zip(self.tile, self.offset, self.halo, strict=True))
            if t - o - 2 * h >= 1
        ]

    def check(self, divisor: int, fixed_offset: bool) -> None:
        problems = []
        if any(t - 2 * h < 1 for t, h in zip(self.tile, self.halo, strict=True)):
            problems.append(
                f"tile {self.tile} must be larger than twice the halo {self.halo} on every axis"
            )
        if not self.shift_axes:
            needed = tuple(
                _smallest_tile(o, h, divisor, fixed_offset)
                for o, h in zip(self.offset, self.halo, strict=True)
            )
            problems.append(
                f"tile {self.tile} with offset {self.offset} and halo {self.halo} leaves no valid overlap "
                f"(needs tile > offset + 2·halo); use tile_shape of at least {needed} or a smaller offset"
            )
        if any(o % divisor for o in self.offset):
            problems.append(
                f"offset {self.offset} must be a multiple of the size divisor {divisor}"
            )
        if min(self.stride) < 1:
            problems.append(f"stride must be >= 1, found {self.stride}")
        if not problems and not self.pairs():
            problems.append(
                f"image {self.spatial} holds no pair of tiles {self.tile} shifted by {self.offset}; "
                "use a smaller tile_shape"
            )
        if problems:
            raise ConfigError("cannot measure tile mismatch: " + "; ".join(problems))

    def pairs(self) -> list[tuple[tuple[int, ...], int]]:
        return tile_pairs(self.spatial, self.tile, self.offset, self.stride, self.shift_axes)

    def shifted(self, origin: tuple[int, ...], axis: int) -> tuple[int, ...]:
        return tuple(o + (self.offset[axis] if a == axis else 0) for a, o in enumerate(origin))

    def valid_overlap(
        self, axis: int, origin: tuple[int, ...]
    ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """The valid overlap inside the image, in the first and in the shifted tile's coordinates."""
        first, second = [], []
        for a, (t, h, o, n) in enumerate(
            zip(self.tile, self.halo, origin, self.spatial, strict=True)
        ):
            shift = self.offset[a] if a == axis else 0
            start, stop = max(shift + h, -o), min(t - h, n - o)
            first.append(slice(start, stop))
            second.append(slice(start - shift, stop - shift))
        return tuple(first), tuple(second)

    def to_dict(self) -> dict[str, Any]:
        return {"tile_shape": list(self.tile), "offset": list(self.offset), "halo": list(self.halo)}


def _default_offset(tile: int, divisor: int) -> int:
    return max(divisor, tile // 2 // divisor * divisor)


def _smallest_tile(offset: int, halo: int, divisor: int, fixed_offset: bool) -> int:
    """Smallest tile side (multiple of the divisor) that leaves a valid overlap."""
    if fixed_offset:
        return math.ceil((offset + 2 * halo + 1) / divisor) * divisor
    tile = divisor
    while tile - _default_offset(tile, divisor) - 2 * halo < 1:
        tile += divisor
    return tile


class _Tally:
    """Running sums of per-channel mismatch over pairs, and the disagreement map."""

    def __init__(self, spatial: Sequence[int]):
        self.map = np.zeros(tuple(int(n) for n in spatial), dtype=np.int32)
        self.coverage = np.zeros_like(self.map)
        self.sums: np.ndarray | None = None
        self.counts: np.ndarray | None = None
        self.any: np.ndarray | None = None
        self.max_abs_diff = 0.0
        self.n_pairs = 0

    def add(
        self,
        first: np.ndarray,
        second: np.ndarray,
        origin: tuple[int, ...],
        axis: int,
        geometry: _Geometry,
    ) -> None:
        region_first, region_second = geometry.valid_overlap(axis, origin)
        p1 = first[(slice(None), *region_first)]
        p2 = second[(slice(None), *region_second)]
        masks1, masks2 = hard_masks(p1), hard_masks(p2)
        mismatch = 1.0 - channel_dice(masks1, masks2)
        if self.sums is None:
            self.sums, self.counts = np.zeros(len(mismatch)), np.zeros(len(mismatch), dtype=int)
            self.any = np.zeros(len(mismatch), dtype=bool)
        seen = ~np.isnan(mismatch)
        self.sums[seen] += mismatch[seen]
        self.counts[seen] += 1
        self.any |= seen & (mismatch > 0)
        self.max_abs_diff = max(self.max_abs_diff, float(np.abs(p1 - p2).max()))
        image_box = tuple(
            slice(o + r.start, o + r.stop) for o, r in zip(origin, region_first, strict=True)
        )
        self.map[image_box] += np.any(masks1 != masks2, axis=0)
        self.coverage[image_box] += 1
        self.n_pairs += 1

    def summary(self) -> dict[str, Any]:
        per_channel = [
            float(s / c) if c else None for s, c in zip(self.sums, self.counts, strict=True)
        ]
        measured = [v for v in per_channel if v is not None]
        return {
            "per_channel": per_channel,
            "mean": float(np.mean(measured)) if measured else None,
            "any_mismatch": [bool(a) for a in self.any],
            "any": bool(self.any.any()),
            "max_abs_diff": self.max_abs_diff,
            "n_pairs": self.n_pairs,
            "map": self.map,
            "coverage": self.coverage,
        }
