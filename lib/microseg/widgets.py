"""Optional ipywidgets forms that write into a notebook's parameters (notebooks only).

The parameters cell stays the single source of truth: a form starts from the values the
parameters cell (or papermill) set, and every change writes the new value back into the notebook's
variables and into ``run_dir/notebooks/<name>.form.json``, so the choice is saved with the run.
Running all cells top to bottom without touching the form uses the parameters cell's values, so
headless runs never depend on a click.

Example (in a notebook, after the parameters cell)
-------
>>> form = parameter_form(globals(), {"data_dir": "folder", "ndim": [2, 3],
...                                   "seed": (0, 100), "quick": bool},
...                       run_dir=run_dir, name="01_prepare_data")   # doctest: +SKIP
>>> form                                                               # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from microseg.runs import atomic_write_json

FOLDER = "folder"


def field_widget(name: str, spec: Any, value: Any):
    """One widget for one parameter.

    ``spec`` is a list of choices (dropdown), a ``(min, max)`` pair of ints or floats (slider),
    ``bool`` (checkbox), ``"folder"`` (a text box with a dropdown of sub-folders to browse), or
    ``str``/``int``/``float`` (a text or number box).
    """
    import ipywidgets as w

    style = {"description_width": "10em"}
    layout = w.Layout(width="36em")
    if spec == FOLDER:
        return folder_picker(name, value)
    if isinstance(spec, list):
        return w.Dropdown(options=spec, value=value, description=name, style=style, layout=layout)
    if isinstance(spec, tuple) and len(spec) == 2:
        slider = w.FloatSlider if any(isinstance(v, float) for v in (*spec, value)) else w.IntSlider
        return slider(min=spec[0], max=spec[1], value=value, description=name, style=style,
                      layout=layout, continuous_update=False)
    if spec is bool:
        return w.Checkbox(value=bool(value), description=name, style=style, indent=False)
    if spec in (int, float):
        box = w.IntText if spec is int else w.FloatText
        return box(value=value, description=name, style=style, layout=layout)
    return w.Text(value="" if value is None else str(value), description=name, style=style,
                  layout=layout)


def folder_picker(name: str, value: str | None):
    """A text box holding a folder path, with a dropdown to step into sub-folders or up."""
    import ipywidgets as w

    text = w.Text(value=value or "", description=name, style={"description_width": "10em"},
                  layout=w.Layout(width="36em"), placeholder="empty = built-in synthetic data")
    browse = w.Dropdown(options=_subfolder_options(value), description="browse",
                        style={"description_width": "10em"}, layout=w.Layout(width="36em"))

    def step(change):
        if change["new"]:
            text.value = str(Path(change["new"]).resolve())

    def refresh(change):
        browse.options = _subfolder_options(change["new"])

    browse.observe(step, names="value")
    text.observe(refresh, names="value")
    box = w.VBox([text, browse])
    box.value_widget = text
    return box


def _subfolder_options(path: str | None) -> list[tuple[str, str]]:
    base = Path(path) if path and Path(path).is_dir() else Path.cwd()
    options = [("", ""), (".. (up)", str(base.parent))]
    try:
        subs = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        subs = []
    return options + [(p.name + "/", str(p)) for p in subs[:200]]


def parameter_form(namespace: dict[str, Any], fields: dict[str, Any],
                   run_dir: str | Path | None = None, name: str | None = None):
    """A form for ``fields`` that writes every change into ``namespace`` (the notebook's globals).

    Parameters
    ----------
    namespace : usually ``globals()`` of the notebook; must already hold every field's value.
    fields : parameter name → widget spec (see :func:`field_widget`).
    run_dir, name : where to save the chosen values (``run_dir/notebooks/<name>.form.json``).

    Raises
    ------
    KeyError
        When a field is not defined in the namespace (not in the parameters cell).
    """
    import ipywidgets as w

    missing = [k for k in fields if k not in namespace]
    if missing:
        raise KeyError(f"parameters {missing} are not defined; add them to the parameters cell")
    record = Path(run_dir) / "notebooks" / f"{name}.form.json" if run_dir and name else None
    rows = []
    for key, spec in fields.items():
        widget = field_widget(key, spec, namespace[key])
        target = getattr(widget, "value_widget", widget)
        target.observe(_writer(namespace, key, spec, fields, record), names="value")
        rows.append(widget)
    note = w.HTML("<i>Changes here set the notebook's parameters; then run the cells below.</i>")
    return w.VBox([note, *rows])


def _writer(namespace, key, spec, fields, record):
    def write(change):
        value = change["new"]
        if spec == FOLDER or (spec is str and value == ""):
            value = value or None
        namespace[key] = value
        if record is not None:
            atomic_write_json(record, {k: namespace[k] for k in fields})

    return write


def saved_form_values(run_dir: str | Path, name: str) -> dict[str, Any] | None:
    """The values last chosen in notebook ``name``'s form, or None."""
    path = Path(run_dir) / "notebooks" / f"{name}.form.json"
    return json.loads(path.read_text()) if path.is_file() else None
