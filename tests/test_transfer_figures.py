"""The figures of notebooks 03 and 04 draw what they are given."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from microseg.transfer.figures import show_comparison, show_predictions, show_rounds
from microseg.transfer.quality import Quality
from test_transfer_quality import class_map_sample, disc_labels


def test_predictions_one_row_per_image_one_column_per_model():
    samples = [class_map_sample("a", disc_labels()), class_map_sample("b", disc_labels())]
    quality = Quality("zero-shot", 0.5, None,
                      [{"stem": s.stem, "foreground_dice": 0.25 * (i + 1), "object_f1": None}
                       for i, s in enumerate(samples)],
                      [s.label for s in samples])
    figure = show_predictions(samples, [quality, quality], n=5)
    axes = np.array(figure.axes).reshape(2, 4)
    assert [a.get_title() for a in axes[1]] == ["b", "truth", "zero-shot: Dice 0.50",
                                                "zero-shot: Dice 0.50"]
    plt.close(figure)


def test_comparison_bars_and_rounds_line():
    table = pd.DataFrame({"model": ["zero-shot", "transfer"], "foreground_dice": [0.4, 0.8],
                          "object_f1": [None, 0.7]})
    figure = show_comparison(table)
    heights = [round(p.get_height(), 3) for p in figure.axes[0].patches]
    assert heights == [0.4, 0.8, 0.0, 0.7]
    plt.close(figure)
    figure = show_rounds([{"round": 1, "dice_before": 0.6, "dice_after": 0.7, "n_train": 6},
                          {"round": 2, "dice_before": 0.7, "dice_after": 0.75, "n_train": 8}])
    line = figure.axes[0].lines[0]
    assert list(line.get_xdata()) == [0, 1, 2] and list(line.get_ydata()) == [0.6, 0.7, 0.75]
    plt.close(figure)
    plt.close(show_rounds([]))
