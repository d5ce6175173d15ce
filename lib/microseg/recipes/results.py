"""What the recipes return: one small frozen dataclass per result, with named, documented fields.

A notebook reads a result's fields (``summary.n_train``, ``result.summary.best_model``); the
``summary.json`` a step writes is the result's :meth:`Result.to_dict`, key for key what it was
when the recipes returned plain dicts. A result is also a read-only mapping of those keys
(``summary["n_train"]``, ``summary.get("object_diameter")``), so code written for the dicts
keeps working.

Two things a plain dataclass would lose are kept:

- a key the step does not write for this data (``object_diameter`` for data without instance
  labels, ``dsb_score`` for a semantic task, ``rounds`` without correction rounds) reads as None
  through its field but stays out of :meth:`~Result.to_dict`, as it was out of the dict;
- a key a summary holds without a field (a split made by an older version and reused) is kept in
  ``extra`` and written back.

>>> s = TimeEstimate(minutes=2.5, seconds_per_step=0.3, device="cpu", steps=400)
>>> s.minutes, s["steps"], s.to_dict()["device"]
(2.5, 400, 'cpu')
>>> AdaptationSummary.from_dict({"mode": "finetune"}).rounds is None
True
>>> "rounds" in AdaptationSummary.from_dict({"mode": "finetune"})
False
>>> AdaptationSummary.from_dict({"mode": "finetune"}) == {"mode": "finetune"}
True

Why one module of about 600 lines: it is the one place that says what every stage returns,
declarations and their documentation in notebook order; the only logic is :class:`Result`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Self

__all__ = [
    "AdaptationSummary",
    "AnnotationImport",
    "ConvertedImages",
    "CorrectionRound",
    "DataSummary",
    "DeploymentSummary",
    "Diagnosis",
    "DiagnosisSummary",
    "Evaluation",
    "EvaluationSummary",
    "ExportedModel",
    "InitialLabels",
    "MeasuredObjects",
    "ModelEvaluation",
    "Prediction",
    "Result",
    "SearchResult",
    "TimeEstimate",
    "TrainingSummary",
    "ZeroShot",
]

_OWN = frozenset({"extra", "absent"})


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Result(Mapping[str, Any]):
    """Base of every recipe result. ``extra``: keys without a field (kept, written back);
    ``absent``: fields the step did not write (None as attributes, left out of the dict)."""

    extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    absent: frozenset[str] = dataclasses.field(default=frozenset(), repr=False, compare=False)

    @classmethod
    def keys_of(cls) -> tuple[str, ...]:
        """The field names that are summary keys, in the order they are written."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _OWN)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """The result holding ``values``: known keys as fields, others in ``extra``, fields
        without a key marked absent."""
        names = cls.keys_of()
        return cls(**{k: values[k] for k in names if k in values},
                   extra={k: v for k, v in values.items() if k not in names},
                   absent=frozenset(k for k in names if k not in values))

    def to_dict(self) -> dict[str, Any]:
        """The summary as a plain dict (what ``summary.json`` holds); nested results too."""
        plain = {name: getattr(self, name) for name in self.keys_of() if name not in self.absent}
        return {**{k: _plain(v) for k, v in plain.items()}, **self.extra}

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (set fields are no longer absent)."""
        return dataclasses.replace(self, absent=self.absent - set(changes), **changes)

    def __eq__(self, other: object) -> bool:
        """Equal to a result of the same kind, or to a mapping, holding the same summary."""
        if isinstance(other, Result):
            return type(self) is type(other) and self.to_dict() == other.to_dict()
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # holds dicts: not hashable

    def __getitem__(self, key: str) -> Any:
        if key in self.extra:
            return self.extra[key]
        if key in _OWN or key in self.absent or key not in self.keys_of():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        yield from (k for k in self.keys_of() if k not in self.absent)
        yield from self.extra

    def __len__(self) -> int:
        return len(self.keys_of()) - len(self.absent) + len(self.extra)


def _plain(value: Any) -> Any:
    if isinstance(value, Result):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- 01: prepare


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class DataSummary(Result):
    """The split a run trains on (:func:`microseg.recipes.prepare.prepare_data`;
    ``data/summary.json``).

    n_images, n_train, n_val, n_test : entries in all and per subset.
    ndim, task, axes, n_channels : 2 or 3; "instance", "binary" or "semantic"; the axes of the
        image files as read ("YXC", or None: from the files); channels.
    split_manifest : the path of ``data/split.json``.
    n_classes, class_names, class_frequencies : classes of the model's targets and the pixel
        share of each over all labels.
    data_dir, labels_dir, synthetic : where the images and labels are, and whether they are the
        built-in synthetic data.
    split_by : "image" or "region"; spatial_shapes : stem → shape; empty_label_images : stems of
        label images without any object (when allowed).
    normalization : the percentile normalization (dict); channel_names : from the metadata.
    pixel_size, pixel_size_unit, pixel_size_source, pixel_size_notes : µm per pixel (ZYX) or
        None, and where it came from (:func:`microseg.recipes.prepare.describe_pixel_size`).
    object_diameter, object_diameter_p10, object_diameter_p90, object_diameter_per_image :
        median equivalent diameter of the objects (pixels), its 10th/90th percentiles and the
        median per image; absent without instance labels.
    parameters : the parameters the split was made with; data_fingerprint : of the files.
    seconds : time taken; reused : True when an identical earlier split was kept.
    """

    n_images: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    ndim: int | None = None
    task: str | None = None
    axes: str | None = None
    n_channels: int | None = None
    split_manifest: str | None = None
    n_classes: int | None = None
    class_names: list[str] | None = None
    class_frequencies: dict[str, float] | None = None
    data_dir: str | None = None
    labels_dir: str | None = None
    synthetic: bool | None = None
    split_by: str | None = None
    spatial_shapes: dict[str, list[int]] | None = None
    empty_label_images: list[str] | None = None
    normalization: dict[str, Any] | None = None
    pixel_size: list[float] | None = None
    pixel_size_unit: str | None = None
    pixel_size_source: str | None = None
    pixel_size_notes: list[str] | None = None
    channel_names: list[str] | None = None
    object_diameter: float | None = None
    object_diameter_p10: float | None = None
    object_diameter_p90: float | None = None
    object_diameter_per_image: dict[str, float] | None = None
    parameters: dict[str, Any] | None = None
    data_fingerprint: str | None = None
    seconds: float | None = None
    reused: bool | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ConvertedImages(Result):
    """Vendor files (CZI, ND2, LIF, …) turned into OME-TIFF
    (:func:`microseg.recipes.prepare.convert_vendor_images`): ``data_dir`` to split,
    ``images_dir`` inside it, ``converted`` (one record per file: ``source``, ``image``,
    ``reader``, ``pixel_size``), ``reused`` (made earlier from the same files)."""

    data_dir: str | None = None
    images_dir: str | None = None
    converted: list[dict[str, Any]] | None = None
    reused: bool | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class AnnotationImport(Result):
    """Annotations of another tool turned into labels
    (:func:`microseg.recipes.prepare.import_annotations`).

    format : the tool's format as recognized; data_dir : the folder to split; labels_dir,
    class_labels_dir : instance labels, and class ids per pixel when the format names classes
    (else None); class_names : the name of class id k at position k-1; n_images, n_objects :
    what was imported; notes : what a person should know (skipped shapes, images without
    annotations); folder : the import folder; reused : made earlier from the same files.
    """

    format: str | None = None
    data_dir: str | None = None
    labels_dir: str | None = None
    n_images: int | None = None
    n_objects: int | None = None
    class_labels_dir: str | None = None
    class_names: list[str] | None = None
    notes: list[str] | None = None
    folder: str | None = None
    reused: bool | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class InitialLabels(Result):
    """Automatic initial labels to correct by hand
    (:func:`microseg.recipes.prepare.initial_labels_for_run`): the label ``folder``,
    ``n_images``, ``reused``, and ``foreground_dice`` against the user's labels (None without
    them)."""

    folder: str | None = None
    n_images: int | None = None
    reused: bool | None = None
    foreground_dice: float | None = None


# ---------------------------------------------------------------- 02: train


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class TimeEstimate(Result):
    """How long a training will take (:func:`microseg.recipes.train.estimate_minutes`):
    ``minutes`` in all, ``seconds_per_step`` measured, on ``device``, for ``steps`` steps."""

    minutes: float | None = None
    seconds_per_step: float | None = None
    device: str | None = None
    steps: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class SearchResult(Result):
    """A hyperparameter search (:func:`microseg.recipes.train.search_hyperparameters`):
    ``folder`` of its models and table, ``best_params``, ``best_value`` (validation Dice),
    ``n_trials``, ``table`` (one row per trial, best first; a DataFrame)."""

    folder: str | None = None
    best_params: dict[str, Any] | None = None
    best_value: float | None = None
    n_trials: int | None = None
    table: Any = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class TrainingSummary(Result):
    """A trained model (:func:`microseg.recipes.train.train_model`;
    ``models/<name>/summary.json``).

    best_val_loss, best_val_dice, best_val_foreground_dice, best_epoch : the best checkpoint's
        validation loss and Dice (all classes; object classes), and its epoch.
    epochs_run, stopped_early, steps : how the training went; seconds : its time.
    fit_diagnosis : ``verdict`` and ``reason`` (under-/over-fitting, still improving, …).
    model_dir, device, world_size, parameters : where, on what, on how many processes, and the
        network's trainable parameters.
    class_frequencies, first_batch_class_frequencies, warnings : class balance of the targets
        and of the first batch, and what the checks found.
    instance_head, instance_head_reason : the instance representation and why it was chosen.
    canonical_diameter, object_diameter, scale_factor, scale_factor_min, scale_factor_max : the
        object size the network was trained at, and how the images were resampled to it.
    max_minutes : the time budget; halo : the halo of the measured receptive field;
    field_of_view : a sentence on whether it fits the objects; postprocessing : the instance
        thresholds tuned on validation images (None for other tasks); search : the folder of
        the hyperparameter search the settings came from, or None.
    """

    best_val_loss: float | None = None
    best_val_dice: float | None = None
    best_val_foreground_dice: float | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    stopped_early: bool | None = None
    fit_diagnosis: dict[str, str] | None = None
    model_dir: str | None = None
    device: str | None = None
    steps: int | None = None
    parameters: int | None = None
    class_frequencies: dict[str, float] | None = None
    first_batch_class_frequencies: dict[str, float] | None = None
    warnings: list[str] | None = None
    world_size: int | None = None
    instance_head: str | None = None
    instance_head_reason: str | None = None
    canonical_diameter: float | None = None
    max_minutes: float | None = None
    object_diameter: float | None = None
    scale_factor: float | None = None
    scale_factor_min: float | None = None
    scale_factor_max: float | None = None
    halo: list[int] | None = None
    postprocessing: dict[str, Any] | None = None
    field_of_view: str | None = None
    search: str | None = None
    seconds: float | None = None


# ---------------------------------------------------------------- 03 / 04: transfer


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ZeroShot(Result):
    """The pretrained model as it is on the target images (:func:`~microseg.recipes.transfer.
    zero_shot`): ``val`` and ``test``, each a :class:`~microseg.transfer.quality.Quality`
    (``foreground_dice``, ``object_f1``, …)."""

    val: Any = None
    test: Any = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class CorrectionRound(Result):
    """One human-in-the-loop round (:func:`microseg.recipes.fine_tune.correction_rounds`).

    record : what ``rounds.csv`` and the summary hold (``round``, ``images_added``, ``n_train``,
    ``changed_pixels``, ``dice_before``, ``dice_after``, ``model_dir``, ``corrections_dir``,
    ``simulated``); round : the correction folder
    (:class:`~microseg.transfer.human_in_the_loop.CorrectionRound`); model : the fine-tuned
    model (:class:`~microseg.recipes.transfer.Adapted`).
    """

    record: dict[str, Any] | None = None
    round: Any = None
    model: Any = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class AdaptationSummary(Result):
    """A pretrained model adapted to new data (:func:`~microseg.recipes.transfer.
    adaptation_summary`; ``models/<name>/summary.json`` of notebooks 03 and 04).

    zero_shot_dice, adapted_dice, scratch_dice : foreground Dice on the target test images of
        the pretrained model as it is, adapted, and trained from scratch with the same budget;
        zero_shot_val_dice : the first on the validation images.
    zero_shot_object_f1, adapted_object_f1, scratch_object_f1 : object F1 at IoU 0.5 of each.
    adapted_beats_zero_shot, adapted_beats_scratch : the comparisons a user asks first.
    trainable_params, total_params : of the adapted network.
    mode : "transfer" or "finetune"; model_dir, scratch_model_dir : the two model folders;
    pretrained : where the pretrained model came from; target_split : the target split's file;
    n_target_train, n_target_val, n_target_test : its images.
    freeze, replaced_layers : what was frozen and which layers were replaced (or None).
    best_epoch, epochs_run, learning_rate : of the adapted model's training.
    rounds : the correction rounds' records (notebook 04; absent without rounds).
    """

    zero_shot_dice: float | None = None
    adapted_dice: float | None = None
    scratch_dice: float | None = None
    zero_shot_val_dice: float | None = None
    zero_shot_object_f1: float | None = None
    adapted_object_f1: float | None = None
    scratch_object_f1: float | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    mode: str | None = None
    model_dir: str | None = None
    scratch_model_dir: str | None = None
    pretrained: str | None = None
    target_split: str | None = None
    n_target_train: int | None = None
    n_target_val: int | None = None
    n_target_test: int | None = None
    freeze: dict[str, Any] | None = None
    replaced_layers: dict[str, Any] | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    learning_rate: float | None = None
    adapted_beats_zero_shot: bool | None = None
    adapted_beats_scratch: bool | None = None
    rounds: list[dict[str, Any]] | None = None


# ---------------------------------------------------------------- 05: evaluate


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ModelEvaluation(Result):
    """One model on held-out images (``eval/<model>/summary.json``).

    model, task, subset, data, n_images, class_names : what was evaluated on what.
    pixel, pixel_mean_over_images, aggregation : per class ``iou``, ``dice``, ``precision``,
        ``recall`` pooled over the images and averaged per image, and how each is defined.
    object_dice, mean_class_dice : pooled foreground Dice, and the mean over the object classes.
    instance, at_threshold, panoptic_quality, dsb_score : object matching per IoU threshold,
        the numbers at the report threshold (``precision``, ``recall``, ``f1``, ``ap``,
        ``panoptic_quality``), PQ there, and the DSB score (IoU 0.5:0.95); None (``dsb_score``
        absent) for tasks without objects.
    model_dir, eval_dir, files : the model, this evaluation's folder, and its files
        (``metrics_csv``, ``report``, ``figures``).
    prediction : how the images were predicted (whole or tiled); postprocessing : the instance
        post-processing used; fit_diagnosis : the training's ``verdict`` and ``reason``.
    instance_head, object_diameter, object_diameter_setting, scale_factor, n_rescaled,
        n_uncertain_diameter, canonical_diameter, tta : how the images were resampled and
        predicted (medians over the images).
    seconds : time taken.
    """

    model: str | None = None
    task: str | None = None
    subset: str | None = None
    data: str | None = None
    n_images: int | None = None
    class_names: list[str] | None = None
    pixel: dict[str, Any] | None = None
    pixel_mean_over_images: dict[str, Any] | None = None
    object_dice: float | None = None
    mean_class_dice: float | None = None
    instance: dict[str, Any] | None = None
    at_threshold: dict[str, Any] | None = None
    panoptic_quality: float | None = None
    aggregation: dict[str, str] | None = None
    dsb_score: float | None = None
    model_dir: str | None = None
    eval_dir: str | None = None
    prediction: str | None = None
    postprocessing: dict[str, Any] | None = None
    fit_diagnosis: dict[str, str] | None = None
    instance_head: str | None = None
    object_diameter: float | None = None
    object_diameter_setting: float | str | None = None
    scale_factor: float | None = None
    n_rescaled: int | None = None
    n_uncertain_diameter: int | None = None
    canonical_diameter: float | None = None
    tta: bool | None = None
    files: dict[str, str] | None = None
    seconds: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class EvaluationSummary(Result):
    """The models side by side (``eval/summary.json``): ``task``, ``data``, ``n_images``,
    ``models`` (name → the key numbers of its :class:`ModelEvaluation`), ``best_model`` and the
    metric it is ``ranked_by``, ``comparison`` (metric → model → value) and ``comparison_csv``."""

    task: str | None = None
    data: str | None = None
    n_images: int | None = None
    models: dict[str, dict[str, Any]] | None = None
    best_model: str | None = None
    ranked_by: str | None = None
    comparison: dict[str, Any] | None = None
    comparison_csv: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Evaluation(Result):
    """What :func:`microseg.recipes.evaluate.evaluate_models` returns.

    summary : :class:`EvaluationSummary`; models : name → :class:`ModelEvaluation`;
    comparison : a DataFrame, one column per model; tables : name → per-image DataFrame, worst
    first; results : name → per-image :class:`~microseg.recipes.evaluate.ImageResult`, worst
    first; histories : name → training history (DataFrame) or None; data : the
    :class:`~microseg.recipes.evaluate.EvaluationData`.
    """

    summary: EvaluationSummary | None = None
    models: dict[str, ModelEvaluation] | None = None
    comparison: Any = None
    tables: dict[str, Any] | None = None
    results: dict[str, list[Any]] | None = None
    histories: dict[str, Any] | None = None
    data: Any = None


# ---------------------------------------------------------------- 06: diagnose


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class DiagnosisSummary(Result):
    """A model's normalization diagnosis (``diagnostics/<model>/summary.json``).

    model_name, ndim, norm, quick, n_val_images : what was diagnosed on how many images.
    trf, erf : theoretical and effective (95 %) receptive field (``left``, ``right``,
        ``extent``, ``radius``, ``input_size``, ``whole_input``).
    halo, recommended_halo, halo_sufficient : the halo used, the one the field asks for, and
        whether the first covers the second.
    tile_shape, tile_mismatch, max_abs_diff : the tiling test (tile pairs, per-class mismatch,
        the largest probability difference between overlapping tiles).
    train_eval_disparity : how far training-mode statistics are from evaluation-mode ones.
    tile_sweep : one row per tile size; norm_comparison, norm_comparison_settings : the
        normalization layers trained and compared (or None), and how.
    seconds : time taken.
    """

    model_name: str | None = None
    ndim: int | None = None
    norm: str | None = None
    quick: bool | None = None
    n_val_images: int | None = None
    trf: dict[str, Any] | None = None
    erf: dict[str, Any] | None = None
    halo: int | None = None
    recommended_halo: int | None = None
    halo_sufficient: bool | None = None
    tile_shape: int | None = None
    tile_mismatch: dict[str, Any] | None = None
    max_abs_diff: float | None = None
    train_eval_disparity: dict[str, Any] | None = None
    tile_sweep: list[dict[str, Any]] | None = None
    norm_comparison: list[dict[str, Any]] | None = None
    norm_comparison_settings: dict[str, Any] | None = None
    seconds: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Diagnosis(Result):
    """What :func:`microseg.recipes.diagnose.diagnose_model` returns: ``summary``
    (:class:`DiagnosisSummary`), ``out_dir``, ``figures`` (name → Figure), ``tables`` (name →
    DataFrame: ``tile_sweep``, ``norm_comparison``), ``mismatch`` (the first tile pair's
    arrays)."""

    summary: DiagnosisSummary | None = None
    out_dir: Path | None = None
    figures: dict[str, Any] | None = None
    tables: dict[str, Any] | None = None
    mismatch: Any = None


# ---------------------------------------------------------------- 07: deploy


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Prediction(Result):
    """New data predicted (:func:`microseg.recipes.deploy.predict_input`).

    n_inputs, predictions, errors : inputs, one record per predicted input (``input``,
    ``labels``, ``probabilities``, ``object_diameter``, ``diameter_confidence``,
    ``scale_factor``), and the inputs that failed with why.
    voxels, voxels_per_second, peak_memory_mb, worker_peak_memory_mb : throughput and memory
    (per cluster worker, or None); n_objects : for one volume predicted out of core, else None.
    example : a crop of the first input, for the exported models' checks.
    record : what the predictor itself reported (``predictions.json`` of a folder, or the
    out-of-core record of a volume).
    """

    n_inputs: int | None = None
    predictions: list[dict[str, Any]] | None = None
    errors: list[str] | None = None
    voxels: int | None = None
    voxels_per_second: float | None = None
    peak_memory_mb: float | None = None
    worker_peak_memory_mb: dict[str, float] | None = None
    n_objects: int | None = None
    example: Any = None
    record: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ExportedModel(Result):
    """The model in one export format (:func:`microseg.recipes.deploy.export_model`): ``path``
    of the file, ``max_abs_diff`` of the reloaded export against PyTorch on an example crop,
    ``test_passed`` (bioimage.io: the package's own test; absent for the other formats), and
    ``error`` when the format could not be exported here (``path`` is then None; absent
    otherwise)."""

    path: str | None = None
    max_abs_diff: float | None = None
    test_passed: bool | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class MeasuredObjects(Result):
    """Object tables and label exports of a deployment
    (:func:`microseg.recipes.deploy.measure_objects`): ``object_tables`` (their folder, or None
    when only probabilities were written), ``n_objects_measured``, ``tables`` (one record per
    input: ``table``, ``n_objects``, ``pixel_size``, …), ``label_exports`` (per input: the files
    written for Fiji, QuPath, napari)."""

    object_tables: str | None = None
    n_objects_measured: int | None = None
    tables: list[dict[str, Any]] | None = None
    label_exports: list[dict[str, Any]] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class DeploymentSummary(Result):
    """A deployment (:func:`microseg.recipes.deploy.deployment_summary`;
    ``predictions/<model>/summary.json``).

    model, model_dir : the model; input, input_kind, n_inputs : what was predicted.
    outputs, predictions, errors, output : every array or file written, one record per input,
        the inputs that failed, and what was written ("labels", "probabilities", "both").
    tile_shape, halo, halo_source, scheduler : how it was tiled and run.
    voxels, voxels_per_second, peak_memory_mb, worker_peak_memory_mb, n_objects : as in
        :class:`Prediction`.
    exports : per format, ``path`` and ``max_abs_diff`` (or ``error``).
    instance_head, object_diameter, scale_factor, n_rescaled, n_uncertain_diameter, tta : how
        the inputs were resampled and predicted (medians over the inputs).
    object_tables, n_objects_measured, label_exports : see :class:`MeasuredObjects`.
    quick : a smoke run; seconds : since the plan was made.
    """

    model: str | None = None
    model_dir: str | None = None
    input: str | None = None
    input_kind: str | None = None
    n_inputs: int | None = None
    outputs: list[str] | None = None
    predictions: list[dict[str, Any]] | None = None
    errors: list[str] | None = None
    output: str | None = None
    tile_shape: list[int] | None = None
    halo: list[int] | None = None
    halo_source: str | None = None
    scheduler: str | None = None
    voxels: int | None = None
    voxels_per_second: float | None = None
    peak_memory_mb: float | None = None
    worker_peak_memory_mb: dict[str, float] | None = None
    n_objects: int | None = None
    exports: dict[str, dict[str, Any]] | None = None
    instance_head: str | None = None
    object_diameter: float | None = None
    scale_factor: float | None = None
    n_rescaled: int | None = None
    n_uncertain_diameter: int | None = None
    tta: bool | None = None
    object_tables: str | None = None
    n_objects_measured: int | None = None
    label_exports: list[dict[str, Any]] | None = None
    quick: bool | None = None
    seconds: float | None = None
