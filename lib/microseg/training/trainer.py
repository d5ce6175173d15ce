"""The training loop: one :class:`Trainer` from a model, a TrainConfig and training/validation data.

What one epoch does
-------------------
``steps_per_epoch`` optimizer steps, each summing ``grad_accumulation`` forward/backward passes
on random patches (:class:`~microseg.training.sampling.PatchSampler`), then the BatchRenorm
schedule advances by one (optimizer steps only: accumulation micro-steps and validation never
advance it). Then validation in eval mode (running statistics untouched): loss and hard Dice
(argmax) on whole validation images, or on a fixed set of patches of the large ones
(``val_tile``). The learning-rate scheduler steps, ``best.pt`` is written when the validation
loss improved, then ``latest.pt`` and ``history.csv``, then the ``callbacks`` run.

Reproducible and resumable
--------------------------
Batches depend only on (seed, rank, epoch, index); the random generators' states, optimizer,
scheduler, scaler and schedule are saved at every epoch end. A run killed at any point and
started again with ``resume=True`` continues from ``latest.pt`` and, on the CPU with the same
thread count, ends with bitwise the same weights and history (except the timing columns).

Why one module of about 700 lines: one training loop whose parts (epoch, validation,
checkpoint, resume, early stopping, the out-of-memory back-off) share the trainer's state;
schedules, history, losses and the fit diagnosis are in their own modules.

Example
-------
>>> trainer = Trainer(model, TrainConfig(epochs=20), train_samples, val_samples,
...                   model_config=model_config, model_dir="runs/demo/models/unet")  # doctest: +SKIP
>>> result = trainer.fit()                                                          # doctest: +SKIP
>>> result.best_val_dice                                                            # doctest: +SKIP
0.93
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from microseg.devices import resolve_device
from microseg.errors import ConfigError, MicrosegError, OutputExistsError
from microseg.models.checkpoint import load_checkpoint, save_checkpoint
from microseg.runs import (
    BEST_CHECKPOINT,
    HISTORY_FILE,
    LATEST_CHECKPOINT,
    MODEL_CONFIG_FILE,
    TRAIN_CONFIG_FILE,
)
from microseg.training.checkpoint import restore_rng_states, rng_states
from microseg.training.config import TrainConfig
from microseg.training.distributed import (
    DistributedContext,
    all_reduce_sum,
    broadcast_buffers,
    wrap_model,
)
from microseg.training.history import write_history_csv
from microseg.training.losses import make_loss
from microseg.training.sampling import AugmentFactory, PatchSampler
from microseg.training.validation import dice_from_confusion, validation_items

__all__ = [
    "EpochCallback",
    "FitResult",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "find_max_batch_size",
    "out_of_memory_message",
    "seed_everything",
]

log = logging.getLogger(__name__)

EpochCallback = Callable[["Trainer", dict[str, Any]], None]
"""``callback(trainer, record)`` after every epoch; ``record`` is the new history row."""

_RESUME_MAY_CHANGE = ("epochs", "patience", "num_workers", "max_minutes")

MAX_PLANNED_EPOCHS = 1000
"""A time budget never plans more epochs than this."""


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's generators (weights init, dropout)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(parameters: Any, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` names over ``parameters`` (tensors or param groups)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.learning_rate, momentum=config.momentum,
                               nesterov=config.momentum > 0, weight_decay=config.weight_decay)
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    """The learning-rate scheduler ``config.scheduler`` names (None for ``"none"``).

    ``"plateau"`` steps with the validation loss after each epoch, ``"cosine"`` once per epoch.
    """
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.lr_factor, patience=config.lr_patience,
            min_lr=config.min_learning_rate)
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.epochs, eta_min=config.min_learning_rate)
    return None


@dataclasses.dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns.

    history : one dict per epoch (see :data:`~microseg.training.history.HISTORY_COLUMNS`).
    best_epoch : epoch (1-based) of the lowest validation loss; its weights are in ``best.pt``.
    best_val_loss, best_val_dice : validation loss and Dice at ``best_epoch``.
    epochs_run : epochs finished; stopped_early : patience ran out before ``epochs``.
    steps : optimizer steps taken; seconds : wall-clock time of this call.
    model_dir : where the model folder was written (None when not saving); device : e.g. "cpu".
    """

    history: list[dict[str, Any]]
    best_epoch: int
    best_val_loss: float
    best_val_dice: float
    epochs_run: int
    stopped_early: bool
    steps: int
    seconds: float
    model_dir: Path | None
    device: str


class Trainer:
    """Trains ``model`` on random patches of ``train_data``, validating on ``val_data``.

    Parameters
    ----------
    model : a network mapping (N, C, *spatial) to logits (N, K, *spatial) (e.g.
        :func:`microseg.models.build_model`), freshly initialized or pretrained. It is moved to
        the device and trained in place. ``model.train()`` is called at every epoch start, so a
        module that keeps frozen parts in eval mode should override ``train``.
    config : the :class:`TrainConfig`.
    train_data, val_data : Samples (``.image`` (C, *S) float32 normalized, ``.target`` (*S)
        class map, ``.stem``) or (image, target) pairs.
    model_config : the model's ModelConfig; saved as ``config.json`` and used for the
        BatchRenorm limits and the size divisor. Needed when ``model_dir`` is given.
    model_dir : the model folder to write (see :mod:`microseg.models.checkpoint`), or None to
        keep everything in memory (quick experiments, hyperparameter trials).
    device : ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...; ignored when distributed.
    augment_factory : ``seed -> augment(image, target)`` (see
        :class:`~microseg.training.sampling.PatchSampler`), or None.
    callbacks : ``callback(trainer, record)`` after every epoch (first process only).
    overwrite : write into a model folder that already holds files.
    resume : continue from ``model_dir/latest.pt`` when it exists (else start fresh).
    distributed : the :class:`~microseg.training.distributed.DistributedContext` of a
        ``torchrun`` run, or None for one process.
    parameters : what the optimizer updates (tensors or param groups with their own learning
        rates); default every parameter with ``requires_grad``.
    progress : show a progress bar.

    Raises
    ------
    OutputExistsError
        If ``model_dir`` already holds files and neither ``overwrite`` nor ``resume`` is set.
    ConfigError
        If ``resume`` finds a run trained with different settings.
    DataError
        For unusable data (see :mod:`microseg.training.sampling`).
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, train_data: Sequence[Any],
                 val_data: Sequence[Any], *, model_config: Any = None,
                 model_dir: str | Path | None = None, device: Any = "auto",
                 augment_factory: AugmentFactory | None = None,
                 callbacks: Sequence[EpochCallback] = (), overwrite: bool = False,
                 resume: bool = False, distributed: DistributedContext | None = None,
                 parameters: Any = None, progress: bool = True) -> None:
        self.config = config
        self.model_config = model_config
        self.context = distributed or DistributedContext()
        self.device = self.context.device() if self.context.enabled else resolve_device(device)
        self.memory_format = _memory_format(config, model_config)
        self.module = model.to(self.device, memory_format=self.memory_format)
        self.network = wrap_model(self.module, self.context)
        if config.compile:
            self.network = torch.compile(self.network)
        self.callbacks = list(callbacks)
        self.progress = progress
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.loss_function = make_loss(config.loss, config.dice_weight, config.ce_weight,
                                       config.class_weights)
        if parameters is None:
            parameters = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(parameters, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.amp_dtype, self.scaler = _mixed_precision(config, self.device)
        self.renorm = _renorm_schedule(self.module, config, model_config)
        divisor = int(getattr(self.module, "size_divisor", 1) or 1)
        self.sampler = PatchSampler(
            train_data, config.patch_size, config.batch_size, seed=config.seed,
            rank=self.context.rank, min_foreground=config.min_foreground,
            max_retries=config.max_retries, augment_factory=augment_factory,
            size_divisor=divisor)
        self.validation_items = validation_items(val_data, config, divisor, model_config)
        self.n_classes: int | None = None
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best_epoch = 0
        self.best_val_loss = math.inf
        self.best_val_dice = math.nan
        self.stopped_early = False
        self._resumed = self._prepare_model_dir(overwrite, resume)

    def fit(self) -> FitResult:
        """Train until ``epochs`` or early stopping; write the model folder; return the result.

        Raises
        ------
        MicrosegError
            On GPU out-of-memory (saying what to reduce and by how much) or a loss that became
            NaN or infinite (saying to lower the learning rate).
        """
        started = self._started = time.perf_counter()
        self._epochs_before = len(self.history)
        with _torch_settings(self.config, self.device):
            if not self._resumed:
                seed_everything(self.config.seed + self.context.rank)
                self._write_run_files()
            if self.renorm is not None:
                self.renorm.apply(self.module, self.step)
            with self._progress_bar() as bar:
                while self.epoch < self.config.epochs and not self.stopped_early:
                    record = self._train_and_validate(bar)
                    self._end_epoch(record)
                    bar.total = self.config.total_steps
        return self.result(time.perf_counter() - started)

    def validate(self) -> dict[str, float]:
        """Validation loss and hard Dice of the current model, in eval mode.

        Returns ``val_loss`` (mean loss over validation images/patches), ``val_dice`` (mean Dice
        over the foreground classes present in truth or prediction; NaN if none),
        ``val_foreground_dice`` (all non-background classes merged) and ``val_dice_class<k>``.
        Each process of a distributed run validates a share; the sums are combined.
        """
        mine = self.validation_items[self.context.rank::self.context.world_size]
        n_classes = self._output_classes()
        totals = torch.zeros(1 + n_classes * n_classes, dtype=torch.float64)
        self.module.eval()
        with torch.no_grad():
            for item in mine:
                logits = self._predict_whole(item.image)
                target = torch.from_numpy(np.ascontiguousarray(item.target, dtype=np.int64))
                target = target[None].to(self.device)
                totals[0] += float(self.loss_function(logits, target))
                prediction = logits.argmax(1)
                pairs = (target * n_classes + prediction).flatten()
                totals[1:] += torch.bincount(pairs, minlength=n_classes ** 2).double().cpu()
        all_reduce_sum(totals, self.context)
        confusion = totals[1:].reshape(n_classes, n_classes).numpy()
        return {"val_loss": float(totals[0]) / max(1, len(self.validation_items)),
                **dice_from_confusion(confusion)}

    def result(self, seconds: float = 0.0) -> FitResult:
        """The current state as a :class:`FitResult`."""
        return FitResult(
            history=[dict(r) for r in self.history], best_epoch=self.best_epoch,
            best_val_loss=self.best_val_loss, best_val_dice=self.best_val_dice,
            epochs_run=self.epoch, stopped_early=self.stopped_early, steps=self.step,
            seconds=seconds, model_dir=self.model_dir, device=str(self.device))

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds (plain data and tensors)."""
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "renorm_schedule": None if self.renorm is None else self.renorm.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_states(),
            "epoch": self.epoch,
            "step": self.step,
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "best_val_dice": self.best_val_dice,
            "stopped_early": self.stopped_early,
            "history": [dict(r) for r in self.history],
            "model_config": None if self.model_config is None else self.model_config.to_dict(),
            "train_config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (as read from a checkpoint)."""
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for part, name in ((self.scheduler, "scheduler"), (self.scaler, "scaler"),
                           (self.renorm, "renorm_schedule"), (self.sampler, "sampler")):
            if part is not None and state[name] is not None:
                part.load_state_dict(state[name])
        restore_rng_states(state["rng"])
        for name in ("epoch", "step", "best_epoch", "best_val_loss", "best_val_dice",
                     "stopped_early"):
            setattr(self, name, state[name])
        self.history = [dict(r) for r in state["history"]]
        self._check_scheduler_length()

    def _train_and_validate(self, bar: Any) -> dict[str, Any]:
        started = time.perf_counter()
        learning_rate = self.optimizer.param_groups[0]["lr"]
        try:
            train_loss, data_seconds = self._train_epoch(bar)
            validation = self.validate()
        except torch.cuda.OutOfMemoryError:
            divisor = int(getattr(self.module, "size_divisor", 1) or 1)
            raise MicrosegError(out_of_memory_message(self.config, self.device,
                                                      divisor)) from None
        self.epoch += 1
        r_max, d_max = (1.0, 0.0) if self.renorm is None else self.renorm.limits(self.step)
        return {"epoch": self.epoch, "train_loss": train_loss, **validation,
                "learning_rate": learning_rate, "renorm_r_max": r_max, "renorm_d_max": d_max,
                "steps": self.step, "seconds": time.perf_counter() - started,
                "data_seconds": data_seconds}

    def _train_epoch(self, bar: Any) -> tuple[float, float]:
        config = self.config
        self.network.train()
        batches = self.sampler.batches(self.epoch, config.steps_per_epoch
                                       * config.grad_accumulation, config.num_workers)
        running = torch.zeros((), dtype=torch.float64, device=self.device)
        data_seconds = 0.0
        try:
            for _ in range(config.steps_per_epoch):
                loss, waited = self._optimizer_step(batches)
                running += loss
                data_seconds += waited
                bar.update(1)
        finally:
            batches.close()
        broadcast_buffers(self.module, self.context)
        total = all_reduce_sum(running.cpu().reshape(1), self.context)
        train_loss = float(total) / (config.steps_per_epoch * self.context.world_size)
        if not math.isfinite(train_loss):
            raise MicrosegError(
                f"the training loss became {train_loss} in epoch {self.epoch + 1}: lower the "
                f"learning rate (now {config.learning_rate:g}; try {config.learning_rate / 10:g})"
                f" or check the images for extreme values")
        return train_loss, data_seconds

    def _optimizer_step(self, batches: Iterator[Any]) -> tuple[torch.Tensor, float]:
        """One optimizer step over ``grad_accumulation`` batches: (loss, seconds waiting).

        The loss stays a tensor on the device, so a GPU is not synchronized at every step.
        """
        accumulation = self.config.grad_accumulation
        self.optimizer.zero_grad(set_to_none=True)
        step_loss, waited = torch.zeros((), dtype=torch.float64, device=self.device), 0.0
        for micro in range(accumulation):
            before = time.perf_counter()
            images, targets = next(batches)
            waited += time.perf_counter() - before
            images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
            targets = targets.to(self.device, non_blocking=True)
            with self._gradient_sync(micro == accumulation - 1), self._autocast():
                logits = self.network(images)
            loss = self.loss_function(logits, targets) / accumulation
            self._backward(loss)
            step_loss += loss.detach()
        self._apply_gradients()
        self.step += 1
        if self.renorm is not None:
            self.renorm.apply(self.module, self.step)
        return step_loss, waited

    def _backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def _apply_gradients(self) -> None:
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()

    def _gradient_sync(self, sync: bool) -> contextlib.AbstractContextManager:
        if self.context.enabled and not sync:
            return self.network.no_sync()
        return contextlib.nullcontext()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _predict_whole(self, image: np.ndarray) -> torch.Tensor:
        """Logits (1, K, *S) of one image (C, *S), padded to the size divisor and cropped."""
        divisor = int(getattr(self.module, "size_divisor", 1) or 1)
        spatial = image.shape[1:]
        widths = [(0, -s % divisor) for s in spatial]
        padded = np.pad(image, [(0, 0), *widths], mode="symmetric")
        inputs = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32))[None]
        with self._autocast():
            logits = self.module(inputs.to(self.device))
        crop = (slice(None), slice(None), *(slice(0, s) for s in spatial))
        return logits[crop].float()

    def _output_classes(self) -> int:
        if self.n_classes is None:
            if self.model_config is not None:
                self.n_classes = int(self.model_config.out_classes)
            else:
                self.n_classes = int(self._predict_whole(self.validation_items[0].image).shape[1])
        return self.n_classes

    def _end_epoch(self, record: dict[str, Any]) -> None:
        improved = record["val_loss"] < self.best_val_loss
        if improved:
            self.best_epoch = record["epoch"]
            self.best_val_loss = record["val_loss"]
            self.best_val_dice = record["val_dice"]
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(record["val_loss"])
        elif self.scheduler is not None:
            self.scheduler.step()
        self.history.append(record)
        if self.config.max_minutes is not None:
            self._plan_for_budget()
        self.stopped_early = self._should_stop()
        self._save(improved)
        log.info("epoch %d/%d: train loss %.4f, val loss %.4f, val Dice %.3f%s",
                 record["epoch"], self.config.epochs, record["train_loss"],
                 record["val_loss"], record["val_dice"], " (best)" if improved else "")
        if self.context.is_main:
            for callback in self.callbacks:
                callback(self, record)

    def _plan_for_budget(self) -> None:
        """Set ``epochs`` so that training ends inside ``max_minutes``: the epochs done plus as
        many as the time left holds at the mean duration of this run's epochs so far. The
        cosine schedule and the BatchRenorm schedule follow the new length."""
        done = [r["seconds"] for r in self.history[self._epochs_before:]]
        left = 60.0 * self.config.max_minutes - (time.perf_counter() - self._started)
        epochs = self.epoch + max(0, int(left // (sum(done) / len(done))))
        epochs = min(MAX_PLANNED_EPOCHS, max(self.epoch, epochs))
        if epochs == self.config.epochs:
            return
        if self.epoch == 1 or abs(epochs - self.config.epochs) > 1:
            log.info("time budget of %g min: %d epochs in all (%d done)",
                     self.config.max_minutes, epochs, self.epoch)
        self.config = self.config.replace(epochs=epochs)
        self._check_scheduler_length()
        if self.renorm is not None:
            self.renorm = _renorm_schedule(self.module, self.config, self.model_config)
        self._write_run_files(environment=False)

    def _should_stop(self) -> bool:
        """``patience`` epochs without improvement, counted from the best epoch or, for
        BatchRenorm, from the end of the ramp (which disturbs the model for a while); never
        at the last epoch."""
        patience = self.config.patience
        counted_from = self.best_epoch
        if self.renorm is not None:
            counted_from = max(counted_from, math.ceil(sum(self.config.renorm_steps())
                                                       / self.config.steps_per_epoch))
        stop = 0 < patience <= self.epoch - counted_from and self.epoch < self.config.epochs
        if stop:
            log.info("stopping early: the validation loss has not improved for %d epochs "
                     "(best %.4f in epoch %d)", self.epoch - self.best_epoch,
                     self.best_val_loss, self.best_epoch)
        return stop

    def _save(self, improved: bool) -> None:
        if self.model_dir is None or not self.context.is_main:
            return
        state = self.state_dict()
        if improved:
            save_checkpoint(self.model_dir / BEST_CHECKPOINT, state)
        save_checkpoint(self.model_dir / LATEST_CHECKPOINT, state)
        write_history_csv(self.model_dir / HISTORY_FILE, self.history)

    def _prepare_model_dir(self, overwrite: bool, resume: bool) -> bool:
        """Check the model folder; load ``latest.pt`` when resuming. True if resumed."""
        folder = self.model_dir
        if folder is None:
            if resume:
                raise ConfigError("resume=True needs a model_dir holding latest.pt")
            return False
        if self.model_config is None:
            raise ConfigError("a model_dir needs model_config (saved as config.json), so that "
                              "the model can be rebuilt later")
        latest = folder / LATEST_CHECKPOINT
        if resume and latest.is_file():
            state = load_checkpoint(latest, self.device)
            self._check_same_run(state, latest)
            self.load_state_dict(state)
            log.info("resuming %s after epoch %d (step %d)", folder, self.epoch, self.step)
            return True
        existing = folder.is_dir() and any(folder.iterdir())
        if resume and existing:
            raise OutputExistsError(
                f"resume=True, but {latest} is missing, so there is nothing to resume; the "
                f"folder holds other files ({', '.join(sorted(p.name for p in folder.iterdir())[:6])}) "
                f"that training from scratch would replace. Train under a new model name, or "
                f"pass overwrite=True (and resume=False) to train a new model over it")
        if resume:
            log.info("resume=True but %s holds no training yet: starting from scratch", folder)
        if existing and self.context.is_main and not (overwrite or resume):
            raise OutputExistsError(
                f"{folder} already holds a model; choose another model name, pass resume=True "
                f"to continue its training, or overwrite=True to train a new one over it")
        return False

    def _check_same_run(self, state: dict[str, Any], path: Path) -> None:
        saved = TrainConfig.from_dict(state["train_config"]).to_dict()
        current = self.config.to_dict()
        differ = [f"{key}: saved {saved[key]!r}, now {current[key]!r}" for key in current
                  if key not in _RESUME_MAY_CHANGE and saved.get(key) != current[key]]
        if self.model_config is not None and state["model_config"] is not None:
            saved_model = self.model_config.from_dict(state["model_config"]).to_dict()
            differ += [f"model {key}: saved {saved_model[key]!r}, now {value!r}"
                       for key, value in self.model_config.to_dict().items()
                       if saved_model.get(key) != value]
        if differ:
            raise ConfigError(
                f"cannot resume {path}: it was trained with other settings ("
                + "; ".join(differ) + "). Use the same settings (only epochs, patience and "
                "num_workers may change) or train under a new model name")

    def _check_scheduler_length(self) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            self.scheduler.T_max = self.config.epochs

    def _write_run_files(self, environment: bool = True) -> None:
        if self.model_dir is None or not self.context.is_main:
            return
        from microseg.runs import atomic_write_json, environment_record

        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.model_config.save(self.model_dir / MODEL_CONFIG_FILE)
        self.config.save(self.model_dir / TRAIN_CONFIG_FILE)
        if environment:
            atomic_write_json(self.model_dir / "environment.json", environment_record())

    def _progress_bar(self) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=self.config.total_steps, initial=self.step, unit="step",
                    desc="training", disable=not (self.progress and self.context.is_main),
                    dynamic_ncols=True)


def out_of_memory_message(config: TrainConfig, device: Any, divisor: int = 1) -> str:
    """What to change after the GPU ran out of memory: concrete smaller settings.

    Halve the batch (keeping the effective batch through gradient accumulation), or, at batch
    1, shrink the patch sides by a quarter (rounded down to a multiple of ``divisor``).
    """
    memory = ""
    if torch.cuda.is_available() and torch.device(device).type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        memory = f" ({peak:.1f} of {total:.1f} GiB used at the peak)"
    head = (f"the GPU ran out of memory{memory} training batches of {config.batch_size} "
            f"patch(es) of {tuple(config.patch_size)}. ")
    if config.batch_size > 1:
        half = config.batch_size // 2
        return head + (
            f"Halve batch_size to {half}: memory use falls about in proportion. To keep the "
            f"effective batch of {config.batch_size * config.grad_accumulation}, set "
            f"grad_accumulation={config.grad_accumulation * config.batch_size // half}. "
            f"find_max_batch_size() measures the largest batch that fits.")
    smaller = tuple(max(divisor, int(p * 0.75) // divisor * divisor) for p in config.patch_size)
    share = math.prod(smaller) / math.prod(config.patch_size)
    return head + (
        f"The batch is already 1: reduce patch_size to {smaller} (about {share:.0%} of the "
        f"memory), use a smaller model (fewer channels), or a GPU with more memory.")


def find_max_batch_size(model: torch.nn.Module, config: TrainConfig, in_channels: int,
                        device: Any = "auto", limit: int = 256) -> int:
    """The largest batch (a power of two up to ``limit``) that trains on this GPU.

    Tries a forward, backward and optimizer step on a copy of ``model`` (the model itself is
    not changed) with batch sizes 1, 2, 4, ... of ``config.patch_size`` until the GPU runs out
    of memory. On the CPU there is nothing to measure: returns ``config.batch_size`` and says so.

    Raises
    ------
    MicrosegError
        If not even one patch fits (with what to reduce).
    """
    device = resolve_device(device)
    if not _is_cuda(device):
        log.info("find_max_batch_size: no GPU (device %s); keeping batch_size=%d",
                 device, config.batch_size)
        return config.batch_size
    probe = copy.deepcopy(model).to(device).train()
    largest, size = 0, 1
    while size <= limit and _batch_fits(probe, config, in_channels, size, device):
        largest, size = size, size * 2
    if largest == 0:
        raise MicrosegError(out_of_memory_message(config.replace(batch_size=1), device))
    log.info("find_max_batch_size: batches of up to %d patches of %s fit on %s",
             largest, tuple(config.patch_size), device)
    return largest


def _is_cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def _batch_fits(model: torch.nn.Module, config: TrainConfig, in_channels: int, batch_size: int,
                device: torch.device) -> bool:
    optimizer = build_optimizer(model.parameters(), config)
    amp_dtype, _ = _mixed_precision(config, device)
    loss_function = make_loss(config.loss, config.dice_weight, config.ce_weight)
    try:
        images = torch.randn(batch_size, in_channels, *config.patch_size, device=device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            logits = model(images)
        targets = torch.randint(0, logits.shape[1], (batch_size, *config.patch_size),
                                device=device)
        loss_function(logits, targets).backward()
        optimizer.step()
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _memory_format(config: TrainConfig, model_config: Any) -> torch.memory_format:
    """Channels-last (2D: NHWC, 3D: NDHWC) when ``config.channels_last``, else unchanged."""
    if not config.channels_last:
        return torch.preserve_format
    ndim = getattr(model_config, "ndim", len(config.patch_size))
    return torch.channels_last_3d if ndim == 3 else torch.channels_last


def _mixed_precision(config: TrainConfig, device: torch.device) -> tuple[Any, Any]:
    """(autocast dtype or None, GradScaler or None) for ``config.amp`` on ``device``."""
    if config.amp == "none":
        return None, None
    if device.type != "cuda":
        log.info("mixed precision (amp=%r) is used only on a GPU; training on %s in float32",
                 config.amp, device)
        return None, None
    if config.amp == "bf16" and torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    if config.amp == "bf16":
        log.info("this GPU has no bfloat16; using float16 with loss scaling instead")
    return torch.float16, torch.amp.GradScaler("cuda")


@contextlib.contextmanager
def _torch_settings(config: TrainConfig, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms and cuDNN autotuning as configured, restored afterwards."""
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = config.cudnn_benchmark and not config.deterministic
        torch.backends.cudnn.deterministic = config.deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[1:]


def _renorm_schedule(model: torch.nn.Module, config: TrainConfig, model_config: Any) -> Any:
    """The BatchRenorm schedule when ``model`` has BatchRenorm layers, else None."""
    from microseg.models.batchrenorm import RenormSchedule, _BatchRenorm

    if not any(isinstance(m, _BatchRenorm) for m in model.modules()):
        return None
    warmup, ramp = config.renorm_steps()
    r_max = getattr(model_config, "renorm_r_max", 3.0)
    d_max = getattr(model_config, "renorm_d_max", 5.0)
    return RenormSchedule(warmup_steps=warmup, ramp_steps=ramp, r_max=r_max, d_max=d_max)


