"""diagnose_fit on synthetic loss curves with a known verdict."""

import numpy as np
import pytest

from microseg.training.diagnosis import diagnose_fit
from microseg.training.history import write_history_csv

EPOCHS = np.arange(40)


def curves(train, val):
    return {"train_loss": train, "val_loss": val}


def noisy(values, seed=0, scale=0.003):
    return values + np.random.default_rng(seed).normal(0, scale, len(values))


def test_good_fit():
    train = np.exp(-EPOCHS / 5) + 0.1
    diagnosis = diagnose_fit(curves(noisy(train), noisy(train + 0.03, seed=1)))
    assert diagnosis.verdict == "good fit"
    assert "levelled off" in diagnosis.reason


def test_still_falling_is_under_fitting():
    train = 1.0 - 0.02 * EPOCHS
    diagnosis = diagnose_fit(curves(train, train + 0.05))
    assert diagnosis.verdict == "under-fitting" and "Train longer" in diagnosis.reason


def test_high_and_flat_is_under_fitting():
    train = 1.0 - 0.2 * (1 - np.exp(-EPOCHS / 2))
    diagnosis = diagnose_fit(curves(noisy(train), noisy(train + 0.02, seed=1)))
    assert diagnosis.verdict == "under-fitting"
    assert "larger model" in diagnosis.reason and "learning rate" in diagnosis.reason


def test_rising_validation_is_over_fitting():
    train = np.exp(-EPOCHS / 8)
    val = 0.4 + 0.6 * np.exp(-EPOCHS / 4) + 0.01 * np.maximum(0, EPOCHS - 12)
    diagnosis = diagnose_fit(curves(train, val))
    assert diagnosis.verdict == "over-fitting"
    assert "epoch 13" in diagnosis.reason  # the lowest validation loss


def test_train_far_below_stalled_validation_is_over_fitting():
    train = np.exp(-EPOCHS / 4) * 0.9 + 0.1 - 0.002 * EPOCHS
    val = np.full(40, 0.6)
    val[:10] = np.linspace(1.0, 0.6, 10)
    assert diagnose_fit(curves(train, val)).verdict == "over-fitting"


def test_too_short():
    diagnosis = diagnose_fit(curves([1.0, 0.8, 0.7], [1.1, 0.9, 0.8]))
    assert diagnosis.verdict == "too short to tell" and "3 epoch(s)" in diagnosis.reason


def test_every_history_form_gives_the_same_verdict(tmp_path):
    import pandas as pd

    train = 1.0 - 0.02 * EPOCHS
    rows = [{"epoch": int(e) + 1, "train_loss": float(t), "val_loss": float(t) + 0.05}
            for e, t in zip(EPOCHS, train, strict=True)]
    path = write_history_csv(tmp_path / "history.csv", rows)
    verdicts = {diagnose_fit(form).verdict
                for form in (rows, pd.DataFrame(rows), path, str(path))}
    assert verdicts == {"under-fitting"}
    assert diagnose_fit(rows).to_dict()["verdict"] == "under-fitting"


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="val_loss missing"):
        diagnose_fit({"train_loss": [1.0, 0.9]})


def test_a_run_whose_validation_dice_still_rises_is_still_improving():
    """The cosine schedule flattens the losses at the end, but the Dice keeps rising."""
    epochs = np.arange(40)
    train = 0.5 * np.exp(-epochs / 4) + 0.3
    val = train + 0.02
    dice = 0.59 + 0.12 * epochs / 39
    diagnosis = diagnose_fit({"train_loss": train, "val_loss": val, "val_dice": dice})
    assert diagnosis.verdict == "still improving"
    assert "0.710" in diagnosis.reason and "epoch 40 of 40" in diagnosis.reason
    flat = np.minimum(dice, 0.65)
    settled = diagnose_fit({"train_loss": train, "val_loss": val, "val_dice": flat})
    assert settled.verdict == "good fit"
    assert diagnose_fit({"train_loss": train, "val_loss": val}).verdict == "good fit"
