"""A one-page, self-contained HTML quality-control report of one model's evaluation.

Everything is inside the one file: figures as base64 PNG, tables as HTML, styles inline, no
scripts and no links to fetch, so the report can be e-mailed, archived or attached to a paper's
methods. It holds the key numbers, the fit diagnosis, the figures, the per-image table (worst
first), the model, data and environment, a methods paragraph and the metric definitions.

Example
-------
>>> html = build_report({"model": "unet", "task": "binary", "subset": "test", "n_images": 0})
>>> html.startswith("<!DOCTYPE html>") and "unet" in html
True
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from microseg.runs import atomic_write_text

__all__ = [
    "METRIC_DEFINITIONS",
    "build_report",
    "figure_png",
    "methods_paragraph",
    "png_data_uri",
    "write_report",
]

METRIC_DEFINITIONS: dict[str, str] = {
    "TP, FP, FN": "pixels (or objects) correctly predicted, wrongly predicted and missed, per class.",
    "IoU (Jaccard index)": "TP / (TP + FP + FN): overlap of prediction and truth over their union.",
    "Dice (F1)": "2·TP / (2·TP + FP + FN): the harmonic mean of precision and recall.",
    "precision": "TP / (TP + FP): the share of predictions that are correct.",
    "recall": "TP / (TP + FN): the share of the truth that is found.",
    "object matching": "predicted and true objects are paired one to one, maximising the number "
                       "of pairs whose IoU reaches the threshold τ (Hungarian algorithm).",
    "F1 at τ": "2·TP / (2·TP + FP + FN) counted in matched objects at IoU threshold τ.",
    "average precision (AP) at τ": "TP / (TP + FP + FN) in objects at threshold τ (as in StarDist "
                                   "and the Data Science Bowl).",
    "mean matched IoU": "the mean IoU of the matched object pairs (segmentation quality).",
    "panoptic quality (PQ)": "sum of matched IoU / (TP + FP/2 + FN/2) = mean matched IoU × F1.",
    "pooled": "counts summed over all images, then the ratio: every pixel or object counts once.",
    "mean over images": "the ratio of each image, averaged over the images where it is defined.",
    "absent / undefined (–)": "a ratio whose denominator is zero, e.g. a class in neither "
                              "prediction nor truth; shown as – and never counted as 0 or 1.",
}
"""One sentence per metric, shown at the end of every report."""

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;border-bottom:1px solid #ccc;
margin-top:1.6em}table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
.muted{color:#666;font-size:.9em}.verdict{font-weight:bold}dl{font-size:.9em}dt{font-weight:bold}
dd{margin:0 0 .4em 1.2em}
"""


def figure_png(figure: Any, dpi: int = 100) -> bytes:
    """PNG bytes of a Matplotlib figure (tight bounding box)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def png_data_uri(figure: Any) -> str:
    """A ``data:image/png;base64,...`` URI from a Matplotlib figure, PNG bytes or a PNG file."""
    if isinstance(figure, (str, Path)):
        data = Path(figure).read_bytes()
    elif isinstance(figure, bytes):
        data = figure
    else:
        data = figure_png(figure)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _table(rows: list[Mapping[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p class='muted'>none</p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_number(r.get(c))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _key_values(values: Mapping[str, Any]) -> str:
    return _table([{"item": k, "value": _plain(v)} for k, v in values.items()], ["item", "value"])


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(_number(v)) for v in value)
    if isinstance(value, Mapping):
        return "; ".join(f"{k}={_number(v)}" for k, v in value.items())
    return value


def _headline(summary: Mapping[str, Any]) -> dict[str, Any]:
    values = {"images": summary.get("n_images"), "object Dice (pooled)": summary.get("object_dice"),
              "mean class Dice (pooled)": summary.get("mean_class_dice")}
    at = summary.get("at_threshold") or {}
    if at:
        tau = f"IoU {at['threshold']:g}"
        values.update({f"F1 at {tau}": at.get("f1"), f"AP at {tau}": at.get("ap"),
                       f"panoptic quality at {tau}": at.get("panoptic_quality"),
                       "AP averaged over thresholds": (summary.get("instance") or {}).get("mean_ap")})
    values["fit diagnosis"] = (summary.get("fit_diagnosis") or {}).get("verdict")
    return values


def _pixel_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    means = summary.get("pixel_mean_over_images", {})
    rows = []
    for name, pooled in summary.get("pixel", {}).items():
        mean = means.get(name, {})
        rows.append({"class": name, "IoU (pooled)": pooled.get("iou"),
                     "Dice (pooled)": pooled.get("dice"), "precision (pooled)": pooled.get("precision"),
                     "recall (pooled)": pooled.get("recall"), "IoU (mean over images)": mean.get("iou"),
                     "Dice (mean over images)": mean.get("dice")})
    return rows


def _instance_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    instance = summary.get("instance")
    if not instance:
        return []
    keys = ("tp", "fp", "fn", "precision", "recall", "f1", "ap", "mean_matched_iou",
            "panoptic_quality")
    mean = instance.get("mean_over_images", {})
    return [{"IoU τ": t, **{k: instance[k][i] for k in keys if k in instance},
             "F1 (mean over images)": (mean.get("f1") or [None] * (i + 1))[i]}
            for i, t in enumerate(instance["thresholds"])]


def methods_paragraph(summary: Mapping[str, Any]) -> str:
    """A paragraph describing the evaluation, in words suitable for a paper's methods section."""
    text = (f"The model \u201c{summary.get('model', '?')}\u201d was evaluated on "
            f"{summary.get('n_images', '?')} held-out {summary.get('subset', 'test')} images "
            f"that were used neither for training nor for validation. Predictions were made "
            f"{summary.get('prediction', 'on whole images')}. Pixel metrics (IoU, Dice, "
            f"precision, recall) were computed per class from the hard prediction (arg max), and "
            f"the object Dice of all object pixels against background; they are reported "
            f"pooled over all pixels and as the mean over images.")
    if summary.get("instance"):
        text += (" Objects were obtained from the predicted background/foreground/boundary "
                 "probabilities by a seeded watershed with thresholds tuned on the validation "
                 "images, and matched one to one to the annotated objects at IoU thresholds "
                 f"from {summary['instance']['thresholds'][0]:g} to "
                 f"{summary['instance']['thresholds'][-1]:g}; we report precision, recall, F1, "
                 "average precision TP/(TP+FP+FN) and panoptic quality.")
    return text


def _figure_html(figures: Mapping[str, Any]) -> str:
    parts = []
    for caption, figure in figures.items():
        parts.append(f"<figure><img alt='{html.escape(caption)}' src='{png_data_uri(figure)}'>"
                     f"<figcaption class='muted'>{html.escape(caption)}</figcaption></figure>")
    return "".join(parts)


def _diagnosis_html(diagnosis: Mapping[str, Any] | None) -> str:
    if not diagnosis:
        return "<p class='muted'>no training history found</p>"
    return (f"<p><span class='verdict'>{html.escape(str(diagnosis.get('verdict')))}</span>: "
            f"{html.escape(str(diagnosis.get('reason', '')))}</p>")


def build_report(summary: Mapping[str, Any], table: Any = None,
                 figures: Mapping[str, Any] | None = None,
                 model_info: Mapping[str, Any] | None = None,
                 data_info: Mapping[str, Any] | None = None,
                 environment: Mapping[str, Any] | None = None, max_rows: int = 50) -> str:
    """The report as one HTML string.

    Parameters
    ----------
    summary : the model's evaluation summary (``eval/<model>/summary.json``): at least ``model``,
        ``task``, ``subset``, ``n_images``; ``pixel``, ``pixel_mean_over_images``, ``instance``
        and ``fit_diagnosis`` are shown when present.
    table : per-image metrics (a pandas DataFrame, worst first); the first ``max_rows`` shown.
    figures : caption → Matplotlib figure, PNG bytes or PNG path; embedded as base64 PNG.
    model_info, data_info, environment : flat dicts shown as item/value tables.
    """
    title = (f"Quality control: {summary.get('model', 'model')} on the {summary.get('subset', '')} "
             f"images ({summary.get('task', '')} task)")
    created = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p class='muted'>images evaluated: {summary.get('n_images', 0)} · created {created} · "
        f"microseg {html.escape(str((environment or {}).get('microseg', '')))}</p>",
        "<h2>Key numbers</h2>" + _key_values(_headline(summary)),
        "<h2>Methods</h2><p>" + html.escape(methods_paragraph(summary)) + "</p>",
        "<h2>Pixel metrics per class</h2>" + _table(_pixel_rows(summary)),
    ]
    if summary.get("instance"):
        parts.append("<h2>Object metrics (pooled over images)</h2>" + _table(_instance_rows(summary)))
    parts.append("<h2>Training: fit diagnosis</h2>" + _diagnosis_html(summary.get("fit_diagnosis")))
    if figures:
        parts.append("<h2>Figures</h2>" + _figure_html(figures))
    if table is not None and len(table):
        rows = table.head(max_rows).to_dict("records")
        shown = f" (worst {max_rows} of {len(table)})" if len(table) > max_rows else ""
        parts.append(f"<h2>Per image, worst first{shown}</h2>" + _table(rows))
    for heading, values in (("Model", model_info), ("Data", data_info),
                            ("Environment", environment)):
        if values:
            parts.append(f"<h2>{heading}</h2>" + _key_values(values))
    definitions = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                          for k, v in METRIC_DEFINITIONS.items())
    parts.append(f"<h2>Metric definitions</h2><dl>{definitions}</dl></body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, summary: Mapping[str, Any], **parts: Any) -> Path:
    """Write :func:`build_report` (same keyword arguments) to ``path`` atomically; the path."""
    return atomic_write_text(path, build_report(summary, **parts))
