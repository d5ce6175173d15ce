"""Train/eval disparity: how much a model's hard predictions change between train() and eval().

BatchNorm normalizes with the statistics of the current batch in training and with running
averages in inference. With small, varied batches the two differ, and so do the predictions of the
*same* tile (the tiling paper's Table 1: up to 0.84 for BatchNorm, 0 for InstanceNorm, BatchRenorm and
no normalization)::

    disparity_c = 1 − Dice(hard(f_train(x)), hard(f_eval(x)))      per channel c

averaged over held-out tiles, leaving out tiles where the channel is empty in both predictions;
``disparity`` averages the channels. ``f_train`` is a deep copy of the model whose normalization
layers compute batch statistics (dropout stays off, so only normalization is measured) and whose
running statistics are frozen, so neither the model nor the measurement drifts. The value depends
on which tiles form a batch, so the batch is recorded.

Example
-------
>>> import numpy as np, torch
>>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.BatchNorm2d(2))
>>> tiles = [np.random.rand(1, 16, 16).astype(np.float32) for _ in range(4)]
>>> result = train_eval_disparity(model, tiles, batch_size=2)
>>> result["batch"]["size"], 0.0 <= result["disparity"] <= 1.0
(2, True)
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from microseg.diagnostics.mismatch import channel_dice, hard_masks
from microseg.errors import ConfigError, DataError

__all__ = ["TrainModeModel", "held_out_tiles", "train_eval_disparity", "train_mode_model"]


def _is_statistics_layer(module: nn.Module) -> bool:
    """Layers whose training mode uses batch statistics and keeps running averages."""
    return isinstance(getattr(module, "running_mean", None), torch.Tensor)


class TrainModeModel(nn.Module):
    """A model whose normalization layers always run as in training, with frozen statistics.

    Build it with :func:`train_mode_model`. ``eval()`` and ``train()`` change nothing: the
    normalization layers stay in training mode (batch statistics; BatchRenorm with its
    correction), every other layer (dropout) stays in eval mode, and running statistics are never
    updated (momentum 0). So :func:`~microseg.inference.tiling.predict_tiled` predicts "in train
    mode" with it, each forward pass normalizing by the statistics of its batch of tiles.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = copy.deepcopy(model)
        self.size_divisor = getattr(model, "size_divisor", 1)
        for module in self.inner.modules():
            if _is_statistics_layer(module):
                module.momentum = 0.0
        self.train()

    def train(self, mode: bool = True) -> TrainModeModel:
        super().train(mode)
        for module in self.inner.modules():
            module.train(_is_statistics_layer(module))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def train_mode_model(model: nn.Module) -> TrainModeModel:
    """A deep copy of ``model`` that predicts with batch statistics (see :class:`TrainModeModel`).

    ``model`` itself, its mode and its running statistics are not changed.
    """
    return TrainModeModel(model)


def held_out_tiles(
    images: Sequence[np.ndarray], tile_shape: int | Sequence[int] | None
) -> list[np.ndarray]:
    """Cut each (C, *spatial) image into non-overlapping tiles of ``tile_shape`` (C order).

    Tiles lie fully inside their image; the rest of an image is left out. With ``tile_shape``
    None every image is one tile, and all must have the same shape.

    Raises
    ------
    DataError
        If no tile fits, or untiled images differ in shape.
    """
    images = [np.asarray(image, dtype=np.float32) for image in images]
    if tile_shape is None:
        shapes = sorted({image.shape for image in images})
        if len(shapes) > 1:
            raise DataError(
                "images of different shapes cannot share a batch",
                [f"found shapes {shapes}; pass tile_shape to cut them into tiles of one shape"],
            )
        return images
    tiles = [tile for image in images for tile in _tiles_of(image, tile_shape)]
    if not tiles:
        raise DataError(
            "no tile fits in the images",
            [
                f"tile_shape {tile_shape} is larger than every image ({sorted({i.shape for i in images})}); "
                "use a smaller tile_shape"
            ],
        )
    return tiles


def _tiles_of(image: np.ndarray, tile_shape: int | Sequence[int]) -> list[np.ndarray]:
    spatial = image.shape[1:]
    tile = (
        (int(tile_shape),) * len(spatial)
        if np.isscalar(tile_shape)
        else tuple(int(t) for t in tile_shape)
    )
    ranges = [range(0, n - t + 1, t) for n, t in zip(spatial, tile, strict=True)]
    return [
        image[(slice(None), *(slice(o, o + t) for o, t in zip(origin, tile, strict=True)))]
        for origin in itertools.product(*ranges)
    ]


def train_eval_disparity(
    model: nn.Module,
    images: Sequence[np.ndarray],
    batch_size: int,
    tile_shape: int | Sequence[int] | None = None,
    device: Any = None,
) -> dict[str, Any]:
    """Measure the train/eval disparity of ``model`` on held-out images (module docstring).

    Parameters
    ----------
    model : torch module, logits (N, K, *spatial); not changed (mode and statistics kept).
    images : held-out (C, *spatial) float arrays, globally normalized like the training data.
    batch_size : tiles per train-mode forward pass; use the training batch size. Batches are
        consecutive tiles in image order; a last incomplete batch is left out when there is at
        least one full batch (its statistics would be those of fewer tiles).
    tile_shape : cut the images into tiles of this shape (:func:`held_out_tiles`); each side a
        multiple of the model's size divisor. None: each image is one tile.
    device : as in :func:`microseg.inference.tiling.predict_tiled`.

    Returns
    -------
    dict with ``per_channel`` (mean over tiles; None where every tile was empty-empty),
    ``disparity`` (mean over channels), ``n_tiles`` and ``batch`` (size, number of batches,
    tile shape and how batches were composed).
    """
    from microseg.inference.tiling import predict_windows

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, found {batch_size}")
    tiles = held_out_tiles(images, tile_shape)
    n_batches = max(1, len(tiles) // batch_size)
    tiles = tiles[: n_batches * batch_size] if len(tiles) >= batch_size else tiles
    train_model = train_mode_model(model)
    differences = []
    for start in range(0, len(tiles), batch_size):
        batch = tiles[start : start + batch_size]
        eval_predictions = predict_windows(model, batch, device=device)
        train_predictions = predict_windows(train_model, batch, device=device)
        for in_eval, in_train in zip(eval_predictions, train_predictions, strict=True):
            differences.append(1.0 - channel_dice(hard_masks(in_train), hard_masks(in_eval)))
    return _disparity_summary(np.array(differences), batch_size, n_batches, tiles[0].shape[1:])


def _disparity_summary(
    differences: np.ndarray, batch_size: int, n_batches: int, tile_shape: tuple[int, ...]
) -> dict[str, Any]:
    seen = ~np.isnan(differences)
    per_channel = [
        float(differences[seen[:, c], c].mean()) if seen[:, c].any() else None
        for c in range(differences.shape[1])
    ]
    measured = [v for v in per_channel if v is not None]
    return {
        "per_channel": per_channel,
        "disparity": float(np.mean(measured)) if measured else 0.0,
        "n_tiles": int(differences.shape[0]),
        "batch": {
            "size": int(batch_size),
            "n_batches": int(n_batches),
            "tile_shape": [int(t) for t in tile_shape],
            "composition": "consecutive tiles of a non-overlapping grid over the held-out images, in image order",
        },
    }
