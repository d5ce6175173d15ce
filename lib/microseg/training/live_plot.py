"""Figures of training: loss curves (also redrawn live after every epoch), a hyperparameter
search, and validation predictions next to the truth.

matplotlib and IPython are imported when a figure is drawn, never at import.

Example
-------
>>> plot = LiveLossPlot(save_to="runs/demo/models/unet/loss_curves.png")  # doctest: +SKIP
>>> Trainer(..., callbacks=[plot]).fit()                                   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["LiveLossPlot", "plot_history", "plot_predictions", "plot_search"]


def plot_history(history: Sequence[dict[str, Any]], title: str | None = None) -> Any:
    """Figure with training/validation loss (left) and validation Dice (right) per epoch.

    ``history``: one dict per epoch with ``epoch``, ``train_loss``, ``val_loss`` and optionally
    ``val_dice``, ``val_foreground_dice`` (as in ``history.csv``). Returns the Figure.
    """
    import matplotlib.pyplot as plt

    figure, (loss_axes, dice_axes) = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [r["epoch"] for r in history]
    loss_axes.plot(epochs, [r["train_loss"] for r in history], "o-", ms=3, label="training")
    loss_axes.plot(epochs, [r["val_loss"] for r in history], "o-", ms=3, label="validation")
    loss_axes.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_axes.legend()
    for key, label in (("val_dice", "mean over classes"), ("val_foreground_dice", "objects")):
        if history and key in history[0]:
            dice_axes.plot(epochs, [r[key] for r in history], "o-", ms=3, label=label)
    dice_axes.set(xlabel="epoch", ylabel="Dice", title="validation Dice", ylim=(0, 1))
    dice_axes.legend(loc="lower right")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


class LiveLossPlot:
    """Trainer callback redrawing :func:`plot_history` after every epoch.

    In a notebook the figure updates in place; elsewhere nothing is shown. With ``save_to``
    the latest figure is also written there (PNG). The last figure is kept as ``.figure``.
    """

    def __init__(self, save_to: str | Path | None = None, title: str | None = None) -> None:
        self.save_to = None if save_to is None else Path(save_to)
        self.title = title
        self.figure: Any = None
        self._display: Any = None

    def __call__(self, trainer: Any, record: dict[str, Any]) -> None:
        import matplotlib.pyplot as plt

        if self.figure is not None:
            plt.close(self.figure)
        self.figure = plot_history(trainer.history, self.title)
        if self.save_to is not None:
            from microseg.runs import save_figure

            save_figure(self.figure, self.save_to)
        self._show()

    def _show(self) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None:
            return
        if self._display is None:
            self._display = display(self.figure, display_id=True)
        else:
            self._display.update(self.figure)


def plot_search(table: Any, score: str = "value") -> Any:
    """Figure of a hyperparameter search: score per trial and the best so far.

    ``table``: the DataFrame from :func:`microseg.training.tuning.tune_hyperparameters` (columns
    ``number``, ``state``, ``value``). Pruned trials are shown with their last reported score.
    """
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.6))
    for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
        rows = table[table["state"] == state]
        axes.plot(rows["number"], rows[score], marker, ls="none", label=state.lower())
    done = table[table["state"] == "COMPLETE"].sort_values("number")
    if len(done):
        axes.step(done["number"], done[score].cummax(), where="post", label="best so far")
    axes.set(xlabel="trial", ylabel="validation Dice", title="hyperparameter search")
    axes.legend()
    figure.tight_layout()
    return figure


def plot_predictions(rows: Sequence[tuple[str, Any, Any, Any]], n_classes: int) -> Any:
    """Figure with one row per image: image, truth, prediction (class maps in colour).

    ``rows``: (name, image (C, *S), truth (*S) class map, prediction (*S) class map); a long
    name is shortened in its middle to fit above its panel. Volumes
    show their middle Z plane, images their first channel (contrast stretched to the 1st and
    99.8th percentile). Returns the Figure.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from microseg.logs import shorten_middle

    figure, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for row, (name, image, truth, prediction) in zip(axes, rows, strict=True):
        plane = _middle_plane(np.asarray(image)[0])
        low, high = np.percentile(plane, (1.0, 99.8))
        row[0].imshow(plane, cmap="gray", vmin=low, vmax=high if high > low else low + 1)
        for axis, classes in zip(row[1:], (truth, prediction), strict=True):
            axis.imshow(_middle_plane(np.asarray(classes)), cmap="viridis", vmin=0,
                        vmax=max(1, n_classes - 1), interpolation="nearest")
        for axis, title in zip(row, (shorten_middle(name), "truth", "prediction"), strict=True):
            axis.set_title(title)
            axis.axis("off")
    figure.tight_layout()
    return figure


def _middle_plane(array: Any) -> Any:
    while array.ndim > 2:
        array = array[array.shape[0] // 2]
    return array
