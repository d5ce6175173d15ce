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
