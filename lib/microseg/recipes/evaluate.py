"""Evaluate trained models on held-out images: what notebook 05 calls ("never skip evaluation").

:func:`evaluate_models` predicts every test image (never a training image) with each model of a
run folder, measures pixel metrics per class and, for instance models, object metrics at IoU
thresholds, and writes, per model, into ``eval/<model>/``::

    metrics.csv        one row per image, worst first
    summary.json       pooled and mean-over-images metrics, fit diagnosis, how it was predicted
    eval_config.json   the EvaluationConfig used
    figures/*.png      metric against IoU threshold, distributions, overlays, training curves
    report.html        one self-contained QC page (microseg.reports.evaluation_report)

and ``eval/summary.json`` comparing the models side by side (earlier comparisons are appended
to ``eval/summary_history.jsonl`` before it is replaced). An existing ``eval/<model>/`` is never
written over unless ``overwrite=True``: the new results go to ``eval/<model>-2/`` and so on.

Example
-------
>>> result = evaluate_models("runs/demo")                       # doctest: +SKIP
>>> result.comparison                                            # doctest: +SKIP

Why one module of about 750 lines: it is notebook 05's whole recipe (data, prediction, metrics,
tables, figures, reports), one function per step; the metrics themselves live in
:mod:`microseg.metrics`, figures in :mod:`microseg.reports.evaluation_figures` and the page in :mod:`microseg.reports.evaluation_report`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from microseg.config import StageConfig
from microseg.errors import ConfigError, DataError, RunOrderError
from microseg.logs import progress, summarises
from microseg.metrics.instance import DEFAULT_IOU_THRESHOLDS, InstanceMatching
from microseg.metrics.pixel import ClassMetrics
from microseg.models.builtin import run_model
from microseg.recipes.results import Evaluation, EvaluationSummary, ModelEvaluation
from microseg.runs import (
    HISTORY_FILE,
    MODEL_CONFIG_FILE,
    RunFolder,
    atomic_write,
    atomic_write_text,
    create_output_dir,
    environment_record,
    read_json,
    unique_name,
    write_summary,
    writing,
)

__all__ = [
    "EvaluationConfig",
    "EvaluationData",
    "ImageResult",
    "evaluate_models",
    "load_evaluation_data",
]

log = logging.getLogger(__name__)

QUICK_IMAGES = 2


@dataclasses.dataclass
class EvaluationConfig(StageConfig):
    """How models are evaluated; saved as ``eval/<model>/eval_config.json``.

    Fields
    ------
    subset : ``"test"`` (default) or ``"val"`` of the split manifest; training images are never
        evaluated (that measures memory, not quality).
    iou_thresholds : IoU thresholds of the object matching (instance task).
    report_threshold : the IoU threshold of the per-image table, the ranking "worst first" and
        the overlays; must be one of ``iou_thresholds``.
    tile_shape : inner tile per spatial axis for tiled prediction; None: images whose sides are
        all at most :data:`microseg.models.prediction.DEFAULT_TILE` are predicted whole, larger
        ones in such tiles (:meth:`microseg.models.TrainedModel.plan_prediction`).
    halo : context per axis around each tile (windows stay inside the image, so at the image
        border the network sees the same edge as on the whole image); None: the model's
        receptive-field radius (:attr:`microseg.models.TrainedModel.halo`).
    batch_size : tiles per forward pass.
    device : ``"auto"`` (GPU if available), ``"cpu"``, ``"cuda"``, ...
    tune_postprocessing : instance task: when the model folder has no
        ``instance_postprocessing.json``, tune it on the validation images and save it there
        (with the search table, ``instance_postprocessing_search.csv``). Quick runs tune on a
        small grid and save nothing, so a smoke run never leaves a poor tuning behind.
    n_overlays : images shown in the overlay figure (worst first).
    max_images : evaluate at most this many images (None: all; quick runs use 2).
    object_diameter : for models trained at a canonical object size: the median object
        diameter of the images in pixels; None: the training images'; ``"auto"``: estimated
        per image (:meth:`microseg.models.TrainedModel.predict_with_info`).
    tta : test-time augmentation, the mean over flips and 90° rotations (8 times the work; on by
        default: +0.03 to 0.06 F1@0.5 on the real sets of BENCHMARKS.md).
    """

    subset: Literal["test", "val"] = "test"
    iou_thresholds: tuple[float, ...] = DEFAULT_IOU_THRESHOLDS
    report_threshold: float = 0.5
    tile_shape: tuple[int, ...] | None = None
    halo: tuple[int, ...] | None = None
    batch_size: int = 4
    device: str = "auto"
    tune_postprocessing: bool = True
    n_overlays: int = 4
    max_images: int | None = None
    object_diameter: float | str | None = "auto"
    tta: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not any(abs(t - self.report_threshold) < 1e-9 for t in self.iou_thresholds):
            raise ConfigError(f"EvaluationConfig.report_threshold {self.report_threshold} must "
                              f"be one of iou_thresholds {list(self.iou_thresholds)}")


@dataclasses.dataclass
class EvaluationData:
    """The labelled images to evaluate on, and where they came from.

    samples : :class:`microseg.data.dataset.Sample` objects (normalized image, label, target).
    task, n_classes, class_names : from the split manifest (or ``task`` given for a folder).
    source : the manifest subset (``"test split of runs/demo"``) or the data folder.
    manifest : the run's split manifest, None when the run folder has none.
    """

    samples: list[Any]
    task: str
    n_classes: int
    class_names: list[str]
    source: str
    manifest: Any = None

    def info(self) -> dict[str, Any]:
        """Plain dict for summaries and the report."""
        return {"source": self.source, "task": self.task, "n_images": len(self.samples),
                "classes": ", ".join(self.class_names),
                "images": ", ".join(s.stem for s in self.samples)}


@dataclasses.dataclass
class ImageResult:
    """Prediction and metrics of one image (see :func:`microseg.reports.evaluation_figures.plot_overlays`).

    prediction : hard class map (argmax), (*spatial) int; instances : predicted object ids
    (instance task, else None); matching : object matching (instance task); pixel : per-class
    :class:`~microseg.metrics.pixel.ClassMetrics`; objects : the same for "any object class"
    against background; row : the image's row of ``metrics.csv``.
    """

    stem: str
    image: np.ndarray
    label: np.ndarray
    target: np.ndarray
    prediction: np.ndarray
    instances: np.ndarray | None
    matching: InstanceMatching | None
    pixel: list[ClassMetrics]
    objects: ClassMetrics
    row: dict[str, Any]

    @property
    def caption(self) -> str:
        """The image's headline metric, e.g. ``"F1@0.5 = 0.91"``."""
        key = next((k for k in self.row if k.startswith("f1@")), "object_dice")
        value = self.row.get(key)
        return f"{key} = {'–' if value is None else f'{value:.3f}'}"


def _unlabelled_problem(stems: list[str], where: str) -> DataError:
    return DataError(
        f"{where}: {len(stems)} image(s) have no labels; evaluation compares with labels",
        [f"{stem}: no label image" for stem in stems]
        + ["add label images (same file names) and run notebooks/01_prepare_data.ipynb again, "
           "or pass data_dir= a folder with images/ and labels/"],
    )


def _manifest_or_none(run: RunFolder) -> Any:
    from microseg.data.split import load_manifest

    return load_manifest(run.root) if run.split_manifest.is_file() else None


def _subset_samples(run: RunFolder, subset: str) -> tuple[list[Any], Any]:
    from microseg.data.dataset import load_subset
    from microseg.data.split import load_manifest

    manifest = load_manifest(run.root)
    entries = manifest.entries(subset)
    if not entries:
        raise DataError(f"{run.split_manifest}: the {subset} set is empty; split again with "
                        f"notebooks/01_prepare_data.ipynb and a non-zero {subset} fraction")
    unlabelled = [e["stem"] for e in entries if e["label"] is None]
    if unlabelled:
        raise _unlabelled_problem(unlabelled, f"{subset} set of {run.split_manifest}")
    return load_subset(manifest, subset), manifest


def _folder_samples(data_dir: Path, manifest: Any, task: str) -> list[Any]:
    from microseg.data.checks import require_finite
    from microseg.data.dataset import Sample
    from microseg.io import pair_folder, read_image, read_label
    from microseg.transforms.normalization import (
        PercentileNormalization,
        normalize,
        percentile_statistics,
    )
    from microseg.transforms.targets import labels_to_target

    ndim, axes = (manifest.ndim, manifest.input_axes) if manifest is not None else (None, None)
    pairs = pair_folder(data_dir, ndim=ndim, axes=axes, require_labels=False)
    unlabelled = [p.stem for p in pairs if p.label is None]
    if unlabelled:
        raise _unlabelled_problem(unlabelled, str(data_dir))
    norm = manifest.normalization_config() if manifest is not None else PercentileNormalization()
    samples = []
    for pair in pairs:
        image = read_image(pair.image, axes=axes, ndim=pair.ndim)
        require_finite(image, pair.image)
        low, high = percentile_statistics(image, norm)
        label = read_label(pair.label, ndim=pair.ndim)
        samples.append(Sample(pair.stem, normalize(image, low, high, norm.clip), label,
                              labels_to_target(label, task)))
    return samples


def load_evaluation_data(run_dir: str | Path, subset: str = "test",
                         data_dir: str | Path | None = None,
                         task: str | None = None) -> EvaluationData:
    """The labelled images to evaluate: a subset of the run's split, or a folder.

    Parameters
    ----------
    run_dir : the run folder whose ``data/split.json`` gives the images, the task and the
        normalization (for models adapted by notebook 04: ``<run>/target``).
    subset : ``"test"`` or ``"val"`` when ``data_dir`` is None.
    data_dir : a folder with ``images/`` and ``labels/`` (same file names) instead of the split;
        images are normalized with the manifest's global percentile normalization (defaults
        without a manifest). Nothing is written there.
    task : needed only for a ``data_dir`` in a run folder without a manifest.

    Raises
    ------
    RunOrderError
        No split manifest (naming notebook 01) and no ``data_dir`` + ``task``.
    DataError
        Images without labels (each named), an empty subset, unreadable files.
    ConfigError
        ``subset="train"`` or an unknown task.
    """
    from microseg.transforms.targets import check_task, class_names, n_classes_for

    run = RunFolder(run_dir)
    if subset not in ("test", "val"):
        raise ConfigError(f"subset {subset!r}: evaluate on 'test' (default) or 'val'; training "
                          f"images measure how well the model remembers, not how well it works")
    if data_dir is None:
        samples, manifest = _subset_samples(run, subset)
        source = f"{subset} split of {run.root}"
    else:
        manifest = _manifest_or_none(run)
        if manifest is None and task is None:
            raise RunOrderError(f"{run.split_manifest} does not exist, so the task is unknown: "
                                f"pass task='instance' (or 'binary'/'semantic'), or run "
                                f"notebooks/01_prepare_data.ipynb first")
        task = check_task(task or manifest.task)
        samples = _folder_samples(Path(data_dir), manifest, task)
        source = str(data_dir)
    task = task or manifest.task
    n_classes = (manifest.n_classes if manifest is not None and manifest.task == task
                 else n_classes_for(task, [s.label for s in samples]))
    return EvaluationData(samples, task, n_classes, class_names(task, n_classes), source, manifest)


def _check_model_fits(name: str, model_config: Any, data: EvaluationData) -> None:
    first = data.samples[0]
    problems = []
    if model_config.ndim != first.image.ndim - 1:
        problems.append(f"the model is {model_config.ndim}D, the images are "
                        f"{first.image.ndim - 1}D")
    if model_config.in_channels != first.image.shape[0]:
        problems.append(f"the model expects {model_config.in_channels} channel(s), image "
                        f"{first.stem} has {first.image.shape[0]}")
    fits = (model_config.out_classes >= 3 if data.task == "instance"
            else model_config.out_classes == data.n_classes)
    if not fits:
        needed = "3 or more" if data.task == "instance" else str(data.n_classes)
        problems.append(f"the model outputs {model_config.out_classes} classes, the "
                        f"{data.task} task of this data needs {needed}")
    if problems:
        raise DataError(f"model {name!r} does not fit the evaluation data ({data.source}); was "
                        f"it trained on another run's data?", problems)


def _fitting_models(run: RunFolder, names: list[str], data: EvaluationData) -> list[str]:
    """The models whose config fits the data; the others are skipped with a logged warning.

    A run folder can hold models made for other data (another task, channel count or
    dimension), e.g. from transfer learning; evaluating "every model" means every one that fits.
    """
    from microseg.models import ModelConfig

    fitting, problems = [], []
    for name in names:
        try:
            _check_model_fits(name, ModelConfig.load(run.model_dir(name) / MODEL_CONFIG_FILE),
                              data)
            fitting.append(name)
        except (ConfigError, DataError) as err:
            log.warning("skipping model %r: %s", name, err)
            problems.append(f"{name}: {err}")
    if not fitting:
        raise DataError(f"none of the models in {run.root / 'models'} fits the evaluation data "
                        f"({data.source})", problems)
    return fitting


def _image_result(sample: Any, probabilities: np.ndarray, data: EvaluationData,
                  model: Any, config: EvaluationConfig) -> ImageResult:
    from microseg.metrics.instance import match_instances
    from microseg.metrics.pixel import check_same_shape, pixel_metrics

    prediction = probabilities.argmax(0).astype(np.int32)
    check_same_shape(prediction, sample.target)
    pixel = pixel_metrics(prediction, sample.target, data.n_classes)
    objects = pixel_metrics(prediction > 0, sample.target > 0, 2)[1]
    instances = matching = None
    if data.task == "instance":
        instances = model.labels(probabilities)
        matching = match_instances(instances, sample.label, config.iou_thresholds)
    row = _table_row(sample.stem, pixel, objects, matching, data, config)
    return ImageResult(sample.stem, sample.image, sample.label, sample.target, prediction,
                       instances, matching, pixel, objects, row)


def _table_row(stem: str, pixel: list[ClassMetrics], objects: ClassMetrics,
               matching: InstanceMatching | None, data: EvaluationData,
               config: EvaluationConfig) -> dict[str, Any]:
    row: dict[str, Any] = {"stem": stem}
    if matching is not None:
        t = config.report_threshold
        scores = matching.at(t)
        row.update({f"f1@{t:g}": scores.f1, f"ap@{t:g}": scores.average_precision,
                    f"precision@{t:g}": scores.precision, f"recall@{t:g}": scores.recall,
                    f"pq@{t:g}": scores.panoptic_quality,
                    f"matched_iou@{t:g}": scores.mean_matched_iou,
                    "mean_ap": _mean([s.average_precision for s in matching.scores]),
                    "n_true": scores.n_true, "n_pred": scores.n_pred})
    row["object_dice"] = objects.dice
    for name, metrics in zip(data.class_names[1:], pixel[1:], strict=True):
        row.update({f"iou_{name}": metrics.iou, f"dice_{name}": metrics.dice,
                    f"precision_{name}": metrics.precision, f"recall_{name}": metrics.recall})
    return row


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _postprocessing(model: Any, data: EvaluationData, config: EvaluationConfig,
                    quick: bool) -> Any:
    """The instance post-processing of the model folder (tuned when it was trained), or tuned
    here on the validation images for a model folder without one."""
    from microseg.inference.instances import tune_on_samples
    from microseg.runs import POSTPROCESSING_FILE

    model_dir = model.folder
    if (model_dir / POSTPROCESSING_FILE).is_file() or not config.tune_postprocessing:
        return model.instance_postprocessing()
    validation = _validation_samples(data, quick)
    if not validation:
        return model.instance_postprocessing()
    model.postprocessing, _ = tune_on_samples(
        lambda image: _predict(model, image, config).probabilities, validation,
        model.settings.instance_head, quick, save_to=None if quick else model_dir)
    return model.postprocessing


def _predict(model: Any, image: np.ndarray, config: EvaluationConfig) -> Any:
    """The :class:`~microseg.models.prediction.Prediction` of one normalized sample image with the
    evaluation's settings (tiling, object scale, test-time augmentation)."""
    return model.predict_with_info(image, normalized=True, tile_shape=_tile(config),
                                   halo=config.halo, batch_size=config.batch_size,
                                   device=config.device, object_diameter=config.object_diameter,
                                   tta=config.tta)


def _tile(config: EvaluationConfig) -> int | tuple[int, ...] | None:
    """The configured tile: one side for every axis when one value is given."""
    tile = config.tile_shape
    return tile[0] if tile is not None and len(tile) == 1 else tile


def _for_model(data: EvaluationData, model: Any) -> EvaluationData:
    """The data with the targets and classes of ``model``'s instance head."""
    from microseg.transforms.targets import class_names

    if data.task != "instance" or model.settings.instance_head == "three_class":
        return data
    samples = [dataclasses.replace(s, target=model.target(s.label)) for s in data.samples]
    n_classes = int(model.config.out_classes)
    return dataclasses.replace(data, samples=samples, n_classes=n_classes,
                               class_names=class_names("instance", n_classes,
                                                       model.settings.instance_head))


def _validation_samples(data: EvaluationData, quick: bool) -> list[Any]:
    from microseg.data.dataset import load_subset

    manifest = data.manifest
    if manifest is None or not manifest.val or any(e["label"] is None for e in manifest.val):
        log.warning("no labelled validation images to tune the instance post-processing on")
        return []
    samples = load_subset(manifest, "val")
    return samples[:QUICK_IMAGES] if quick else samples


def _fit_diagnosis(model_dir: Path) -> dict[str, str] | None:
    from microseg.training.diagnosis import diagnose_fit

    history = model_dir / HISTORY_FILE
    if not history.is_file():
        log.warning("%s not found: no fit diagnosis", history)
        return None
    return diagnose_fit(history).to_dict()


def _read_history(model_dir: Path) -> Any:
    import pandas as pd

    path = model_dir / HISTORY_FILE
    return pd.read_csv(path) if path.is_file() else None


def _results_table(results: list[ImageResult], task: str, config: EvaluationConfig) -> Any:
    """Per-image DataFrame, worst first (lowest F1 at the report threshold, or Dice)."""
    import pandas as pd

    table = pd.DataFrame([r.row for r in results])
    key = f"f1@{config.report_threshold:g}" if task == "instance" else "object_dice"
    return table.sort_values(key, na_position="last", kind="stable").reset_index(drop=True)


def _pixel_summary(results: list[ImageResult], class_names: list[str]) -> dict[str, Any]:
    from microseg.metrics.pixel import aggregate_pixel, class_metrics

    pixel = aggregate_pixel([r.pixel for r in results])
    keys = ("iou", "dice", "precision", "recall")
    pooled = {name: {k: v for k, v in c.items() if k != "notes"}
              for name, c in zip(class_names, pixel["pooled"], strict=True)}
    means = {name: {k: c[k] for k in (*keys, "n_images_defined")}
             for name, c in zip(class_names, pixel["mean_over_images"], strict=True)}
    objects = class_metrics(1, *(sum(getattr(r.objects, k) for r in results)
                                 for k in ("tp", "fp", "fn")))
    return {"pixel": pooled, "pixel_mean_over_images": means, "object_dice": objects.dice,
            "mean_class_dice": _mean([pooled[n]["dice"] for n in class_names[1:]]),
            "definitions": pixel["definitions"]}


def _instance_summary(results: list[ImageResult], threshold: float) -> dict[str, Any]:
    from microseg.metrics.instance import DSB_THRESHOLDS, aggregate, dsb_score

    combined = aggregate([r.matching for r in results])
    rename = {"average_precision": "ap"}
    pooled = {rename.get(k, k): v for k, v in combined["pooled"].items()}
    means = {rename.get(k, k): v for k, v in combined["mean_over_images"].items()}
    index = next(i for i, t in enumerate(combined["thresholds"]) if abs(t - threshold) < 1e-9)
    at = {k: pooled[k][index] for k in ("precision", "recall", "f1", "ap", "panoptic_quality")}
    return {"instance": {"thresholds": combined["thresholds"], **pooled,
                         "mean_over_images": means, "mean_ap": _mean(pooled["ap"])},
            "at_threshold": {"threshold": threshold, **at},
            "panoptic_quality": at["panoptic_quality"],
            "dsb_score": (dsb_score([r.matching for r in results])
                          if set(DSB_THRESHOLDS) <= set(combined["thresholds"]) else None)}


def _model_summary(name: str, results: list[ImageResult], data: EvaluationData,
                   config: EvaluationConfig, facts: dict[str, Any]) -> dict[str, Any]:
    pixel = _pixel_summary(results, data.class_names)
    summary: dict[str, Any] = {
        "model": name, "task": data.task, "subset": config.subset, "data": data.source,
        "n_images": len(results), "class_names": data.class_names,
        "pixel": pixel["pixel"], "pixel_mean_over_images": pixel["pixel_mean_over_images"],
        "object_dice": pixel["object_dice"], "mean_class_dice": pixel["mean_class_dice"],
        "instance": None, "at_threshold": None, "panoptic_quality": None,
        "aggregation": pixel["definitions"],
    }
    if data.task == "instance":
        summary.update(_instance_summary(results, config.report_threshold))
    summary.update(facts)
    return summary


def _output_dir(run: RunFolder, name: str, overwrite: bool) -> Path:
    folder = run.eval_dir(name)
    if not overwrite:
        folder = folder.parent / unique_name(folder.parent, name)
        if folder.name != name:
            log.info("%s already holds results; writing the new evaluation to %s",
                     run.eval_dir(name), folder)
    return create_output_dir(folder, overwrite=overwrite)


def _figures(name: str, summary: dict[str, Any], table: Any, results: list[ImageResult],
             history: Any, task: str, config: EvaluationConfig) -> dict[str, tuple[str, Any]]:
    """File stem → (caption, Figure) of one model's evaluation (closed by the caller)."""
    from microseg.reports import evaluation_figures as viz_eval

    figures = {}
    if task == "instance":
        figures["metric_vs_threshold"] = ("Object metrics against the IoU threshold",
                                          viz_eval.plot_metric_vs_threshold({name: summary}))
    figures["pixel_metrics"] = ("Pixel metrics per class (pooled)",
                                viz_eval.plot_pixel_metrics({name: summary}))
    columns = [c for c in table.columns if c.startswith(("f1@", "pq@"))] + ["object_dice"]
    figures["distribution"] = ("Per-image distribution",
                               viz_eval.plot_metric_distribution({name: table}, columns))
    figures["overlays"] = ("Worst images first: image, truth, prediction, errors",
                           viz_eval.plot_overlays(_worst_first(results, table), task,
                                                  n=config.n_overlays,
                                                  threshold=config.report_threshold))
    if history is not None:
        figures["training_curves"] = ("Training curves",
                                      viz_eval.plot_training_curves({name: history}))
    return figures


def _write_model_outputs(out_dir: Path, summary: dict[str, Any], table: Any,
                         figures: dict[str, tuple[str, Any]], model_info: dict[str, Any],
                         data: EvaluationData, config: EvaluationConfig) -> dict[str, str]:
    import matplotlib.pyplot as plt

    from microseg.reports.evaluation_report import figure_png, write_report

    files = {"metrics_csv": str(atomic_write_text(out_dir / "metrics.csv",
                                                  table.to_csv(index=False)))}
    config.save(out_dir / "eval_config.json")
    images = {}
    for stem, (caption, figure) in figures.items():
        png = images[caption] = figure_png(figure)
        plt.close(figure)
        atomic_write(out_dir / "figures" / f"{stem}.png", lambda tmp, png=png: tmp.write_bytes(png))
    report = write_report(out_dir / "report.html", summary, table=table, figures=images,
                          model_info=model_info, data_info=data.info(),
                          environment=_environment_info())
    files.update(report=str(report), figures=str(out_dir / "figures"))
    return files


def _environment_info() -> dict[str, Any]:
    record = environment_record()
    packages = record.pop("packages", {})
    return {**{k: v for k, v in record.items() if v is not None},
            **{name: version for name, version in packages.items() if version}}


def _model_info(name: str, model_dir: Path, model_config: Any, extra: dict[str, Any],
                postprocessing: Any) -> dict[str, Any]:
    info = {"name": name, "folder": str(model_dir), "checkpoint": str(extra.get("checkpoint")),
            "best epoch": extra.get("best_epoch"), "best validation loss": extra.get("best_val_loss"),
            "best validation Dice": extra.get("best_val_dice")}
    info.update({k: v for k, v in model_config.to_dict().items() if not k.startswith("config_")})
    if postprocessing is not None:
        info["instance post-processing"] = {k: v for k, v in postprocessing.to_dict().items()
                                            if not k.startswith("config_")}
    return info


def _model_folders(run: RunFolder, names: Sequence[str]) -> dict[str, Path]:
    """Each model's key (its results' name) → its folder; a model under ``models/`` or a path
    to a model folder. ConfigError when two models would share a key."""
    folders: dict[str, Path] = {}
    for name in names:
        key = run.model_key(name)
        if key in folders:
            raise ConfigError(f"model_names: two models are called {key!r} ({folders[key]} and "
                              f"{run_model(run, name)}); their results would share "
                              f"eval/{key}/ — evaluate them one at a time")
        folders[key] = run_model(run, name)
    return folders


def _evaluate_model(run: RunFolder, name: str, model_dir: Path, data: EvaluationData,
                    config: EvaluationConfig, quick: bool, overwrite: bool) -> dict[str, Any]:
    from microseg.models import TrainedModel

    start = time.perf_counter()
    model = TrainedModel.load(model_dir, "best", device=config.device)
    _check_model_fits(name, model.config, data)
    data = _for_model(data, model)
    if config.halo is None and model.fixed_input_shape is None:
        config = config.replace(halo=model.halo)
    post = _postprocessing(model, data, config, quick) if data.task == "instance" else None
    results, how, scales = [], set(), []
    for sample in progress(data.samples, f"evaluating {name}", "image"):
        prediction = _predict(model, sample.image, config)
        how.add(model.plan_prediction(sample.image.shape[1:], _tile(config),
                                      config.halo).describe())
        scales.append(prediction.describe())
        results.append(_image_result(sample, prediction.probabilities, data, model, config))
    table = _results_table(results, data.task, config)
    out_dir = _output_dir(run, name, overwrite)
    history = _read_history(model_dir)
    facts = {"model_dir": str(model_dir), "eval_dir": str(out_dir), "prediction": "; ".join(sorted(how)),
             "postprocessing": post.to_dict() if post is not None else None,
             "fit_diagnosis": _fit_diagnosis(model_dir), **_scale_facts(model, scales, config)}
    summary = _model_summary(name, results, data, config, facts)
    figures = _figures(name, summary, table, results, history, data.task, config)
    model_info = _model_info(name, model_dir, model.config, model.checkpoint, post)
    summary["files"] = _write_model_outputs(out_dir, summary, table, figures, model_info, data,
                                            config)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    evaluation = ModelEvaluation.from_dict(summary)
    write_summary(out_dir, evaluation)
    return {"summary": evaluation, "table": table, "results": results, "history": history}


def _scale_facts(model: Any, scales: list[dict[str, Any]], config: EvaluationConfig
                 ) -> dict[str, Any]:
    """How the images were predicted: head, object scale (median over images), TTA."""
    from microseg.models.prediction import scale_summary

    summary = scale_summary(scales)
    diameter = summary.pop("object_diameter")
    return {"instance_head": model.settings.instance_head if model.task == "instance" else None,
            "object_diameter": None if diameter is None else round(diameter, 2),
            "object_diameter_setting": config.object_diameter, **summary,
            "canonical_diameter": model.settings.canonical_diameter, "tta": config.tta}


def _comparison(summaries: dict[str, ModelEvaluation]) -> Any:
    """Key numbers side by side: one column per model."""
    import pandas as pd

    rows = {}
    for name, s in summaries.items():
        column = {"n_images": s["n_images"], "object Dice (pooled)": s["object_dice"],
                  "mean class Dice (pooled)": s["mean_class_dice"]}
        for cls, values in list(s["pixel"].items())[1:]:
            column[f"IoU {cls} (pooled)"] = values["iou"]
        if s["at_threshold"]:
            t = s["at_threshold"]["threshold"]
            for key in ("precision", "recall", "f1", "ap", "panoptic_quality"):
                column[f"{key} @ IoU {t:g} (pooled)"] = s["at_threshold"][key]
            column["AP averaged over thresholds"] = s["instance"]["mean_ap"]
            column["DSB score (IoU 0.5:0.95, mean over images)"] = s.get("dsb_score")
        column["fit diagnosis"] = (s["fit_diagnosis"] or {}).get("verdict")
        rows[name] = column
    return pd.DataFrame(rows)


def _ranking_value(summary: dict[str, Any]) -> float:
    """Pooled F1 at the report threshold (instance task) or mean class Dice; -1 if undefined."""
    value = summary["at_threshold"]["f1"] if summary["instance"] else summary["mean_class_dice"]
    return -1.0 if value is None else float(value)


def _write_combined(run: RunFolder, summaries: dict[str, ModelEvaluation], comparison: Any,
                    data: EvaluationData) -> EvaluationSummary:
    eval_root = run.root / "eval"
    previous = eval_root / "summary.json"
    if previous.is_file():
        path = eval_root / "summary_history.jsonl"
        with writing(path), open(path, "a") as history:
            history.write(json.dumps(read_json(previous)) + "\n")
        log.info("replacing %s; the earlier comparison is kept in summary_history.jsonl",
                 previous)
    best = max(summaries, key=lambda n: _ranking_value(summaries[n]))
    metric = ("F1 at the report IoU threshold (pooled)" if data.task == "instance"
              else "mean class Dice (pooled)")
    combined = EvaluationSummary.from_dict({
        "task": data.task, "data": data.source, "n_images": len(data.samples),
        "models": {n: {k: s.get(k) for k in ("eval_dir", "n_images", "object_dice",
                                             "mean_class_dice", "at_threshold",
                                             "panoptic_quality", "dsb_score", "fit_diagnosis",
                                             "instance_head", "object_diameter",
                                             "scale_factor", "tta")}
                   for n, s in summaries.items()},
        "best_model": best, "ranked_by": metric,
        "comparison": json.loads(comparison.to_json()),
        "comparison_csv": str(atomic_write_text(eval_root / "comparison.csv", comparison.to_csv())),
    })
    write_summary(eval_root, combined)
    return combined


@summarises(lambda a: Path(a["run_dir"]) / "eval")
def evaluate_models(run_dir: str | Path, model_names: Sequence[str] | None = None,
                    subset: str = "test",
                    iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
                    quick: bool = False, tile_shape: int | Sequence[int] | None = None,
                    data_dir: str | Path | None = None, device: str = "auto",
                    task: str | None = None, overwrite: bool = False,
                    split_dir: str | Path | None = None,
                    object_diameter: float | str | None = "auto",
                    tta: bool = True) -> Evaluation:
    """Evaluate trained models on held-out labelled images; write tables, figures and reports.

    Parameters
    ----------
    run_dir : the run folder (``models/<name>/`` from notebook 02, ``data/split.json`` from 01).
    model_names : models to evaluate, by name in ``run_dir/models`` or as paths to model
        folders; None: every trained model in the run folder that fits the data (task,
        channels, dimensions; the others are skipped with a logged warning).
    subset : ``"test"`` (default) or ``"val"``.
    iou_thresholds : object-matching thresholds (instance task); must include 0.5.
    quick : a smoke run: at most 2 images, a small post-processing search.
    tile_shape : inner tile side(s) for tiled prediction; None: see :data:`DEFAULT_TILE`.
    data_dir : evaluate a folder with ``images/`` and ``labels/`` instead of the split.
    device : ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    task : the task of a ``data_dir`` when the run folder has no split manifest.
    overwrite : write into existing ``eval/<model>/`` folders instead of new ones.
    split_dir : the run folder whose split gives the images (and whose normalization a
        ``data_dir`` uses); None: ``run_dir``. For the models notebook 04 adapts to new data,
        ``<run_dir>/target``: its test images are the target data's. Models and results stay in
        ``run_dir``.
    object_diameter, tta : how images are predicted (see :class:`EvaluationConfig`).

    Returns
    -------
    :class:`~microseg.recipes.results.Evaluation` with ``summary`` (an
    :class:`~microseg.recipes.results.EvaluationSummary`, what ``eval/summary.json`` holds),
    ``models`` (name → :class:`~microseg.recipes.results.ModelEvaluation`), ``tables`` (name → per-image DataFrame, worst first), ``comparison`` (DataFrame,
    one column per model), ``results`` (name → list of :class:`ImageResult`, worst first),
    ``histories`` (name → training history DataFrame or None) and ``data``
    (:class:`EvaluationData`).

    Raises
    ------
    RunOrderError
        No trained model (naming notebook 02), no split manifest (naming notebook 01).
    DataError
        Images without labels, a model that does not fit the data, a prediction whose shape
        differs from its label.
    """
    run = RunFolder(run_dir)
    if isinstance(model_names, str):
        model_names = [model_names]
    names = list(model_names) if model_names else run.model_names()
    if not names:
        raise RunOrderError(f"no trained model in {run.root / 'models'}: run "
                            f"notebooks/02_train_from_scratch.ipynb with run_dir="
                            f"{str(run.root)!r} first")
    folders = _model_folders(run, names)
    names = list(folders)
    tiles = None if tile_shape is None else tuple(int(t) for t in np.atleast_1d(tile_shape))
    config = EvaluationConfig(subset=subset, iou_thresholds=tuple(iou_thresholds), tile_shape=tiles,
                              device=device, max_images=QUICK_IMAGES if quick else None,
                              n_overlays=QUICK_IMAGES if quick else 4,
                              object_diameter=object_diameter, tta=tta)
    data = load_evaluation_data(run.root if split_dir is None else split_dir, subset, data_dir,
                                task)
    data.samples = data.samples[: config.max_images]
    if not model_names:
        names = _fitting_models(run, names, data)
    outputs = {name: _evaluate_model(run, name, folders[name], data, config, quick, overwrite)
               for name in names}
    summaries = {n: o["summary"] for n, o in outputs.items()}
    comparison = _comparison(summaries)
    combined = _write_combined(run, summaries, comparison, data)
    return Evaluation(summary=combined, models=summaries, comparison=comparison,
                      tables={n: o["table"] for n, o in outputs.items()},
                      results={n: _worst_first(o["results"], o["table"])
                               for n, o in outputs.items()},
                      histories={n: o["history"] for n, o in outputs.items()}, data=data)


def _worst_first(results: list[ImageResult], table: Any) -> list[ImageResult]:
    order = {stem: k for k, stem in enumerate(table["stem"])}
    return sorted(results, key=lambda r: order[r.stem])
