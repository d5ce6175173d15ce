"""Random training patches from whole images, reproducible batch by batch.

Every batch is a pure function of ``(seed, rank, epoch, index)``: its random numbers come from
``numpy.random.default_rng([seed, rank, epoch, index])``. So a resumed run draws exactly the
batches an uninterrupted run would have drawn, background threads may prepare batches in any
order, and each process of a multi-GPU run draws different patches (its ``rank``).

Example
-------
>>> import numpy as np
>>> image = np.random.rand(1, 40, 50).astype(np.float32)
>>> target = (image[0] > 0.5).astype(np.int64)
>>> sampler = PatchSampler([(image, target)], patch_size=(16, 16), batch_size=4, seed=0)
>>> images, targets = sampler.batch(epoch=0, index=0)
>>> tuple(images.shape), images.dtype, tuple(targets.shape), targets.dtype
((4, 1, 16, 16), torch.float32, (4, 16, 16), torch.int64)
"""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from microseg.errors import DataError

__all__ = ["AugmentFactory", "PatchSampler", "as_pairs", "check_patch_fits", "pad_to_patch"]

AugmentFactory = Callable[[int], Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]]
"""``seed -> augment`` where ``augment(image (C,*S) float32, target (*S) int) -> (image, target)``,
e.g. ``lambda seed: Augmenter(AugmentConfig(), ndim, seed=seed)``."""


def as_pairs(samples: Sequence[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, target) pairs from ``Sample`` objects (``.image``, ``.target``) or 2-tuples.

    Images become float32 (C, *spatial); targets stay integer class maps (*spatial).

    Raises
    ------
    DataError
        Listing every sample without a target or whose image and target shapes differ.
    """
    pairs, problems = [], []
    for number, sample in enumerate(samples):
        name = getattr(sample, "stem", f"sample {number}")
        image, target = (sample.image, sample.target) if hasattr(sample, "image") else sample
        if target is None:
            problems.append(f"{name}: has no label (target); every training image needs one")
            continue
        image, target = np.asarray(image), np.asarray(target)
        if image.shape[1:] != target.shape:
            problems.append(f"{name}: image shape {image.shape} (C, *spatial) does not match "
                            f"target shape {target.shape}")
            continue
        pairs.append((image.astype(np.float32, copy=False), target))
    if problems:
        raise DataError("some images cannot be used for training", problems)
    return pairs


def pad_to_patch(image: np.ndarray, target: np.ndarray, patch_size: Sequence[int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Pad image (C, *S) and target (*S) with zeros (background) to at least ``patch_size``.

    Padding is split evenly before and after; arrays already large enough are returned as is.
    """
    widths = [(max(0, p - s) // 2, max(0, p - s) - max(0, p - s) // 2)
              for s, p in zip(target.shape, patch_size, strict=True)]
    if not any(before or after for before, after in widths):
        return image, target
    return np.pad(image, [(0, 0), *widths]), np.pad(target, widths)


class PatchSampler:
    """Draws batches of random patches (optionally rejecting near-empty ones, then augmented).

    Parameters
    ----------
    pairs : training (image (C, *S) float32, target (*S) integer class map) pairs, or Samples.
    patch_size : patch side per spatial axis.
    batch_size : patches per batch.
    seed, rank : the random numbers of batch ``index`` in ``epoch`` come from
        ``default_rng([seed, rank, epoch, index])``.
    min_foreground : a patch whose fraction of target pixels > 0 is below this is drawn again
        (0 = accept all). Checked before augmentation.
    max_retries : draws per patch before :class:`DataError`.
    augment_factory : ``seed -> augment`` (see :data:`AugmentFactory`), one augmenter per batch
        seeded from the batch's generator; None = no augmentation.
    size_divisor : only used to suggest a valid patch size in errors.

    Images are chosen with probability proportional to their number of pixels, positions
    uniformly. Images smaller than the patch are padded with background.

    Raises
    ------
    DataError
        If no training image is at least as large as the patch along every axis.
    """

    def __init__(self, pairs: Sequence[Any], patch_size: Sequence[int], batch_size: int,
                 seed: int = 0, rank: int = 0, min_foreground: float = 0.0,
                 max_retries: int = 50, augment_factory: AugmentFactory | None = None,
                 size_divisor: int = 1) -> None:
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.min_foreground = float(min_foreground)
        self.max_retries = int(max_retries)
        self.augment_factory = augment_factory
        raw = as_pairs(pairs)
        check_patch_fits(raw, self.patch_size, size_divisor)
        self.pairs = [pad_to_patch(image, target, self.patch_size) for image, target in raw]
        sizes = np.array([target.size for _, target in self.pairs], dtype=np.float64)
        self.image_weights = sizes / sizes.sum()

    def batch(self, epoch: int, index: int) -> tuple[Any, Any]:
        """Batch ``index`` of ``epoch``: images (N, C, *patch) float32, targets (N, *patch) int64.

        Raises :class:`DataError` when ``min_foreground`` cannot be met in ``max_retries`` draws.
        """
        import torch

        rng = np.random.default_rng([self.seed, self.rank, epoch, index])
        augment = None
        if self.augment_factory is not None:
            augment = self.augment_factory(int(rng.integers(2**31)))
        images, targets = [], []
        for _ in range(self.batch_size):
            image, target = self._draw(rng)
            if augment is not None:
                image, target = augment(image, target)
            images.append(np.ascontiguousarray(image, dtype=np.float32))
            targets.append(np.ascontiguousarray(target, dtype=np.int64))
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(targets))

    def batches(self, epoch: int, count: int, num_workers: int = 0) -> Iterator[tuple[Any, Any]]:
        """Batches 0 .. count-1 of ``epoch`` in order; ``num_workers`` threads prepare ahead."""
        if num_workers == 0:
            for index in range(count):
                yield self.batch(epoch, index)
            return
        pool = concurrent.futures.ThreadPoolExecutor(num_workers, "microseg-patches")
        try:
            ahead = 2 * num_workers
            futures = [pool.submit(self.batch, epoch, i) for i in range(min(ahead, count))]
            for index in range(count):
                if index + ahead < count:
                    futures.append(pool.submit(self.batch, epoch, index + ahead))
                yield futures[index].result()
                futures[index] = None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def state_dict(self) -> dict[str, int]:
        """What decides the batches (plain ints), saved in checkpoints."""
        return {"seed": self.seed, "rank": self.rank, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore :meth:`state_dict`; the following batches are those of the saved run."""
        self.seed = int(state["seed"])
        self.rank = int(state["rank"])
        self.batch_size = int(state["batch_size"])

    def _draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(self.max_retries):
            image, target = self.pairs[rng.choice(len(self.pairs), p=self.image_weights)]
            sides = zip(target.shape, self.patch_size, strict=True)
            starts = [int(rng.integers(0, s - p + 1)) for s, p in sides]
            window = tuple(slice(a, a + p)
                           for a, p in zip(starts, self.patch_size, strict=True))
            patch_target = target[window]
            if self.min_foreground == 0 or np.mean(patch_target > 0) >= self.min_foreground:
                return image[(slice(None), *window)], patch_target
        average = float(np.mean([np.mean(t > 0) for _, t in self.pairs]))
        raise DataError(
            f"no patch of {self.patch_size} with at least {self.min_foreground:.0%} foreground "
            f"found in {self.max_retries} draws",
            [f"the training images are {average:.1%} foreground on average",
             "lower min_foreground (0 switches the check off), raise max_retries, or use a "
             "larger patch_size"],
        )


def check_patch_fits(pairs: list[tuple[np.ndarray, np.ndarray]], patch_size: tuple[int, ...],
                     size_divisor: int = 1) -> None:
    """Raise :class:`DataError` unless some image is at least ``patch_size`` along every axis.

    The error suggests the largest patch (a multiple of ``size_divisor``) that fits an image.
    """
    if not pairs:
        raise DataError("there are no training images", ["check the split (notebook 01)"])
    shapes = [target.shape for _, target in pairs]
    if any(len(shape) != len(patch_size) for shape in shapes):
        raise DataError(
            f"patch_size {patch_size} has {len(patch_size)} axes but the training images have "
            f"spatial shapes {sorted(set(shapes))}",
            ["give one patch side per spatial axis: (Y, X) for 2D, (Z, Y, X) for 3D"])
    if any(all(s >= p for s, p in zip(shape, patch_size, strict=True)) for shape in shapes):
        return
    fitting = [tuple(max(size_divisor, min(p, s) // size_divisor * size_divisor)
                     for p, s in zip(patch_size, shape, strict=True)) for shape in shapes]
    suggestion = max(fitting, key=math.prod)
    raise DataError(
        f"the patch {patch_size} is larger than every training image",
        [f"image sizes: {', '.join(str(shape) for shape in sorted(set(shapes))[:5])}",
         f"use patch_size={suggestion}: it fits at least one image and is a multiple of the "
         f"model's size divisor {size_divisor}"],
    )
