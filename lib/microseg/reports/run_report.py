"""The run's front page: ``run_dir/index.html``, a one-page report of everything a run produced.

Two steps, kept apart so each can be tested on its own:

1. :func:`gather_run_report` reads the run folder — the ``summary.json`` every notebook writes,
   ``history.csv`` of every trained model, the executed notebooks under ``notebooks/`` — into a
   :class:`RunReport` of plain values. It only reads; a missing stage leaves its part empty.
2. :func:`render_run_report` turns a :class:`RunReport` into one HTML page: the run (data,
   date, version, device, total time), a table of every trained model with its evaluation on
   each set of images it was evaluated on (best value per column marked) and a dot chart of it,
   the diagnostics of tiled prediction with a verdict in words, the deployment, one figure per
   stage, every file folded, and every error and warning of the run in one place.

:func:`write_run_report` does both and writes the page; every notebook calls it when it
finishes and :func:`microseg.notebook.chain.run_chain` calls it after the last one, so a partial run has
a front page too. The page needs no network: the chart is embedded, figures and files are
linked relative to the run folder (move or zip the folder as a whole).

Example
-------
>>> from microseg.reports.run_report import write_run_report
>>> write_run_report("runs/demo")                       # doctest: +SKIP
PosixPath('runs/demo/index.html')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from microseg.errors import MissingFileError
from microseg.reports.front_page import METRICS, STAGES, render
from microseg.reports.run_facts import (
    Deployment,
    Diagnosis,
    ExportCheck,
    ModelRow,
    NotebookEntry,
    Problem,
    RunHeader,
    RunReport,
    Thumbnail,
)
from microseg.reports.run_reader import (
    CHAIN_PLAN,
    RunReader,
    newest_first,
    notebook_entries,
    notebook_problems,
    run_header,
    size_of,
    walk_files,
)
from microseg.runs import RunFolder, atomic_write_text

__all__ = [
    "CHAIN_PLAN",
    "Deployment",
    "Diagnosis",
    "ExportCheck",
    "ModelRow",
    "NotebookEntry",
    "Problem",
    "RunHeader",
    "RunReport",
    "STAGES",
    "Thumbnail",
    "gather_run_report",
    "model_verdicts",
    "notebook_problems",
    "render_run_report",
    "score_50_95",
    "seamless_verdict",
    "write_run_report",
]

_IOU_50_95 = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
# ---------------------------------------------------------------- models


def score_50_95(summary: dict[str, Any]) -> float | None:
    """The mean over IoU thresholds 0.5, 0.55, …, 0.95 of TP/(TP+FP+FN), each the mean over
    images (the Data Science Bowl 2018 score), from an evaluation summary.

    ``summary["dsb_score"]`` when the evaluation wrote it; else computed from
    ``summary["instance"]["mean_over_images"]["ap"]`` at those of
    ``summary["instance"]["thresholds"]`` (the same value: an image's ratio is undefined only
    when it holds no true and no predicted object, at every threshold alike). None when the
    task is not instance segmentation, a threshold was not evaluated, or a value is undefined.
    """
    if isinstance((summary or {}).get("dsb_score"), (int, float)):
        return float(summary["dsb_score"])
    instance = (summary or {}).get("instance") or {}
    thresholds = [round(float(t), 2) for t in instance.get("thresholds", [])]
    values = (instance.get("mean_over_images") or {}).get("ap") or []
    if len(values) != len(thresholds) or not set(_IOU_50_95) <= set(thresholds):
        return None
    picked = [values[thresholds.index(t)] for t in _IOU_50_95]
    return None if any(v is None for v in picked) else sum(picked) / len(picked)


def _model_kinds(reader: RunReader, names: list[str]) -> dict[str, str]:
    """Model name → how it was trained, from the models' summaries (notebooks 02, 03, 04), in
    the order of the chain: models from scratch, then each adapted model followed by its
    baseline from scratch and its correction rounds."""
    summaries = {n: reader.json(reader.root / "models" / n / "summary.json") for n in names}
    kinds = {n: "from scratch" if s else "not recorded (no summary.json yet)"
             for n, s in summaries.items()}
    order: dict[str, tuple[int, str, int]] = {}
    for name, summary in summaries.items():
        mode = (summary or {}).get("mode")
        if not mode:
            continue
        kinds[name] = {"transfer": "transfer learning", "finetune": "fine-tuning"}.get(mode, mode)
        order[name] = (1 if mode == "transfer" else 2, name, 0)
        if summary.get("scratch_model_dir"):
            scratch = Path(summary["scratch_model_dir"]).name
            kinds[scratch] = f"from scratch, same budget as {name}"
            order[scratch] = (order[name][0], name, 1)
        for record in summary.get("rounds") or []:
            done = Path(record.get("model_dir", "")).name
            kinds[done] = f"correction round {record.get('round')} of {name}"
            order[done] = (order[name][0], name, 1 + int(record.get("round") or 1))
    ranked = sorted(names, key=lambda n: order.get(n, (0, n, 0)))
    return {name: kinds[name] for name in ranked}


def _training(reader: RunReader, name: str) -> dict[str, Any]:
    """Epochs, summed epoch seconds and fit diagnosis from ``models/<name>/history.csv``."""
    from microseg.training.diagnosis import diagnose_fit
    from microseg.training.history import read_history_csv

    path = reader.root / "models" / name / "history.csv"
    try:
        history = read_history_csv(path)
    except (OSError, ValueError, KeyError) as err:
        if path.is_file():
            reader.problems.append(Problem("warning", reader.rel(path) or str(path),
                                           f"could not be read: {err}"))
        return {}
    facts: dict[str, Any] = {"epochs": len(history)}
    if history and "seconds" in history[0]:
        facts["train_seconds"] = sum(r["seconds"] for r in history)
    try:
        diagnosis = diagnose_fit(history)
        facts.update(fit=diagnosis.verdict, fit_reason=diagnosis.reason)
    except ValueError:
        pass
    return facts


def _evaluated_on(reader: RunReader, summary: dict[str, Any]) -> str:
    subset, data = summary.get("subset", "test"), str(summary.get("data", ""))
    prefix = f"{subset} split of "
    if not data.startswith(prefix):
        return f"{Path(data).name or data} (folder)"
    where = reader.rel(data[len(prefix):])
    return f"{subset} images of " + ("this run" if where in (None, ".") else where)


def _evaluations(reader: RunReader) -> dict[str, list[tuple[str, Path, dict[str, Any]]]]:
    """Model → its latest evaluation per set of images: (evaluated on, folder, summary)."""
    found: dict[str, dict[str, tuple[str, Path, dict[str, Any]]]] = {}
    eval_root = reader.root / "eval"
    paths = newest_first(list(eval_root.glob("*/summary.json"))) if eval_root.is_dir() else []
    for path in paths:
        summary = reader.json(path)
        if not isinstance(summary, dict) or "model" not in summary:
            continue
        on = _evaluated_on(reader, summary)
        found.setdefault(summary["model"], {}).setdefault(on, (on, path.parent, summary))
    return {model: sorted(by_data.values(), key=lambda e: e[0]) for model, by_data in found.items()}


def _metric_values(summary: dict[str, Any]) -> dict[str, Any]:
    at = summary.get("at_threshold") or {}
    f1 = at.get("f1") if at and abs(float(at.get("threshold", 0)) - 0.5) < 1e-9 else None
    return {"n_images": summary.get("n_images"), "object_dice": summary.get("object_dice"),
            "f1": f1, "score_50_95": score_50_95(summary),
            "panoptic_quality": at.get("panoptic_quality") if f1 is not None else None}


def _model_rows(reader: RunReader, kinds: dict[str, str]) -> list[ModelRow]:
    evaluations = _evaluations(reader)
    rows = []
    for name in kinds:
        training = _training(reader, name)
        for on, folder, summary in evaluations.get(name) or [(None, None, {})]:
            report = reader.rel(folder / "report.html") if folder is not None else None
            rows.append(ModelRow(model=name, kind=kinds[name], evaluated_on=on, report=report,
                                 **(_metric_values(summary) if summary else {}), **training))
    return _mark_best(rows)


def _mark_best(rows: list[ModelRow]) -> list[ModelRow]:
    """Mark per column the best value among rows evaluated on the same images (ties: all)."""
    from dataclasses import replace

    best: dict[int, set[str]] = {k: set() for k in range(len(rows))}
    groups: dict[str | None, list[int]] = {}
    for k, row in enumerate(rows):
        groups.setdefault(row.evaluated_on, []).append(k)
    for members in groups.values():
        columns = [(key, max) for key, *_ in METRICS] + [("train_seconds", min)]
        for key, pick in columns:
            values = {k: getattr(rows[k], key) for k in members
                      if getattr(rows[k], key) is not None}
            if len(values) < 2 or max(values.values()) - min(values.values()) < 1e-12:
                continue
            target = pick(values.values())
            best.update({k: best[k] | {key} for k, v in values.items() if abs(v - target) < 1e-12})
    return [replace(row, best=frozenset(best[k])) for k, row in enumerate(rows)]


# ---------------------------------------------------------------- diagnostics and deployment


def seamless_verdict(summary: dict[str, Any]) -> tuple[bool | None, str]:
    """Does tiled prediction stitch without seams? (True / False / None when not measured) and
    why, in words, from a diagnostics summary (``trf``, ``halo``, ``recommended_halo``,
    ``halo_sufficient``, ``tile_mismatch``)."""
    mismatch = summary.get("tile_mismatch") or {}
    halo, recommended = _pixels(summary.get("halo")), _pixels(summary.get("recommended_halo"))
    if (summary.get("trf") or {}).get("whole_input"):
        return False, ("Not seamless: every output pixel depends on the whole tile (statistics "
                       "computed per tile, as in InstanceNorm or tile-wise input normalization), "
                       "so neighbouring tiles disagree whatever the halo. Use BatchRenorm (or "
                       "BatchNorm) with global input normalization.")
    if not mismatch.get("n_pairs"):
        return None, ("Not measured: " + str(mismatch.get("note") or "no pair of overlapping "
                                             "tiles fits in the validation images") + ".")
    short = "" if summary.get("halo_sufficient", True) else (
        f" The halo {halo} is smaller than the recommended {recommended}.")
    if mismatch.get("any"):
        return False, (f"Not seamless: overlapping tiles predicted independently disagree "
                       f"(mean 1 − Dice {_g(mismatch.get('mean'))}, largest probability "
                       f"difference {_g(summary.get('max_abs_diff'))}).{short}")
    rounding = " (float rounding)" if summary.get("max_abs_diff") else ""
    return True, (f"Seamless: {mismatch['n_pairs']} pairs of overlapping tiles, predicted "
                  f"independently with a halo of {halo} (recommended {recommended}), give "
                  f"the same hard prediction; the largest probability difference is "
                  f"{_g(summary.get('max_abs_diff'))}{rounding}.{short}")


def _disparity_verdict(summary: dict[str, Any]) -> str:
    measured = summary.get("train_eval_disparity") or {}
    value = measured.get("disparity")
    if value is None:
        return "Train/eval disparity not measured."
    if value <= 1e-6:
        return ("No train/eval disparity: predictions are the same in training and in inference "
                "mode, so what validation measured during training is what inference gives.")
    text = (f"Train/eval disparity {_g(value)} (mean 1 − Dice over {measured.get('n_tiles')} "
            f"tiles): predictions change between training mode (batch statistics) and inference "
            f"mode (running statistics).")
    if summary.get("norm") == "batch":
        text += " This is the known BatchNorm effect; BatchRenorm avoids it."
    return text


def _pixels(value: Any) -> str:
    """``16`` or ``[16, 16]`` as "16 pixels" or "16 × 16 pixels"."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return " × ".join(str(v) for v in values) + " pixels"


def _g(value: Any) -> str:
    return "–" if value is None else f"{float(value):.2g}"


def _comparison_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The normalization comparison, one flat row per configuration (object classes' mean)."""
    table = []
    for row in rows:
        dice = [v for v in (row.get("dice_eval") or [])[1:] if v is not None]
        table.append({"configuration": row.get("configuration"),
                      "Dice (eval, object classes)": sum(dice) / len(dice) if dice else None,
                      "tile mismatch": row.get("mismatch"),
                      "seams": "yes" if row.get("mismatch_any") else "no",
                      "train/eval disparity": row.get("disparity")})
    return table


def _diagnoses(reader: RunReader, deployed: set[str]) -> list[Diagnosis]:
    folder = reader.root / "diagnostics"
    latest: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in newest_first(list(folder.glob("*/summary.json"))) if folder.is_dir() else []:
        summary = reader.json(path)
        if isinstance(summary, dict) and "model_name" in summary:
            latest.setdefault(summary["model_name"], (path.parent, summary))
    return [_diagnosis(reader, out, s, s["model_name"] in deployed)
            for out, s in latest.values()]


def _diagnosis(reader: RunReader, out: Path, s: dict[str, Any], deployed: bool) -> Diagnosis:
    seamless, verdict = seamless_verdict(s)
    mismatch = s.get("tile_mismatch") or {}
    figures = [p for p in (reader.rel(f) for f in sorted((out / "figures").glob("*.png"))) if p]
    comparison_figure = reader.rel(out / "figures" / "norm_comparison.png")
    halo = s.get("halo")
    return Diagnosis(
        model=s["model_name"], folder=reader.rel(out) or str(out), norm=s.get("norm"),
        receptive_field=(s.get("trf") or {}).get("extent"),
        effective_field=(s.get("erf") or {}).get("extent"),
        recommended_halo=s.get("recommended_halo"),
        halo=[halo] * len(s.get("recommended_halo") or [0]) if isinstance(halo, int) else halo,
        mismatch=mismatch.get("mean"), max_abs_diff=s.get("max_abs_diff"),
        n_pairs=mismatch.get("n_pairs"),
        disparity=(s.get("train_eval_disparity") or {}).get("disparity"), seamless=seamless,
        verdict=verdict, disparity_verdict=_disparity_verdict(s), deployed=deployed,
        figures=[f for f in figures if f != comparison_figure],
        comparison=_comparison_rows(s.get("norm_comparison") or []),
        comparison_figure=comparison_figure)


def _export_checks(reader: RunReader, exports: dict[str, Any]) -> list[ExportCheck]:
    checks = []
    for name, result in (exports or {}).items():
        path = reader.rel(result.get("path"))
        failed = result.get("error") or (result.get("test_passed") is False and
                                         "the bioimage.io test did not pass")
        note = (f"not exported: {failed}" if failed else
                f"reloaded and compared: largest difference {_g(result.get('max_abs_diff'))}")
        checks.append(ExportCheck(name, path, size_of(reader.root / path) if path else None,
                                  result.get("max_abs_diff"), not failed, note))
    return checks


def _deployments(reader: RunReader) -> list[Deployment]:
    folder = reader.root / "predictions"
    found = []
    for path in sorted(folder.glob("*/summary.json")) if folder.is_dir() else []:
        s = reader.json(path)
        if isinstance(s, dict) and "n_inputs" in s:
            found.append(_deployment(reader, path.parent, s))
    return found


def _shown_withsize_of(reader: RunReader, path: str) -> tuple[str, str | None, int | None]:
    """(path as shown, link if it is a file in the run folder, bytes) of a file or folder."""
    rel = reader.rel(path)
    if rel is None:
        return str(path), None, size_of(Path(path))
    return rel, rel if (reader.root / rel).is_file() else None, size_of(reader.root / rel)


def _deployment(reader: RunReader, out: Path, s: dict[str, Any]) -> Deployment:
    outputs = [_shown_withsize_of(reader, str(w)) for w in s.get("outputs") or []]
    inputs = sorted({str(p.get("input")) for p in s.get("predictions") or []} or {s.get("input")})
    return Deployment(
        model=s.get("model", out.name), folder=reader.rel(out) or str(out),
        inputs=[_shown_withsize_of(reader, i)[::2] for i in inputs if i and i != "None"],
        input_kind=s.get("input_kind"),
        outputs=outputs, voxels=s.get("voxels"), voxels_per_second=s.get("voxels_per_second"),
        peak_memory_mb=s.get("peak_memory_mb"),
        worker_peak_memory_mb=s.get("worker_peak_memory_mb"), n_objects=s.get("n_objects"),
        tile_shape=s.get("tile_shape"), halo=s.get("halo"), halo_source=s.get("halo_source"),
        scheduler=s.get("scheduler"), seconds=s.get("seconds"),
        exports=_export_checks(reader, s.get("exports")))


# ---------------------------------------------------------------- figures, files, problems


def _stage_candidates(kinds: dict[str, str]) -> list[tuple[str, list[str]]]:
    """Per stage, the figures that show it best, first choice first (globs under the run)."""
    adapted = {mode: [n for n, k in kinds.items() if k == mode]
               for mode in ("transfer learning", "fine-tuning")}
    scratch = [n for n, k in kinds.items() if k == "from scratch"] or ["*"]
    return [
        ("01", ["data/samples.png", "data/pairs.png", "data/*.png"]),
        ("02", [f"models/{n}/{f}" for f in ("loss_curves.png", "validation_predictions.png")
                for n in scratch]),
        ("03", [f"models/{n}/figures/comparison.png" for n in adapted["transfer learning"]]),
        ("04", [f"models/{n}/figures/{f}" for f in ("rounds.png", "comparison.png")
                for n in adapted["fine-tuning"]]),
        ("05", ["eval/metric_vs_threshold.png", "eval/pixel_metrics.png",
                "eval/*/figures/overlays.png"]),
        ("06", ["diagnostics/*/figures/norm_comparison.png",
                "diagnostics/*/figures/tile_mismatch.png", "diagnostics/*/figures/*.png"]),
        ("07", ["predictions/*/figures/result.png", "predictions/*/figures/*.png"]),
    ]


def _thumbnails(root: Path, kinds: dict[str, str]) -> list[Thumbnail]:
    titles = dict(STAGES)
    thumbnails = []
    for number, patterns in _stage_candidates(kinds):
        for pattern in patterns:
            found = sorted(root.glob(pattern))
            if found:
                thumbnails.append(Thumbnail(f"{number} · {titles[number]}",
                                            found[0].relative_to(root).as_posix()))
                break
    return thumbnails


def _file_lists(root: Path) -> dict[str, list[str]]:
    lists = {heading: [p.relative_to(root).as_posix() for p in walk_files(root, suffix)]
             for heading, suffix in (("summaries", "summary.json"), ("QC reports", "report.html"),
                                     ("figures", ".png"))}
    notebooks = root / "notebooks"
    lists["notebooks and their parameters"] = sorted(
        p.relative_to(root).as_posix() for p in notebooks.glob("*")
        if p.is_file() and p.suffix in (".ipynb", ".html", ".json", ".jsonl")
    ) if notebooks.is_dir() else []
    return lists


def _summary_problems(reader: RunReader) -> list[Problem]:
    """``warnings`` and ``errors`` listed in any summary.json of the run."""
    problems = []
    for path in walk_files(reader.root, "summary.json"):
        summary = reader.json(path)
        if not isinstance(summary, dict):
            continue
        source = reader.rel(path) or str(path)
        for level, key in (("warning", "warnings"), ("error", "errors")):
            for item in summary.get(key) or []:
                problems.append(Problem(level, source, str(item)[:600], source))
    return problems


# ---------------------------------------------------------------- gather, render, write


def gather_run_report(run_dir: str | Path) -> RunReport:
    """Read a run folder into a :class:`RunReport` (nothing is written).

    Parameters
    ----------
    run_dir : the run folder (``runs/<experiment>``); stages that did not run are left empty.

    Raises
    ------
    MissingFileError
        If ``run_dir`` is not a folder.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise MissingFileError(f"{root} is not a folder: give the run folder (runs/<experiment>)"
                               f" that the notebooks wrote to")
    reader = RunReader(root)
    notebooks, notebook_issues = notebook_entries(reader)
    deployments = _deployments(reader)
    kinds = _model_kinds(reader, RunFolder(root).model_names())
    report = RunReport(
        header=run_header(reader, notebooks), notebooks=notebooks, models=_model_rows(reader, kinds),
        diagnoses=_diagnoses(reader, {d.model for d in deployments}), deployments=deployments,
        thumbnails=_thumbnails(root, kinds), files=_file_lists(root))
    report.problems = notebook_issues + _summary_problems(reader) + _export_problems(deployments)
    report.problems += reader.problems
    return report


def _export_problems(deployments: list[Deployment]) -> list[Problem]:
    return [Problem("warning", f"{d.folder}: {e.format} export", e.note, None)
            for d in deployments for e in d.exports if not e.passed]


def model_verdicts(report: RunReport) -> list[str]:
    """One line per trained model and set of images it was evaluated on: its name, how it was
    trained, on what, and F1 at IoU 0.5 (or object Dice) — what ``make demo`` ends with.

    >>> header = RunHeader("demo", "8 2D images, instance task", "built-in synthetic data",
    ...                    2, "instance", None, None, None, None)
    >>> row = ModelRow("unet", "from scratch", "test images of this run", 3, 0.9, 0.812)
    >>> model_verdicts(RunReport(header, models=[row]))
    ['unet (from scratch on built-in synthetic data): F1@0.5 0.812 on test images of this run (3 images)']
    """
    source = report.header.source or "the run's data"
    lines = []
    for row in report.models:
        trained = f"{row.model} ({row.kind} on {source})"
        if row.evaluated_on is None:
            lines.append(f"{trained}: not evaluated yet")
            continue
        score = (f"F1@0.5 {row.f1:.3f}" if row.f1 is not None else
                 f"object Dice {row.object_dice:.3f}" if row.object_dice is not None else "–")
        count = ("" if row.n_images is None else
                 f" ({row.n_images} image{'' if row.n_images == 1 else 's'})")
        lines.append(f"{trained}: {score} on {row.evaluated_on}{count}")
    return lines


def render_run_report(report: RunReport) -> str:
    """The front page as one HTML string (see :mod:`microseg.reports.front_page`)."""
    return render(report)


def write_run_report(run_dir: str | Path) -> Path:
    """Gather and render the run folder's report, written atomically to ``run_dir/index.html``.

    Returns the path. Raises :class:`MissingFileError` if ``run_dir`` is not a folder.
    """
    page = render_run_report(gather_run_report(run_dir))
    return atomic_write_text(Path(run_dir) / "index.html", page)
