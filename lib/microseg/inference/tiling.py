"""Tiled prediction with a halo: seamless stitching for networks whose receptive field is finite.

The same function serves evaluation (in memory) and deployment (a Zarr or memory-mapped image in,
a Zarr array out, read and written block by block).

Geometry
--------
The image (C, *spatial) is covered by a grid of *inner blocks* of ``tile_shape`` starting at 0,
``tile_shape``, 2·``tile_shape``, ... along every axis. Each block is read together with ``halo``
pixels of real neighbouring image on every side; only where that window leaves the image is it
padded (``pad_mode``), as if the image were extended infinitely by that rule. The network predicts
the window and only the inner block is kept. No averaging.

Why the result equals the whole-image prediction exactly (:func:`predict_whole` with the same
``halo`` and ``pad_mode``): a U-Net with total stride D (``size_divisor``, 2^depth) is
translation-equivariant only for shifts by multiples of D. Tile sides and halos are therefore
multiples of D (``tile_shape`` is rounded down, ``halo`` up, with a log message), so every window
starts at ``k·D − halo``, on the same stride grid as the whole image, whose padded input starts at
``−halo``. Each input side (``tile + 2·halo``, whole: image side rounded up to D, ``+ 2·halo``) is a
multiple of D. Every output pixel depends only on inputs within the receptive-field radius (see
:mod:`microseg.diagnostics.receptive_field`), so with ``halo`` at least that radius it sees the
same input values in the tile as in the whole image, and the network's own zero padding at a
window border never reaches a kept pixel. Networks with tile-wise statistics (InstanceNorm) or
tile-wise input normalization break this: every output depends on the whole tile.

Blending
--------
``blending="gaussian"`` or ``"linear"`` is for networks that cannot stitch exactly: inner blocks
then overlap by half (step ``tile_shape / 2`` rounded to D), each is still cropped from its halo,
and overlapping predictions are averaged with weights that fall off from the block centre (a
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

from microseg.errors import ConfigError, DataError

__all__ = [
    "PAD_MODES",
    "blending_weights",
    "predict_tiled",
    "predict_whole",
    "predict_windows",
    "read_window",
    "tile_grid",
]

logger = logging.getLogger(__name__)

PAD_MODES = ("reflect", "symmetric", "replicate", "constant", "wrap")
"""How a window is filled where it leaves the image (NumPy's names; "replicate" is "edge")."""

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
    tile = _per_axis(tile_shape, len(spatial_shape), "tile_shape")
    steps = tile if step is None else _per_axis(step, len(spatial_shape), "step")
    return [
        tuple(slice(s, min(s + t, n)) for s, t, n in zip(starts, tile, spatial_shape, strict=True))
        for starts in _block_starts(spatial_shape, tile, steps)
    ]


def _block_starts(
    spatial_shape: tuple[int, ...], tile: tuple[int, ...], steps: tuple[int, ...]
) -> list[tuple[int, ...]]:
    """Start of every block of the grid, C order; the last start of an axis covers its end."""
    per_axis = [
        range(0, max(n - t, 0) + s, s) for n, t, s in zip(spatial_shape, tile, steps, strict=True)
    ]
    return list(itertools.product(*per_axis))


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
    """Where the inner blocks lie and how large the network inputs are."""

    spatial_shape: tuple[int, ...]
    tile: tuple[int, ...]
    halo: tuple[int, ...]
    step: tuple[int, ...]
    blending: str | None

    @property
    def starts(self) -> list[tuple[int, ...]]:
        return _block_starts(self.spatial_shape, self.tile, self.step)

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


def _per_axis(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
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
) -> _Plan:
    """Align tile and halo to the divisor, and shrink tiles larger than the (padded) image."""
    ndim = len(spatial_shape)
    wanted_tile = _per_axis(tile_shape, ndim, "tile_shape")
    wanted_halo = _per_axis(halo, ndim, "halo")
    tile = tuple(max(divisor, t // divisor * divisor) for t in wanted_tile)
    halo_aligned = tuple(math.ceil(h / divisor) * divisor for h in wanted_halo)
    if tile != wanted_tile or halo_aligned != wanted_halo:
        logger.info(
            "tile_shape %s and halo %s rounded to %s and %s, multiples of the model's size divisor %d "
            "(needed for seamless stitching)",
            wanted_tile,
            wanted_halo,
            tile,
            halo_aligned,
            divisor,
        )
    padded = tuple(math.ceil(n / divisor) * divisor for n in spatial_shape)
    tile = tuple(min(t, p) for t, p in zip(tile, padded, strict=True))
    step = tile
    if blending is not None:
        if blending not in BLENDINGS:
            raise ConfigError(
                f"blending {blending!r} is not known; choose one of {', '.join(BLENDINGS)} or None"
            )
        step = tuple(max(divisor, t // 2 // divisor * divisor) for t in tile)
    return _Plan(spatial_shape, tile, halo_aligned, step, blending)


def _resolve_device(device: Any) -> Any:
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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

    def __call__(self, windows: list[np.ndarray], halo: tuple[int, ...]) -> np.ndarray:
        import torch

        if self.tile_transform is not None:
            windows = [self.tile_transform(w) for w in windows]
        values = np.stack(windows).astype(np.float64 if self.dtype == torch.float64 else np.float32)
        batch = torch.from_numpy(values).to(self.device, self.dtype)
        with torch.inference_mode(), self._autocast():
            logits = self.model(batch)
        inner = tuple(slice(h, n - h) for h, n in zip(halo, logits.shape[2:], strict=True))
        logits = logits[(slice(None), slice(None), *inner)].to(self.dtype)
        return _activate(logits, self.activation).cpu().numpy()

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
) -> _Runner:
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"activation {activation!r} is not known; choose 'softmax', 'sigmoid' or None"
        )
    if amp is not None and amp not in AMP_DTYPES:
        raise ConfigError(f"amp {amp!r} is not known; choose 'bf16', 'fp16' or None")
    device = _resolve_device(device)
    if amp is not None and device.type != "cuda":
        logger.info(
            "mixed precision (amp=%r) applies on CUDA only; predicting in full precision on %s",
            amp,
            device,
        )
    model.to(device)
    return _Runner(model, device, _model_dtype(model), amp, activation, tile_transform)


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
) -> Any:
    """Predict ``image`` tile by tile and stitch the inner blocks (see the module docstring).

    Parameters
    ----------
    model : torch module mapping (N, C, *spatial) to logits (N, K, *spatial); used in eval mode
        (its previous mode is restored) and moved to ``device`` in place.
    image : (C, Y, X) or (C, Z, Y, X), any numeric dtype; a NumPy array or any array-like that
        supports slicing (Zarr, memory map), read one window at a time.
    tile_shape : inner block per spatial axis (int or one per axis); rounded down to a multiple of
        the size divisor, at most the image side rounded up to it.
    halo : context read on every side of a block, per axis; rounded up to a multiple of the size
        divisor. Take at least the receptive-field radius
        (:func:`microseg.diagnostics.receptive_field.recommended_halo`) for seamless stitching.
    batch_size : windows per forward pass.
    device : ``None``/``"auto"`` (CUDA if available, else CPU), or any torch device.
    pad_mode : how windows are filled beyond the image border (:data:`PAD_MODES`).
    blending : None (hard crop, no averaging) or ``"gaussian"``/``"linear"`` (overlapping blocks,
        weighted average; for networks that cannot stitch exactly).
    amp : None, ``"bf16"`` or ``"fp16"``: autocast on CUDA (ignored on CPU).
    activation : ``"softmax"`` over channels, ``"sigmoid"``, or None for raw logits.
    progress : show a tqdm progress bar over batches.
    out : optional preallocated array-like (K, *spatial) (e.g. a Zarr array) written block by
        block and returned; with blending it is zero-filled first and accumulated into.
    size_divisor : every network input side must be a multiple of this; default the model's
        ``size_divisor`` attribute, else 1.
    tile_transform : optional function applied to every window (C, *window) before the network,
        e.g. tile-wise input normalization (which breaks exact stitching, as the paper shows).

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
    runner = _make_runner(model, device, amp, activation, tile_transform)
    plan = _make_plan(spatial, tile_shape, halo, divisor, blending)
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
    logger.warning(
        "GPU out of memory with one tile of inner shape %s; retrying with %s", plan.tile, smaller
    )
    return _make_plan(plan.spatial_shape, smaller, plan.halo, divisor, plan.blending)


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

    starts = plan.starts
    weights = plan.axis_weights()
    bar = tqdm(total=len(starts), desc="tiles", unit="tile", disable=not progress)
    position, batch_size = 0, max(1, int(batch_size))
    with bar:
        while position < len(starts):
            group = starts[position : position + batch_size]
            windows = [_window_of(image, s, plan, pad_mode) for s in group]
            try:
                predictions = runner(windows, plan.halo)
            except torch.OutOfMemoryError:
                batch_size = _smaller_batch(runner, batch_size)
                continue
            if out is None:
                out = _allocate(predictions, plan)
            elif position == 0 and weights is not None:
                _zero_fill(out)
            for start, prediction in zip(group, predictions, strict=True):
                _write_block(out, prediction, start, plan, weights)
            position += len(group)
            bar.update(len(group))
    return out


def _smaller_batch(runner: _Runner, batch_size: int) -> int:
    import torch

    if runner.device.type == "cuda":
        torch.cuda.empty_cache()
    if batch_size == 1:
        raise _TileTooLarge
    logger.warning(
        "GPU out of memory with %d tiles per batch; retrying with %d", batch_size, batch_size // 2
    )
    return batch_size // 2


def _window_of(image: Any, start: tuple[int, ...], plan: _Plan, pad_mode: str) -> np.ndarray:
    lower = [s - h for s, h in zip(start, plan.halo, strict=True)]
    upper = [s + t + h for s, t, h in zip(start, plan.tile, plan.halo, strict=True)]
    return read_window(image, lower, upper, pad_mode)


def _allocate(predictions: np.ndarray, plan: _Plan) -> np.ndarray:
    dtype = np.float64 if predictions.dtype == np.float64 else np.float32
    return np.zeros((predictions.shape[1], *plan.spatial_shape), dtype=dtype)


def _zero_fill(out: Any) -> None:
    for block in tile_grid(out.shape[1:], [max(1, min(n, 256)) for n in out.shape[1:]]):
        out[(slice(None), *block)] = 0


def _write_block(
    out: Any,
    prediction: np.ndarray,
    start: tuple[int, ...],
    plan: _Plan,
    weights: list[tuple[np.ndarray, np.ndarray]] | None,
) -> None:
    """Write one inner block (K, *tile) into ``out``, cut at the image border; blend if asked."""
    kept = tuple(
        min(t, n - s) for s, t, n in zip(start, plan.tile, plan.spatial_shape, strict=True)
    )
    target = (slice(None), *(slice(s, s + k) for s, k in zip(start, kept, strict=True)))
    block = prediction[(slice(None), *(slice(0, k) for k in kept))]
    if weights is None:
        out[target] = block
        return
    factor = np.ones((1,) * len(out.shape), dtype=np.float64)
    for axis, ((window, total), s, k) in enumerate(zip(weights, start, kept, strict=True), start=1):
        shape = [1] * len(out.shape)
        shape[axis] = k
        factor = factor * (window[:k] / total[s : s + k]).reshape(shape)
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
) -> np.ndarray:
    """Predict ``image`` (C, *spatial) in one forward pass; (K, *spatial) float32 (float64 model).

    The image is padded by ``pad_mode`` to a multiple of the size divisor at its far end, and by
    ``halo`` on every side (rounded up to the divisor), then cropped back. With the same ``halo``
    and ``pad_mode``, :func:`predict_tiled` reproduces this exactly for networks whose receptive
    field radius is at most ``halo``. No out-of-memory back-off: large images belong to
    :func:`predict_tiled`. Parameters and errors as there.

    Example
    -------
    >>> import numpy as np, torch
    >>> predict_whole(torch.nn.Conv3d(2, 3, 1), np.ones((2, 5, 6, 7), np.float32)).shape
    (3, 5, 6, 7)
    """
    spatial = _check_image(image)
    divisor = _size_divisor(model, size_divisor)
    runner = _make_runner(model, device, amp, activation, tile_transform)
    padded = tuple(math.ceil(n / divisor) * divisor for n in spatial)
    plan = _make_plan(spatial, padded, halo, divisor, None)
    with _evaluation(model):
        return _predict_plan(runner, image, plan, 1, pad_mode, False, None)


def predict_windows(
    model: Any,
    windows: Sequence[np.ndarray],
    device: Any = None,
    amp: str | None = None,
    activation: str | None = "softmax",
    tile_transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Predict a batch of same-shape windows (C, *spatial) independently, in one forward pass.

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
    runner = _make_runner(model, device, amp, activation, tile_transform)
    ndim = len(windows[0].shape) - 1
    with _evaluation(model):
        return runner(list(windows), (0,) * ndim)
