"""Instance labels of arrays larger than memory: label block by block, then stitch.

Each block is labelled on its region grown by an overlap into its neighbours
(:func:`stitch_block_labels`); objects that two blocks both see in their shared overlap are
merged (union of overlapping ids, :func:`overlapping_pairs`, :func:`merged_id_mapping`), and ids
are made unique and consecutive. Used by out-of-core prediction
(:func:`microseg.inference.ooc.predict_volume_to_zarr`) on the predicted probabilities.

Example
-------
>>> first = np.array([[1, 1, 0], [2, 2, 0]])
>>> second = np.array([[5, 5, 0], [5, 6, 0]])
>>> overlapping_pairs(first, second).tolist()  # id 2 shares half of itself with 5 and 6
[[1, 5], [2, 5], [2, 6]]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.errors import ConfigError, DataError
from microseg.inference.scheduling import run_tasks
from microseg.inference.tiling import per_axis

__all__ = ["merged_id_mapping", "overlapping_pairs", "stitch_block_labels"]


def stitch_block_labels(
    source: Any,
    out: Any,
    block_shape: Sequence[int],
    overlap: int | Sequence[int],
    label_region: Callable[[np.ndarray], np.ndarray],
    work_dir: str | Path,
    scheduler: Any = None,
    min_overlap: float = 0.5,
) -> int:
    """Label a large array block by block and stitch the labels into unique, merged objects.

    Each block is labelled on its region grown by ``overlap`` on every side (cut at the array
    border) by ``label_region``; ids are made unique across blocks. Two neighbouring blocks
    (diagonal ones included) both see the voxels around their shared face; there, within half
    the overlap on either side (where each block still sees half the overlap beyond), an id of
    one and an id of the other are merged when they share at least ``min_overlap`` of the
    smaller one's voxels (union-find over all such pairs). Every merged object then gets one id,
    1..n in order of its first block. Finished blocks are kept in ``work_dir`` (one ``.npz``
    each), so an interrupted run resumes; ``work_dir`` may be deleted afterwards.

    With an exact per-block labelling (connected components of a label image) the result equals
    the whole-array labelling object by object. A learned labelling (watershed of predicted
    probabilities) is reliable for objects up to about half the overlap across.

    Parameters
    ----------
    source : array-like (..., *spatial) (NumPy, Zarr), e.g. probabilities (K, *spatial); the
        spatial axes are the last ``len(block_shape)``.
    out : array-like (*spatial) integer (NumPy or Zarr int32) receiving the labels; with a
        multi-process scheduler it must be a Zarr array.
    block_shape : block per spatial axis (the Zarr chunk shape of ``out`` is best).
    overlap : voxels shared with each neighbour, per axis or one value, at least 1.
    label_region : maps a region of ``source`` (..., *region) to int labels (*region), 0 =
        background; ids need not be consecutive.
    work_dir : folder for per-block files.
    scheduler : as for :func:`predict_volume_to_zarr`.
    min_overlap : fraction of the smaller object's overlap voxels two ids must share to merge.

    Returns
    -------
    The number of objects.

    Raises
    ------
    ConfigError for an overlap below 1 or a block smaller than twice the overlap.
    """
    spatial = tuple(int(s) for s in out.shape)
    geometry = _LabelGeometry.make(spatial, block_shape, overlap)
    work = Path(work_dir)
    (work / "blocks").mkdir(parents=True, exist_ok=True)
    import dask

    todo = [i for i in range(len(geometry.blocks)) if not _block_file(work, i).exists()]
    shared_source = dask.delayed(source, name=f"source-{uuid.uuid4().hex}")
    label = dask.delayed(_label_block, pure=False)
    run_tasks([label(shared_source, geometry, i, label_region, work) for i in todo], scheduler)
    counts = [int(np.load(_block_file(work, i))["count"]) for i in range(len(geometry.blocks))]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    found = run_tasks([dask.delayed(_touching_ids, pure=False)(geometry, i, offsets, work,
                                                               min_overlap)
                       for i in range(len(geometry.blocks))], scheduler)
    mapping = merged_id_mapping(int(offsets[-1]), [pairs for pairs, _ in found],
                                np.concatenate([present for _, present in found]))
    shared_mapping = dask.delayed(mapping, name=f"mapping-{uuid.uuid4().hex}")
    shared_out = dask.delayed(out, name=f"out-{uuid.uuid4().hex}")
    run_tasks([dask.delayed(_write_final_block, pure=False)(shared_out, geometry, i, offsets,
                                                           shared_mapping, work)
               for i in range(len(geometry.blocks))], scheduler)
    return int(mapping.max(initial=0))


@dataclasses.dataclass(frozen=True)
class _LabelGeometry:
    """Blocks of the label stitching and each block's region grown by the overlap."""

    spatial_shape: tuple[int, ...]
    block: tuple[int, ...]
    overlap: tuple[int, ...]
    blocks: tuple[tuple[slice, ...], ...]

    @classmethod
    def make(cls, spatial: tuple[int, ...], block_shape: Sequence[int] | int,
             overlap: Sequence[int] | int) -> _LabelGeometry:
        """Blocks of ``block_shape`` over ``spatial``; ConfigError for an unusable overlap."""
        from microseg.inference.tiling import tile_grid

        block = per_axis(block_shape, len(spatial), "block_shape")
        margin = per_axis(overlap, len(spatial), "overlap")
        if min(margin) < 1 or any(b < 2 * m for b, m in zip(block, margin, strict=True)):
            raise ConfigError(f"label stitching needs an overlap of at least 1 and blocks of at "
                              f"least twice the overlap, found block {block}, overlap {margin}")
        return cls(spatial, block, margin, tuple(tile_grid(spatial, block)))

    def grown(self, index: int, half: bool = False) -> tuple[slice, ...]:
        """Block ``index`` grown by the overlap (or half of it, at least 1), cut at the border."""
        margins = [max(1, m // 2) for m in self.overlap] if half else self.overlap
        sides = zip(self.blocks[index], margins, self.spatial_shape, strict=True)
        return tuple(slice(max(0, s.start - m), min(n, s.stop + m)) for s, m, n in sides)

    def neighbours(self, index: int) -> list[int]:
        """Blocks after ``index`` (C order) that touch it, diagonal neighbours included."""
        grid = tuple(math.ceil(n / b) for n, b in zip(self.spatial_shape, self.block, strict=True))
        position = np.unravel_index(index, grid)
        found = []
        for step in itertools.product((-1, 0, 1), repeat=len(grid)):
            other = tuple(p + s for p, s in zip(position, step, strict=True))
            if all(0 <= o < g for o, g in zip(other, grid, strict=True)):
                flat = int(np.ravel_multi_index(other, grid))
                if flat > index:
                    found.append(flat)
        return found


def _block_file(work: Path, index: int) -> Path:
    return work / "blocks" / f"{index}.npz"


def _label_block(source: Any, geometry: _LabelGeometry, index: int,
                 label_region: Callable[[np.ndarray], np.ndarray], work: Path) -> None:
    """Label one grown block, number its objects 1..n, save them (atomically)."""
    from skimage.segmentation import relabel_sequential

    grown = geometry.grown(index)
    lead = (slice(None),) * (len(source.shape) - len(grown))
    labels = np.asarray(label_region(np.asarray(source[(*lead, *grown)])))
    local, _, _ = relabel_sequential(labels.astype(np.int64))
    target = _block_file(work, index)
    partial = target.with_name(f".{target.stem}.partial.npz")
    np.savez_compressed(partial, labels=local.astype(np.int32), count=int(local.max(initial=0)))
    partial.replace(target)


def _saved_labels(work: Path, index: int) -> np.ndarray:
    """Block ``index``'s labels on its grown region, ids 1..count."""
    return np.load(_block_file(work, index))["labels"].astype(np.int64)


def _crop(labels: np.ndarray, grown: tuple[slice, ...], region: tuple[slice, ...]) -> np.ndarray:
    """The part ``region`` of ``labels``, which cover ``grown``."""
    return labels[tuple(slice(r.start - g.start, r.stop - g.start)
                        for r, g in zip(region, grown, strict=True))]


def _touching_ids(geometry: _LabelGeometry, index: int, offsets: np.ndarray, work: Path,
                  min_overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (global ids) of objects that block ``index`` and a later neighbour both see, and
    the global ids present inside block ``index`` itself."""
    found = [np.zeros((0, 2), dtype=np.int64)]
    mine = _saved_labels(work, index)
    inside = np.unique(_crop(mine, geometry.grown(index), geometry.blocks[index]))
    for other in geometry.neighbours(index):
        # Compare around the shared face only, where both blocks still see half the overlap
        # beyond it: near the edge of its grown region a block sees objects cut off, and
        # labels them badly (a seed missing, a neighbour flooding in).
        region = _intersection(geometry.grown(index, half=True), geometry.grown(other, half=True))
        if region is None:
            continue
        theirs = _saved_labels(work, other)
        pairs = overlapping_pairs(_crop(mine, geometry.grown(index), region),
                                  _crop(theirs, geometry.grown(other), region), min_overlap)
        found.append(pairs + np.array([offsets[index], offsets[other]]))
    return np.concatenate(found), inside[inside > 0] + offsets[index]


def _intersection(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...] | None:
    region = tuple(slice(max(x.start, y.start), min(x.stop, y.stop))
                   for x, y in zip(a, b, strict=True))
    return region if all(r.stop > r.start for r in region) else None


def overlapping_pairs(first: np.ndarray, second: np.ndarray, min_overlap: float = 0.5
                      ) -> np.ndarray:
    """Pairs ``(a, b)`` of non-zero ids of two labellings of the same voxels that share at least
    ``min_overlap`` of the voxels of the smaller of the two (within these voxels).

    Returns an int64 array (n, 2).

    Example
    -------
    >>> overlapping_pairs(np.array([1, 1, 2, 0]), np.array([5, 5, 5, 7]))
    array([[1, 5],
           [2, 5]])
    """
    first, second = np.ravel(first).astype(np.int64), np.ravel(second).astype(np.int64)
    both = (first > 0) & (second > 0)
    if not both.any():
        return np.zeros((0, 2), dtype=np.int64)
    pairs, shared = np.unique(np.stack([first[both], second[both]], axis=1), axis=0,
                              return_counts=True)
    size_first = dict(zip(*np.unique(first[first > 0], return_counts=True), strict=True))
    size_second = dict(zip(*np.unique(second[second > 0], return_counts=True), strict=True))
    smaller = np.array([min(size_first[a], size_second[b]) for a, b in pairs])
    return pairs[shared >= min_overlap * smaller]


def merged_id_mapping(n_ids: int, pairs: Sequence[np.ndarray],
                      present: np.ndarray | None = None) -> np.ndarray:
    """Final id of every id 0..n_ids after merging ``pairs``: 0 stays 0, every group of merged
    ids holding an id of ``present`` (the ids that appear in the output; None: all) gets one id,
    numbered 1..m in order of its smallest present member; the other groups map to 0.
    Returns int32 (n_ids + 1,).

    Example
    -------
    >>> merged_id_mapping(4, [np.array([[3, 1]])]).tolist()
    [0, 1, 2, 1, 3]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.concatenate([np.zeros((0, 2), dtype=np.int64), *pairs]).astype(np.int64)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])),
                       shape=(n_ids + 1, n_ids + 1))
    _, component = connected_components(graph, directed=False)
    present = np.arange(1, n_ids + 1) if present is None else np.unique(present[present > 0])
    groups, first_member = np.unique(component[present], return_index=True)
    rank = np.zeros(component.max(initial=0) + 1, dtype=np.int64)
    rank[groups[np.argsort(first_member)]] = np.arange(1, len(groups) + 1)
    mapping = rank[component]
    mapping[0] = 0
    if mapping.max(initial=0) > np.iinfo(np.int32).max:
        raise DataError(f"{mapping.max()} objects do not fit int32 labels")
    return mapping.astype(np.int32)


def _write_final_block(out: Any, geometry: _LabelGeometry, index: int, offsets: np.ndarray,
                       mapping: np.ndarray, work: Path) -> None:
    block = geometry.blocks[index]
    local = _crop(_saved_labels(work, index), geometry.grown(index), block)
    out[block] = np.where(local > 0, mapping[local + offsets[index]], 0).astype(out.dtype)
