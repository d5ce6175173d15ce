"""Loss-curve figures and the live callback (headless: saves the figure, shows nothing)."""

import matplotlib

from microseg.training.live_plot import LiveLossPlot, plot_history

HISTORY = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "val_dice": 0.5 + e / 20,
            "val_foreground_dice": 0.6 + e / 20} for e in range(1, 6)]


def test_plot_history_draws_both_panels():
    figure = plot_history(HISTORY, title="unet")
    loss, dice = figure.axes
    assert [len(line.get_xdata()) for line in loss.lines] == [5, 5]
    assert list(dice.lines[0].get_ydata()) == [r["val_dice"] for r in HISTORY]
    assert figure._suptitle.get_text() == "unet"
    matplotlib.pyplot.close(figure)


def test_live_plot_saves_the_latest_figure(tmp_path):
    class FakeTrainer:
        history = HISTORY[:2]

    plot = LiveLossPlot(save_to=tmp_path / "curves.png")
    plot(FakeTrainer(), HISTORY[1])
    first = plot.figure
    FakeTrainer.history = HISTORY
    plot(FakeTrainer(), HISTORY[-1])
    assert plot.figure is not first
    assert len(plot.figure.axes[0].lines[0].get_xdata()) == 5
    assert (tmp_path / "curves.png").stat().st_size > 1000
    matplotlib.pyplot.close(plot.figure)


def test_long_image_names_fit_their_panels():
    import numpy as np

    from microseg.training.live_plot import plot_predictions

    name = "2026-12-03_HeLa-H2B-GFP_confocal-63x_plate01_wellB07_field003_z0"
    classes = np.zeros((16, 16), np.int64)
    figure = plot_predictions([(name, np.zeros((1, 16, 16)), classes, classes)] * 2, 3)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    for axis in figure.axes:
        assert axis.title.get_window_extent(renderer).width <= \
            axis.get_window_extent(renderer).width
    assert figure.axes[0].get_title().startswith("2026-12") and "…" in figure.axes[0].get_title()
    matplotlib.pyplot.close(figure)
