"""Resample arrays larger than memory into Zarr, block by block: out-of-core object scaling.

A model trained at a canonical object size (:mod:`microseg.transforms.scale`) predicts an image
resampled to that size, and its predictions are resampled back. For images and volumes larger
than memory both steps run block by block (one Dask task per output chunk) with
:func:`microseg.transforms.scale.resample_region`, which reads only the input a block needs, so
the result equals resampling the whole array at once.

Example
-------
>>> import numpy as np, tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> image = np.random.default_rng(0).random((1, 60, 80)).astype(np.float32)
>>> half = resample_to_zarr(image, folder / "half.zarr", (30, 40), chunks=16)
>>> half.shape, half.chunks
((1, 30, 40), (1, 16, 16))
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.inference.scheduling import run_tasks

__all__ = ["DEFAULT_CHUNK", "resample_to_zarr"]

DEFAULT_CHUNK = {2: 1024, 3: 128}
"""Side of the output blocks (and Zarr chunks) by spatial dimensions."""


def resample_to_zarr(source: Any, path: str | Path, spatial_shape: Sequence[int], *,
                     order: int = 1, smooth: bool = False, chunks: int | None = None,
                     scheduler: Any = None) -> Any:
    """Write ``source`` (C, *spatial), or a label image (*spatial), resampled to
    ``spatial_shape`` into a new Zarr array of the same layout at ``path`` (replaced if it
    exists). ``source`` is any array-like that slices (NumPy, Zarr, a VolumeSource).

    ``order``, ``smooth``: as :func:`microseg.transforms.scale.resample_region` (float32 output
    for ``order=1``, the source's dtype for 0). ``chunks``: output block side (None:
    :data:`DEFAULT_CHUNK`); one Dask task per block on ``scheduler``
    (:func:`microseg.inference.scheduling.run_tasks`). Returns the Zarr array.
    """
    import dask
    import zarr

    from microseg.inference.tiling import tile_grid

    shape = tuple(int(s) for s in spatial_shape)
    side = chunks or DEFAULT_CHUNK[len(shape)]
    block = tuple(min(side, s) for s in shape)
    dtype = np.float32 if order == 1 else np.dtype(source.dtype)
    channels = () if len(source.shape) == len(shape) else (int(source.shape[0]),)
    out = zarr.create_array(str(path), shape=(*channels, *shape), chunks=(*channels, *block),
                            dtype=dtype, overwrite=True)
    shared = dask.delayed(source, name=f"resample-source-{uuid.uuid4().hex}")
    write = dask.delayed(_write_region, pure=False)
    run_tasks([write(shared, out, shape, region, order, smooth)
               for region in tile_grid(shape, block)], scheduler)
    return out


def _write_region(source: Any, out: Any, shape: tuple[int, ...], region: tuple[slice, ...],
                  order: int, smooth: bool) -> None:
    from microseg.transforms.scale import resample_region

    if len(source.shape) == len(shape):
        out[region] = resample_region(_WithChannel(source), shape, region, order, smooth)[0]
    else:
        out[(slice(None), *region)] = resample_region(source, shape, region, order, smooth)


class _WithChannel:
    """A label image (*spatial) seen as (1, *spatial)."""

    def __init__(self, array: Any):
        self.array, self.shape = array, (1, *array.shape)

    def __getitem__(self, key: tuple[Any, ...]) -> np.ndarray:
        return np.asarray(self.array[key[1:]])[None]

