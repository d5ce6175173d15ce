"""Tile-size sweep: does the prediction quality depend on the tile size used in inference?

For a network with global normalization and a sufficient halo it must not: every tile size gives
the same stitched prediction. With InstanceNorm or tile-wise input normalization the quality
changes with the tile size (the tiling paper's Fig. 6), and the tile mismatch with it.

Example
-------
>>> from microseg.models import ModelConfig, build_model
>>> image = np.random.default_rng(0).random((1, 96, 96)).astype(np.float32)
>>> samples = [(image, (image[0] > 0.5).astype(np.int64))]
>>> batch = build_model(ModelConfig(channels=(4, 8, 16), num_res_units=1, norm="batch")).eval()
>>> table = tile_size_sweep(batch, samples, tile_sizes=[16, 32, 64], halo=16)
>>> table["tile_size"].tolist(), table["dice"].nunique()  # one Dice for every tile size
([16, 32, 64], 1)
>>> instance = build_model(ModelConfig(channels=(4, 8, 16), num_res_units=1, norm="instance"))
>>> tile_size_sweep(instance.eval(), samples, tile_sizes=[16, 32, 64], halo=16)["dice"].nunique()
3
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from microseg.errors import ConfigError

__all__ = ["dice_per_class", "median_dice", "tile_size_sweep"]


def dice_per_class(probabilities: np.ndarray, target: np.ndarray) -> list[float | None]:
    """Hard Dice of each class: argmax of (K, *spatial) ``probabilities`` against a class map.

    None for a class absent from both prediction and truth
    (see :mod:`microseg.metrics.pixel`).
    """
    from microseg.metrics.pixel import pixel_metrics

    n_classes = probabilities.shape[0]
    return [m.dice for m in pixel_metrics(np.argmax(probabilities, axis=0), target, n_classes)]


def median_dice(per_image: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Median over images of each class's Dice, leaving out images where the class is absent.

    Example
    -------
    >>> median_dice([[1.0, 0.5], [0.8, None], [0.6, 0.7]])
    [0.8, 0.6]
    """
    n_classes = len(per_image[0])
    medians = []
    for c in range(n_classes):
        values = [row[c] for row in per_image if row[c] is not None]
        medians.append(float(np.median(values)) if values else None)
    return medians


def tile_size_sweep(
    model: Any,
    samples: Sequence[Any],
    tile_sizes: Sequence[int],
    halo: int,
    input_norm: str = "global",
    tile_normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 4,
    device: Any = None,
) -> Any:
    """Dice against the truth and tile mismatch for each inner tile size.

    Parameters
    ----------
    model : torch module, logits (N, K, *spatial).
    samples : held-out ``Sample`` objects (``.image`` (C, *spatial) float32 normalized,
        ``.target`` class map) or (image, target) pairs.
    tile_sizes : inner tile sides of :func:`~microseg.inference.tiling.predict_tiled` (one int
        per size, the same on every axis).
    halo : halo of the tiled prediction (the same on every axis), also the border left out of
        the mismatch comparison.
    input_norm, tile_normalizer : ``"tile"`` normalizes every window with ``tile_normalizer``
        (tile-wise input normalization) in prediction and mismatch.
    batch_size, device : as in ``predict_tiled``.

    Returns
    -------
    pandas.DataFrame, one row per tile size: ``tile_size``, ``input_side`` (tile + 2·halo, the
    network input), ``dice_class<k>`` (median over images), ``dice`` (mean of the foreground
    classes 1..K-1), ``mismatch`` (mean over channels and images of
    :func:`~microseg.diagnostics.mismatch.tile_mismatch` with tiles of ``input_side``; None where
    the images hold no such pair), ``mismatch_any`` and ``max_abs_diff``.
    """
    import pandas as pd

    from microseg.training.sampling import as_pairs

    pairs = as_pairs(samples)
    if not pairs or not tile_sizes:
        raise ConfigError("tile_size_sweep needs at least one sample and one tile size")
    rows = [
        _sweep_row(
            model, pairs, int(size), int(halo), input_norm, tile_normalizer, batch_size, device
        )
        for size in tile_sizes
    ]
    return pd.DataFrame(rows)


def _sweep_row(
    model: Any,
    pairs: list[tuple[np.ndarray, np.ndarray]],
    tile: int,
    halo: int,
    input_norm: str,
    tile_normalizer: Callable[[np.ndarray], np.ndarray] | None,
    batch_size: int,
    device: Any,
) -> dict[str, Any]:
    from microseg.inference.tiling import predict_tiled

    transform = tile_normalizer if input_norm == "tile" else None
    per_image = []
    for image, target in pairs:
        probabilities = predict_tiled(
            model, image, tile, halo, batch_size=batch_size, device=device, tile_transform=transform
        )
        per_image.append(dice_per_class(probabilities, target))
    medians = median_dice(per_image)
    foreground = [d for d in medians[1:] if d is not None]
    row = {"tile_size": tile, "input_side": tile + 2 * int(halo)}
    row.update({f"dice_class{k}": d for k, d in enumerate(medians)})
    row["dice"] = float(np.mean(foreground)) if foreground else None
    row.update(
        _mean_mismatch(
            model, pairs, row["input_side"], halo, input_norm, tile_normalizer, batch_size, device
        )
    )
    return row


def _mean_mismatch(
    model: Any,
    pairs: list[tuple[np.ndarray, np.ndarray]],
    side: int,
    halo: int,
    input_norm: str,
    tile_normalizer: Callable[[np.ndarray], np.ndarray] | None,
    batch_size: int,
    device: Any,
) -> dict[str, Any]:
    from microseg.diagnostics.mismatch import tile_mismatch

    results = []
    for image, _ in pairs:
        try:
            results.append(
                tile_mismatch(
                    model,
                    image,
                    side,
                    halo,
                    input_norm=input_norm,
                    tile_normalizer=tile_normalizer,
                    batch_size=batch_size,
                    device=device,
                )
            )
        except ConfigError:
            continue
    means = [r["mean"] for r in results if r["mean"] is not None]
    return {
        "mismatch": float(np.mean(means)) if means else None,
        "mismatch_any": any(r["any"] for r in results) if results else None,
        "max_abs_diff": max(r["max_abs_diff"] for r in results) if results else None,
    }
