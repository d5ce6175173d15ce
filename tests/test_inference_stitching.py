"""Label stitching across blocks: equal to whole-array labelling object by object."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from microseg.inference.stitching import merged_id_mapping, overlapping_pairs, stitch_block_labels


def _random_labels(shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    """Touching and overlapping blobs of random sizes; every id one connected object."""
    from skimage.measure import label

    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    truth = np.zeros(shape, dtype=np.int32)
    for k in range(1, n + 1):
        centre = rng.uniform(0, shape)
        radii = rng.uniform(2, 9, size=len(shape))
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
        truth[inside] = k
    return label(truth, background=0).astype(np.int32)


def assert_same_objects(found: np.ndarray, truth: np.ndarray) -> None:
    pairs = np.unique(np.stack([truth.ravel(), found.ravel()], axis=1), axis=0)
    assert np.all((pairs[:, 0] == 0) == (pairs[:, 1] == 0)), "background differs"
    objects = pairs[pairs[:, 0] > 0]
    assert len(np.unique(objects[:, 0])) == len(objects) == len(np.unique(objects[:, 1]))


def objects_cut_by_blocks(truth: np.ndarray, block: int) -> int:
    cut: set[int] = set()
    for axis, side in enumerate(truth.shape):
        for s in range(block, side, block):
            before, after = np.take(truth, s - 1, axis=axis), np.take(truth, s, axis=axis)
            cut |= set(np.unique(before[(before == after) & (before > 0)]).tolist())
    return len(cut)


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "block", "overlap"), [((100, 90), 24, 3), ((30, 40, 44), 16, 2)])
def test_stitched_block_labels_match_the_truth_object_by_object(tmp_path, shape, block, overlap):
    from skimage.measure import label

    truth = _random_labels(shape, n=60 if len(shape) == 2 else 40, seed=len(shape))
    out = np.zeros(shape, dtype=np.int32)

    n_objects = stitch_block_labels(truth, out, (block,) * len(shape), overlap, label,
                                    tmp_path / "work", scheduler="synchronous")

    assert_same_objects(out, truth)
    assert n_objects == truth.max() == out.max()
    assert objects_cut_by_blocks(truth, block) > 10, "the test should cut many objects"


def test_block_labels_are_stitched_into_zarr_with_threads(tmp_path):
    from skimage.measure import label

    truth = _random_labels((64, 64), n=25, seed=7)
    out = zarr.create_array(str(tmp_path / "labels.zarr"), shape=truth.shape, chunks=(16, 16),
                            dtype="int32")
    stitch_block_labels(truth, out, (16, 16), 4, label, tmp_path / "work")
    assert_same_objects(out[...], truth)


def test_overlapping_pairs_and_merged_ids_against_brute_force():
    rng = np.random.default_rng(5)
    first, second = rng.integers(0, 4, size=200), rng.integers(0, 5, size=200)
    expected = []
    for a in range(1, 4):
        for b in range(1, 5):
            shared = np.sum((first == a) & (second == b))
            smaller = min(np.sum(first == a), np.sum(second == b))
            if shared and shared >= 0.5 * smaller:
                expected.append((a, b))
    assert [tuple(p) for p in overlapping_pairs(first, second)] == expected
    mapping = merged_id_mapping(6, [np.array([[2, 5], [5, 6]]), np.array([[4, 1]])])
    assert mapping.tolist() == [0, 1, 2, 3, 1, 2, 2]
    only_present = merged_id_mapping(6, [np.array([[2, 5], [5, 6]])], present=np.array([6, 3, 4]))
    assert only_present.tolist() == [0, 0, 3, 1, 2, 3, 3]
