"""Tiled prediction with a halo: seamless stitching for networks whose receptive field is finite.

The same function serves evaluation (in memory) and deployment (a Zarr or memory-mapped image in,
a Zarr array out, read and written block by block).

Geometry
--------
Every network input (a *window*) is an inner block of ``tile_shape`` plus ``halo`` pixels of
context on every side; the network predicts the window and only the part that has enough context
is kept. No averaging. Along each axis the windows are spread evenly, the fewest that cover it,
and consecutive windows are cut where both have at least ``halo`` context (:func:`axis_windows`).
What lies beyond the image border is set by ``border``:

- ``"inside"`` (default): windows stay inside the image, as when the network sees the whole image
  at once. A window at the border keeps what it predicts up to the border, which needs no context
  there: the network sees the same edge in the window as in the whole image. This is also the
  cheapest: a 128³ volume with a 96³ window and a halo of 24 needs 8 windows, not 27.
- ``"extend"``: the image is extended by ``halo`` pixels on every side (``pad_mode``), as if it
  continued beyond its border, and windows cover that extended image.

Why the result equals the whole-image prediction exactly (:func:`predict_whole` with the same
``halo``, ``pad_mode`` and ``border``): a U-Net with total stride D (``size_divisor``, 2^depth)
is translation-equivariant only for shifts by multiples of D. Tile sides and halos are therefore
multiples of D (``tile_shape`` is rounded down, ``halo`` up, with a log message), every window
starts on the stride grid of the whole image (``k·D``, whose padded input starts at 0, or at
``−halo`` with ``border="extend"``) and every window side is a multiple of D (the image side is
padded at its far end to a multiple of D by ``pad_mode``, in the whole image and in the windows
alike). Every output pixel depends only on inputs within the receptive-field radius (see
:mod:`microseg.inference.receptive_field`), so with ``halo`` at least that radius a kept pixel
sees the same input values in its window as in the whole image, and the network's own zero
padding at a window border reaches a kept pixel only where that border is the whole image's
border too. Networks with tile-wise statistics (InstanceNorm) or tile-wise input normalization
break this: every output depends on the whole tile.

Blending
--------
``blending="gaussian"`` or ``"linear"`` is for networks that cannot stitch exactly: inner blocks
then overlap by half (step ``tile_shape / 2`` rounded to D), each is still cropped from its halo
(windows reach beyond the image border as with ``border="extend"``), and overlapping predictions are averaged with weights that fall off from the block centre (a
Gaussian with σ = side/8, or a tent). Weights are separable and normalized per axis, so at every
pixel the weights of the blocks covering it sum to exactly 1.

Example
-------
>>> import numpy as np, torch
>>> model = torch.nn.Conv2d(1, 2, 3, padding=1)
>>> image = np.random.rand(1, 67, 93).astype(np.float32)
>>> probabilities = predict_tiled(model, image, tile_shape=32, halo=4, size_divisor=1)
>>> probabilities.shape, probabilities.dtype
((2, 67, 93), dtype('float32'))

Why one module of about 800 lines: the window layout, the reading of windows and the batched
prediction share private geometry (the plan, its windows and crops, the out-of-memory back-off);
splitting them would make that geometry public for no reader's benefit.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from microseg.devices import resolve_device
from microseg.errors import ConfigError, DataError
from microseg.logs import said_once

__all__ = [
    "BORDERS",
    "PAD_MODES",
    "Window",
    "axis_windows",
    "blending_weights",
    "central_box",
    "check_border",
    "per_axis",
    "predict_tiled",
    "predict_whole",
    "predict_windows",
    "read_window",
    "tile_grid",
    "window_layout",
]

log = logging.getLogger(__name__)

PAD_MODES = ("reflect", "symmetric", "replicate", "constant", "wrap")
"""How a window is filled where it leaves the image (NumPy's names; "replicate" is "edge")."""

BORDERS = ("inside", "extend")
"""Where windows may lie: inside the image, or reaching ``halo`` beyond its border."""

BLENDINGS = ("gaussian", "linear")
ACTIVATIONS = ("softmax", "sigmoid", None)
AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def tile_grid(
    spatial_shape: Sequence[int],
    tile_shape: int | Sequence[int],
    step: int | Sequence[int] | None = None,
) -> list[tuple[slice, ...]]:
    """Inner blocks covering an image: one tuple of slices (one per spatial axis) per block.

    Blocks start at 0, ``step``, 2·``step``, ... (default ``step = tile_shape``: no overlap) until
    they reach the end of each axis; the last block of an axis is cut at the image border, so the
    slices index the image directly. Blocks are listed in C order (last axis fastest).

    Example
    -------
    >>> [(rows.start, rows.stop, columns.start, columns.stop) for rows, columns in tile_grid((5, 7), 4)]
    [(0, 4, 0, 4), (0, 4, 4, 7), (4, 5, 0, 4), (4, 5, 4, 7)]
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    tile = per_axis(tile_shape, len(spatial_shape), "tile_shape")
    steps = tile if step is None else per_axis(step, len(spatial_shape), "step")
    return [
        tuple(slice(s, min(s + t, n)) for s, t, n in zip(starts, tile, spatial_shape, strict=True))
        for starts in _block_starts(spatial_shape, tile, steps)
    ]


def _block_starts(
    spatial_shape: tuple[int, ...], tile: tuple[int, ...], steps: tuple[int, ...]
) -> list[tuple[int, ...]]:
    """Start of every block of the grid, C order; the last start of an axis covers its end."""
    ranges = [
        range(0, max(n - t, 0) + s, s) for n, t, s in zip(spatial_shape, tile, steps, strict=True)
    ]
    return list(itertools.product(*ranges))


def check_border(border: str) -> None:
    """Raise :class:`ConfigError` unless ``border`` is one of :data:`BORDERS`."""
    if border not in BORDERS:
        raise ConfigError(f"border {border!r} is not known; choose one of {', '.join(BORDERS)}")


def axis_windows(
    keep_start: int,
    keep_stop: int,
    size: int,
    window: int,
    halo: int,
    divisor: int = 1,
    border: str = "inside",
) -> list[tuple[int, int, int, int]]:
    """Windows along one axis that together predict pixels ``keep_start`` to ``keep_stop``.

    Windows lie within the image, padded at its far end to a multiple of ``divisor``
    (``border="inside"``), or within that extended by ``halo`` on both sides (``"extend"``), and
    reach at most ``halo`` beyond the kept range. They are the fewest that cover it with ``halo``
    of context on every side of what they keep (none where a window side is the border of that
    range), spread evenly with starts on multiples of ``divisor``, and as short as that number of
    windows allows (at most ``window``: the network's work per axis is the number of windows
    times their length). ``window``, ``halo`` and ``keep_start`` must be multiples of
    ``divisor``, and ``window > 2·halo``.

    Returns
    -------
    list of ``(window_start, window_length, kept_start, kept_stop)``: kept ranges follow each
    other without gap or overlap. All windows have the same length; a single window is as long
    as the range allows (shorter or longer than ``window``).

    Example
    -------
    >>> axis_windows(0, 256, 256, window=128, halo=24, divisor=8)
    [(0, 120, 0, 92), (64, 120, 92, 160), (136, 120, 160, 256)]
    >>> axis_windows(0, 128, 128, window=96, halo=24, divisor=8, border="extend")
    [(-24, 96, 0, 44), (16, 96, 44, 84), (56, 96, 84, 128)]
    """
    check_border(border)
    padded = math.ceil(size / divisor) * divisor
    edge_low, edge_high = (0, padded) if border == "inside" else (-halo, padded + halo)
    low = max(edge_low, (keep_start - halo) // divisor * divisor)
    high = min(edge_high, math.ceil((keep_stop + halo) / divisor) * divisor)
    if high - low <= window:
        return [(low, high - low, keep_start, keep_stop)]
    steps = math.ceil((high - low - window) / (window - 2 * halo))
    # the shortest window that still covers the range with this many: less compute, same count
    window = divisor * math.ceil((high - low + 2 * halo * steps) / ((steps + 1) * divisor))
    free = (high - window - low) // divisor
    starts = [low + divisor * (i * free // steps) for i in range(steps + 1)]
    # between two windows a and b, any cut in [b + halo, a + window - halo] is exact; take the middle
    cuts = [
        (b + halo) + ((a + window - halo) - (b + halo)) // 2
        for a, b in zip(starts[:-1], starts[1:], strict=True)
    ]
    kept = zip([keep_start, *cuts], [*cuts, keep_stop], strict=True)
    return [(w, window, a, b) for w, (a, b) in zip(starts, kept, strict=True)]


@dataclass(frozen=True)
class Window:
    """One network input: where it lies in the image (may leave it) and which part of it is kept.

    ``lower``/``upper``: spatial corners of the window (``upper`` exclusive); ``kept``: slices of
    the image whose prediction comes from this window.
    """

    lower: tuple[int, ...]
    upper: tuple[int, ...]
    kept: tuple[slice, ...]

    @property
    def crop(self) -> tuple[slice, ...]:
        """The kept part in the window's own coordinates."""
        return tuple(
            slice(k.start - lo, k.stop - lo) for k, lo in zip(self.kept, self.lower, strict=True)
        )


def window_layout(
    spatial_shape: Sequence[int],
    tile_shape: int | Sequence[int],
    halo: int | Sequence[int],
    divisor: int = 1,
    border: str = "inside",
    region: Sequence[slice] | None = None,
) -> list[Window]:
    """The windows that predict ``region`` (default: the whole image) tile by tile, C order.

    Each window is ``tile_shape + 2·halo`` per axis (see :func:`axis_windows`); ``tile_shape``
    and ``halo`` must already be multiples of ``divisor``, and ``region`` must start on multiples
    of it.

    Example
    -------
    >>> [w.kept for w in window_layout((5, 7), 8, 0)]
    [(slice(0, 5, None), slice(0, 7, None))]
    """
    spatial_shape = tuple(int(n) for n in spatial_shape)
    ndim = len(spatial_shape)
    tile = per_axis(tile_shape, ndim, "tile_shape")
    halos = per_axis(halo, ndim, "halo")
    region = tuple(region) if region is not None else tuple(slice(0, n) for n in spatial_shape)
    axes = [
        axis_windows(r.start, r.stop, n, t + 2 * h, h, divisor, border)
        for r, n, t, h in zip(region, spatial_shape, tile, halos, strict=True)
    ]
    return [
        Window(
            tuple(w[0] for w in combination),
            tuple(w[0] + w[1] for w in combination),
            tuple(slice(w[2], w[3]) for w in combination),
        )
        for combination in itertools.product(*axes)
    ]


def read_window(
    image: Any, start: Sequence[int], stop: Sequence[int], pad_mode: str = "reflect"
) -> np.ndarray:
    """Pixels ``start`` to ``stop`` (spatial, may lie outside the image) of ``image`` (C, *spatial).

    Only the part of the window inside the image is read (one slicing call, so Zarr arrays and
    memory maps are read block by block); the rest is filled as if the image were extended
    infinitely by ``pad_mode``: ``"reflect"`` (mirror without repeating the edge pixel; an axis of
    one pixel is replicated), ``"symmetric"`` (mirror repeating it), ``"replicate"`` (edge value),
    ``"constant"`` (zeros) or ``"wrap"`` (periodic). Any window size works, also on tiny images.

    Returns
    -------
    numpy array (C, *(stop - start)) of the image's dtype.

    Example
    -------
    >>> read_window(np.arange(4)[None], [-2], [6])
    array([[2, 1, 0, 1, 2, 3, 2, 1]])
    """
    if pad_mode not in PAD_MODES:
        raise ConfigError(
            f"pad_mode {pad_mode!r} is not known; choose one of {', '.join(PAD_MODES)}"
        )
    spatial = image.shape[1:]
    if all(0 <= a and b <= n for a, b, n in zip(start, stop, spatial, strict=True)):
        return np.array(image[(slice(None), *(slice(a, b) for a, b in zip(start, stop, strict=True)))])
    sources = [
        _source_indices(a, b, n, pad_mode) for a, b, n in zip(start, stop, spatial, strict=True)
    ]
    box = tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx, _ in sources)
    window = np.asarray(image[(slice(None), *box)])
    for axis, ((idx, filled), part) in enumerate(zip(sources, box, strict=True), start=1):
        window = np.take(window, idx - part.start, axis=axis)
        if not filled.all():
            window[(slice(None),) * axis + (~filled,)] = 0
    return window


def _source_indices(
    start: int, stop: int, size: int, pad_mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """Image index that fills each window position along one axis, and whether it keeps its value.

    Positions whose flag is False (``"constant"`` outside the image) are set to zero afterwards.
    """
    positions = np.arange(start, stop)
    filled = np.ones(positions.shape, dtype=bool)
    if pad_mode == "reflect" and size > 1:
        folded = positions % (2 * size - 2)
        return np.where(folded >= size, 2 * size - 2 - folded, folded), filled
    if pad_mode == "symmetric":
        folded = positions % (2 * size)
        return np.where(folded >= size, 2 * size - 1 - folded, folded), filled
    if pad_mode == "wrap":
        return positions % size, filled
    if pad_mode == "constant":
        filled = (positions >= 0) & (positions < size)
    return np.clip(positions, 0, size - 1), filled


def blending_weights(inner_length: int, kind: str) -> np.ndarray:
    """Weight of each position of an inner block along one axis, highest in the centre, all > 0.

    ``"gaussian"``: ``exp(−(i − c)² / (2σ²))`` with ``σ = inner_length / 8`` (nnU-Net's choice);
    ``"linear"``: a tent, ``min(i + 1, inner_length − i)``. float64 (inner_length,).
    """
    positions = np.arange(inner_length, dtype=np.float64)
    if kind == "gaussian":
        sigma = max(inner_length / 8.0, 1e-3)
        return np.exp(-0.5 * ((positions - (inner_length - 1) / 2.0) / sigma) ** 2)
    if kind == "linear":
        return np.minimum(positions + 1.0, inner_length - positions)
    raise ConfigError(
        f"blending {kind!r} is not known; choose one of {', '.join(BLENDINGS)} or None"
    )


@dataclass(frozen=True)
class _Plan:
    """Where the windows lie and how large the network inputs are."""

    spatial_shape: tuple[int, ...]
    tile: tuple[int, ...]
    halo: tuple[int, ...]
    step: tuple[int, ...]
    blending: str | None
    border: str = "inside"
    divisor: int = 1

    @property
    def starts(self) -> list[tuple[int, ...]]:
        """Inner block starts of the blending grid (``step`` apart)."""
        return _block_starts(self.spatial_shape, self.tile, self.step)

    def windows(self) -> list[Window]:
        """Every network input and the part of the image it predicts."""
        if self.blending is None:
            return window_layout(
                self.spatial_shape, self.tile, self.halo, self.divisor, self.border
            )
        result = []
        for start in self.starts:
            kept = tuple(
                slice(s, min(s + t, n))
                for s, t, n in zip(start, self.tile, self.spatial_shape, strict=True)
            )
            lower = tuple(s - h for s, h in zip(start, self.halo, strict=True))
            upper = tuple(
                s + t + h for s, t, h in zip(start, self.tile, self.halo, strict=True)
            )
            result.append(Window(lower, upper, kept))
        return result

    def axis_weights(self) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Per axis: the 1D block window and the sum of all blocks' windows at every pixel."""
        if self.blending is None:
            return None
        result = []
        for n, t, s in zip(self.spatial_shape, self.tile, self.step, strict=True):
            window = blending_weights(t, self.blending)
            total = np.zeros(max(n, 0) + t + s, dtype=np.float64)
            for start in range(0, max(n - t, 0) + s, s):
                total[start : start + t] += window
            result.append((window, total[:n]))
        return result


def central_box(spatial: Sequence[int], side: int) -> tuple[slice, ...]:
    """The centred box of at most ``side`` pixels per axis in an array of shape ``spatial``.

    >>> central_box((100, 30), 40)
    (slice(30, 70, None), slice(0, 30, None))
    """
    return tuple(slice(max(0, (n - side) // 2), max(0, (n - side) // 2) + min(n, side))
                 for n in spatial)


def per_axis(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    """``value`` as one non-negative int per spatial axis (one int is repeated ``ndim`` times).

    Raises :class:`ConfigError` naming ``name`` for a wrong count or a negative value.

    Example
    -------
    >>> per_axis(16, 3, "halo"), per_axis([8, 16], 2, "tile_shape")
    ((16, 16, 16), (8, 16))
    """
    values = (int(value),) * ndim if np.isscalar(value) else tuple(int(v) for v in value)
    if len(values) != ndim or min(values) < 0:
        raise ConfigError(
            f"{name} must be one non-negative int or {ndim} of them (one per spatial axis), found {value!r}"
        )
    return values


def _make_plan(
    spatial_shape: tuple[int, ...],
    tile_shape: int | Sequence[int],
    halo: int | Sequence[int],
    divisor: int,
    blending: str | None,
    border: str = "inside",
) -> _Plan:
    """Align tile and halo to the divisor, and shrink tiles larger than the (padded) image."""
    check_border(border)
    ndim = len(spatial_shape)
    wanted_tile = per_axis(tile_shape, ndim, "tile_shape")
    wanted_halo = per_axis(halo, ndim, "halo")
    tile = tuple(max(divisor, t // divisor * divisor) for t in wanted_tile)
    halo_aligned = tuple(math.ceil(h / divisor) * divisor for h in wanted_halo)
    if tile != wanted_tile or halo_aligned != wanted_halo:
        said_once(log, f"tile_shape {wanted_tile} and halo {wanted_halo} rounded to {tile} and "
                       f"{halo_aligned}, multiples of the model's size divisor {divisor} (needed "
                       f"for seamless stitching)")
    padded = tuple(math.ceil(n / divisor) * divisor for n in spatial_shape)
    tile = tuple(min(t, p) for t, p in zip(tile, padded, strict=True))
    step = tile
    if blending is not None:
        if blending not in BLENDINGS:
            raise ConfigError(
                f"blending {blending!r} is not known; choose one of {', '.join(BLENDINGS)} or None"
            )
        step = tuple(max(divisor, t // 2 // divisor * divisor) for t in tile)
    return _Plan(spatial_shape, tile, halo_aligned, step, blending, border, divisor)


def _model_dtype(model: Any) -> Any:
    import torch

    parameter = next(iter(model.parameters()), None)
    return torch.float32 if parameter is None else parameter.dtype


@contextlib.contextmanager
def _evaluation(model: Any) -> Iterator[None]:
    """Eval mode for the duration; afterwards every submodule gets its own previous mode back."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@dataclass(frozen=True)
class _Runner:
    """Runs the network on a batch of windows and keeps the inner blocks."""

    model: Any
    device: Any
    dtype: Any
    amp: str | None
    activation: str | None
    tile_transform: Callable[[np.ndarray], np.ndarray] | None
    tta: bool = False

    def __call__(
        self, windows: list[np.ndarray], crops: Sequence[tuple[slice, ...]] | None = None
    ) -> list[np.ndarray]:
        """Predictions of the windows (one forward pass per symmetry), each cut to its crop if
        given; with ``tta`` the mean over :func:`microseg.inference.tta.symmetries`."""
        import torch

        if self.tile_transform is not None:
            windows = [self.tile_transform(w) for w in windows]
        values = np.stack(windows).astype(
            np.float64 if self.dtype == torch.float64 else np.float32, copy=False
        )
        outputs = self._forward(values) if not self.tta else self._forward_tta(values)
        if crops is None:
            return list(outputs)
        return [outputs[(i, slice(None), *crop)] for i, crop in enumerate(crops)]

    def _forward(self, values: np.ndarray) -> np.ndarray:
        """Activated network outputs (N, K, *S) of a batch (N, C, *S), as NumPy."""
        import torch

        batch = torch.from_numpy(np.ascontiguousarray(values)).to(self.device, self.dtype)
        with torch.inference_mode(), self._autocast():
            logits = self.model(batch)
        return _activate(logits.to(self.dtype), self.activation).cpu().numpy()

    def _forward_tta(self, values: np.ndarray) -> np.ndarray:
        from microseg.inference.tta import symmetries

        transforms = symmetries(values.ndim - 2)
        total = sum(s.undo(self._forward(s.apply(values, leading=2)), leading=2)
                    for s in transforms)
        return (total / len(transforms)).astype(values.dtype)

    def _autocast(self) -> Any:
        import torch

        if self.amp is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=getattr(torch, AMP_DTYPES[self.amp]))


def _activate(logits: Any, activation: str | None) -> Any:
    if activation == "softmax":
        return logits.softmax(dim=1)
    if activation == "sigmoid":
        return logits.sigmoid()
    return logits


def _make_runner(
    model: Any,
    device: Any,
    amp: str | None,
    activation: str | None,
    tile_transform: Callable[[np.ndarray], np.ndarray] | None,
    tta: bool = False,
) -> _Runner:
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"activation {activation!r} is not known; choose 'softmax', 'sigmoid' or None"
        )
    if amp is not None and amp not in AMP_DTYPES:
        raise ConfigError(f"amp {amp!r} is not known; choose 'bf16', 'fp16' or None")
    device = resolve_device(device)
    if amp is not None and device.type != "cuda":
        said_once(log, f"mixed precision (amp={amp!r}) applies on CUDA only; predicting in "
                       f"full precision on {device}")
    model.to(device)
    return _Runner(model, device, _model_dtype(model), amp, activation, tile_transform, tta)


def _check_image(image: Any) -> tuple[int, ...]:
    shape = tuple(int(s) for s in image.shape)
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise DataError(
            "cannot predict this image",
            [
                f"image of shape {shape} must be channel-first (C, Y, X) or (C, Z, Y, X) with a channel axis even for "
                "one channel; add it with image[None]"
            ],
        )
    return shape[1:]


def _size_divisor(model: Any, size_divisor: int | None) -> int:
    divisor = int(size_divisor if size_divisor is not None else getattr(model, "size_divisor", 1))
    if divisor < 1:
        raise ConfigError(f"size_divisor must be >= 1, found {divisor}")
    return divisor


class _TileTooLarge(Exception):
    """Even one tile per forward pass does not fit in GPU memory."""


def predict_tiled(
    model: Any,
    image: Any,
    tile_shape: int | Sequence[int],
    halo: int | Sequence[int],
    batch_size: int = 4,
    device: Any = None,
    pad_mode: str = "reflect",
    blending: str | None = None,
    amp: str | None = None,
    activation: str | None = "softmax",
    progress: bool = False,
    out: Any = None,
    size_divisor: int | None = None,
    tile_transform: Callable[[np.ndarray], np.ndarray] | None = None,
    border: str = "inside",
    tta: bool = False,
) -> Any:
    """Predict ``image`` tile by tile and stitch the inner blocks (see the module docstring).

    Parameters
    ----------
    model : torch module mapping (N, C, *spatial) to logits (N, K, *spatial); used in eval mode
        (its previous mode is restored) and moved to ``device`` in place.
    image : (C, Y, X) or (C, Z, Y, X), any numeric dtype; a NumPy array or any array-like that
        supports slicing (Zarr, memory map), read one window at a time.
    tile_shape : inner block per spatial axis (int or one per axis): each network input is
        ``tile_shape + 2·halo``; rounded down to a multiple of the size divisor, at most the image
        side rounded up to it. Windows at the image border keep more than ``tile_shape``.
    halo : context read on every side of a block, per axis; rounded up to a multiple of the size
        divisor. Take at least the receptive-field radius
        (:func:`microseg.inference.receptive_field.recommended_halo`) for seamless stitching.
    batch_size : windows per forward pass.
    device : ``None``/``"auto"`` (CUDA if available, else CPU), or any torch device.
    pad_mode : how windows are filled beyond the image border (:data:`PAD_MODES`): up to the
        next multiple of the size divisor, and by ``halo`` with ``border="extend"``.
    blending : None (hard crop, no averaging) or ``"gaussian"``/``"linear"`` (overlapping blocks,
        weighted average; for networks that cannot stitch exactly; windows as ``"extend"``).
    amp : None, ``"bf16"`` or ``"fp16"``: autocast on CUDA (ignored on CPU).
    activation : ``"softmax"`` over channels, ``"sigmoid"``, or None for raw logits.
    progress : show a tqdm progress bar over batches.
    out : optional preallocated array-like (K, *spatial) (e.g. a Zarr array) written block by
        block and returned; with blending it is zero-filled first and accumulated into.
    size_divisor : every network input side must be a multiple of this; default the model's
        ``size_divisor`` attribute, else 1.
    tile_transform : optional function applied to every window (C, *window) before the network,
        e.g. tile-wise input normalization (which breaks exact stitching, as the tiling paper shows).
    border : ``"inside"`` (windows stay in the image; equals the network on the whole image) or
        ``"extend"`` (the image is extended by ``halo`` beyond its border with ``pad_mode``).
    tta : test-time augmentation: every window is predicted under the 8 flips and rotations of
        :func:`microseg.inference.tta.symmetries` and the outputs averaged; stitching stays
        exact (each symmetry of a window is a window of the same symmetry of the image).

    Returns
    -------
    (K, *spatial) probabilities (or logits), float32 — float64 for a float64 model — or ``out``.

    Raises
    ------
    DataError
        If ``image`` is not channel-first 2D or 3D.
    ConfigError
        For unknown ``pad_mode``, ``blending``, ``activation`` or ``amp``, or bad shapes.
    torch.OutOfMemoryError
        Only if a single tile of the smallest shape (``2·halo + divisor``) does not fit: on GPU
        out-of-memory the batch is halved, then the tile shape, with a logged message.
    """
    spatial = _check_image(image)
    divisor = _size_divisor(model, size_divisor)
    runner = _make_runner(model, device, amp, activation, tile_transform, tta)
    plan = _make_plan(spatial, tile_shape, halo, divisor, blending, border)
    with _evaluation(model):
        while True:
            try:
                return _predict_plan(runner, image, plan, batch_size, pad_mode, progress, out)
            except _TileTooLarge:
                plan = _halve_tiles(plan, divisor)


def _halve_tiles(plan: _Plan, divisor: int) -> _Plan:
    import torch

    smaller = tuple(max(divisor, t // 2 // divisor * divisor) for t in plan.tile)
    if smaller == plan.tile:
        raise torch.OutOfMemoryError(
            f"one tile of {tuple(t + 2 * h for t, h in zip(plan.tile, plan.halo, strict=True))} pixels does not fit "
            "in GPU memory even alone; use a smaller halo, amp='bf16', or predict on the CPU"
        )
    log.warning(
        "GPU out of memory with one tile of inner shape %s; retrying with %s", plan.tile, smaller
    )
    return _make_plan(plan.spatial_shape, smaller, plan.halo, divisor, plan.blending, plan.border)


def _predict_plan(
    runner: _Runner,
    image: Any,
    plan: _Plan,
    batch_size: int,
    pad_mode: str,
    progress: bool,
    out: Any,
) -> Any:
    """Predict every block of ``plan`` in batches, halving the batch on GPU out-of-memory."""
    import torch
    from tqdm.auto import tqdm

    windows = plan.windows()
    weights = plan.axis_weights()
    bar = tqdm(total=len(windows), desc="tiles", unit="tile", disable=not progress)
    position, batch_size = 0, max(1, int(batch_size))
    with bar:
        while position < len(windows):
            group = windows[position : position + batch_size]
            inputs = [read_window(image, w.lower, w.upper, pad_mode) for w in group]
            try:
                predictions = runner(inputs, [w.crop for w in group])
            except torch.OutOfMemoryError:
                batch_size = _smaller_batch(runner, batch_size)
                continue
            if out is None:
                out = _allocate(predictions[0], plan)
            elif position == 0 and weights is not None:
                _zero_fill(out)
            for window, prediction in zip(group, predictions, strict=True):
                _write_block(out, prediction, window.kept, weights)
            position += len(group)
            bar.update(len(group))
    return out


def _smaller_batch(runner: _Runner, batch_size: int) -> int:
    import torch

    if runner.device.type == "cuda":
        torch.cuda.empty_cache()
    if batch_size == 1:
        raise _TileTooLarge
    log.warning(
        "GPU out of memory with %d tiles per batch; retrying with %d", batch_size, batch_size // 2
    )
    return batch_size // 2


def _allocate(prediction: np.ndarray, plan: _Plan) -> np.ndarray:
    dtype = np.float64 if prediction.dtype == np.float64 else np.float32
    return np.zeros((prediction.shape[0], *plan.spatial_shape), dtype=dtype)


def _zero_fill(out: Any) -> None:
    for block in tile_grid(out.shape[1:], [max(1, min(n, 256)) for n in out.shape[1:]]):
        out[(slice(None), *block)] = 0


def _write_block(
    out: Any,
    block: np.ndarray,
    kept: tuple[slice, ...],
    weights: list[tuple[np.ndarray, np.ndarray]] | None,
) -> None:
    """Write one kept block (K, *kept) into ``out``; with blending, add it weighted."""
    target = (slice(None), *kept)
    if weights is None:
        out[target] = block
        return
    factor = np.ones((1,) * len(out.shape), dtype=np.float64)
    for axis, ((window, total), part) in enumerate(zip(weights, kept, strict=True), start=1):
        shape = [1] * len(out.shape)
        length = part.stop - part.start
        shape[axis] = length
        factor = factor * (window[:length] / total[part]).reshape(shape)
    out[target] = out[target] + (block * factor).astype(block.dtype)


def predict_whole(
    model: Any,
    image: Any,
    halo: int | Sequence[int] = 0,
    pad_mode: str = "reflect",
    device: Any = None,
    amp: str | None = None,
    activation: str | None = "softmax",
    size_divisor: int | None = None,
    tile_transform: Callable[[np.ndarray], np.ndarray] | None = None,
    border: str = "inside",
    tta: bool = False,
) -> np.ndarray:
    """Predict ``image`` (C, *spatial) in one forward pass; (K, *spatial) float32 (float64 model).

    The image is padded by ``pad_mode`` to a multiple of the size divisor at its far end, with
    ``border="extend"`` also by ``halo`` on every side (rounded up to the divisor; ``halo`` is
    not used otherwise), then cropped back. With the same ``halo``, ``pad_mode`` and ``border``,
    :func:`predict_tiled` reproduces this exactly for networks whose receptive field radius is at
    most ``halo``. No out-of-memory back-off: large images belong to
    :func:`predict_tiled`. Parameters and errors as there.

    Example
    -------
    >>> import numpy as np, torch
    >>> predict_whole(torch.nn.Conv3d(2, 3, 1), np.ones((2, 5, 6, 7), np.float32)).shape
    (3, 5, 6, 7)
    """
    spatial = _check_image(image)
    divisor = _size_divisor(model, size_divisor)
    runner = _make_runner(model, device, amp, activation, tile_transform, tta)
    padded = tuple(math.ceil(n / divisor) * divisor for n in spatial)
    plan = _make_plan(spatial, padded, halo, divisor, None, border)
    with _evaluation(model):
        return _predict_plan(runner, image, plan, 1, pad_mode, False, None)


def predict_windows(
    model: Any,
    windows: Sequence[np.ndarray],
    device: Any = None,
    amp: str | None = None,
    activation: str | None = "softmax",
    tile_transform: Callable[[np.ndarray], np.ndarray] | None = None,
    tta: bool = False,
) -> np.ndarray:
    """Predict a batch of same-shape windows (C, *spatial) independently, in one forward pass
    (one per symmetry with ``tta``, averaged; see :func:`predict_tiled`).

    No padding and no cropping: each window is one network input, so its sides must be multiples
    of the model's size divisor. The model runs in eval mode (its previous mode is restored).

    Returns
    -------
    (N, K, *spatial) probabilities (or logits), float32 (float64 for a float64 model).

    Example
    -------
    >>> import numpy as np, torch
    >>> predict_windows(torch.nn.Conv2d(1, 2, 1), [np.zeros((1, 4, 4), np.float32)] * 3).shape
    (3, 2, 4, 4)
    """
    runner = _make_runner(model, device, amp, activation, tile_transform, tta)
    with _evaluation(model):
        return np.stack(runner(list(windows)))
