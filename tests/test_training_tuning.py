"""Hyperparameter search: a tiny TPE and grid search, pruning, best configs usable as saved."""

import numpy as np
import pytest

from microseg.errors import ConfigError
from microseg.models import ModelConfig
from microseg.training.config import TrainConfig
from microseg.training.live_plot import plot_search
from microseg.training.tuning import (
    SearchSpace,
    _PruningCallback,
    apply_params,
    tune_hyperparameters,
)


def tiny_pairs(n, seed=0, shape=(32, 32)):
    rng = np.random.default_rng(seed)
    target = (rng.random((n, *shape)) > 0.6).astype(np.int64)
    image = (target + 0.3 * rng.standard_normal((n, *shape))).astype(np.float32)
    return [(image[i][None], target[i]) for i in range(n)]


BASE_MODEL = ModelConfig(ndim=2, channels=(4, 8, 16), strides=(2, 2), num_res_units=0,
                         out_classes=2)
BASE_TRAIN = TrainConfig(epochs=40, steps_per_epoch=7, batch_size=2, patch_size=(16, 16),
                         amp="none", val_tile=32)
SPACE = SearchSpace(learning_rates=(1e-3, 1e-2), batch_sizes=(2,), patch_sizes=(16, 32),
                    depths=(1, 2), norms=("batch", "none"), dice_weights=(0.0, 1.0),
                    trial_epochs=2, trial_steps_per_epoch=2)


def test_tpe_search_returns_a_table_and_usable_best_configs(tmp_path):
    result = tune_hyperparameters(tiny_pairs(3), tiny_pairs(1, seed=1), BASE_MODEL, BASE_TRAIN,
                                  SPACE, n_trials=3, seed=0, device="cpu", out_dir=tmp_path)
    table = result.table
    assert len(table) == 3 and set(table["state"]) <= {"COMPLETE", "PRUNED"}
    assert list(table["value"]) == sorted(table["value"], reverse=True)
    assert result.best_value == table["value"].iloc[0]
    assert {"learning_rate", "batch_size", "patch_size", "depth", "norm",
            "dice_weight"} <= set(table.columns)
    saved_train = TrainConfig.load(tmp_path / "best_train_config.json")
    saved_model = ModelConfig.load(tmp_path / "best_model_config.json")
    assert saved_train == result.train_config and saved_model == result.model_config
    assert saved_train.epochs == 40 and saved_train.steps_per_epoch == 7  # base length kept
    assert saved_train.learning_rate == pytest.approx(result.best_params["learning_rate"])
    assert saved_model.norm == result.best_params["norm"]
    assert len(saved_model.channels) == result.best_params["depth"] + 1
    assert (tmp_path / "search_results.csv").is_file()
    figure = plot_search(table)
    assert len(figure.axes) == 1


def test_grid_search_tries_each_combination_once():
    space = SPACE.replace(learning_rates=(1e-3,), patch_sizes=(16,), depths=(1,),
                          norms=("batch", "none"), dice_weights=(0.5,), trial_epochs=1)
    result = tune_hyperparameters(tiny_pairs(3), tiny_pairs(1, seed=1), BASE_MODEL, BASE_TRAIN,
                                  space, sampler="grid", n_trials=None, device="cpu")
    assert sorted(result.table["norm"]) == ["batch", "none"]
    assert set(result.table["learning_rate"]) == {1e-3}


def test_apply_params_rounds_the_patch_to_the_depth():
    model, train = apply_params({"learning_rate": 0.01, "batch_size": 4, "patch_size": 50,
                                 "depth": 3, "norm": "instance", "dice_weight": 0.25},
                                BASE_MODEL, BASE_TRAIN)
    assert model.channels == (4, 8, 16, 32) and model.strides == (2, 2, 2)
    assert train.patch_size == (48, 48) and train.ce_weight == 0.75
    assert train.loss == "dice+ce" and train.batch_size == 4


def test_pruning_callback_reports_and_stops():
    import optuna

    class FakeTrial:
        def __init__(self, prune):
            self.prune, self.reported = prune, []

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return self.prune

    keep = FakeTrial(prune=False)
    _PruningCallback(keep)(None, {"epoch": 1, "val_dice": float("nan")})
    assert keep.reported == [(1, 0.0)]
    with pytest.raises(optuna.TrialPruned, match="below the median"):
        _PruningCallback(FakeTrial(prune=True))(None, {"epoch": 2, "val_dice": 0.3})


def test_search_space_is_checked():
    with pytest.raises(ConfigError, match="norms: unknown 'layer'"):
        SearchSpace(norms=("layer",))
    with pytest.raises(ConfigError, match="n_trials or timeout"):
        tune_hyperparameters([], [], BASE_MODEL, BASE_TRAIN, n_trials=None)
