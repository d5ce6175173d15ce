"""Figures: drawn without pyplot, one panel per item, saved as PNG."""

from __future__ import annotations

import numpy as np
import pandas as pd

from microseg.diagnostics import figures
from microseg.diagnostics.comparison import NormComparison
from microseg.inference.receptive_field import ReceptiveField


def no_pyplot_figures_left():
    import matplotlib.pyplot as plt

    return plt.get_fignums() == []


def test_receptive_field_figure_draws_three_boxes_and_zooms(tmp_path):
    magnitude = np.zeros((64, 64))
    magnitude[22:43, 22:43] = 1e-3
    magnitude[32, 32] = 1.0
    trf = ReceptiveField((10, 10), (10, 10))
    erf = ReceptiveField((2, 2), (3, 3))
    figure = figures.plot_receptive_field(magnitude, trf, erf, (12, 12), divisor=4)
    ax = figure.axes[0]
    assert len(ax.patches) == 3 and ax.get_xlim() == (32 - 16 - 0.5, 32 + 16 + 0.5)
    figure.savefig(tmp_path / "rf.png")
    assert (tmp_path / "rf.png").stat().st_size > 0 and no_pyplot_figures_left()


def test_mismatch_map_figure_3d_uses_the_central_slice():
    volume = np.zeros((1, 5, 20, 30))
    counts = np.zeros((5, 20, 30), dtype=np.int32)
    counts[2, 3:6, 4:9] = 2
    result = {
        "map": counts,
        "coverage": np.ones_like(counts),
        "per_channel": [0.0, 0.5, None],
        "any": True,
    }
    figure = figures.plot_mismatch_map(volume, result)
    overlay = figure.axes[1].images[-1].get_array()
    assert overlay.shape == (20, 30) and np.nansum(overlay) == 2 * 15
    assert "0.500" in figure.axes[1].get_title() and no_pyplot_figures_left()


def test_tile_sweep_figure_has_a_line_per_foreground_class_and_the_mismatch():
    table = pd.DataFrame(
        {
            "tile_size": [16, 32],
            "dice_class0": [0.9, 0.9],
            "dice_class1": [0.5, 0.6],
            "dice_class2": [0.2, 0.3],
            "mismatch": [0.1, None],
        }
    )
    figure = figures.plot_tile_sweep(table)
    assert len(figure.axes[0].lines) == 2 and len(figure.axes[1].lines) == 1


def test_norm_comparison_figure_has_a_column_per_configuration():
    example = {
        "image": np.zeros((16, 16)),
        "truth": np.zeros((16, 16), int),
        "prediction": np.zeros((16, 16), int),
        "seams": np.eye(16, dtype=bool),
        "tile_starts": [[0, 8], [0, 8]],
    }
    rows = [
        {"configuration": name, "dice_eval": [0.9, 0.8, None], "mismatch": 0.0, "disparity": 0.1}
        for name in ("batch/global", "none/global")
    ]
    comparison = NormComparison(rows, {row["configuration"]: example for row in rows}, {})
    figure = figures.plot_norm_comparison(comparison)
    assert len(figure.axes) == 4 and "seams: 16 px" in figure.axes[2].get_title(), (
        "row-major: top row first"
    )
    assert len(figure.axes[0].lines) == 2, "one vertical and one horizontal tile border"
