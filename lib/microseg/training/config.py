"""How a model is trained: one typed, documented config saved as ``train_config.json``.

Example
-------
>>> config = TrainConfig(epochs=5, patch_size=(64, 64))
>>> config.total_steps
125
>>> config.renorm_steps()
(50, 50)
>>> TrainConfig.from_dict({"epoch": 5})
Traceback (most recent call last):
...
microseg.errors.ConfigError: TrainConfig has no key 'epoch' (did you mean 'epochs'?). Valid keys: ...
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from microseg.config import StageConfig
from microseg.errors import ConfigError

__all__ = [
    "RENORM_RAMP_FRACTION",
    "RENORM_WARMUP_FRACTION",
    "TrainConfig",
]

RENORM_WARMUP_FRACTION = 0.4
"""Default BatchRenorm warm-up (trained as BatchNorm): this fraction of all optimizer steps."""

RENORM_RAMP_FRACTION = 0.4
"""Default BatchRenorm ramp to the final limits: this fraction of all optimizer steps."""


@dataclasses.dataclass
class TrainConfig(StageConfig):
    """Training settings. Patches are drawn at random, so an *epoch* is a fixed number of steps.

    Optimizer and schedule
    ----------------------
    optimizer : ``"adam"`` (default; the tiling paper's choice), ``"adamw"`` (Adam with decoupled
        weight decay) or ``"sgd"`` (with ``momentum``, Nesterov).
    learning_rate : initial learning rate. A too high value makes the loss jump or diverge; a too
        low one makes it fall slowly.
    weight_decay : L2 penalty (``adam``/``sgd``) or decoupled decay (``adamw``); 0 = off.
    momentum : momentum of ``sgd``; ignored by the Adam variants.
    scheduler : ``"cosine"`` (default) — cosine decay to ``min_learning_rate`` over
        ``epochs``, so the learning rate is already lower when BatchRenorm ramps up;
        ``"plateau"`` — multiply the learning rate by ``lr_factor`` when the validation loss has
        not improved for ``lr_patience`` epochs; ``"none"`` — constant.
    lr_factor, lr_patience : of the ``"plateau"`` scheduler.
    min_learning_rate : the learning rate never falls below this.

    Length and batches
    ------------------
    epochs : maximum number of epochs.
    steps_per_epoch : optimizer steps per epoch; validation runs after each epoch.
    batch_size : patches per forward pass.
    patch_size : patch side per spatial axis, (Y, X) or (Z, Y, X). Must be a multiple of the
        model's size divisor (4 for two down-samplings) and fit at least one training image
        (smaller images are padded with background).
    grad_accumulation : forward/backward passes summed before each optimizer step; the effective
        batch is ``batch_size * grad_accumulation`` (the tiling paper: batch 1, accumulation 8).
    patience : stop when the validation loss has not improved for this many epochs (0 = never
        stop early). With BatchRenorm they are counted from the end of the ramp at the
        earliest: switching to the running statistics disturbs the model for a few epochs.
    max_minutes : a time budget (wall clock) for the whole training; None: no limit. After every
        epoch the number of epochs is planned anew from the time epochs take — more or fewer
        than ``epochs`` — so that the learning-rate schedule and the BatchRenorm warm-up end
        inside the budget instead of being cut off; training ends with the best checkpoint.

    Hardware
    --------
    amp : mixed precision on a GPU, ``"bf16"`` (default; no loss scaling needed), ``"fp16"``
        (with a gradient scaler; for GPUs without bfloat16) or ``"none"``. On the CPU training
        always runs in float32 (a message says so).
    cudnn_benchmark : let cuDNN pick the fastest convolution algorithms (GPU; off when
        ``deterministic``).
    deterministic : use deterministic algorithms only (``torch.use_deterministic_algorithms``;
        slower on a GPU). On the CPU results are reproducible either way.
    channels_last : keep the convolution weights and the input batches in channels-last
        memory layout (NHWC, or NDHWC in 3D): faster convolutions on recent GPUs, above all with
        ``amp``. Results agree with the default layout up to rounding; checkpoints are the same.
    compile : compile the training forward pass with ``torch.compile``. The first steps are
        slow while it compiles, and on the CPU it needs a C++ compiler; validation runs
        uncompiled (its image shapes vary).
    seed : seeds the weights' initialization (in the recipe), dropout and patch sampling.
    num_workers : background threads preparing batches ahead of the training loop (0: prepared
        in the loop; the time spent waiting is recorded either way as ``data_seconds``). Batches
        are the same for any value.

    Patches
    -------
    min_foreground : reject patches whose fraction of non-background pixels is below this and
        draw again (0 = accept every patch). Helps when objects are sparse.
    max_retries : draws per patch before giving up with an error naming ``min_foreground``.

    Loss
    ----
    loss : ``"dice"`` (soft Dice averaged over channels, leaving out channels empty in the target
        patch, as in the tiling paper), ``"ce"`` (cross-entropy) or ``"dice+ce"`` (the weighted sum).
    dice_weight, ce_weight : weights of the two terms in ``"dice+ce"``.
    class_weights : cross-entropy weight per class (K values), or None for equal weights.

    BatchRenorm (models with ``norm="batchrenorm"``)
    ------------------------------------------------
    renorm_warmup_steps : optimizer steps trained as plain BatchNorm; None = 40 % of all steps.
    renorm_ramp_steps : optimizer steps over which the limits rise linearly to the model's
        ``renorm_r_max``/``renorm_d_max``; None = 40 % of all steps.

    Validation
    ----------
    val_tile : validation images whose every side is at most this are predicted whole; larger
        ones are cut into a fixed set of ``val_tile`` patches (the same every epoch, at most
        ``val_max_patches`` per image), so validation stays fast and comparable across epochs.
    val_max_patches : at most this many validation patches per large image.
    """

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    scheduler: Literal["plateau", "cosine", "none"] = "cosine"
    lr_factor: float = 0.5
    lr_patience: int = 3
    min_learning_rate: float = 1e-5
    epochs: int = 24
    steps_per_epoch: int = 25
    batch_size: int = 8
    patch_size: tuple[int, ...] = (128, 128)
    grad_accumulation: int = 1
    patience: int = 8
    max_minutes: float | None = None
    amp: Literal["none", "bf16", "fp16"] = "bf16"
    cudnn_benchmark: bool = True
    deterministic: bool = False
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    num_workers: int = 0
    min_foreground: float = 0.0
    max_retries: int = 50
    loss: Literal["dice", "ce", "dice+ce"] = "dice+ce"
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    class_weights: tuple[float, ...] | None = None
    renorm_warmup_steps: int | None = None
    renorm_ramp_steps: int | None = None
    val_tile: int = 256
    val_max_patches: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = _problems(self)
        if problems:
            raise ConfigError(
                "TrainConfig is not valid:\n" + "\n".join(f"  - {p}" for p in problems)
            )

    @property
    def total_steps(self) -> int:
        """Optimizer steps of a run that does not stop early."""
        return self.epochs * self.steps_per_epoch

    def renorm_steps(self) -> tuple[int, int]:
        """(warm-up, ramp) of the BatchRenorm schedule in optimizer steps, defaults filled in."""
        warmup = self.renorm_warmup_steps
        ramp = self.renorm_ramp_steps
        if warmup is None:
            warmup = round(RENORM_WARMUP_FRACTION * self.total_steps)
        if ramp is None:
            ramp = round(RENORM_RAMP_FRACTION * self.total_steps)
        return warmup, ramp


def _problems(config: TrainConfig) -> list[str]:
    positive = ("epochs", "steps_per_epoch", "batch_size", "grad_accumulation", "max_retries",
                "val_tile", "val_max_patches")
    problems = [f"{name} must be >= 1, found {getattr(config, name)}"
                for name in positive if getattr(config, name) < 1]
    non_negative = ("weight_decay", "momentum", "patience", "num_workers", "dice_weight",
                    "ce_weight", "lr_patience", "min_learning_rate")
    problems += [f"{name} must be >= 0, found {getattr(config, name)}"
                 for name in non_negative if getattr(config, name) < 0]
    if not 0 <= config.seed < 2**32:
        problems.append(f"seed must be a whole number from 0 to 2**32 - 1, found {config.seed}")
    if config.max_minutes is not None and config.max_minutes <= 0:
        problems.append(f"max_minutes must be > 0 or None, found {config.max_minutes}")
    if config.learning_rate <= 0:
        problems.append(f"learning_rate must be > 0, found {config.learning_rate}")
    if not 0 < config.lr_factor < 1:
        problems.append(f"lr_factor must be in (0, 1), found {config.lr_factor}")
    if len(config.patch_size) not in (2, 3) or min(config.patch_size) < 1:
        problems.append(f"patch_size must hold 2 (Y, X) or 3 (Z, Y, X) positive sides, "
                        f"found {config.patch_size}")
    if not 0 <= config.min_foreground < 1:
        problems.append(f"min_foreground must be in [0, 1), found {config.min_foreground}")
    if config.class_weights is not None and min(config.class_weights, default=0) <= 0:
        problems.append(f"class_weights must be positive, found {config.class_weights}")
    for name in ("renorm_warmup_steps", "renorm_ramp_steps"):
        value = getattr(config, name)
        if value is not None and value < 0:
            problems.append(f"{name} must be >= 0 or None, found {value}")
    if config.loss == "dice+ce" and config.dice_weight + config.ce_weight == 0:
        problems.append("dice_weight and ce_weight are both 0: the loss would be 0")
    return problems
