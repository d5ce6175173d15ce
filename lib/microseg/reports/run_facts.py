"""What the run's front page shows, as plain values: the parts of a :class:`RunReport`.

:func:`microseg.reports.run_report.gather_run_report` fills them from a run folder and
:func:`microseg.reports.front_page.render` turns them into HTML; both import this module, and it
imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Deployment", "Diagnosis", "ExportCheck", "ModelRow", "NotebookEntry", "Problem",
           "RunHeader", "RunReport", "Thumbnail"]


# ---------------------------------------------------------------- the report's parts


@dataclass(frozen=True)
class RunHeader:
    """What the run is. ``data``: a sentence about the data; ``started``: the first notebook's
    start (UTC, ISO); ``total_seconds``: the executed notebooks' durations summed (None when the
    notebooks ran in JupyterLab, which records no duration)."""

    experiment: str
    data: str
    source: str | None
    ndim: int | None
    task: str | None
    started: str | None
    version: str | None
    device: str | None
    total_seconds: float | None
    written: str | None = None


@dataclass(frozen=True)
class NotebookEntry:
    """One notebook of the run: ``status`` is "done", "failed", "running" (with the cell being
    run, e.g. "running (cell 7 of 24)"), "next" (planned by a chain run, not started),
    "done in JupyterLab" or "started in JupyterLab"; ``link`` the executed copy (HTML if
    exported, else .ipynb), relative to the run folder; ``given`` the parameters given rather than left at their
    defaults (name → value; ``run_dir`` left out: it is this run)."""

    name: str
    status: str
    seconds: float | None
    started: str | None
    link: str | None
    given: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRow:
    """One trained model with one of its evaluations (or none yet).

    kind : how it was trained ("from scratch", "transfer learning", "fine-tuning",
        "from scratch, same budget as transfer", "correction round 1 of finetune").
    evaluated_on : "test images of this run", "test images of target", a folder name; None when
        the model has no evaluation.
    object_dice, f1 (at IoU 0.5), score_50_95 (:func:`score_50_95`), panoptic_quality : pooled
        over the evaluated images, or None.
    train_seconds : the epoch times in ``history.csv`` summed (training and validation).
    epochs : epochs run; fit : the fit diagnosis verdict and its reason.
    report : the QC report (``eval/<name>/report.html``), relative to the run folder.
    best : the metric keys (of :data:`METRICS` and ``train_seconds``) where this row holds the
        best value among the rows evaluated on the same images.
    """

    model: str
    kind: str
    evaluated_on: str | None = None
    n_images: int | None = None
    object_dice: float | None = None
    f1: float | None = None
    score_50_95: float | None = None
    panoptic_quality: float | None = None
    train_seconds: float | None = None
    epochs: int | None = None
    fit: str | None = None
    fit_reason: str | None = None
    report: str | None = None
    best: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Diagnosis:
    """The latest normalization diagnosis of one model (``diagnostics/<name>/summary.json``).

    receptive_field / effective_field : extent per axis (pixels); halo, recommended_halo : per
    axis. mismatch : mean 1 − Dice of overlapping tiles; disparity : mean 1 − Dice between
    train and eval mode. seamless : :func:`seamless_verdict`; verdict, disparity_verdict : in
    words. comparison : one dict per normalization configuration (may be empty).
    """

    model: str
    folder: str
    norm: str | None
    receptive_field: list[int] | None
    effective_field: list[int] | None
    recommended_halo: list[int] | None
    halo: list[int] | None
    mismatch: float | None
    max_abs_diff: float | None
    n_pairs: int | None
    disparity: float | None
    seamless: bool | None
    verdict: str
    disparity_verdict: str
    deployed: bool
    figures: list[str]
    comparison: list[dict[str, Any]]
    comparison_figure: str | None


@dataclass(frozen=True)
class ExportCheck:
    """One exported format: the file (relative link or None), its size, and the reload check."""

    format: str
    path: str | None
    size_bytes: int | None
    max_abs_diff: float | None
    passed: bool
    note: str


@dataclass(frozen=True)
class Deployment:
    """One deployment (``predictions/<name>/summary.json``): inputs are (shown path, size in
    bytes or None), outputs (shown path, link or None, size in bytes or None); memory in MB.
    Paths inside the run folder are shown relative to it."""

    model: str
    folder: str
    inputs: list[tuple[str, int | None]]
    input_kind: str | None
    outputs: list[tuple[str, str | None, int | None]]
    voxels: int | None
    voxels_per_second: float | None
    peak_memory_mb: float | None
    worker_peak_memory_mb: dict[str, float] | None
    n_objects: int | None
    tile_shape: list[int] | None
    halo: list[int] | None
    halo_source: str | None
    scheduler: str | None
    seconds: float | None
    exports: list[ExportCheck]


@dataclass(frozen=True)
class Thumbnail:
    """The key figure of one stage: ``stage`` ("01 · data"), ``path`` relative to the run."""

    stage: str
    path: str


@dataclass(frozen=True)
class Problem:
    """An error or warning: ``level`` "error" or "warning"; ``source`` the notebook and cell or
    the summary file; ``link`` a page to open (relative), if any."""

    level: str
    source: str
    message: str
    link: str | None = None


@dataclass
class RunReport:
    """Everything the front page shows, as plain values (see :func:`gather_run_report`).

    ``files``: heading → paths relative to the run folder (summaries, QC reports, figures,
    notebooks), shown folded.
    """

    header: RunHeader
    notebooks: list[NotebookEntry] = field(default_factory=list)
    models: list[ModelRow] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    deployments: list[Deployment] = field(default_factory=list)
    thumbnails: list[Thumbnail] = field(default_factory=list)
    files: dict[str, list[str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
