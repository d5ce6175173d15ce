"""HTML of the run's front page: a :class:`microseg.reports.run_facts.RunReport` → one page.

Only rendering: every value comes from the report object, so the page can be tested without a
run folder. Styles are inline, the chart is an embedded PNG, figures and files are linked relative
to the run folder; the page fetches nothing from the network.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from microseg.reports.run_facts import ModelRow, RunReport

__all__ = ["METRICS", "STAGES", "models_chart", "render"]

STAGES = (
    ("01", "data"), ("02", "training from scratch"), ("03", "transfer learning"),
    ("04", "fine-tuning"), ("05", "evaluation"), ("06", "normalization diagnostics"),
    ("07", "deployment"),
)
"""Notebook number and what its stage does, in order (the thumbnails follow it)."""

METRICS = (
    ("object_dice", "object Dice", "Dice of all object pixels against background, pooled"),
    ("f1", "F1@0.5", "object F1 at IoU 0.5, pooled over the images"),
    ("score_50_95", "AP@0.5:0.95", "TP/(TP+FP+FN) averaged over IoU 0.5, 0.55, …, 0.95, then over "
                                "the images (the Data Science Bowl 2018 score)"),
    ("panoptic_quality", "PQ", "panoptic quality at IoU 0.5, pooled over the images"),
)
"""Model-table columns where higher is better: key of :class:`~microseg.reports.run_facts.ModelRow`, heading, meaning."""

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1400px;
margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;border-bottom:1px solid #ccc;margin-top:1.5em}
h3{font-size:1em;margin:1em 0 .3em}h2.first{margin-top:0}table{border-collapse:collapse;font-size:.85em;margin:.4em 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f3f3f3}tr.group th{background:#e8eef7}td.text,th.text{text-align:left}
td.best{font-weight:bold;background:#e3f4e1}.muted{color:#666;font-size:.9em}
.side{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start}.side img{max-width:320px}td.model{max-width:210px}
.ok{color:#1a7f37;font-weight:bold}.bad{color:#b42318;font-weight:bold}
.unknown{color:#8a6d00;font-weight:bold}.alert{padding:.4em .7em;border-radius:4px}
.alert.bad{background:#fdecea}.alert.ok{background:#e8f5e9}
.thumbs{display:flex;flex-wrap:wrap;gap:1em}.thumbs figure{margin:0;width:280px}
.thumbs img{width:280px;height:200px;object-fit:contain;border:1px solid #ddd;background:#fff}
figcaption{font-size:.85em;color:#444;overflow-wrap:anywhere}img{max-width:100%}details{margin:.3em 0}
summary{cursor:pointer}ul.files{font-size:.85em;columns:2}
"""


def render(report: RunReport) -> str:
    """The front page of ``report`` as one HTML string (UTF-8, no scripts, nothing fetched)."""
    title = f"microseg run {report.header.experiment}"
    body = "".join((
        f"<h1>{_e(title)}</h1>", _banner(report),
        f"<div class='side'><div>{_header(report)}</div><div>{_notebooks(report)}</div></div>",
        _models(report.models),
        _diagnostics(report), _deployments(report), _thumbnails(report), _files(report.files),
        _problems(report),
    ))
    # While a notebook runs, an open page reloads itself (the chain rewrites it as it goes).
    running = any(n.status.startswith("running") or n.status == "next" for n in report.notebooks)
    refresh = "<meta http-equiv='refresh' content='30'>" if running else ""
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{refresh}<title>"
            f"{_e(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>\n")


# ---------------------------------------------------------------- small pieces


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _href(rel: str) -> str:
    return _e(quote(rel))


def _link(rel: str | None, text: str | None = None) -> str:
    text = rel if text is None else text
    return f"<a href='{_href(rel)}'>{_e(text)}</a>" if rel else _e(text or "–")


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 90:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min" if value < 5400 else f"{value / 3600:.1f} h"


def _when(iso: str | None) -> str:
    """An ISO time as ``2026-12-03 18:38 UTC`` (times without a zone are shown as written)."""
    import datetime as dt

    if not iso:
        return "–"
    try:
        moment = dt.datetime.fromisoformat(iso)
    except ValueError:
        return _e(iso)
    if moment.tzinfo is None:
        return _e(moment.strftime("%Y-%m-%d %H:%M"))
    return _e(moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))


def _bytes(value: int | None) -> str:
    if value is None:
        return "size unknown"
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return ""


def _shape(values: Iterable[Any] | None) -> str:
    return "–" if values is None else " × ".join(str(v) for v in values)


def _key_values(items: Mapping[str, str]) -> str:
    """A two-column table; values are HTML already."""
    rows = "".join(f"<tr><th class='text'>{_e(k)}</th><td class='text'>{v}</td></tr>"
                   for k, v in items.items())
    return f"<table>{rows}</table>"


def _empty(stage: str) -> str:
    number = stage[:2]
    name = dict(STAGES).get(number, stage)
    return f"<p class='muted'>Not run yet: notebook {number} ({_e(name)}) writes this part.</p>"


# ---------------------------------------------------------------- header and notebooks


def _header(report: RunReport) -> str:
    h = report.header
    items = {"experiment": _e(h.experiment), "data": _e(h.data),
             "source": _e(h.source or "–"), "started": _when(h.started),
             "microseg": _e(h.version or "–"), "device": _e(h.device or "–"),
             "page written": _when(h.written),
             "total time": _seconds(h.total_seconds) + (
                 "" if h.total_seconds is not None or not report.notebooks
                 else " <span class='muted'>(not recorded in JupyterLab)</span>")}
    return _key_values(items)


def _banner(report: RunReport) -> str:
    errors = sum(p.level == "error" for p in report.problems)
    warnings = len(report.problems) - errors
    if not report.problems:
        return "<p class='alert ok'>No errors or warnings in this run.</p>"
    return (f"<p class='alert bad'>{errors} error(s), {warnings} warning(s) — "
            f"<a href='#problems'>see the list</a></p>")


def _notebooks(report: RunReport) -> str:
    if not report.notebooks:
        return "<h2 class='first'>Notebooks</h2>" + _empty("01")
    rows = "".join(
        f"<tr><td class='text'>{_link(n.link, n.name)}</td>"
        f"<td class='text {_status_class(n.status)}'>{_e(n.status)}</td>"
        f"<td>{_seconds(n.seconds)}</td><td class='text'>{_when(n.started)}</td>"
        f"<td class='text'>{_given(n.given)}</td></tr>"
        for n in report.notebooks)
    head = ("<tr><th class='text'>notebook</th><th class='text'>status</th><th>time</th>"
            "<th class='text'>started</th><th class='text'>parameters given</th></tr>")
    return f"<h2 class='first'>Notebooks</h2><table>{head}{rows}</table>"


def _given(given: dict[str, Any]) -> str:
    if not given:
        return "<span class='muted'>defaults</span>"
    return "<br>".join(f"<code>{_e(name)} = {_e(repr(value))}</code>"
                       for name, value in given.items())


def _status_class(status: str) -> str:
    if status.startswith("running"):
        return "unknown"
    return {"done": "ok", "done in JupyterLab": "ok", "failed": "bad",
            "started in JupyterLab": "unknown"}.get(status, "")


# ---------------------------------------------------------------- models


def _metric_columns(rows: list[ModelRow]) -> list[tuple[str, str, str]]:
    """The metric columns holding at least one value."""
    return [m for m in METRICS if any(getattr(r, m[0]) is not None for r in rows)]


def _models(rows: list[ModelRow]) -> str:
    title = "<h2>Models</h2>"
    if not rows:
        return title + _empty("02")
    metrics = _metric_columns(rows)
    head = ("<tr><th class='text'>model, how trained</th><th>images</th>"
            + "".join(f"<th title='{_e(m)}'>{_e(t)}</th>" for _, t, m in metrics)
            + "<th>train time</th><th>epochs</th><th class='text'>fit diagnosis</th>"
              "<th class='text'>QC</th></tr>")
    meanings = "; ".join(f"<b>{_e(t)}</b>: {_e(m)}" for _, t, m in metrics)
    note = (f"<p class='muted'>{meanings}. <b>Bold</b> on green: the best value of its column "
            "among models evaluated on the same images. Training time: epoch times (training "
            "and validation) summed from history.csv. Hover a fit diagnosis for its reason.</p>")
    if not metrics:
        note += "<p class='muted'>No evaluation yet: notebook 05 evaluates every model.</p>"
    chart = models_chart(rows)
    figure = "" if chart is None else (
        f"<img class='chart' alt='model metrics, one row per model' src='{_data_uri(chart)}'>")
    return (f"{title}<div class='side'><table>{head}{_model_groups(rows, metrics)}</table>"
            f"{figure}</div>{note}")


def _model_groups(rows: list[ModelRow], metrics: list[tuple[str, str, str]]) -> str:
    """The table body: a heading row per set of images, then its models in the report's order."""
    groups: dict[str | None, list[ModelRow]] = {}
    for row in rows:
        groups.setdefault(row.evaluated_on, []).append(row)
    width = 6 + len(metrics)
    return "".join(
        f"<tr class='group'><th class='text' colspan='{width}'>"
        f"{_e('evaluated on the ' + on if on else 'not evaluated yet')}</th></tr>"
        + "".join(_model_row(r, metrics) for r in members) for on, members in groups.items())


def _model_row(row: ModelRow, metrics: list[tuple[str, str, str]]) -> str:
    def cell(key: str, text: str) -> str:
        best = " class='best' title='best in this column'" if key in row.best else ""
        return f"<td{best}>{text}</td>"

    values = "".join(cell(k, _number(getattr(row, k))) for k, *_ in metrics)
    fit = (f"<span title='{_e(row.fit_reason or '')}'>{_e(row.fit)}</span>" if row.fit else "–")
    report = _link(row.report, "report") if row.report else "–"
    return (f"<tr class='model-row' data-model='{_e(row.model)}'>"
            f"<td class='text model'><b>{_e(row.model)}</b><br><span class='muted'>{_e(row.kind)}"
            f"</span></td><td>{_number(row.n_images)}</td>{values}"
            f"{cell('train_seconds', _seconds(row.train_seconds))}<td>{_number(row.epochs)}</td>"
            f"<td class='text'>{fit}</td><td class='text'>{report}</td></tr>")


def models_chart(rows: list[ModelRow]) -> Any:
    """A dot chart of the models table's metrics (one line per row), or None without values.

    Returns a Matplotlib Figure; the caller closes it.
    """
    import matplotlib.pyplot as plt

    shown = [r for r in rows if any(getattr(r, k) is not None for k, *_ in METRICS)]
    if not shown:
        return None
    several = len({r.evaluated_on for r in shown}) > 1
    labels = [r.model + (f"\n{r.evaluated_on}" if several else "") for r in shown]
    figure, axis = plt.subplots(figsize=(4.2, 0.9 + 0.38 * len(shown) * (1.6 if several else 1)))
    markers = ("o", "s", "D", "^")
    for (key, title, _), marker in zip(_metric_columns(shown), markers, strict=False):
        values = [getattr(r, key) for r in shown]
        points = [(v, y) for y, v in enumerate(values) if v is not None]
        axis.scatter([v for v, _ in points], [y for _, y in points], marker=marker, s=36,
                     label=title, alpha=0.85)
    axis.set_yticks(range(len(shown)), labels, fontsize=8)
    axis.invert_yaxis()
    axis.set(xlim=(-0.02, 1.02), xlabel="score (1 = perfect)")
    axis.grid(axis="x", alpha=0.3)
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18 - 0.6 / len(shown)),
                ncol=2, frameon=False)
    figure.tight_layout()
    return figure


def _data_uri(figure: Any) -> str:
    import matplotlib.pyplot as plt

    from microseg.reports.evaluation_report import png_data_uri

    try:
        return png_data_uri(figure)
    finally:
        plt.close(figure)


# ---------------------------------------------------------------- diagnostics and deployment


def _verdict_class(value: bool | None) -> str:
    return {True: "ok", False: "bad"}.get(value, "unknown")


def _diagnostics(report: RunReport) -> str:
    title = "<h2>Diagnostics of tiled prediction</h2>"
    if not report.diagnoses:
        return title + _empty("06")
    parts = [title]
    for d in report.diagnoses:
        parts.append(f"<h3>{_e(d.model)} ({_e(d.norm or '?')} normalization)"
                     f"{' — the deployed model' if d.deployed else ''}</h3>"
                     f"<p class='{_verdict_class(d.seamless)}'>{_e(d.verdict)}</p>"
                     f"<p>{_e(d.disparity_verdict)}</p>")
        parts.append(_key_values({
            "receptive field (theoretical, pixels)": _shape(d.receptive_field),
            "effective receptive field (95 %)": _shape(d.effective_field),
            "recommended halo / used": f"{_shape(d.recommended_halo)} / {_shape(d.halo)}",
            "tile mismatch (mean 1 − Dice)": _number(d.mismatch),
            "largest probability difference": _number(d.max_abs_diff, 8),
            "overlapping tile pairs": _number(d.n_pairs),
            "train/eval disparity (mean 1 − Dice)": _number(d.disparity),
            "results": _link(d.folder)}))
        parts.append(_figure_strip(d.figures))
        parts.append(_comparison(d.comparison, d.comparison_figure))
    return "".join(parts)


def _figure_strip(paths: list[str]) -> str:
    if not paths:
        return ""
    items = "".join(f"<figure><a href='{_href(p)}'><img src='{_href(p)}' "
                    f"alt='{_e(p)}'></a><figcaption>{_e(p.rsplit('/', 1)[-1])}</figcaption>"
                    f"</figure>" for p in paths)
    return f"<div class='thumbs'>{items}</div>"


def _comparison(rows: list[dict[str, Any]], figure: str | None) -> str:
    if not rows:
        return ("<p class='muted'>Normalization comparison not run (notebook 06 with "
                "compare_norms = True; on by default outside quick runs).</p>")
    columns = list(rows[0])
    head = "".join(f"<th class='{'text' if c in ('configuration', 'seams') else ''}'>{_e(c)}"
                   f"</th>" for c in columns)
    body = "".join("<tr class='norm-row'>" + "".join(
        f"<td class='{'text' if c in ('configuration', 'seams') else ''}'>{_number(r[c])}</td>"
        for c in columns) + "</tr>" for r in rows)
    image = "" if figure is None else (f"<a href='{_href(figure)}'><img src='{_href(figure)}' "
                                       f"alt='normalization comparison'></a>")
    return (f"<h3>Normalization comparison</h3><div class='side'><table><tr>{head}</tr>{body}"
            f"</table>{image}</div><p class='muted'>Configuration: feature normalization / input "
            f"normalization (global percentiles or per tile). Seams: stitched tiles differ from "
            f"the whole-image prediction.</p>")


def _deployments(report: RunReport) -> str:
    title = "<h2>Deployment</h2>"
    if not report.deployments:
        return title + _empty("07")
    parts = [title]
    for d in report.deployments:
        outputs = "<br>".join(f"{_link(link, shown)} ({_bytes(size)})"
                              for shown, link, size in d.outputs) or "none"
        workers = ("" if not d.worker_peak_memory_mb else "; per worker: " + ", ".join(
            f"{_e(k)} {v:.0f} MB" for k, v in d.worker_peak_memory_mb.items()))
        parts.append(f"<h3>{_e(d.model)}</h3>" + _key_values({
            "inputs": "<br>".join(f"{_e(shown)} ({_bytes(size)})" for shown, size in d.inputs)
                      + f"<br><span class='muted'>kind: {_e(d.input_kind or '?')}</span>",
            "outputs": outputs, "voxels": _number(d.voxels),
            "voxels per second": "–" if d.voxels_per_second is None
            else f"{d.voxels_per_second:,.0f}",
            "peak memory": ("–" if d.peak_memory_mb is None
                            else f"{d.peak_memory_mb:.0f} MB (this process)") + workers,
            "objects": _number(d.n_objects),
            "tiles / halo": f"{_shape(d.tile_shape)} / {_shape(d.halo)} "
                            f"(halo from {_e(d.halo_source or '?')})",
            "scheduler": _e(d.scheduler or "–"), "time": _seconds(d.seconds),
            "results": _link(d.folder)}))
        parts.append(_exports(d.exports))
    return "".join(parts)


def _exports(exports: list[Any]) -> str:
    if not exports:
        return "<p class='muted'>No exports.</p>"
    rows = "".join(
        f"<tr><td class='text'>{_e(x.format)}</td><td class='text'>{_link(x.path)}</td>"
        f"<td>{'–' if x.size_bytes is None else _bytes(x.size_bytes)}</td>"
        f"<td class='text {'ok' if x.passed else 'bad'}'>{_e(x.note)}</td></tr>"
        for x in exports)
    return ("<table><tr><th class='text'>export</th><th class='text'>file</th><th>size</th>"
            f"<th class='text'>check</th></tr>{rows}</table>")


# ---------------------------------------------------------------- figures, files, problems


def _thumbnails(report: RunReport) -> str:
    title = "<h2>Key figures</h2>"
    if not report.thumbnails:
        return title + _empty("01")
    items = "".join(f"<figure><a href='{_href(t.path)}'><img src='{_href(t.path)}'"
                    f" alt='{_e(t.stage)}'></a><figcaption>{_e(t.stage)}: {_e(t.path)}"
                    f"</figcaption></figure>" for t in report.thumbnails)
    return f"{title}<p class='muted'>One per stage; click for full size.</p>" \
           f"<div class='thumbs'>{items}</div>"


def _files(files: Mapping[str, list[str]]) -> str:
    parts = ["<h2>All files</h2>"]
    for heading, paths in files.items():
        items = "".join(f"<li>{_link(p)}</li>" for p in paths) or "<li>none</li>"
        parts.append(f"<details><summary>{_e(heading)} ({len(paths)})</summary>"
                     f"<ul class='files'>{items}</ul></details>")
    return "".join(parts)


def _problems(report: RunReport) -> str:
    title = "<h2 id='problems'>Errors and warnings</h2>"
    if not report.problems:
        return title + "<p class='muted'>None: no notebook output or summary of this run holds " \
                       "an error or a warning.</p>"
    rows = "".join(
        f"<tr class='problem {p.level}'><td class='text {'bad' if p.level == 'error' else ''}'>"
        f"{_e(p.level)}</td><td class='text'>{_link(p.link, p.source)}</td>"
        f"<td class='text'>{_e(p.message)}</td></tr>" for p in report.problems)
    return (f"{title}<table><tr><th class='text'>level</th><th class='text'>where</th>"
            f"<th class='text'>message</th></tr>{rows}</table>")
