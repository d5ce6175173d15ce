"""The structure of the ``summary.json`` files a run holds: every key path with the JSON type of
its value, values left out (times and scores change from run to run; the keys and their kinds
must not).

``tests/data/summary_schema.json`` was written from the quick notebook chain before the recipes
returned typed results; ``test_notebooks.py`` compares the chain's summaries with it, so a
summary that loses, renames or retypes a key fails. After a deliberate change of a summary,
write the file again from a fresh quick chain::

    .venv/bin/python tests/summary_schema.py RUN_DIR > tests/data/summary_schema.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Keys whose children are names chosen at run time (image stems, model names, file names):
# their own keys are left out, only the kind of value they hold is kept.
OPEN_KEYS = frozenset({"object_diameter_per_image", "spatial_shapes", "comparison", "models",
                       "class_frequencies", "pixel", "pixel_mean_over_images", "exports",
                       "values", "pixel_size_notes", "figures", "per_channel", "best_params",
                       "definitions", "first_batch_class_frequencies"})
# Values that are null in one run and set in another (timings of quick runs, optional facts).
_KINDS = {bool: "bool", int: "number", float: "number", str: "str", type(None): "null"}


def kind(value: Any) -> str:
    """The JSON kind of a value: object, array, number, str, bool or null."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return _KINDS[type(value)]


def schema(value: Any, path: str = "") -> dict[str, str]:
    """Key path → kind, for every key below ``value`` (arrays: their first item's keys, under
    ``path[]``; the children of :data:`OPEN_KEYS` are not listed).

    >>> schema({"a": 1, "b": {"c": None}, "d": [{"e": "x"}]})
    {'a': 'number', 'b': 'object', 'b.c': 'null', 'd': 'array', 'd[].e': 'str'}
    """
    found: dict[str, str] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            found[where] = kind(item)
            if key not in OPEN_KEYS:
                found.update(schema(item, where))
    elif isinstance(value, list) and value and isinstance(value[0], dict | list):
        found.update(schema(value[0], f"{path}[]"))
    return found


def run_schemas(run_dir: str | Path) -> dict[str, dict[str, str]]:
    """Each ``summary.json`` of a run folder (path relative to it) → its :func:`schema`."""
    root = Path(run_dir)
    return {str(path.relative_to(root)): schema(json.loads(path.read_text()))
            for path in sorted(root.rglob("summary.json"))}


if __name__ == "__main__":
    print(json.dumps(run_schemas(sys.argv[1]), indent=1, sort_keys=True))
