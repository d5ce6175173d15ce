"""Train a segmentation model from scratch on the run's split: what notebook 02 calls.

Also a command line, for headless and multi-GPU training (one process per GPU)::

    python -m microseg.recipes.train --run-dir runs/exp1 --epochs 50
    torchrun --nproc_per_node=4 -m microseg.recipes.train --run-dir runs/exp1

Example
-------
>>> summary = train_model("runs/demo", quick=True)          # doctest: +SKIP
>>> summary.fit_diagnosis["verdict"], summary.model_dir       # doctest: +SKIP
('too short to tell', 'runs/demo/models/unet')

Why one module of about 650 lines: it is notebook 02's whole recipe (setup, estimate, training,
search, command line); the training loop itself is :mod:`microseg.training`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microseg.inference.instances import TUNING_IMAGES_QUICK
from microseg.logs import summarises
from microseg.models.builtin import run_model
from microseg.recipes.results import SearchResult, TimeEstimate, TrainingSummary
from microseg.runs import RunFolder, write_summary

__all__ = [
    "CANONICAL_DIAMETER",
    "DEFAULT_HEAD",
    "default_configs",
    "describe_configs",
    "estimate_minutes",
    "TrainingSetup",
    "main",
    "prepare_training",
    "representation",
    "search_hyperparameters",
    "split_manifest",
    "steps_per_epoch_for",
    "train_model",
    "validation_predictions",
]

log = logging.getLogger(__name__)

QUICK_CHANNELS = (4, 8, 16)

DEFAULT_HEAD = "auto"
"""The instance head notebook 02 trains unless told otherwise ("auto":
:func:`microseg.transforms.targets.choose_instance_head`)."""

FIELD_PER_DIAMETER = 1.5
"""The receptive field should span at least this many object diameters
(:meth:`TrainingSetup.field_of_view`)."""

CANONICAL_DIAMETER = {2: 30.0, 3: 20.0}
"""Object diameter (pixels) images are resampled to when training at a canonical scale."""

DEFAULT_OBJECT_DIAMETER: str | None = "auto"
"""How notebook 02 treats object scale unless told otherwise (see :func:`prepare_training`)."""


@dataclasses.dataclass
class TrainingSetup:
    """Everything a training run is made of, before it starts (:func:`prepare_training`).

    manifest : the run's split manifest.
    train, val : the training and validation samples as the model sees them (resampled to the
        canonical object size, targets of the instance head).
    representation : :class:`~microseg.data.representation.Representation` (task, head, scale).
    scale : :class:`~microseg.data.representation.ScaleFacts` of the training images.
    model_config, train_config : the configs the run uses.
    automatic_batch : ``batch_size="auto"``: the largest batch the GPU holds is found first.
    head_reason : why ``instance_head="auto"`` chose its head (None when the head was given).
    """

    manifest: Any
    train: list[Any]
    val: list[Any]
    representation: Any
    scale: Any
    model_config: Any
    train_config: Any
    automatic_batch: bool = False
    head_reason: str | None = None

    def describe(self) -> Any:
        """The settings as a table, each with what it means (:func:`describe_configs`)."""
        return describe_configs(self.model_config, self.train_config, self)

    def field_of_view(self, halo: Sequence[int]) -> tuple[bool, str]:
        """Whether the network sees the objects whole, and a sentence saying so.

        ``halo`` is the receptive-field radius (:func:`~microseg.models.receptive_field_halo`):
        the network sees ``2·halo`` pixels around each output pixel. It fits when that is at
        least :data:`FIELD_PER_DIAMETER` times the largest object diameter it is trained on
        (the 90th percentile of the training images' median diameters, after resampling):
        the object and some of its surroundings. Objects larger than that come out in pieces.
        """
        field = 2 * min(int(h) for h in halo)
        trained = self.scale.trained_range() if self.scale is not None else None
        if trained is None:
            return True, (f"the network sees about {field} pixels around each pixel; objects "
                          f"are used at their own size")
        largest = trained[1]
        if field >= FIELD_PER_DIAMETER * largest:
            return True, (f"the network sees about {field} pixels around each pixel: enough for "
                          f"objects of up to {largest:.0f} pixels, the largest it is trained on")
        return False, (f"the network sees about {field} pixels around each pixel, less than "
                       f"{FIELD_PER_DIAMETER:g}x the largest objects it is trained on "
                       f"({largest:.0f} pixels): large objects may be cut into pieces. Set a "
                       f"smaller canonical_diameter (at most {field / FIELD_PER_DIAMETER:.0f}) "
                       f"or a deeper network (more strides)")


@summarises(lambda a: Path(a["run_dir"]) / "data")
def prepare_training(run_dir: str | Path, architecture: str = "unet",
                     norm: str = "batchrenorm", patch_size: int | Sequence[int] | None = None,
                     batch_size: int | str | None = None, epochs: int | None = None,
                     learning_rate: float | None = None, patience: int | None = None,
                     grad_accumulation: int = 1, seed: int = 0, quick: bool = False,
                     tuned: str | Path | None = None, instance_head: str = DEFAULT_HEAD,
                     object_diameter: float | str | None = DEFAULT_OBJECT_DIAMETER,
                     canonical_diameter: float | None = None,
                     max_minutes: float | None = None) -> TrainingSetup:
    """Load the run's split and decide every setting of a training run (nothing is trained).

    Uses the split made by notebook 01 (``prepare_data``); if the run folder has none, makes
    one from the built-in synthetic data first (with a message).

    Parameters
    ----------
    run_dir : the experiment's run folder.
    architecture : ``"unet"``, ``"classic_unet"`` or ``"unetr"`` (see ModelConfig).
    norm : feature normalization: ``"batchrenorm"``, ``"batch"``, ``"instance"``, ``"group"``,
        ``"none"``.
    patch_size : patch side (one int for every axis) or one side per axis; None = the default
        for the data's dimensionality (see :func:`default_configs`).
    batch_size : patches per step; None = the default; ``"auto"`` = the largest power of two
        that fits the GPU (:func:`~microseg.training.trainer.find_max_batch_size`; on the CPU
        the default, with a message). When resuming, give the batch size the run used.
    epochs, learning_rate, patience : None = TrainConfig defaults. An epoch is as many steps as
        it takes to draw about every training pixel once (:func:`steps_per_epoch_for`).
    grad_accumulation, seed : see TrainConfig.
    quick : a smoke run of seconds: tiny model, a few steps.
    tuned : a folder written by a hyperparameter search (``best_model_config.json``,
        ``best_train_config.json``); its configs are used as they are, except ``epochs`` and
        ``patience`` when given here. ``architecture``, ``norm`` and the other settings are
        then ignored.
    instance_head : instance task: ``"three_class"`` (background, interior, boundary),
        ``"distance"`` (distance-to-border levels; :mod:`microseg.transforms.targets`) or
        ``"auto"`` (chosen from how much of the training images the objects cover,
        :func:`~microseg.transforms.targets.choose_instance_head`).
    object_diameter : train at a canonical object size (:mod:`microseg.transforms.scale`):
        ``"auto"`` measures each training image's median object diameter on its labels and
        resamples it to ``canonical_diameter``; a number is the diameter (pixels) of every
        image; None trains at the images' own scale.
    canonical_diameter : the object diameter (pixels) the network sees; None:
        :data:`CANONICAL_DIAMETER` for the data's dimensions.
    max_minutes : a time budget for the training (TrainConfig ``max_minutes``); None: none.

    Raises
    ------
    ConfigError
        For settings that do not fit together (every problem named), e.g. a patch side that
        is not a multiple of the network's size divisor (with the sides to use instead):
        checked here, before anything runs the network.
    """
    run = RunFolder(run_dir)
    train, val, manifest = _load_split(run, quick)
    instance_head, reason = _resolved_head(instance_head, manifest, train)
    plan = representation(manifest, instance_head, object_diameter, canonical_diameter)
    train, val, facts = _represented(train, val, plan)
    automatic = batch_size == "auto"
    model_config, train_config = default_configs(
        manifest, architecture, norm, patch_size, None if automatic else batch_size,
        epochs, learning_rate, patience, grad_accumulation, seed, quick, tuned)
    model_config = model_config.replace(out_classes=_n_classes(manifest, plan))
    if not quick and tuned is None:
        train_config = train_config.replace(steps_per_epoch=steps_per_epoch_for(
            train, train_config.batch_size, train_config.patch_size))
    if max_minutes is not None:
        train_config = train_config.replace(max_minutes=max_minutes)
    from microseg.training.checks import check_patch_divisible

    check_patch_divisible(train_config.patch_size, _size_divisor(model_config))
    return TrainingSetup(manifest, train, val, plan, facts, model_config, train_config, automatic,
                         reason)


def train_model(run_dir: str | Path, model_name: str = "unet", device: str = "auto",
                overwrite: bool = False, resume: bool = False, callbacks: Sequence[Any] = (),
                **settings: Any) -> TrainingSummary:
    """Train a model on the split of ``run_dir`` and write ``models/<model_name>/``.

    Checks the data and the first batch, trains with early stopping (within ``max_minutes``
    when given), and writes the model folder (see :mod:`microseg.models.checkpoint`) with
    ``prediction.json`` and ``summary.json``. Under ``torchrun`` every process trains (DDP) and
    the first writes the files.

    Parameters
    ----------
    run_dir : the experiment's run folder.
    model_name : name of the model folder under ``run_dir/models/``.
    device : ``"auto"``, ``"cpu"``, ``"cuda"``.
    overwrite : train over an existing model folder of that name.
    resume : continue an interrupted training of that model folder from ``latest.pt``.
    callbacks : ``callback(trainer, record)`` after each epoch (e.g. ``LiveLossPlot``).
    settings : the training settings, as :func:`prepare_training` takes them.

    Returns
    -------
    A :class:`~microseg.recipes.results.TrainingSummary` (``models/<model_name>/summary.json``
    holds its dict): ``best_val_loss``,
    ``best_val_dice``, ``best_val_foreground_dice``, ``best_epoch``, ``epochs_run``,
    ``stopped_early``, ``fit_diagnosis`` ({verdict, reason}), ``model_dir``, ``device``,
    ``seconds``, ``steps``, ``parameters``, ``class_frequencies``, ``warnings``,
    ``world_size``, ``halo`` (the context tiled prediction reads, from the receptive field),
    ``instance_head`` (with ``instance_head_reason`` for ``"auto"``), ``object_diameter``
    (median of the training images, pixels),
    ``canonical_diameter``, ``scale_factor`` (median over the images) with
    ``scale_factor_min``/``scale_factor_max``, ``max_minutes`` and, for the instance task,
    ``postprocessing``: the watershed thresholds tuned on the validation images after training
    (with ``validation_f1``), which evaluation and deployment then use; ``field_of_view``:
    whether the network sees the largest training objects whole
    (:meth:`TrainingSetup.field_of_view`); ``search``: the search folder given as ``tuned``.

    Raises
    ------
    OutputExistsError
        If the model folder holds a model and neither ``overwrite`` nor ``resume`` is set.
    DataError
        For data the model cannot train on (every problem listed).
    """
    from microseg.training.distributed import close_distributed, init_distributed

    started = time.perf_counter()
    context = init_distributed()
    run = RunFolder(run_dir)
    try:
        setup = prepare_training(run.root, **settings)
        summary = _train(run.model_dir(model_name), setup,
                         dict(device=device, overwrite=overwrite, resume=resume,
                              callbacks=list(callbacks), distributed=context))
        plan = setup.representation
        summary.update(instance_head=plan.head if plan.task == "instance" else None,
                       instance_head_reason=setup.head_reason,
                       canonical_diameter=plan.canonical_diameter,
                       max_minutes=setup.train_config.max_minutes, **setup.scale.to_dict())
        if context.is_main:
            summary["halo"], summary["postprocessing"] = _finish_model_folder(
                run.model_dir(model_name), setup, settings.get("quick", False))
            fits, summary["field_of_view"] = setup.field_of_view(summary["halo"])
            if not fits:
                log.warning("%s", summary["field_of_view"])
        tuned = settings.get("tuned")
        summary["search"] = None if tuned is None else str(tuned)
        summary["seconds"] = round(time.perf_counter() - started, 2)
        result = TrainingSummary.from_dict(summary)
        if context.is_main:
            write_summary(run.model_dir(model_name), result)
        return result
    finally:
        close_distributed(context)


def estimate_minutes(setup: TrainingSetup, device: str = "auto", steps: int = 3) -> TimeEstimate:
    """How long the training of ``setup`` will take on ``device``, from ``steps`` timed training
    steps (after one untimed warm-up) on random batches of its patch and batch size.

    Validation is estimated at a third of a training step per batch of validation pixels. With a
    time budget (``max_minutes``) the training fills it: the estimate is the budget. Returns
    a :class:`~microseg.recipes.results.TimeEstimate`: ``minutes``, ``seconds_per_step``,
    ``steps`` (planned optimizer steps) and ``device``.
    """
    import torch

    from microseg.devices import resolve_device
    from microseg.models import build_model
    from microseg.training.losses import make_loss

    config, train_config = setup.model_config, setup.train_config
    target_device = resolve_device(device)
    model = build_model(config).to(target_device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss = make_loss(train_config.loss, train_config.dice_weight, train_config.ce_weight)
    batch = (train_config.batch_size, config.in_channels, *train_config.patch_size)
    images = torch.randn(batch, device=target_device)
    targets = torch.randint(0, config.out_classes, (batch[0], *batch[2:]), device=target_device)
    timings = []
    for index in range(steps + 1):
        started = time.perf_counter()
        optimizer.zero_grad()
        loss(model(images), targets).backward()
        optimizer.step()
        if index:
            timings.append(time.perf_counter() - started)
    per_step = float(np.median(timings)) * train_config.grad_accumulation
    val_pixels = sum(math.prod(np.asarray(s.image).shape[1:]) for s in setup.val)
    per_epoch = train_config.steps_per_epoch * per_step + (
        val_pixels / (batch[0] * math.prod(batch[2:])) * per_step / 3)
    minutes = train_config.epochs * per_epoch / 60
    if train_config.max_minutes is not None:
        minutes = float(train_config.max_minutes)
    return TimeEstimate(minutes=minutes, seconds_per_step=per_step, device=str(target_device),
                        steps=train_config.total_steps)


def steps_per_epoch_for(samples: Sequence[Any], batch_size: int, patch_size: Sequence[int],
                        low: int = 25, high: int = 250) -> int:
    """Optimizer steps per epoch: enough batches of patches to cover every training pixel
    about once, within [``low``, ``high``] (a few images still get ``low``; hundreds of large
    ones get at most ``high`` per validation)."""
    pixels = sum(math.prod(np.asarray(s.image).shape[1:]) for s in samples)
    per_step = batch_size * math.prod(patch_size)
    return int(min(high, max(low, math.ceil(pixels / per_step))))


def default_configs(manifest: Any, architecture: str = "unet", norm: str = "batchrenorm",
                    patch_size: int | Sequence[int] | None = None, batch_size: int | None = None,
                    epochs: int | None = None, learning_rate: float | None = None,
                    patience: int | None = None, grad_accumulation: int = 1, seed: int = 0,
                    quick: bool = False, tuned: str | Path | None = None) -> tuple[Any, Any]:
    """(ModelConfig, TrainConfig) for a split manifest and the recipe's parameters.

    Defaults: 2D — the ``default2d`` model (16/32/64 features, two down-samplings, 2 residual
    units), patches of 128², batch 8; 3D — the same widths in 3D, patches of 32×64×64, batch 2.
    ``quick``: features 4/8/16, 1 residual unit, 2 epochs of 4 steps, batch 2, patches of 64²
    (3D 16×32×32). The model's channels and classes come from the manifest.
    """
    from microseg.models import model_preset
    from microseg.training.config import TrainConfig

    if tuned is not None:
        return _tuned_configs(Path(tuned), epochs, patience)
    ndim = manifest.ndim
    patch = _patch_size(patch_size, ndim, quick)
    model = model_preset("default2d").replace(
        ndim=ndim, architecture=architecture, norm=norm, in_channels=manifest.n_channels,
        out_classes=manifest.n_classes,
        img_size=list(patch) if architecture == "unetr" else None)
    if quick:
        model = model.replace(channels=QUICK_CHANNELS, num_res_units=1, hidden_size=32,
                              num_heads=2, mlp_dim=64, feature_size=4)
    given = dict(batch_size=batch_size, epochs=epochs, learning_rate=learning_rate,
                 patience=patience)
    base = dict(epochs=2, steps_per_epoch=4, batch_size=2) if quick else {}
    if not quick and ndim == 3:
        base["batch_size"] = 2
    base.update({k: v for k, v in given.items() if v is not None})
    train = TrainConfig(patch_size=patch, grad_accumulation=grad_accumulation, seed=seed,
                        **base)
    return model, train


def _patch_size(patch_size: int | Sequence[int] | None, ndim: int, quick: bool
                ) -> tuple[int, ...]:
    if patch_size is None:
        defaults = {(2, False): (128, 128), (3, False): (32, 64, 64),
                    (2, True): (64, 64), (3, True): (16, 32, 32)}
        return defaults[(ndim, quick)]
    if isinstance(patch_size, int):
        return (patch_size,) * ndim
    return tuple(int(p) for p in patch_size)


def _tuned_configs(folder: Path, epochs: int | None, patience: int | None) -> tuple[Any, Any]:
    from microseg.errors import RunOrderError
    from microseg.models import ModelConfig
    from microseg.training.config import TrainConfig
    from microseg.training.tuning import BEST_MODEL_CONFIG, BEST_TRAIN_CONFIG

    if not (folder / BEST_TRAIN_CONFIG).is_file():
        raise RunOrderError(f"{folder} holds no {BEST_TRAIN_CONFIG}: run the hyperparameter "
                            f"search of notebooks/02_train_from_scratch.ipynb (run_search=True)")
    model = ModelConfig.load(folder / BEST_MODEL_CONFIG)
    train = TrainConfig.load(folder / BEST_TRAIN_CONFIG)
    changes = {k: v for k, v in dict(epochs=epochs, patience=patience).items() if v is not None}
    return model, train.replace(**changes) if changes else train


def split_manifest(run_dir: str | Path, quick: bool = False) -> Any:
    """The run's split manifest; made from the built-in synthetic data first if missing.

    That is what notebook 01 does with its defaults (``quick``: the small data set); a message
    says so. Under ``torchrun`` only the first process prepares, the others wait.
    """
    from microseg.data.split import load_manifest
    from microseg.training.distributed import barrier, init_distributed

    run = RunFolder(run_dir)
    context = init_distributed()
    if not run.split_manifest.is_file() and context.is_main:
        from microseg.recipes.prepare import prepare_data

        log.info("%s has no split yet: preparing the built-in synthetic data as notebook "
                 "01 would (prepare_data with defaults%s)", run.root,
                 ", quick" if quick else "")
        prepare_data(run.root, quick=quick)
    barrier(context)
    return load_manifest(run.root)


def _load_split(run: RunFolder, quick: bool) -> tuple[list, list, Any]:
    from microseg.data.dataset import load_subset

    manifest = split_manifest(run.root, quick)
    return load_subset(manifest, "train"), load_subset(manifest, "val"), manifest


def describe_configs(model_config: Any, train_config: Any, setup: Any = None) -> Any:
    """A table (pandas DataFrame) of the main settings, each with what it means; with a
    :class:`TrainingSetup` also the instance head and the object scale."""
    import pandas as pd

    t, m = train_config, model_config
    warmup, ramp = t.renorm_steps()
    rows = [
        ("network", f"{m.architecture}, {m.ndim}D, features {'/'.join(map(str, m.channels))}",
         "more levels and features: more capacity and a larger receptive field, slower"),
        ("normalization", m.norm, "batchrenorm: no tiling artifacts, no train/eval disparity"),
        ("classes", m.out_classes, "network outputs, background included"),
        ("patch", "×".join(map(str, t.patch_size)), "random crop the network sees per sample"),
        ("batch", f"{t.batch_size} × {t.grad_accumulation} accumulated",
         "patches per optimizer step; larger needs more memory"),
        ("length", f"{t.epochs} epochs × {t.steps_per_epoch} steps",
         "validation after every epoch; at most this long"),
        ("early stopping", f"patience {t.patience}" if t.patience else "off",
         "stop when the validation loss has not improved for this many epochs"),
        ("optimizer", f"{t.optimizer}, learning rate {t.learning_rate:g}",
         "too high: the loss jumps or diverges; too low: it falls slowly"),
        ("schedule", t.scheduler, "how the learning rate is lowered during training"),
        ("loss", t.loss if t.loss != "dice+ce" else
         f"{t.dice_weight:g}·Dice + {t.ce_weight:g}·cross-entropy",
         "Dice leaves out classes absent from a patch"),
        ("BatchRenorm schedule", f"BatchNorm for {warmup} steps, ramp over {ramp}",
         "switch to the running statistics only after the loss has converged"),
        ("seed", t.seed, "same seed, same data and settings: the same model (on the CPU)"),
        ("time budget", "none" if t.max_minutes is None else f"{t.max_minutes:g} min",
         "the number of epochs is planned to end inside it, with the best checkpoint"),
    ]
    if setup is not None:
        rows += _representation_rows(setup)
    return pd.DataFrame(rows, columns=["setting", "value", "meaning"]).set_index("setting")


def _representation_rows(setup: TrainingSetup) -> list[tuple[str, Any, str]]:
    plan, facts = setup.representation, setup.scale
    rows = []
    if plan.task == "instance":
        rows.append(("instance head", plan.head,
                     "three_class: interior and boundary; distance: levels of the distance to "
                     "each object's border, whose cores separate touching objects"))
    diameter = "-" if facts.median_diameter is None else f"{facts.median_diameter:.1f} px"
    if plan.canonical_diameter is None:
        rows.append(("object scale", f"as recorded (median diameter {diameter})",
                     "images are used at their own pixel size"))
    else:
        rows.append(("object scale", f"median diameter {diameter} → {plan.canonical_diameter:g} "
                     f"px (factors {min(facts.factors):.2f}–{max(facts.factors):.2f})",
                     "each image is resampled so that its objects have the canonical size "
                     "the network sees best; predictions are mapped back"))
    return rows


def search_hyperparameters(run_dir: str | Path, model_name: str = "unet", n_trials: int = 20,
                           timeout: float | None = None, quick: bool = False, seed: int = 0,
                           device: str = "auto", **settings: Any) -> SearchResult:
    """Search hyperparameters on the run's split; the best configs go to a new folder.

    ``settings`` are :func:`prepare_training` parameters (the base of the search). Writes
    ``run_dir/search/<model_name>/`` (``-2``, ``-3`` ... if taken): ``best_model_config.json``,
    ``best_train_config.json`` and ``search_results.csv``. Patch sides tried: the smallest
    side of the default patch and half of it, as cubes (squares). ``quick``: a tiny
    search (at most 2 trials of 2 steps). Pass the returned ``folder`` as ``tuned`` to
    :func:`train_model`.

    Returns a :class:`~microseg.recipes.results.SearchResult`: ``folder``, ``best_params``,
    ``best_value`` (validation Dice), ``n_trials`` and ``table`` (a DataFrame, best first).
    """
    from microseg.runs import create_output_dir, unique_name
    from microseg.training.tuning import SearchSpace, tune_hyperparameters
    from microseg.transforms.augment import Augmenter

    setup = prepare_training(run_dir, seed=seed, quick=quick, **settings)
    manifest, model_config, train_config = setup.manifest, setup.model_config, setup.train_config
    side = min(train_config.patch_size)
    space = SearchSpace(patch_sizes=(side // 2, side))
    if quick:
        space = space.replace(depths=(1, 2), trial_epochs=1, trial_steps_per_epoch=2)
        n_trials = min(n_trials, 2)
    parent = RunFolder(run_dir).root / "search"
    folder = create_output_dir(parent / unique_name(parent, model_name))
    ndim = manifest.ndim
    result = tune_hyperparameters(
        setup.train, setup.val, model_config,
        train_config, space, n_trials=n_trials, timeout=timeout, seed=seed, device=device,
        augment_factory=lambda s: Augmenter(ndim=ndim, seed=s), out_dir=folder)
    return SearchResult(folder=str(folder), best_params=result.best_params,
                        best_value=result.best_value, n_trials=len(result.table),
                        table=result.table)


def validation_predictions(run_dir: str | Path, model_name: str = "unet", n: int = 3,
                           device: str = "auto") -> list[tuple[str, Any, Any, Any]]:
    """(stem, image, truth, prediction) for the first ``n`` validation images, best model.

    Predictions are argmax class maps (*S) of the best model (:class:`~microseg.models.TrainedModel`).
    """
    from microseg.data.dataset import load_subset
    from microseg.models import TrainedModel

    run = RunFolder(run_dir)
    model = TrainedModel.load(run_model(run, model_name), device=device)
    samples = load_subset(split_manifest(run_dir), "val")[:n]
    return [(s.stem, s.image, s.target, model.predict(s.image, normalized=True).argmax(0))
            for s in samples]


def _train(model_dir: Path, setup: TrainingSetup, options: dict[str, Any]) -> dict[str, Any]:
    from microseg.models import build_model, count_parameters
    from microseg.training.checks import check_first_batch, check_training_data
    from microseg.training.diagnosis import diagnose_fit
    from microseg.training.trainer import Trainer, find_max_batch_size, seed_everything
    from microseg.transforms.augment import Augmenter

    model_config, train_config = setup.model_config, setup.train_config
    train, val = setup.train, setup.val
    divisor = _size_divisor(model_config)
    report = check_training_data(train, model_config.in_channels, model_config.out_classes,
                                 train_config.patch_size, divisor)
    seed_everything(train_config.seed)
    model = build_model(model_config)
    if setup.automatic_batch:
        largest = find_max_batch_size(model, train_config, model_config.in_channels,
                                      options["device"])
        train_config = train_config.replace(batch_size=largest)
    ndim = model_config.ndim
    trainer = Trainer(model, train_config, train, val, model_config=model_config,
                      model_dir=model_dir,
                      augment_factory=lambda seed: Augmenter(ndim=ndim, seed=seed), **options)
    batch_report = check_first_batch(*trainer.sampler.batch(trainer.epoch, 0),
                                     model_config.in_channels, model_config.out_classes)
    if trainer.context.is_main:
        _predictor(model, setup).save_settings(model_dir)
    log.info("training data: %s", report.describe())
    result = trainer.fit()
    best = next((r for r in result.history if r["epoch"] == result.best_epoch), {})
    return {
        "best_val_loss": _finite_or_none(result.best_val_loss),
        "best_val_dice": _finite_or_none(result.best_val_dice),
        "best_val_foreground_dice": _finite_or_none(best.get("val_foreground_dice")),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "fit_diagnosis": diagnose_fit(result.history).to_dict(),
        "model_dir": str(model_dir),
        "device": result.device,
        "steps": result.steps,
        "parameters": count_parameters(model)[0],
        "class_frequencies": report.class_frequencies,
        "first_batch_class_frequencies": batch_report.class_frequencies,
        "warnings": report.warnings + batch_report.warnings,
        "world_size": trainer.context.world_size,
    }


def _predictor(network: Any, setup: TrainingSetup) -> Any:
    """``network`` with the prediction settings of ``setup`` (no halo yet: measured when the
    training has finished)."""
    from microseg.models import TrainedModel

    manifest, plan, facts = setup.manifest, setup.representation, setup.scale
    return TrainedModel.from_network(
        network, setup.model_config, task=manifest.task,
        normalization=manifest.normalization_config(), input_axes=manifest.input_axes,
        instance_head=plan.head, canonical_diameter=plan.canonical_diameter,
        object_diameter=facts.median_diameter, trained_diameters=facts.trained_range())


def _finish_model_folder(model_dir: Path, setup: TrainingSetup, quick: bool
                         ) -> tuple[list[int], dict[str, Any] | None]:
    """Write ``prediction.json`` (task, head, scale, normalization, axes, measured halo) and,
    for an instance model, the post-processing tuned on the validation images; returns the
    halo and the tuned post-processing (None for other tasks)."""
    from microseg.models import TrainedModel

    manifest, plan, facts = setup.manifest, setup.representation, setup.scale
    model = TrainedModel.finish(model_dir, task=manifest.task,
                                normalization=manifest.normalization_config(),
                                input_axes=manifest.input_axes, quick=quick,
                                instance_head=plan.head,
                                canonical_diameter=plan.canonical_diameter,
                                object_diameter=facts.median_diameter, trained_diameters=facts.trained_range())
    tuned = _tune_postprocessing(model, manifest, quick) if manifest.task == "instance" else None
    return list(model.halo), tuned


def _tune_postprocessing(model: Any, manifest: Any, quick: bool) -> dict[str, Any] | None:
    """Thresholds of the watershed tuned on the validation images at their own scale, predicted
    as evaluation and deployment predict by default (object size measured per image, test-time
    augmentation), saved in the model folder (``instance_postprocessing.json``, the search in
    ``instance_postprocessing_search.csv``) for notebooks 05 and 07."""
    from microseg.data.dataset import load_subset

    samples = [s for s in load_subset(manifest, "val") if s.label is not None]
    if not samples:
        log.warning("no labelled validation images: the instance post-processing keeps its "
                    "defaults until notebook 05 tunes it")
        return None
    samples = samples[:TUNING_IMAGES_QUICK] if quick else samples
    table = model.tune_postprocessing(samples, quick)
    best = model.postprocessing
    return {**{k: v for k, v in best.to_dict().items() if not k.startswith("config_")},
            "validation_f1": float(table["f1"].iloc[0]), "validation_images": len(samples)}


def representation(manifest: Any, instance_head: str = DEFAULT_HEAD,
                   object_diameter: float | str | None = None,
                   canonical_diameter: float | None = None) -> Any:
    """What the model will see (:class:`microseg.data.representation.Representation`):
    the manifest's task, the instance head, and the canonical diameter when training at one.

    Raises :class:`ConfigError` for an unknown head or an ``object_diameter`` that is not
    None, ``"auto"`` or a positive number.
    """
    from microseg.data.representation import Representation
    from microseg.errors import ConfigError
    from microseg.transforms.targets import DISTANCE_LEVELS, check_head

    check_head(instance_head)
    if object_diameter is None:
        canonical = None
    elif object_diameter == "auto" or (not isinstance(object_diameter, str)
                                       and object_diameter > 0):
        canonical = canonical_diameter or CANONICAL_DIAMETER[manifest.ndim]
    else:
        raise ConfigError(f"object_diameter {object_diameter!r}: use None (train at the images' "
                          f"own scale), 'auto' (measured on the labels) or the diameter in "
                          f"pixels (a positive number)")
    given = None if object_diameter in (None, "auto") else float(object_diameter)
    return Representation(manifest.task, instance_head, DISTANCE_LEVELS, canonical, given)


def _resolved_head(instance_head: str, manifest: Any, train: list) -> tuple[str, str | None]:
    """``"auto"`` → the head the training labels call for, with the reason (logged)."""
    if instance_head != "auto":
        return instance_head, None
    if manifest.task != "instance":
        return "three_class", None
    from microseg.transforms.targets import choose_instance_head

    head, reason = choose_instance_head(sample.label for sample in train)
    log.info("instance head: %s", reason)
    return head, reason


def _represented(train: list, val: list, plan: Any) -> tuple[list, list, Any]:
    from microseg.data.representation import represent

    if plan.task != "instance" and plan.canonical_diameter is None:
        from microseg.data.representation import ScaleFacts

        return train, val, ScaleFacts((), (), None)
    train, facts = represent(train, plan)
    val, _ = represent(val, plan)
    diameter = "unknown" if facts.median_diameter is None else f"{facts.median_diameter:.1f}"
    log.info("training data: median object diameter %s px%s", diameter,
             "" if plan.canonical_diameter is None else
             f", resampled to {plan.canonical_diameter:g} px (factors "
             f"{min(facts.factors):.2f}–{max(facts.factors):.2f})")
    return train, val, facts


def _n_classes(manifest: Any, plan: Any) -> int:
    from microseg.transforms.targets import n_classes_for

    if manifest.task != "instance":
        return manifest.n_classes
    return n_classes_for("instance", head=plan.head, levels=plan.levels)


def _finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: a Dice undefined (no objects anywhere) is written as null."""
    return None if value is None or not math.isfinite(value) else float(value)


def _size_divisor(model_config: Any) -> int:
    from microseg.models import size_divisor

    return size_divisor(model_config)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m microseg.recipes.train --run-dir DIR [options]``."""
    parser = argparse.ArgumentParser(prog="python -m microseg.recipes.train",
                                     description="Train a segmentation model from scratch on "
                                                 "the split of a run folder.")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--model-name", default="unet")
    parser.add_argument("--architecture", default="unet")
    parser.add_argument("--norm", default="batchrenorm")
    parser.add_argument("--patch-size", type=int, nargs="+")
    parser.add_argument("--batch-size", type=_batch_size, help="patches per step, or auto")
    for name, kind in (("epochs", int), ("learning-rate", float), ("patience", int)):
        parser.add_argument(f"--{name}", type=kind)
    parser.add_argument("--grad-accumulation", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tuned")
    parser.add_argument("--instance-head", default=DEFAULT_HEAD)
    parser.add_argument("--object-diameter", type=_diameter, default=DEFAULT_OBJECT_DIAMETER,
                        help="auto, a diameter in pixels, or none")
    parser.add_argument("--canonical-diameter", type=float)
    parser.add_argument("--max-minutes", type=float)
    for flag in ("quick", "overwrite", "resume"):
        parser.add_argument(f"--{flag}", action="store_true")
    arguments = vars(parser.parse_args(argv))
    patch = arguments.pop("patch_size")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return train_model(patch_size=patch[0] if patch and len(patch) == 1 else patch,
                       **arguments)


def _batch_size(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _diameter(text: str) -> float | str | None:
    return None if text.lower() == "none" else text if text == "auto" else float(text)


if __name__ == "__main__":
    main()
