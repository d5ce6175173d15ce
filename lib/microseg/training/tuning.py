"""Hyperparameter search with Optuna: short trainings scored on the validation images.

Searched: learning rate, batch size, patch size, depth (down-samplings of the U-Net), feature
normalization and the Dice/cross-entropy weighting of the loss. Two strategies:

- ``"tpe"`` — Bayesian optimisation (Tree-structured Parzen Estimator): each trial is chosen
  from what earlier trials showed; the learning rate is drawn log-uniformly between the smallest
  and largest value listed, the Dice weight uniformly between its extremes;
- ``"grid"`` — every combination of the listed values (in random order) until the budget ends.

Each trial trains a fresh model for ``trial_epochs`` × ``trial_steps_per_epoch`` steps and
reports the validation Dice after every epoch; trials worse than the median of earlier trials
at the same epoch are stopped early (pruned). The score is the best validation Dice of the trial
(not the loss, which is not comparable between different loss weightings).

The best setting comes back as a ModelConfig and a TrainConfig — the base configs with the
winning values, the base run length kept — and :func:`save_best_configs` writes them as JSON
that :func:`microseg.recipes.train.train_model` (``tuned=``) uses directly.

Example
-------
>>> result = tune_hyperparameters(train, val, model_preset("default2d"), TrainConfig(),
...                               n_trials=20, timeout=600)                  # doctest: +SKIP
>>> result.table.head()                                                      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from microseg.config import StageConfig
from microseg.errors import ConfigError, MicrosegError
from microseg.training.config import TrainConfig

__all__ = [
    "SearchResult",
    "SearchSpace",
    "apply_params",
    "save_best_configs",
    "tune_hyperparameters",
]

log = logging.getLogger(__name__)

BEST_MODEL_CONFIG = "best_model_config.json"
BEST_TRAIN_CONFIG = "best_train_config.json"


@dataclasses.dataclass
class SearchSpace(StageConfig):
    """The values a hyperparameter search may choose from.

    learning_rates : grid values; TPE draws log-uniformly between the smallest and largest.
    batch_sizes : patches per batch.
    patch_sizes : patch side, the same along every spatial axis (rounded down to the model's
        size divisor).
    depths : down-samplings of the U-Net (levels − 1); features double per level from the base
        model's first width.
    norms : feature normalizations ("batchrenorm", "batch", "instance", "group", "none").
    dice_weights : weight w of the Dice term; cross-entropy gets 1 − w (grid values; TPE draws
        uniformly between the smallest and largest).
    trial_epochs, trial_steps_per_epoch : length of each trial's training.
    """

    learning_rates: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    batch_sizes: tuple[int, ...] = (4, 8)
    patch_sizes: tuple[int, ...] = (64, 128)
    depths: tuple[int, ...] = (2, 3)
    norms: tuple[str, ...] = ("batchrenorm", "batch", "instance")
    dice_weights: tuple[float, ...] = (0.0, 0.5, 1.0)
    trial_epochs: int = 6
    trial_steps_per_epoch: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        lists = ("learning_rates", "batch_sizes", "patch_sizes", "depths", "norms",
                 "dice_weights")
        problems = [f"{name} must list at least one value" for name in lists
                    if not getattr(self, name)]
        known = ("batch", "instance", "batchrenorm", "group", "none")
        problems += [f"norms: unknown {n!r}, choose from {known}" for n in self.norms
                     if n not in known]
        if any(not 0 <= w <= 1 for w in self.dice_weights):
            problems.append(f"dice_weights must lie in [0, 1], found {self.dice_weights}")
        if min(self.trial_epochs, self.trial_steps_per_epoch) < 1:
            problems.append("trial_epochs and trial_steps_per_epoch must be >= 1")
        if problems:
            raise ConfigError("SearchSpace is not valid:\n"
                              + "\n".join(f"  - {p}" for p in problems))


@dataclasses.dataclass
class SearchResult:
    """table : one row per trial (``number``, ``state``, ``value`` = best validation Dice,
    ``seconds``, then the parameters), best first. best_params : the winning values.
    best_value : its score. model_config, train_config : the base configs with those values.
    study : the Optuna study."""

    table: Any
    best_params: dict[str, Any]
    best_value: float
    model_config: Any
    train_config: TrainConfig
    study: Any


def tune_hyperparameters(train_data: Sequence[Any], val_data: Sequence[Any], model_config: Any,
                         train_config: TrainConfig, space: SearchSpace | None = None, *,
                         sampler: Literal["tpe", "grid"] = "tpe", n_trials: int | None = 20,
                         timeout: float | None = None, seed: int = 0, device: Any = "auto",
                         augment_factory: Any = None, out_dir: str | Path | None = None
                         ) -> SearchResult:
    """Search hyperparameters with short trainings; return the table and the best configs.

    Parameters
    ----------
    train_data, val_data : as for :class:`~microseg.training.trainer.Trainer`.
    model_config, train_config : the base configs; each trial changes the searched fields.
    space : what to search (default :class:`SearchSpace`).
    sampler : ``"tpe"`` (Bayesian optimisation) or ``"grid"``.
    n_trials, timeout : budget: at most this many trials and/or seconds (None = no limit; a
        grid search also ends when every combination was tried).
    seed : seeds the sampler and every trial's training.
    device, augment_factory : passed to each trial's Trainer.
    out_dir : if given, the table (``search_results.csv``) and the best configs are written there.

    Raises
    ------
    MicrosegError
        If no trial finished (every one failed, e.g. a patch larger than the images).
    """
    import optuna

    space = space or SearchSpace()
    if n_trials is None and timeout is None and sampler == "tpe":
        raise ConfigError("give n_trials or timeout: a TPE search has no natural end")
    study = optuna.create_study(direction="maximize", sampler=_sampler(sampler, space, seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2,
                                                                   n_warmup_steps=1))
    objective = _Objective(train_data, val_data, model_config, train_config, space, seed,
                           device, augment_factory)
    study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(MicrosegError,))
    table = _trials_table(study)
    if not (table["state"] == "COMPLETE").any():
        raise MicrosegError("no hyperparameter trial finished; see the errors logged above "
                            "(e.g. patch_sizes larger than the images)")
    best = study.best_trial
    params = dict(best.user_attrs["params"])
    model, train = apply_params(params, model_config, train_config)
    result = SearchResult(table, params, float(best.value), model,
                          train.replace(epochs=train_config.epochs,
                                        steps_per_epoch=train_config.steps_per_epoch), study)
    if out_dir is not None:
        save_best_configs(result, out_dir)
    return result


def apply_params(params: dict[str, Any], model_config: Any, train_config: TrainConfig
                 ) -> tuple[Any, TrainConfig]:
    """The base configs with a trial's parameters applied (see :class:`SearchSpace`)."""
    depth = int(params["depth"])
    width = model_config.channels[0]
    model = model_config.replace(channels=tuple(width * 2**k for k in range(depth + 1)),
                                 strides=(2,) * depth, norm=params["norm"])
    divisor = 2**depth
    side = max(divisor, int(params["patch_size"]) // divisor * divisor)
    weight = float(params["dice_weight"])
    train = train_config.replace(
        learning_rate=float(params["learning_rate"]), batch_size=int(params["batch_size"]),
        patch_size=(side,) * model_config.ndim, loss="dice+ce", dice_weight=weight,
        ce_weight=1.0 - weight)
    return model, train


def save_best_configs(result: SearchResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``best_model_config.json``, ``best_train_config.json`` and ``search_results.csv``.

    Load them with ``ModelConfig.load`` / ``TrainConfig.load``. Returns the paths by name.
    """
    from microseg.runs import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"model_config": result.model_config.save(out / BEST_MODEL_CONFIG),
             "train_config": result.train_config.save(out / BEST_TRAIN_CONFIG),
             "table": atomic_write_text(out / "search_results.csv",
                                        result.table.to_csv(index=False))}
    log.info("best hyperparameters (validation Dice %.3f) saved in %s",
             result.best_value, out)
    return paths


def _trials_table(study: Any) -> Any:
    """One row per trial, best first: number, state, value, seconds, parameters.

    A pruned trial's value is the best Dice it reported before it was stopped.
    """
    import pandas as pd

    rows = []
    for trial in study.trials:
        reported = [v for v in trial.intermediate_values.values() if not math.isnan(v)]
        value = trial.value if trial.value is not None else max(reported, default=math.nan)
        seconds = trial.user_attrs.get("seconds", math.nan)
        rows.append({"number": trial.number, "state": trial.state.name, "value": value,
                     "seconds": seconds, **trial.user_attrs.get("params", trial.params)})
    table = pd.DataFrame(rows)
    return table.sort_values("value", ascending=False, na_position="last").reset_index(
        drop=True)


class _Objective:
    """One trial: build the configs, train briefly, report Dice each epoch, return the best."""

    def __init__(self, train_data: Sequence[Any], val_data: Sequence[Any], model_config: Any,
                 train_config: TrainConfig, space: SearchSpace, seed: int, device: Any,
                 augment_factory: Any) -> None:
        self.train_data = train_data
        self.val_data = val_data
        self.model_config = model_config
        self.train_config = train_config.replace(
            epochs=space.trial_epochs, steps_per_epoch=space.trial_steps_per_epoch,
            seed=seed, renorm_warmup_steps=None, renorm_ramp_steps=None)
        self.space = space
        self.seed = seed
        self.device = device
        self.augment_factory = augment_factory

    def __call__(self, trial: Any) -> float:
        from microseg.models import build_model
        from microseg.training.trainer import Trainer, seed_everything

        started = time.perf_counter()
        params = _suggest(trial, self.space)
        trial.set_user_attr("params", params)
        model_config, train_config = apply_params(params, self.model_config, self.train_config)
        seed_everything(self.seed)
        trainer = Trainer(build_model(model_config), train_config, self.train_data,
                          self.val_data, model_config=model_config, device=self.device,
                          augment_factory=self.augment_factory,
                          callbacks=[_PruningCallback(trial)], progress=False)
        try:
            result = trainer.fit()
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - started)
        return max((_score(r) for r in result.history), default=0.0)


class _PruningCallback:
    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def __call__(self, trainer: Any, record: dict[str, Any]) -> None:
        import optuna

        self.trial.report(_score(record), step=record["epoch"])
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"validation Dice {_score(record):.3f} after epoch "
                                     f"{record['epoch']} is below the median of earlier trials")


def _score(record: dict[str, Any]) -> float:
    dice = record["val_dice"]
    return 0.0 if math.isnan(dice) else float(dice)


def _suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    rates, weights = space.learning_rates, space.dice_weights
    return {
        "learning_rate": trial.suggest_float("learning_rate", min(rates), max(rates), log=True)
        if min(rates) < max(rates) else rates[0],
        "batch_size": trial.suggest_categorical("batch_size", list(space.batch_sizes)),
        "patch_size": trial.suggest_categorical("patch_size", list(space.patch_sizes)),
        "depth": trial.suggest_categorical("depth", list(space.depths)),
        "norm": trial.suggest_categorical("norm", list(space.norms)),
        "dice_weight": trial.suggest_float("dice_weight", min(weights), max(weights))
        if min(weights) < max(weights) else weights[0],
    }


def _sampler(kind: str, space: SearchSpace, seed: int) -> Any:
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "grid":
        grid = {"learning_rate": list(space.learning_rates),
                "batch_size": list(space.batch_sizes), "patch_size": list(space.patch_sizes),
                "depth": list(space.depths), "norm": list(space.norms),
                "dice_weight": list(space.dice_weights)}
        return optuna.samplers.GridSampler(grid, seed=seed)
    raise ConfigError(f"unknown sampler {kind!r}; choose 'tpe' or 'grid'")
