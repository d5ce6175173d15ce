"""Figures of the normalization diagnostics; each function returns a matplotlib Figure.

Volumes are shown by their central Z slice. The figures only draw what the diagnostics computed.
Figures are made without pyplot, so none stays open in pyplot's registry: show one in a notebook
by making it a cell's last expression (or ``display(figure)``), save it with ``savefig``.

Example
-------
>>> import pandas as pd
>>> table = pd.DataFrame({"tile_size": [32, 64, 128], "dice_class1": [0.70, 0.78, 0.81],
...                       "mismatch": [0.04, 0.02, 0.01]})  # as tile_size_sweep returns it
>>> figure = plot_tile_sweep(table)
>>> [axis.get_ylabel() for axis in figure.axes]
['median Dice (eval mode)', 'tile mismatch']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "plot_mismatch_map",
    "plot_norm_comparison",
    "plot_receptive_field",
    "plot_tile_sweep",
]


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=size)


def _central_slice(array: np.ndarray) -> np.ndarray:
    """The (Y, X) plane of a (Y, X) or (Z, Y, X) array (central Z slice)."""
    return array[array.shape[0] // 2] if array.ndim == 3 else array


def _box(
    ax: Any, centre: int, left: Sequence[int], right: Sequence[int], colour: str, label: str
) -> None:
    from matplotlib.patches import Rectangle

    ax.add_patch(
        Rectangle(
            (centre - left[-1] - 0.5, centre - left[-2] - 0.5),
            left[-1] + right[-1] + 1,
            left[-2] + right[-2] + 1,
            fill=False,
            edgecolor=colour,
            linewidth=1.5,
            label=label,
        )
    )


def plot_receptive_field(
    magnitude: np.ndarray, trf: Any, erf: Any, halo: Sequence[int], divisor: int = 1
) -> Any:
    """Input-gradient magnitude of the centre pixel (log scale) with the TRF, ERF and halo boxes.

    Parameters
    ----------
    magnitude : (*spatial) from :func:`~microseg.inference.receptive_field.input_gradient_magnitude`.
    trf, erf : :class:`~microseg.inference.receptive_field.ReceptiveField` (theoretical, effective).
    halo : halo per axis, drawn as a square of side ``2·halo + 1`` around the pixel.
    divisor : the network's size divisor (where the measured pixel lies).
    """
    plane = _central_slice(magnitude)
    centre = plane.shape[-1] // 2 // divisor * divisor
    figure = _figure((5.5, 5))
    ax = figure.subplots()
    shown = np.log10(np.where(plane > 0, plane, np.nan))
    image = ax.imshow(shown, cmap="magma")
    ax.set_facecolor("black")
    figure.colorbar(image, ax=ax, label="log10 |∂ output / ∂ input| (black: 0)")
    _box(
        ax, centre, trf.left, trf.right, "cyan", f"theoretical RF {'x'.join(map(str, trf.extent))}"
    )
    _box(
        ax,
        centre,
        erf.left,
        erf.right,
        "lime",
        f"effective RF (95 %) {'x'.join(map(str, erf.extent))}",
    )
    _box(ax, centre, list(halo), list(halo), "white", f"halo {max(halo)}")
    reach = max(*trf.left[-2:], *trf.right[-2:], *halo[-2:]) + 4
    if not trf.whole_input:
        ax.set_xlim(centre - reach - 0.5, centre + reach + 0.5)
        ax.set_ylim(centre + reach + 0.5, centre - reach - 0.5)
    ax.legend(loc="lower left", fontsize=8, framealpha=0.8)
    title = (
        "every input pixel matters (tile-wise normalization)"
        if trf.whole_input
        else "receptive field"
    )
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    figure.tight_layout()
    return figure


def plot_mismatch_map(image: np.ndarray, mismatch: dict[str, Any]) -> Any:
    """The image, where tile pairs were compared (blue tint) and where they disagree (red to yellow).

    ``image`` (C, *spatial) and ``mismatch`` from :func:`~microseg.diagnostics.mismatch.tile_mismatch`
    (its ``map``: number of tile pairs whose hard predictions differ at each pixel).
    """
    plane = _central_slice(np.asarray(image)[0])
    counts = _central_slice(mismatch["map"]).astype(float)
    figure = _figure((10, 4.6))
    axes = figure.subplots(1, 2)
    axes[0].imshow(plane, cmap="gray")
    axes[0].set_title("input")
    axes[1].imshow(plane, cmap="gray")
    compared = _central_slice(mismatch["coverage"]) > 0
    axes[1].imshow(
        np.where(compared, 1.0, np.nan), cmap=_colour("deepskyblue"), vmin=0, vmax=1, alpha=0.25
    )
    overlay = np.where(counts > 0, counts, np.nan)
    shown = axes[1].imshow(
        overlay, cmap="autumn", vmin=0, vmax=max(1.0, np.nanmax(counts) if counts.any() else 1.0)
    )
    figure.colorbar(shown, ax=axes[1], label="tile pairs that disagree")
    values = ", ".join("-" if v is None else f"{v:.3f}" for v in mismatch["per_channel"])
    axes[1].set_title(
        f"tile mismatch per class: {values}"
        if mismatch["any"]
        else "tiles agree exactly where compared (blue)"
    )
    for ax in axes:
        ax.set_axis_off()
    figure.tight_layout()
    return figure


def plot_tile_sweep(table: Any) -> Any:
    """Dice per class (left axis) and tile mismatch (right axis) against the inner tile size.

    ``table`` from :func:`~microseg.diagnostics.sweep.tile_size_sweep`.
    """
    figure = _figure((6.5, 4))
    ax = figure.subplots()
    sizes = table["tile_size"].to_numpy()
    for column in [c for c in table.columns if c.startswith("dice_class") and c != "dice_class0"]:
        ax.plot(
            sizes,
            table[column].astype(float),
            marker="o",
            label=f"Dice class {column[len('dice_class') :]}",
        )
    ax.set_xlabel("inner tile size (pixels)")
    ax.set_ylabel("median Dice (eval mode)")
    ax.set_ylim(0, 1.02)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    mismatch_axis = ax.twinx()
    mismatch_axis.plot(
        sizes,
        table["mismatch"].astype(float),
        color="black",
        linestyle="--",
        marker="x",
        label="tile mismatch",
    )
    mismatch_axis.set_ylabel("tile mismatch")
    mismatch_axis.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()[0] + mismatch_axis.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.set_title("prediction against tile size")
    figure.tight_layout()
    return figure


def plot_norm_comparison(comparison: Any) -> Any:
    """One column per configuration: stitched prediction with the tile grid, and its seams.

    Seams are pixels where the stitched prediction differs from a whole-image prediction (red);
    a seamless configuration shows none. ``comparison`` from
    :func:`~microseg.diagnostics.comparison.compare_normalizations`.
    """
    names = list(comparison.examples)
    rows = {row["configuration"]: row for row in comparison.rows}
    figure = _figure((3.2 * len(names), 6.6))
    axes = figure.subplots(2, len(names), squeeze=False)
    for column, name in enumerate(names):
        example = comparison.examples[name]
        _draw_prediction(axes[0, column], example)
        axes[0, column].set_title(f"{name}\nDice {_dice_text(rows[name]['dice_eval'])}", fontsize=9)
        axes[1, column].imshow(example["image"], cmap="gray")
        axes[1, column].imshow(
            np.where(example["seams"], 1.0, np.nan), cmap=_colour("red"), vmin=0, vmax=1
        )
        row = rows[name]
        axes[1, column].set_title(
            f"seams: {int(example['seams'].sum())} px\nmismatch {row['mismatch']:.3f}, "
            f"disparity {row['disparity']:.3f}",
            fontsize=9,
        )
        for ax in axes[:, column]:
            ax.set_axis_off()
    figure.tight_layout()
    return figure


def _colour(name: str) -> Any:
    """A colormap of one colour, to paint a mask."""
    from matplotlib.colors import ListedColormap

    return ListedColormap([name])


def _draw_prediction(ax: Any, example: dict[str, Any]) -> None:
    ax.imshow(
        example["prediction"],
        cmap="viridis",
        vmin=0,
        vmax=max(2, int(example["truth"].max())),
        interpolation="nearest",
    )
    starts_y, starts_x = example["tile_starts"]
    for y in starts_y[1:]:
        ax.axhline(y - 0.5, color="white", linewidth=0.6, alpha=0.7)
    for x in starts_x[1:]:
        ax.axvline(x - 0.5, color="white", linewidth=0.6, alpha=0.7)


def _dice_text(dice: Sequence[float | None]) -> str:
    return ", ".join("-" if d is None else f"{d:.2f}" for d in dice[1:])
