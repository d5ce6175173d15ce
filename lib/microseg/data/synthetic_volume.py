"""Large synthetic nuclei volumes (and large 2D images), written to Zarr one chunk at a time.

:mod:`microseg.data.synthetic` makes images that fit in memory: it places objects one after the
other in the whole image and filters the whole image. A volume of tens of gigabytes cannot be
made that way, so this module defines the same kind of image *pointwise*, such that any block can
be computed on its own from its coordinates and the seed, and the blocks of any chunking fit
together exactly (the test compares chunked writing with a single-block generation):

1. objects: one ellipsoid (ellipse in 2D) per cell of a regular grid, its centre jittered inside
   the cell, its size, elongation, orientation and brightness drawn with the
   :class:`~microseg.data.synthetic.SyntheticConfig` ranges from a random generator seeded by
   ``(seed, cell index)``. The cell side is chosen so the objects cover about ``density`` of the
   volume. Where objects overlap, each voxel goes to the object whose body it lies deepest in
   (smallest normalized distance from the centre), so neighbours press into each other like
   touching nuclei and labels never overlap. Every object overlapping a block is drawn, so nothing
   is cut at block borders. The label of an object is its cell's index + 1 (gaps where an object
   is covered entirely by its neighbours);
2. a chromatin-like texture: per-voxel Gaussian noise smoothed with σ = 1, scaled by ``texture``;
3. blur by a Gaussian point-spread function (``blur_sigma``);
4. an uneven background: a few plane waves across the whole volume, rescaled to [0, 1] with the
   minimum and maximum over a coarse grid of the volume;
5. camera: shot noise and read noise, gain, offset, rounded to uint16. Shot noise uses the
   Gaussian approximation of the Poisson distribution (variance = mean photo-electrons), exact
   enough at the tens to hundreds of photo-electrons these images hold.

Random numbers of the texture and the camera come from a counter-based hash of each voxel's
global coordinates and the seed, so they do not depend on how the volume is split into blocks.
Filters (texture, blur) are computed on the block plus a margin of their kernel radius and
cropped, so block values equal those of a whole-volume computation exactly.

Example
-------
>>> import tempfile, zarr
>>> with tempfile.TemporaryDirectory() as folder:
...     path = write_synthetic_volume(Path(folder) / "volume.zarr", shape=(16, 64, 64),
...                                   chunks=(16, 32, 32),
...                                   labels_path=Path(folder) / "volume_labels.zarr")
...     volume = zarr.open_array(str(path), mode="r")
...     volume.shape, volume.chunks, volume.dtype.name
((1, 16, 64, 64), (1, 16, 32, 32), 'uint16')
>>> image, labels = synthetic_volume_block((64, 64, 64), (slice(0, 16),) * 3, seed=0)
>>> image.shape, image.dtype.name, labels.dtype.name
((1, 16, 16, 16), 'uint16', 'int32')
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from microseg.data.synthetic import SyntheticConfig, resolve_config
from microseg.errors import ConfigError, OutputExistsError

__all__ = [
    "hashed_normal",
    "random_rotation",
    "synthetic_volume_block",
    "write_synthetic_volume",
]

log = logging.getLogger(__name__)

_UINT16_MAX = 65535
_JITTER = 0.5
"""Centre jitter as a fraction of the cell side (0: a perfect grid, 1: anywhere in the cell)."""
_TEXTURE_SIGMA = 1.0
_N_WAVES = 4
_BACKGROUND_GRID = 64
"""Points per axis of the coarse grid on which the background's minimum and maximum are taken."""
_COORDINATE_OFFSET = 2**20
_COORDINATE_SPAN = 2**21
"""Global coordinates (offset so margins beyond the volume stay positive) packed into 63 bits."""
_STREAM_GRAIN, _STREAM_CAMERA = 0, 2


@dataclass(frozen=True)
class _Layout:
    """The object grid of one volume: cell side, cells per axis, volume shape."""

    shape: tuple[int, ...]
    cell: float
    n_cells: tuple[int, ...]
    max_reach: float


def write_synthetic_volume(path: str | Path, shape: Sequence[int] = (256, 256, 256),
                           chunks: Sequence[int] = (64, 64, 64), seed: int = 0,
                           domain: str = "source", labels_path: str | Path | None = None,
                           config: SyntheticConfig | None = None) -> Path:
    """Write a synthetic nuclei volume (or 2D image) to a new Zarr array, chunk by chunk.

    Memory stays bounded by one chunk plus a margin of a few voxels, whatever the volume size:
    each chunk is computed with :func:`synthetic_volume_block` and written before the next.

    Parameters
    ----------
    path : the Zarr array to create (e.g. ``input.zarr``); must not exist.
    shape : spatial shape ``(Z, Y, X)`` (or ``(Y, X)`` for a large 2D image), each side >= 8.
    chunks : Zarr chunk shape per spatial axis; also the block computed at a time.
    seed : the same seed, shape and config always give the same values, for any ``chunks``.
    domain : ``"source"`` or ``"target"`` appearance
        (:func:`microseg.data.synthetic.domain_config`), used when ``config`` is None.
    labels_path : optional second Zarr array for the instance labels (int32, same chunks).
    config : a custom appearance (then leave ``domain`` at ``"source"``).

    Returns
    -------
    ``path``. The image is uint16 with axes ``"CZYX"`` (``"CYX"``) and one channel, stored in the
    array attribute ``axes`` (read by :func:`microseg.io.open_image`); the labels have axes
    ``"ZYX"`` (``"YX"``). Attribute ``synthetic`` records seed, shape and config.

    Raises
    ------
    OutputExistsError if ``path`` or ``labels_path`` exists; ConfigError for a bad shape, chunk
    shape, domain or config.
    """
    config = resolve_config(domain, config)
    shape, chunks = _checked_geometry(shape, chunks)
    targets = [Path(path)] + ([Path(labels_path)] if labels_path is not None else [])
    for target in targets:
        if target.exists():
            raise OutputExistsError(f"{target} already exists; choose another path or delete it")
    record = {"seed": int(seed), "shape": list(shape), "domain": domain, "config": config.to_dict()}
    image_array = _create_zarr(targets[0], (1, *shape), (1, *chunks), "uint16",
                               "C" + _spatial_axes(len(shape)), record)
    label_array = (_create_zarr(targets[1], shape, chunks, "int32", _spatial_axes(len(shape)),
                                record) if len(targets) > 1 else None)
    for box in _chunk_boxes(shape, chunks):
        image, labels = synthetic_volume_block(shape, box, config, seed)
        image_array[(slice(None), *box)] = image
        if label_array is not None:
            label_array[box] = labels
    log.info("wrote a synthetic %s volume to %s", "x".join(map(str, shape)), targets[0])
    return targets[0]


def _chunk_boxes(shape: Sequence[int], chunks: Sequence[int]) -> Iterator[tuple[slice, ...]]:
    """The blocks of a regular chunk grid, C order, the last block of each axis cut at the end.

    >>> [tuple((s.start, s.stop) for s in box) for box in _chunk_boxes((5,), (2,))]
    [((0, 2),), ((2, 4),), ((4, 5),)]
    """
    starts = [range(0, n, c) for n, c in zip(shape, chunks, strict=True)]
    for start in itertools.product(*starts):
        yield tuple(slice(s, min(s + c, n)) for s, c, n in zip(start, chunks, shape, strict=True))


def synthetic_volume_block(shape: Sequence[int], box: Sequence[slice],
                           config: SyntheticConfig | None = None, seed: int = 0
                           ) -> tuple[np.ndarray, np.ndarray]:
    """One block of the synthetic volume of ``shape``: what :func:`write_synthetic_volume` stores
    at ``box``, computed without the rest of the volume.

    Parameters
    ----------
    shape : spatial shape of the whole volume ``(Z, Y, X)`` or image ``(Y, X)``.
    box : one slice per spatial axis with explicit start and stop inside ``shape``.
    config : appearance; None: the ``"source"`` preset.
    seed : base seed.

    Returns
    -------
    image : uint16 (1, *block), axes ``"CZYX"``/``"CYX"``.
    labels : int32 (*block), 0 background, object ids > 0 (with gaps).
    """
    config = config or SyntheticConfig()
    shape = _checked_shape(shape)
    layout = _volume_layout(shape, config)
    start, stop = _box_bounds(box, shape)
    margin = _filter_radius(config.blur_sigma) + (
        _filter_radius(_TEXTURE_SIGMA) if config.texture > 0 else 0)
    lower, upper = start - margin, stop + margin
    labels, brightness = _draw_objects(layout, lower, upper, config, seed)
    expected = _expected_photons(labels, brightness, lower, upper, layout, config, seed)
    inner = tuple(slice(margin, margin + n) for n in stop - start)
    image = _camera(expected[inner], start, stop, config, seed)
    return image[None], labels[inner]


def _volume_layout(shape: Sequence[int], config: SyntheticConfig) -> _Layout:
    """The object grid: cell side from the mean object size and ``density``, cells per axis."""
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    low, high = config.radius_range
    if ndim == 2:
        mean_size = math.pi * (low * low + low * high + high * high) / 3.0
    else:
        mean_size = 4.0 / 3.0 * math.pi * (low + high) * (low * low + high * high) / 4.0
    cell = (mean_size / config.density) ** (1.0 / ndim)
    n_cells = tuple(max(1, math.ceil(s / cell)) for s in shape)
    max_reach = high * config.elongation_range[1] ** ((ndim - 1) / ndim)
    return _Layout(shape, cell, n_cells, max_reach)


def _draw_objects(layout: _Layout, lower: np.ndarray, upper: np.ndarray,
                  config: SyntheticConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (int32, ``upper - lower``) of the region ``[lower, upper)`` of global coordinates,
    and the brightness of every object id (float64 indexed by id, 0 for background and absent
    ids). Every object whose body reaches into the region is drawn; a voxel goes to the object
    whose body it lies deepest in.
    """
    size = tuple(int(n) for n in upper - lower)
    labels = np.zeros(size, np.int32)
    depth = np.full(size, np.inf)
    brightness = {0: 0.0}
    for cell in _cells_near(layout, lower, upper):
        centre, semi_axes, rotation, value = _cell_object(layout, cell, config, seed)
        object_id = int(np.ravel_multi_index(cell, layout.n_cells)) + 1
        if _draw_one(labels, depth, lower, centre, semi_axes, rotation, object_id):
            brightness[object_id] = value
    lookup = np.zeros(max(brightness) + 1)
    lookup[list(brightness)] = list(brightness.values())
    return labels, lookup


def _cells_near(layout: _Layout, lower: np.ndarray, upper: np.ndarray) -> Iterator[tuple[int, ...]]:
    """Cells whose object may reach into ``[lower, upper)``."""
    ranges = []
    for low, high, n in zip(lower, upper, layout.n_cells, strict=True):
        first = max(0, math.floor((low - layout.max_reach) / layout.cell))
        last = min(n - 1, math.floor((high + layout.max_reach) / layout.cell))
        ranges.append(range(first, last + 1))
    return itertools.product(*ranges)


def _cell_object(layout: _Layout, cell: tuple[int, ...], config: SyntheticConfig, seed: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Centre, semi-axes, rotation and brightness of the object of one cell."""
    ndim = len(cell)
    rng = np.random.default_rng([int(seed), 0, *cell])
    radius = rng.uniform(*config.radius_range)
    elongation = rng.uniform(*config.elongation_range)
    semi_axes = radius * elongation ** (np.array([ndim - 1.0] + [-1.0] * (ndim - 1)) / ndim)
    rotation = random_rotation(ndim, rng)
    jitter = rng.uniform(-_JITTER / 2, _JITTER / 2, ndim)
    centre = (np.asarray(cell) + 0.5 + jitter) * layout.cell
    return centre, semi_axes, rotation, float(rng.uniform(*config.brightness_range))


def random_rotation(ndim: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (ndim × ndim, float64) for ndim 2 or 3.

    2D: a uniform angle; 3D: a uniform unit quaternion (normalized 4D Gaussian).
    """
    if ndim == 2:
        angle = rng.uniform(0.0, 2.0 * np.pi)
        cos, sin = math.cos(angle), math.sin(angle)
        return np.array([[cos, -sin], [sin, cos]])
    w, x, y, z = rng.standard_normal(4)
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _draw_one(labels: np.ndarray, depth: np.ndarray, lower: np.ndarray, centre: np.ndarray,
              semi_axes: np.ndarray, rotation: np.ndarray, object_id: int) -> bool:
    """Draw one ellipsoid into the region where it lies deeper than what is there already."""
    reach = semi_axes.max()
    first = np.maximum(np.floor(centre - reach).astype(int) - lower, 0)
    last = np.minimum(np.ceil(centre + reach).astype(int) + 1 - lower, labels.shape)
    if np.any(last <= first):
        return False
    box = tuple(slice(a, b) for a, b in zip(first, last, strict=True))
    axes = [np.arange(a, b) + low - c
            for a, b, low, c in zip(first, last, lower, centre, strict=True)]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"))
    body = np.tensordot(rotation.T, offsets, axes=1) / semi_axes.reshape((-1,) + (1,) * len(axes))
    distance = (body * body).sum(axis=0)
    inside = (distance <= 1.0) & (distance < depth[box])
    if not inside.any():
        return False
    labels[box][inside] = object_id
    depth[box][inside] = distance[inside]
    return True


def _expected_photons(labels: np.ndarray, brightness: np.ndarray, lower: np.ndarray,
                      upper: np.ndarray, layout: _Layout, config: SyntheticConfig, seed: int
                      ) -> np.ndarray:
    """Expected photo-electrons on the region: textured objects, blurred, uneven background."""
    from scipy import ndimage

    signal = brightness[labels]
    if config.texture > 0:
        noise = hashed_normal(lower, upper, seed, _STREAM_GRAIN)
        grain = ndimage.gaussian_filter(noise, _TEXTURE_SIGMA) / _smoothed_noise_std(labels.ndim)
        signal *= np.clip(1.0 + config.texture * grain, 0.0, None)
    if config.blur_sigma > 0:
        signal = ndimage.gaussian_filter(signal, config.blur_sigma)
    field = _background_field(layout.shape, lower, upper, seed)
    background = config.background_level + config.background_strength * field
    return config.photons_per_brightness * (signal + background)


def _filter_radius(sigma: float) -> int:
    """Kernel radius of ``scipy.ndimage.gaussian_filter`` (truncate 4): the margin it needs."""
    return int(4.0 * sigma + 0.5) if sigma > 0 else 0


def _smoothed_noise_std(ndim: int) -> float:
    """Standard deviation of unit white noise after the texture filter (σ = 1, truncate 4)."""
    radius = _filter_radius(_TEXTURE_SIGMA)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / _TEXTURE_SIGMA) ** 2)
    kernel /= kernel.sum()
    return float(np.sum(kernel**2) ** (ndim / 2))


def _background_field(shape: tuple[int, ...], lower: np.ndarray, upper: np.ndarray, seed: int
                      ) -> np.ndarray:
    """Smooth background in [0, 1] on the region ``[lower, upper)`` of a volume of ``shape``.

    A sum of a few plane waves of 0.2–1.2 cycles per volume side (random direction, amplitude and
    phase from ``seed``), rescaled with its minimum and maximum on a coarse grid over the volume.
    Values outside the volume (margins) continue the waves and may leave [0, 1] slightly.
    """
    rng = np.random.default_rng([int(seed), 1])
    waves = [(rng.uniform(0.2, 1.2, len(shape)) * rng.choice([-1, 1], len(shape)),
              rng.uniform(0.5, 1.0), rng.uniform(0, 2 * np.pi)) for _ in range(_N_WAVES)]
    coarse = [np.linspace(0, s - 1, min(s, _BACKGROUND_GRID)) for s in shape]
    reference = _waves_on(waves, coarse, shape)
    axes = [np.arange(a, b, dtype=np.float64) for a, b in zip(lower, upper, strict=True)]
    field = _waves_on(waves, axes, shape)
    span = reference.max() - reference.min()
    return (field - reference.min()) / span if span > 0 else np.zeros(field.shape)


def _waves_on(waves: list[tuple[np.ndarray, float, float]], axes: list[np.ndarray],
              shape: tuple[int, ...]) -> np.ndarray:
    grids = np.meshgrid(*[a / s for a, s in zip(axes, shape, strict=True)], indexing="ij",
                        sparse=True)
    field = np.zeros(tuple(len(a) for a in axes))
    for frequency, amplitude, phase in waves:
        phase_map = sum(f * g for f, g in zip(frequency, grids, strict=True))
        field += amplitude * np.cos(2 * np.pi * phase_map + phase)
    return field


def hashed_normal(lower: np.ndarray, upper: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """Standard normal numbers, one per voxel of ``[lower, upper)``, a function of the voxel's
    global coordinates, ``seed`` and ``stream`` only (float64, ``upper - lower``).

    Box–Muller on two uniforms from the SplitMix64 finalizer of the packed coordinates; the same
    voxel gets the same number whichever block it is computed in.
    """
    keys = _coordinate_keys(lower, upper)
    first = _hashed_uniform(keys, seed, stream)
    second = _hashed_uniform(keys, seed, stream + 1)
    return np.sqrt(-2.0 * np.log(first)) * np.cos(2.0 * np.pi * second)


def _coordinate_keys(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    keys = np.zeros(tuple(int(n) for n in upper - lower), np.uint64)
    for axis, (a, b) in enumerate(zip(lower, upper, strict=True)):
        shape = [1] * keys.ndim
        shape[axis] = b - a
        coordinate = (np.arange(a, b) + _COORDINATE_OFFSET).astype(np.uint64).reshape(shape)
        keys = keys * np.uint64(_COORDINATE_SPAN) + coordinate
    return keys


def _hashed_uniform(keys: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """Uniform numbers in (0, 1) from 64-bit keys (SplitMix64; uint64 arithmetic wraps)."""
    salt = np.uint64(_splitmix64_int((int(seed) * 1_000_003 + stream) % 2**64))
    mixed = keys * np.uint64(0x9E3779B97F4A7C15) + salt
    mixed = (mixed ^ (mixed >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    mixed = (mixed ^ (mixed >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    mixed ^= mixed >> np.uint64(31)
    return ((mixed >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _splitmix64_int(value: int) -> int:
    mask = 2**64 - 1
    value = (value + 0x9E3779B97F4A7C15) & mask
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & mask
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & mask
    return value ^ (value >> 31)


def _camera(expected: np.ndarray, start: np.ndarray, stop: np.ndarray, config: SyntheticConfig,
            seed: int) -> np.ndarray:
    """Shot and read noise (one Gaussian of variance mean + read_noise²), gain, offset, uint16."""
    noise = hashed_normal(start, stop, seed, _STREAM_CAMERA)
    electrons = expected + np.sqrt(expected + config.read_noise**2) * noise
    grey = config.offset + config.intensity_scale * electrons
    return np.clip(np.rint(grey), 0, _UINT16_MAX).astype(np.uint16)


def _checked_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 8 or max(shape) >= _COORDINATE_OFFSET:
        raise ConfigError(f"synthetic volume shape {shape}: expected (Z, Y, X) or (Y, X) with "
                          f"every side between 8 and {_COORDINATE_OFFSET - 1}, "
                          f"e.g. (256, 256, 256)")
    return shape


def _checked_geometry(shape: Sequence[int], chunks: Sequence[int]
                      ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    shape = _checked_shape(shape)
    chunks = tuple(int(c) for c in chunks)
    if len(chunks) != len(shape) or min(chunks) < 1:
        raise ConfigError(f"chunks {chunks}: expected {len(shape)} positive sides, one per axis "
                          f"of shape {shape}, e.g. {tuple(min(64, s) for s in shape)}")
    return shape, tuple(min(c, s) for c, s in zip(chunks, shape, strict=True))


def _box_bounds(box: Sequence[slice], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    start = np.array([s.start for s in box], dtype=np.int64)
    stop = np.array([s.stop for s in box], dtype=np.int64)
    if len(box) != len(shape) or np.any(start < 0) or np.any(stop > shape) or np.any(stop <= start):
        corners = tuple(zip(start.tolist(), stop.tolist(), strict=True))
        raise ConfigError(f"block {corners} is not a non-empty box inside the volume of shape "
                          f"{shape}; give one slice per axis with explicit start and stop")
    return start, stop


def _spatial_axes(ndim: int) -> str:
    return "ZYX" if ndim == 3 else "YX"


def _create_zarr(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str,
                 axes: str, record: dict[str, Any]) -> Any:
    import zarr

    return zarr.create_array(str(path), shape=shape, chunks=chunks, dtype=dtype, fill_value=0,
                             attributes={"axes": axes, "synthetic": record})
