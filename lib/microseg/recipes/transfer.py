"""Stage 03: adapt a pretrained model to new images with few annotations (transfer learning).

What ``notebooks/03_transfer_learning.ipynb`` calls, step by step (so a notebook shows each
result before the next step runs), and in one call (:func:`transfer_learning`) for headless use.
Stage 04 (:mod:`microseg.recipes.fine_tune`) shares steps 1–4 and adds the correction rounds:

1. :func:`prepare_transfer` — load the pretrained model (default: notebook 02's model in the same
   run folder) and the *target* data: the user's folder, or built-in synthetic images of the
   shifted ``"target"`` appearance. The target data get their own run folder,
   ``run_dir/target/`` (``target/data/split.json``: few training and validation images, more test
   images for measuring), so the source split of notebook 01 stays as it was.
2. :func:`zero_shot` — quality control before any training: does the pretrained model already
   work on the target images?
3. :func:`adapt_pretrained` — transfer learning (part of the network frozen) or classic
   fine-tuning (every layer, lower learning rate), saved as ``run_dir/models/<name>/`` like any
   model, so notebook 05 evaluates it.
4. :func:`train_scratch` — the same budget from scratch on the target images alone, to compare.
5. (04) :func:`microseg.recipes.fine_tune.correction_rounds` — human in the loop: predict new
   images, a person corrects them (simulated from the true labels in headless runs), fine-tune
   again with them added.

Every adapted model folder gets a ``summary.json`` (:func:`adaptation_summary`) with at least
``zero_shot_dice``, ``adapted_dice``, ``scratch_dice`` (foreground Dice on the target test
images, see :mod:`microseg.transfer.quality`), ``trainable_params`` and ``total_params``; 04 adds
``rounds``.

Example
-------
>>> summary = transfer_learning("runs/demo", quick=True)                 # doctest: +SKIP
>>> summary.zero_shot_dice, summary.adapted_dice, summary.scratch_dice  # doctest: +SKIP

Why one module of about 600 lines: it is notebook 03's whole recipe, step by step, and the steps
notebook 04 shares; freezing, adapting and measuring live in :mod:`microseg.transfer`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from microseg.errors import MicrosegError
from microseg.logs import summarises
from microseg.recipes.results import AdaptationSummary, ZeroShot
from microseg.runs import RunFolder, write_summary

__all__ = [
    "Adapted",
    "TransferSetup",
    "adapt_pretrained",
    "adaptation_summary",
    "comparison_table",
    "fit_model",
    "prepare_transfer",
    "scratch_learning_rate",
    "train_budget",
    "train_scratch",
    "transfer_learning",
    "zero_shot",
]

log = logging.getLogger(__name__)

TARGET_FOLDER = "target"
"""The target data's own run folder inside the run folder."""

SYNTHETIC_SHAPE = {(2, False): (256, 256), (2, True): (128, 128),
                   (3, False): (48, 96, 96), (3, True): (32, 64, 64)}
"""Shape of the built-in target images by (ndim, quick)."""


@dataclasses.dataclass
class TransferSetup:
    """What the steps share: the pretrained model and the target data.

    run: the run folder; target: ``run_dir/target`` (its own split); pretrained: the loaded
    :class:`~microseg.transfer.loading.PretrainedModel`; manifest: the target split; train, val,
    test: its samples; pool_dir: unlabelled target images for the correction rounds (None until
    needed); quick, seed, device: the run's settings.
    """

    run: RunFolder
    target: RunFolder
    pretrained: Any
    manifest: Any
    train: list[Any]
    val: list[Any]
    test: list[Any]
    quick: bool
    seed: int
    device: str
    pool_dir: Path | None = None
    representation: Any = None
    scale: Any = None

    @property
    def task(self) -> str:
        """The target data's task: "binary", "semantic" or "instance"."""
        return self.manifest.task

    @property
    def n_classes(self) -> int:
        """Output classes of the adapted models: the pretrained model's instance head decides
        them for instance data (three classes, or background and distance levels)."""
        from microseg.transforms.targets import n_classes_for

        plan = self.representation
        if self.task != "instance" or plan is None:
            return self.manifest.n_classes
        return n_classes_for("instance", head=plan.head, levels=plan.levels)

    def represented(self, samples: Sequence[Any]) -> list[Any]:
        """Training samples as the models see them: the pretrained model's instance head and
        canonical object size (:func:`microseg.data.representation.represent`)."""
        from microseg.data.representation import represent

        return list(samples) if self.representation is None else represent(
            samples, self.representation)[0]

    def predictor(self, network: Any, config: Any, postprocessing: Any = None) -> Any:
        """``network`` as a :class:`~microseg.models.TrainedModel` for the target data: its
        task and normalization, and ``postprocessing`` (None: the default instance
        post-processing)."""
        from microseg.inference.instances import InstancePostprocessing
        from microseg.models import TrainedModel

        settings = self.representation_settings()
        return TrainedModel.from_network(
            network, config, task=self.task,
            normalization=self.manifest.normalization_config(),
            postprocessing=postprocessing or InstancePostprocessing(
                head=settings["instance_head"]),
            input_axes=self.manifest.input_axes, **settings)

    def representation_settings(self) -> dict[str, Any]:
        """The pretrained model's instance head and object scale, as the adapted models keep
        them (:class:`~microseg.models.PredictionSettings` fields)."""
        plan, facts = self.representation, self.scale
        return {"instance_head": plan.head if plan is not None else "three_class",
                "canonical_diameter": None if plan is None else plan.canonical_diameter,
                "object_diameter": None if facts is None else facts.median_diameter}


@dataclasses.dataclass
class Adapted:
    """One trained model (adapted or from scratch) and how it did.

    name: model folder name; mode: ``"transfer"``, ``"finetune"``, ``"scratch"`` or
    ``"round<k>"``; model, config: the network of the best checkpoint and its ModelConfig;
    fit: the trainer's
    :class:`~microseg.training.trainer.FitResult`; quality: on the target test images;
    freeze_report, adapt_report: what was frozen and which layers were replaced (None for
    scratch); train_config: the budget.
    """

    name: str
    mode: str
    model: Any
    config: Any
    fit: Any
    quality: Any
    train_config: Any
    freeze_report: Any = None
    adapt_report: Any = None

    @property
    def model_dir(self) -> Path:
        """The model folder written by training."""
        return Path(self.fit.model_dir)


@summarises(lambda a: Path(a["run_dir"]) / "target")
def prepare_transfer(run_dir: str | Path, pretrained: str | Path | None = None,
                     target_data_dir: str | Path | None = None, n_target_train: int = 4,
                     n_target_val: int = 2, n_target_test: int | None = None,
                     quick: bool = False, seed: int = 0, device: str = "auto",
                     allow_torchscript: bool = False, overwrite: bool = False) -> TransferSetup:
    """Load the pretrained model and prepare the target data in ``run_dir/target/``.

    Parameters
    ----------
    run_dir : the run folder.
    pretrained : a model folder, a built-in model's name (``"nuclei"``), a bioimage.io package
        (a local one, or ``"bioimage.io:<id>"`` / an https address, downloaded once) or a state
        dict (see :func:`microseg.transfer.loading.load_pretrained`); None: the run folder's model
        (:meth:`microseg.runs.RunFolder.default_model_name`: the one notebook 02 trained), or,
        when there is none, the built-in model that suits ``target_data_dir`` (``"nuclei"`` for
        2D grey images of round objects, :func:`microseg.models.builtin.builtin_for`).
    target_data_dir : the user's target images (``images/`` + ``labels/``); None: built-in
        synthetic images of the ``"target"`` appearance (written into ``run_dir/target/data``).
    n_target_train, n_target_val : training and validation images of the target split.
    n_target_test : synthetic test images (measuring only); None: 4 (quick 2). With
        ``target_data_dir`` every image not used to train or validate is a test image.
    quick : smaller synthetic images (2D: 128² instead of 256²; 3D: 32×64×64 instead of
        48×96×96).
    seed : seeds the synthetic data and the split.
    device : where models are trained and predict.
    allow_torchscript : accept TorchScript weights (zero-shot only; they cannot be adapted).
    overwrite : replace a target split made earlier with other parameters.

    Raises
    ------
    RunOrderError
        ``pretrained`` is None and notebook 02 has not trained a model in ``run_dir``.
    DataError, ConfigError
        Unusable pretrained weights or target data (every problem listed).
    """
    from microseg.data.dataset import load_subset
    from microseg.data.representation import represent
    from microseg.transfer.loading import load_pretrained

    run = RunFolder(run_dir)
    source = _default_source(run, target_data_dir) if pretrained is None else pretrained
    loaded = load_pretrained(source, allow_torchscript=allow_torchscript, device="cpu")
    log.info("pretrained model: %s", loaded.describe())
    settings = _saved_settings(loaded)
    target = RunFolder(run.root / TARGET_FOLDER)
    manifest = _target_split(run, target, loaded, settings, target_data_dir, n_target_train,
                             n_target_val, n_target_test, quick, seed, overwrite)
    subsets = {s: load_subset(manifest, s) for s in ("train", "val", "test")}
    plan = _representation(settings, loaded, manifest)
    train, facts = represent(subsets["train"], plan)
    val, _ = represent(subsets["val"], plan)
    return TransferSetup(run, target, loaded, manifest, train, val, subsets["test"], quick,
                         seed, device, representation=plan, scale=facts)


def _default_source(run: RunFolder, data_dir: str | Path | None) -> Any:
    """The model to start from when none is named: the one notebook 02 trained in the run,
    else the built-in model that suits the target images (the nuclei model for 2D grey images
    of round objects, :func:`microseg.models.builtin.builtin_for`)."""
    from microseg.errors import RunOrderError
    from microseg.models.builtin import builtin_for

    try:
        return run.model_dir(run.default_model_name())
    except RunOrderError as err:
        if data_dir is None:
            raise
        name, why = builtin_for(data_dir)
        if name is None:
            raise RunOrderError(f"{err}; or give pretrained_path (a model folder, a built-in "
                                f"model's name or a bioimage.io model): no built-in model "
                                f"suits {data_dir}: {why}") from None
        log.info("no model trained in %s; the images in %s look like nuclei (%s): starting "
                 "from the built-in model %r, checked on them before any training", run.root,
                 data_dir, why, name)
        return name


def _saved_settings(loaded: Any) -> Any:
    """The pretrained model's ``prediction.json`` (task, instance head, object scale) when it
    is a model folder (a built-in model's included); None for a package or a state dict."""
    from microseg.runs import PREDICTION_FILE

    folder = Path(loaded.source)
    if loaded.kind != "model_folder" or not (folder / PREDICTION_FILE).is_file():
        return None
    from microseg.models import PredictionSettings

    return PredictionSettings.load(folder / PREDICTION_FILE)


def _representation(settings: Any, loaded: Any, manifest: Any) -> Any:
    """The pretrained model's instance head and canonical object size (from its
    ``prediction.json``; a package or state dict has none: three classes, own scale)."""
    from microseg.data.representation import Representation

    head = settings.instance_head if settings is not None else "three_class"
    levels = max(2, loaded.config.out_classes - 1) if loaded.config is not None else 2
    return Representation(manifest.task, head if manifest.task == "instance" else "three_class",
                          levels, None if settings is None else settings.canonical_diameter)


def _target_split(run: RunFolder, target: RunFolder, loaded: Any, settings: Any, data_dir: Any,
                  n_train: int, n_val: int, n_test: int | None, quick: bool, seed: int,
                  overwrite: bool) -> Any:
    from microseg.data.split import load_manifest
    from microseg.recipes.prepare import prepare_data

    ndim = loaded.config.ndim if loaded.config is not None else 2
    task = _source_task(run, loaded, settings)
    if data_dir is None:
        n_test = n_test or (2 if quick else 4)
        counts = (n_train, n_val, n_test)
        extra = dict(n_synthetic=sum(counts), synthetic_shape=SYNTHETIC_SHAPE[(ndim, quick)],
                     domain="target")
    else:
        counts = _user_counts(Path(data_dir), ndim, n_train, n_val)
        extra = {}
    fractions = tuple(c / sum(counts) for c in counts)
    prepare_data(target.root, data_dir=data_dir, ndim=ndim, task=task, fractions=fractions,
                 seed=seed, quick=quick, overwrite=overwrite, **extra)
    return load_manifest(target.root)


def _source_task(run: RunFolder, loaded: Any, settings: Any) -> str:
    """The task of notebook 01's split, else the pretrained model's (its ``prediction.json``),
    else guessed from its classes."""
    from microseg.data.split import load_manifest

    if run.split_manifest.is_file():
        return load_manifest(run.root).task
    if settings is not None:
        return settings.task
    classes = loaded.config.out_classes if loaded.config is not None else 3
    return {2: "binary", 3: "instance"}.get(classes, "semantic")


def _user_counts(data_dir: Path, ndim: int, n_train: int, n_val: int) -> tuple[int, int, int]:
    """(train, val, test) image counts: every image not used to train or validate tests."""
    from microseg.errors import DataError
    from microseg.io import pair_folder

    n_images = len(pair_folder(data_dir, ndim=ndim))
    n_test = n_images - n_train - n_val
    if min(n_train, n_val, n_test) < 1:
        raise DataError(f"{data_dir} holds {n_images} labelled image(s): not enough for "
                        f"{n_train} training and {n_val} validation image(s) and at least one "
                        f"test image", ["lower n_target_train or n_target_val, or add images"])
    return n_train, n_val, n_test


def zero_shot(setup: TransferSetup) -> ZeroShot:
    """Quality of the pretrained model as it is, on the target validation and test images.

    Returns :class:`~microseg.recipes.results.ZeroShot` with ``val`` and ``test``, each a
    :class:`~microseg.transfer.quality.Quality` (predictions included for figures). The validation images are what a user checks first; the
    test images give the number compared with the adapted models.
    """
    from microseg.transfer.quality import measure_quality

    model = setup.predictor(setup.pretrained.model, setup.pretrained.config)
    return ZeroShot(**{subset: measure_quality(model, getattr(setup, subset), "zero-shot")
                       for subset in ("val", "test")})


def train_budget(quick: bool = False, epochs: int | None = None,
                 learning_rate: float | None = None, seed: int = 0, ndim: int = 2,
                 patience: int | None = None) -> Any:
    """The TrainConfig every model of a comparison shares (same steps, batches, patches).

    Full run: 15 epochs of 20 steps, batch 8, patches 128² (3D: batch 2, 32×64×64), patience 6.
    Quick: 2 epochs of 4 steps, batch 2, patches 64² (3D 16×32×32). ``learning_rate`` None:
    the TrainConfig default (the rate for training from scratch).
    """
    from microseg.training.config import TrainConfig

    if quick:
        base = dict(epochs=2, steps_per_epoch=4, batch_size=2,
                    patch_size=(64, 64) if ndim == 2 else (16, 32, 32))
    else:
        base = dict(epochs=15, steps_per_epoch=20, batch_size=8 if ndim == 2 else 2,
                    patch_size=(128, 128) if ndim == 2 else (32, 64, 64), patience=6)
    changes = dict(epochs=epochs, learning_rate=learning_rate, patience=patience)
    base.update({k: v for k, v in changes.items() if v is not None})
    return TrainConfig(seed=seed, **base)


def scratch_learning_rate() -> float:
    """The learning rate of training from scratch (the TrainConfig default); adapting
    pretrained weights uses a tenth of it unless told otherwise."""
    from microseg.training.config import TrainConfig

    return TrainConfig().learning_rate


def _pretrained_network(setup: TransferSetup) -> tuple[Any, Any]:
    """A trainable copy of the pretrained network (TorchScript cannot be adapted)."""
    if setup.pretrained.config is None:
        raise MicrosegError(
            f"{setup.pretrained.source} was loaded as TorchScript, which microseg can evaluate "
            f"but not adapt: there is no architecture to rebuild and save. Use the model's "
            f"PyTorch state-dict weights (a model folder, or a bioimage.io package with "
            f"microseg's architecture)")
    return copy.deepcopy(setup.pretrained.model), setup.pretrained.config


def adapt_pretrained(setup: TransferSetup, model_name: str, adapt: Any = None,
                     epochs: int | None = None, callbacks: Sequence[Callable] = (),
                     overwrite: bool = False) -> Adapted:
    """Adapt the pretrained model to the target training images; save ``models/<model_name>/``.

    Parameters
    ----------
    setup : from :func:`prepare_transfer`.
    model_name : the new model folder's name.
    adapt : an :class:`~microseg.transfer.adapt.AdaptConfig` (mode ``"transfer"`` with frozen
        layers, or ``"finetune"``; learning rates; gradual unfreezing) or its dict; None: its
        defaults (transfer learning with the encoder frozen). Saved as ``adapt_config.json`` in
        the model folder.
    epochs : None: :func:`train_budget`'s.
    callbacks : ``callback(trainer, record)`` after every epoch (e.g. a live loss plot).
    overwrite : train over an existing model folder of that name.

    Returns
    -------
    Adapted, its quality measured on the target test images with the best checkpoint.

    Raises
    ------
    OutputExistsError
        ``models/<model_name>`` already holds a model and ``overwrite`` is false.
    ConfigError
        An invalid AdaptConfig or an unknown layer group; MicrosegError for TorchScript weights.
    """
    from microseg.transfer.adapt import AdaptConfig, adapt_model
    from microseg.transfer.freezing import freeze, unfreeze

    adapt = AdaptConfig.from_dict(adapt) if isinstance(adapt, dict) else adapt or AdaptConfig()
    model, config = _pretrained_network(setup)
    model, config, adapt_report = adapt_model(model, config, setup.manifest.n_channels,
                                              setup.n_classes, adapt.input_weights)
    freeze_report = (freeze(model, adapt.freeze, adapt.keep_last, adapt.keep_norm_statistics)
                     if adapt.mode == "transfer" else unfreeze(model))
    budget = train_budget(setup.quick, epochs, adapt.effective_learning_rate(scratch_learning_rate()), setup.seed,
                          config.ndim)
    callbacks = [*callbacks, *_unfreezing(model, adapt)]
    adapted = fit_model(setup, model_name, adapt.mode, model, config, budget, callbacks, overwrite,
                   adapt.group_learning_rates, freeze_report, adapt_report)
    adapt.save(adapted.model_dir / "adapt_config.json")
    return adapted


def _unfreezing(model: Any, adapt: Any) -> list[Callable]:
    from microseg.transfer.freezing import GradualUnfreezing

    if adapt.mode != "transfer" or not adapt.unfreeze_every:
        return []
    return [GradualUnfreezing(model, adapt.unfreeze_every, adapt.keep_norm_statistics)]


def train_scratch(setup: TransferSetup, model_name: str, epochs: int | None = None,
                  learning_rate: float | None = None, callbacks: Sequence[Callable] = (),
                  overwrite: bool = False) -> Adapted:
    """Train the pretrained architecture from random weights on the target images alone.

    Same budget (:func:`train_budget`) as the adapted models, the from-scratch learning rate
    (TrainConfig default) unless given. Saved as ``models/<model_name>/``. Errors as
    :func:`adapt_pretrained`.
    """
    from microseg.models import build_model
    from microseg.training.trainer import seed_everything

    _, pretrained_config = _pretrained_network(setup)
    config = pretrained_config.replace(in_channels=setup.manifest.n_channels,
                                       out_classes=setup.n_classes)
    seed_everything(setup.seed)
    model = build_model(config)
    budget = train_budget(setup.quick, epochs, learning_rate, setup.seed, config.ndim)
    return fit_model(setup, model_name, "scratch", model, config, budget, callbacks, overwrite)


def fit_model(setup: TransferSetup, model_name: str, mode: str, model: Any, config: Any, budget: Any,
         callbacks: Sequence[Callable], overwrite: bool, group_learning_rates: Any = None,
         freeze_report: Any = None, adapt_report: Any = None,
         train: Sequence[Any] | None = None) -> Adapted:
    """Train ``model`` on the target training images (or ``train``) for ``budget`` (a
    TrainConfig), save it as ``models/<model_name>/`` and measure the best checkpoint on the
    target test images. ``mode`` names the result (``"transfer"``, ``"finetune"``,
    ``"scratch"``, ``"round<k>"``); ``group_learning_rates`` apply to all modes but scratch."""
    from microseg.models import TrainedModel
    from microseg.training.checks import check_training_data
    from microseg.training.trainer import Trainer
    from microseg.transfer.adapt import parameter_groups
    from microseg.transfer.quality import measure_quality
    from microseg.transforms.augment import Augmenter

    train = setup.train if train is None else list(train)
    check_training_data(train, config.in_channels, config.out_classes, budget.patch_size,
                        getattr(model, "size_divisor", 1))
    groups = (parameter_groups(model, budget.learning_rate, group_learning_rates)
              if mode != "scratch" else None)
    trainer = Trainer(model, budget, train, setup.val, model_config=config,
                      model_dir=setup.run.model_dir(model_name), device=setup.device,
                      augment_factory=lambda seed: Augmenter(ndim=config.ndim, seed=seed),
                      callbacks=list(callbacks), overwrite=overwrite, parameters=groups,
                      progress=not setup.quick)
    setup.predictor(model, config).save_settings(setup.run.model_dir(model_name))
    fit = trainer.fit()
    manifest = setup.manifest
    best = TrainedModel.finish(fit.model_dir, task=manifest.task,
                               normalization=manifest.normalization_config(),
                               input_axes=manifest.input_axes, quick=setup.quick,
                               device=trainer.device, **setup.representation_settings())
    tuned = _tune_postprocessing(setup, best) if manifest.task == "instance" else None
    quality = measure_quality(setup.predictor(best.network, best.config, tuned), setup.test,
                              mode)
    log.info("%s (%s): foreground Dice %.3f on %d target test image(s)", model_name, mode,
             quality.foreground_dice, len(setup.test))
    return Adapted(model_name, mode, best.network, best.config, fit, quality, budget,
                   freeze_report, adapt_report)


def _tune_postprocessing(setup: TransferSetup, model: Any) -> Any:
    """The watershed thresholds of an adapted model tuned on the target validation images and
    saved in its folder, as at the end of notebook 02's training: a network trained briefly
    from scratch may predict few pixels at the deepest distance levels, where the default seed
    threshold finds no object at all. None without labelled validation images."""
    from microseg.inference.instances import TUNING_IMAGES_QUICK

    samples = [s for s in setup.val if s.label is not None]
    if not samples:
        return None
    model.tune_postprocessing(samples[:TUNING_IMAGES_QUICK] if setup.quick else samples,
                              setup.quick)
    return model.postprocessing


def comparison_table(zero_shot_quality: Any, *models: Adapted) -> Any:
    """A pandas DataFrame, one row per model: foreground Dice, object F1, parameters trained.

    ``zero_shot_quality`` is :func:`zero_shot`'s ``"test"`` entry; ``models`` the adapted and
    scratch results. All numbers are on the same target test images.
    """
    import pandas as pd

    from microseg.models import count_parameters

    rows = [{"model": "pretrained (zero-shot)", "mode": "zero-shot",
             "foreground_dice": zero_shot_quality.foreground_dice,
             "object_f1": zero_shot_quality.object_f1, "trained_params": 0, "epochs": 0}]
    for adapted in models:
        trained = (adapted.freeze_report.trainable_params if adapted.freeze_report
                   else count_parameters(adapted.model)[1])
        rows.append({"model": adapted.name, "mode": adapted.mode,
                     "foreground_dice": adapted.quality.foreground_dice,
                     "object_f1": adapted.quality.object_f1, "trained_params": trained,
                     "epochs": adapted.fit.epochs_run})
    return pd.DataFrame(rows)


def adaptation_summary(setup: TransferSetup, zero: ZeroShot, adapted: Adapted,
                       scratch: Adapted, rounds: Sequence[Mapping[str, Any]] | None = None
                       ) -> AdaptationSummary:
    """The result of notebooks 03/04: an :class:`~microseg.recipes.results.AdaptationSummary`
    (the adapted model folder's ``summary.json`` holds its dict).

    Fields: ``zero_shot_dice``, ``adapted_dice``, ``scratch_dice`` (foreground Dice, target test
    images), ``zero_shot_val_dice``, the object F1 of each, ``trainable_params``,
    ``total_params``, ``mode``, ``model_dir``, ``scratch_model_dir``, ``pretrained``,
    ``target_split``, ``n_target_train``/``val``/``test``, ``freeze``, ``replaced_layers``,
    ``best_epoch``, ``epochs_run``, ``learning_rate``, ``adapted_beats_zero_shot``,
    ``adapted_beats_scratch``, and ``rounds`` when given.
    """
    from microseg.models import count_parameters

    trainable = (adapted.freeze_report.trainable_params if adapted.freeze_report
                 else count_parameters(adapted.model)[0])
    summary = {
        "zero_shot_dice": zero.test.foreground_dice,
        "adapted_dice": adapted.quality.foreground_dice,
        "scratch_dice": scratch.quality.foreground_dice,
        "zero_shot_val_dice": zero.val.foreground_dice,
        "zero_shot_object_f1": zero.test.object_f1,
        "adapted_object_f1": adapted.quality.object_f1,
        "scratch_object_f1": scratch.quality.object_f1,
        "trainable_params": int(trainable),
        "total_params": int(count_parameters(adapted.model)[1]),
        "mode": adapted.mode,
        "model_dir": str(adapted.model_dir),
        "scratch_model_dir": str(scratch.model_dir),
        "pretrained": setup.pretrained.source,
        "target_split": str(setup.target.split_manifest),
        "n_target_train": len(setup.train),
        "n_target_val": len(setup.val),
        "n_target_test": len(setup.test),
        "freeze": None if adapted.freeze_report is None else adapted.freeze_report.to_dict(),
        "replaced_layers": None if adapted.adapt_report is None else adapted.adapt_report.to_dict(),
        "best_epoch": adapted.fit.best_epoch,
        "epochs_run": adapted.fit.epochs_run,
        "learning_rate": adapted.train_config.learning_rate,
    }
    summary["adapted_beats_zero_shot"] = summary["adapted_dice"] > summary["zero_shot_dice"]
    summary["adapted_beats_scratch"] = summary["adapted_dice"] > summary["scratch_dice"]
    if rounds is not None:
        summary["rounds"] = [dict(r) for r in rounds]
    return AdaptationSummary.from_dict(summary)


def transfer_learning(run_dir: str | Path, pretrained: str | Path | None = None,
                      target_data_dir: str | Path | None = None,
                      freeze: Sequence[str] | str = "encoder", n_target_train: int = 4,
                      n_target_val: int = 2, learning_rate: float | None = None,
                      epochs: int | None = None, model_name: str = "transfer",
                      seed: int = 0, device: str = "auto", quick: bool = False,
                      overwrite: bool = False, callbacks: Sequence[Callable] = ()
                      ) -> AdaptationSummary:
    """Notebook 03 in one call: zero-shot check, transfer learning, scratch baseline, summary.

    Trains ``models/<model_name>/`` (the ``freeze`` layer groups frozen, comma-separated or a
    list; see :func:`adapt_pretrained`) and ``models/<model_name>_scratch/`` with the same
    budget, and writes the summary (:func:`adaptation_summary`) into
    ``models/<model_name>/summary.json``. ``learning_rate`` None: a tenth of the from-scratch
    default. Other parameters as :func:`prepare_transfer`; returns the summary.
    """
    from microseg.transfer.adapt import AdaptConfig

    setup = prepare_transfer(run_dir, pretrained, target_data_dir, n_target_train, n_target_val,
                             quick=quick, seed=seed, device=device, overwrite=overwrite)
    zero = zero_shot(setup)
    adapt = AdaptConfig(mode="transfer", freeze=freeze, learning_rate=learning_rate)
    adapted = adapt_pretrained(setup, model_name, adapt, epochs, callbacks, overwrite)
    scratch = train_scratch(setup, f"{model_name}_scratch", epochs=epochs, callbacks=callbacks,
                            overwrite=overwrite)
    summary = adaptation_summary(setup, zero, adapted, scratch)
    write_summary(adapted.model_dir, summary)
    return summary
