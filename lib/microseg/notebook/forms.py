"""Optional ipywidgets forms that write into a notebook's parameters (notebooks only).

The parameters cell stays the single source of truth: a form starts from the values the
parameters cell (or papermill) set, and every change writes the new value back into the notebook's
variables and into ``run_dir/notebooks/<name>.form.json``, so the choice is saved with the run.
When a re-opened notebook's parameters differ from the values saved there, the form lists them
with a button that puts them back. Running all cells top to bottom without touching the form uses
the parameters cell's values, so headless runs never depend on a click.

Example (in a notebook, after the parameters cell)
-------
>>> data_dir, ndim, seed, epochs, quick, export_formats = None, 2, 0, None, True, ["onnx"]
>>> form = parameter_form(globals(), {"data_dir": "folder", "ndim": [2, 3],
...                                   "seed": (0, 100), "epochs": int | None, "quick": bool,
...                                   "export_formats": AnyOf("onnx", "torchscript")})
>>> type(form).__name__  # shown as the cell's last expression; run_dir=..., name=... save it
'VBox'
"""

from __future__ import annotations

import html
import re
import types
from pathlib import Path
from typing import Any

from microseg.errors import ConfigError, DataError
from microseg.runs import atomic_write_json, read_json

__all__ = [
    "AnyOf",
    "FOLDER",
    "field_widget",
    "folder_picker",
    "form_fields",
    "form_value",
    "parameter_form",
    "saved_form_values",
]

FOLDER = "folder"

_STYLE = {"description_width": "10em"}
_EMPTY = "empty: None (see the parameters cell)"


class AnyOf:
    """Widget spec for a list-valued parameter: any of ``choices``, one checkbox each.

    The parameter becomes the list of ticked choices, in the order given here (``[]`` when none
    is ticked). Values of the parameter that are not among ``choices`` get a checkbox too.

    Example
    -------
    >>> AnyOf("torchscript", "onnx", "bioimageio").choices
    ('torchscript', 'onnx', 'bioimageio')
    """

    def __init__(self, *choices: Any):
        self.choices = tuple(choices)

    def __repr__(self) -> str:
        return f"AnyOf{self.choices!r}"


def field_widget(name: str, spec: Any, value: Any):
    """One widget for one parameter.

    ``spec`` is a list of choices (dropdown; may hold ``None``), a ``(min, max)`` pair of ints or
    floats (slider), ``bool`` (checkbox), ``"folder"`` (a text box with a dropdown of sub-folders
    to browse), :class:`AnyOf` (one checkbox per choice, for a list-valued parameter),
    ``int | None`` or ``float | None`` (a text box: empty for None, a number, or several numbers
    separated by commas for one per axis), or ``str``/``int``/``float`` (a text or number box).
    A value outside the choices or the slider's range is added to them, so the form always shows
    what the parameters cell holds.

    Raises
    ------
    TypeError
        When ``value`` is not a number but ``spec`` asks for a slider or a number box.
    """
    import ipywidgets as w

    layout = w.Layout(width="36em")
    if isinstance(spec, str) and spec == FOLDER:
        return folder_picker(name, value)
    if isinstance(spec, AnyOf):
        return _checkbox_row(name, spec, value)
    if isinstance(spec, list):
        options = spec if value in spec else [*spec, value]
        return w.Dropdown(options=options, value=value, description=name, style=_STYLE,
                          layout=layout)
    if _optional_number_type(spec) is not None:
        return w.Text(value=_number_text(value), description=name, style=_STYLE, layout=layout,
                      placeholder=_EMPTY)
    if spec is bool:
        return w.Checkbox(value=bool(value), description=name, style=_STYLE, indent=False)
    if isinstance(spec, tuple) and len(spec) == 2:
        _require_number(name, spec, value)
        slider = w.FloatSlider if any(isinstance(v, float) for v in (*spec, value)) else w.IntSlider
        return slider(min=min(spec[0], value), max=max(spec[1], value), value=value,
                      description=name, style=_STYLE, layout=layout, continuous_update=False)
    if spec in (int, float):
        _require_number(name, spec, value)
        box = w.IntText if spec is int else w.FloatText
        return box(value=value, description=name, style=_STYLE, layout=layout)
    return w.Text(value="" if value is None else str(value), description=name, style=_STYLE,
                  layout=layout)


def form_value(name: str, spec: Any, raw: Any) -> Any:
    """The parameter value for what the widget of ``spec`` shows (``raw``).

    Empty text becomes None for ``"folder"``, ``str`` and ``int | None``/``float | None``; an
    :class:`AnyOf` selection becomes a list in the order of its choices; numbers typed for
    ``int | None``/``float | None`` become an int/float, or a list of them when several are given.

    Raises
    ------
    ConfigError
        When the text of an ``int | None``/``float | None`` field is not a number.

    Example
    -------
    >>> form_value("tile_shape", int | None, "32, 64, 64")
    [32, 64, 64]
    >>> form_value("learning_rate", float | None, "")
    """
    number = _optional_number_type(spec)
    if number is not None:
        return _parse_numbers(name, number, raw)
    if isinstance(spec, AnyOf):
        extra = [c for c in raw if c not in spec.choices]
        return [c for c in (*spec.choices, *extra) if c in raw]
    if (isinstance(spec, str) and spec == FOLDER) or (spec is str and raw == ""):
        return raw or None
    return raw


def folder_picker(name: str, value: str | None):
    """A text box holding a folder path, with a dropdown to step into sub-folders or up."""
    import ipywidgets as w

    text = w.Text(value=value or "", description=name, style=_STYLE,
                  layout=w.Layout(width="36em"), placeholder=_EMPTY)
    browse = w.Dropdown(options=_subfolder_options(value), description="browse", style=_STYLE,
                        layout=w.Layout(width="36em"))

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


def _checkbox_row(name: str, spec: AnyOf, value: Any):
    """One checkbox per choice; ``row.value_widget.value`` is the tuple of ticked choices."""
    import ipywidgets as w

    chosen = list(value or [])
    choices = [*spec.choices, *(c for c in chosen if c not in spec.choices)]
    boxes = [w.Checkbox(value=c in chosen, description=str(c), indent=False,
                        layout=w.Layout(width="auto")) for c in choices]
    # Holds the selection for the form; never displayed (the checkboxes are).
    selection = w.SelectMultiple(options=choices, value=tuple(c for c in choices if c in chosen))

    def tick(_change):
        selection.value = tuple(c for c, box in zip(choices, boxes, strict=True) if box.value)

    def show(change):
        for choice, box in zip(choices, boxes, strict=True):
            box.value = choice in change["new"]

    for box in boxes:
        box.observe(tick, names="value")
    selection.observe(show, names="value")
    label = w.HTML(f"<div style='text-align:right; padding-right:8px'>{html.escape(name)}</div>",
                   layout=w.Layout(width="10em"))
    row = w.HBox([label, *boxes])
    row.value_widget = selection
    row.checkboxes = dict(zip(choices, boxes, strict=True))
    return row


def _optional_number_type(spec: Any) -> type | None:
    """``int`` for the spec ``int | None``, ``float`` for ``float | None``, else None."""
    if not isinstance(spec, types.UnionType):
        return None
    args = set(spec.__args__)
    if type(None) not in args or len(args) != 2:
        return None
    (number,) = args - {type(None)}
    return number if number in (int, float) else None


def _number_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _parse_numbers(name: str, number: type, raw: str) -> Any:
    text = raw.strip().strip("[]()").strip()
    if not text:
        return None
    try:
        values = [number(part) for part in re.split(r"[,\s]+", text)]
    except ValueError:
        kind = "a whole number" if number is int else "a number"
        raise ConfigError(
            f"{name}: {raw!r} is not {kind}; expected e.g. {128 if number is int else 0.001}, "
            f"several separated by commas (one per axis), or nothing for None") from None
    return values[0] if len(values) == 1 else values


def _require_number(name: str, spec: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        bounds = spec if isinstance(spec, tuple) else ()
        number = "float" if spec is float or any(isinstance(b, float) for b in bounds) else "int"
        raise TypeError(
            f"parameter {name} is {value!r} but its form field {spec!r} needs a number; "
            f"use the spec {number} | None for a parameter that may be None")


def form_fields(namespace: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Widget specs (:func:`field_widget`) for every declared notebook parameter in
    ``namespace`` but ``run_dir``, from its declared type and choices
    (:data:`microseg.notebook.PARAMETER_TYPES`, ``PARAMETER_CHOICES``, ``MULTIPLE_CHOICES``);
    ``overrides`` (name → spec) win.

    >>> form_fields({"run_dir": "r", "norm": "batch", "quick": False, "data_dir": None,
    ...              "epochs": None}, epochs=(1, 100))
    {'norm': ['batchrenorm', 'batch', 'instance', 'group', 'none'], 'quick': <class 'bool'>, 'data_dir': 'folder', 'epochs': (1, 100)}
    """
    from microseg.notebook.session import notebook_parameters

    return {name: overrides[name] if name in overrides else _declared_spec(name)
            for name in notebook_parameters(namespace) if name != "run_dir"}


def _declared_spec(name: str) -> Any:
    from microseg.notebook.session import MULTIPLE_CHOICES, PARAMETER_CHOICES, PARAMETER_TYPES

    if name in PARAMETER_CHOICES:
        return list(PARAMETER_CHOICES[name])
    if name in MULTIPLE_CHOICES:
        return AnyOf(*MULTIPLE_CHOICES[name])
    kind = PARAMETER_TYPES[name]
    if name.endswith(("_dir", "_path")) and kind in (str, str | None):
        return FOLDER
    if kind in (bool, int, float, str):
        return kind
    numbers = [a for a in getattr(kind, "__args__", ()) if a in (int, float)]
    return (numbers[0] | None) if numbers else str


def parameter_form(namespace: dict[str, Any], fields: dict[str, Any] | None = None,
                   run_dir: str | Path | None = None, name: str | None = None):
    """A form for ``fields`` that writes every change into ``namespace`` (the notebook's globals).

    Parameters
    ----------
    namespace : usually ``globals()`` of the notebook; must already hold every field's value.
    fields : parameter name → widget spec (see :func:`field_widget`); None: every declared
        parameter of the notebook (:func:`form_fields`).
    run_dir, name : where to save the chosen values (``run_dir/notebooks/<name>.form.json``).
        When that file holds values that differ from ``namespace``, the form lists them with a
        button that puts them into ``namespace`` and the form.

    Returns
    -------
    ipywidgets.VBox; its ``value_widgets`` maps each field to the widget whose ``value`` is read.
    Text that is not a valid value leaves the parameter unchanged and shows why under the form.

    Raises
    ------
    KeyError
        When a field is not defined in the namespace (not in the parameters cell).
    """
    import ipywidgets as w

    fields = form_fields(namespace) if fields is None else fields
    missing = [k for k in fields if k not in namespace]
    if missing:
        raise KeyError(f"parameters {missing} are not defined; add them to the parameters cell")
    record = Path(run_dir) / "notebooks" / f"{name}.form.json" if run_dir and name else None
    note = w.HTML("<i>Changes here set the notebook's parameters; then run the cells below.</i>")
    status = w.HTML()
    form = w.VBox()

    def build():
        rows, form.value_widgets = [], {}
        for key, spec in fields.items():
            widget = field_widget(key, spec, namespace[key])
            target = getattr(widget, "value_widget", widget)
            target.observe(_writer(namespace, key, spec, fields, record, status), names="value")
            form.value_widgets[key] = target
            rows.append(widget)
        form.children = [note, *_restore_row(namespace, fields, record, restore), *rows, status]

    def restore(saved):
        namespace.update(saved)
        atomic_write_json(record, {k: namespace[k] for k in fields})
        build()

    build()
    return form


def _restore_row(namespace, fields, record, restore) -> list:
    """A button that puts back the values saved with the run, when they differ from namespace."""
    import ipywidgets as w

    saved = read_json(record) if record is not None and record.is_file() else {}
    if not isinstance(saved, dict):
        raise DataError(f"{record} should hold the form's values by name, found "
                        f"{type(saved).__name__}; delete it (the form starts from the parameters)")
    differing = {k: v for k, v in saved.items() if k in fields and namespace[k] != v}
    if not differing:
        return []
    listed = ", ".join(f"{k} = {v!r}" for k, v in differing.items())
    button = w.Button(description="Use the values saved in this run", icon="history",
                      layout=w.Layout(width="auto"))
    button.on_click(lambda _button: restore(differing))
    text = w.HTML(f"<i>This form was last saved in {html.escape(str(record))} with "
                  f"{html.escape(listed, quote=False)}.</i>")
    return [w.VBox([text, button])]


def _writer(namespace, key, spec, fields, record, status):
    def write(change):
        try:
            value = form_value(key, spec, change["new"])
        except ValueError as error:
            status.value = f"<span style='color:#b00'>{html.escape(str(error), quote=False)}</span>"
            return
        status.value = ""
        namespace[key] = value
        if record is not None:
            atomic_write_json(record, {k: namespace[k] for k in fields})

    return write


def saved_form_values(run_dir: str | Path, name: str) -> dict[str, Any] | None:
    """The values last chosen in notebook ``name``'s form, or None."""
    path = Path(run_dir) / "notebooks" / f"{name}.form.json"
    return read_json(path) if path.is_file() else None
