"""The library's layers (docs/architecture.md): imports run one way — never up a layer, no
import cycle — and prediction never needs training. The top of the package holds only the base
modules and the packages; old module names still import, with a warning naming the new place;
a module over 600 lines says at its top why it is one.

Every ``import`` and ``from ... import`` statement of ``lib/microseg`` counts, at module level,
inside a function or under ``if TYPE_CHECKING:``, so a cycle hidden in a function body or in
type hints is found too.
"""

from __future__ import annotations

import ast
import collections
import importlib
import sys
import warnings
from pathlib import Path

import pytest

import microseg

LIBRARY = Path(__file__).resolve().parents[1] / "lib" / "microseg"


def module_name(path: Path, library: Path = LIBRARY) -> str:
    parts = path.relative_to(library.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(library: Path = LIBRARY) -> dict[str, set[str]]:
    """Module → the microseg modules it imports (a package import counts as its __init__)."""
    modules = {module_name(p, library): p for p in library.rglob("*.py")}
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative enough)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    assert "microseg.inference.tiling" in graph["microseg.models.trained"]
    assert "microseg.models.checkpoint" in graph["microseg.training.trainer"]


def test_imports_for_type_hints_and_inside_functions_count(tmp_path):
    package = tmp_path / "microseg"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "runs.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from microseg.models import x\n")
    (package / "models" / "__init__.py").write_text("def f():\n    import microseg.runs\n")
    graph = import_graph(package)
    assert graph["microseg.runs"] == {"microseg.models"}
    assert graph["microseg.models"] == {"microseg.runs"}
    assert cycles(graph) == [["microseg.models", "microseg.runs"]]


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("package", ["inference", "transfer", "export", "models", "io",
                                     "metrics", "transforms"])
def test_prediction_and_transfer_do_not_import_training(package):
    graph = import_graph()
    offending = sorted(f"{source} -> {target}" for source, targets in graph.items()
                       if source.startswith(f"microseg.{package}")
                       for target in targets if target.startswith("microseg.training"))
    assert offending == []


def test_the_inference_engine_does_not_import_the_trained_model():
    graph = import_graph()
    offending = sorted(f"{source} -> {target}" for source, targets in graph.items()
                       if source.startswith("microseg.inference")
                       for target in targets if target.startswith("microseg.models"))
    assert offending == []


BASE = {"microseg", "microseg.config", "microseg.devices", "microseg.errors", "microseg.logs",
        "microseg.runs"}
DOMAIN = {"data", "diagnostics", "export", "inference", "io", "metrics", "models", "training",
          "transfer", "transforms"}
LAYERS = {"reports": 2, "recipes": 3, "notebook": 4, "__main__": 4}
LAYER_NAMES = ("base", "domain", "reports", "recipes", "notebook")


def layer(module: str) -> int:
    """0 base, 1 the domain packages, 2 reports, 3 recipes, 4 the notebook layer."""
    if module in BASE:
        return 0
    top = module.split(".")[1]
    if top in DOMAIN:
        return 1
    return LAYERS[top]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({LAYER_NAMES[layer(a)]}) imports {b} ({LAYER_NAMES[layer(b)]})"
                  for a, targets in graph.items() for b in targets if layer(b) > layer(a))


def test_the_layer_check_finds_an_upward_import():
    graph = {"microseg.runs": {"microseg.models.trained"},
             "microseg.recipes.train": {"microseg.models.trained", "microseg.notebook.session"},
             "microseg.notebook.session": {"microseg.recipes.train"}}
    assert upward_imports(graph) == [
        "microseg.recipes.train (recipes) imports microseg.notebook.session (notebook)",
        "microseg.runs (base) imports microseg.models.trained (domain)"]


def test_no_import_goes_up_a_layer():
    assert upward_imports(import_graph()) == []


def test_the_top_of_the_package_holds_the_base_and_the_packages():
    top = sorted(p.stem for p in LIBRARY.glob("*.py"))
    assert top == sorted(["__init__", "__main__"] + [m.split(".")[1] for m in BASE - {"microseg"}])
    packages = {p.name for p in LIBRARY.iterdir() if (p / "__init__.py").is_file()}
    assert packages == DOMAIN | {"reports", "recipes", "notebook"}


@pytest.mark.parametrize("old", sorted(microseg.MOVED))
def test_a_moved_module_imports_by_its_old_name_with_a_warning(old):
    new = importlib.import_module(microseg.MOVED[old])
    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match=f"{old} is now {microseg.MOVED[old]}"):
        moved = importlib.import_module(old)
    assert moved is new
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert importlib.import_module(old) is new, "warned once, then the module as it is"


LONG_MODULE = 600
REASON = "Why one module"


def long_modules_without_reason(paths) -> list[str]:
    """Modules over LONG_MODULE lines whose docstring gives no reason (``Why one module …``)."""
    found = []
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > LONG_MODULE and REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            found.append(f"{path}: {lines} lines")
    return found


def test_a_long_module_says_why_it_is_one(tmp_path):
    long = tmp_path / "long.py"
    long.write_text('"""Many things."""\n' + "x = 1\n" * LONG_MODULE)
    assert long_modules_without_reason([long]) == [f"{long}: {LONG_MODULE + 1} lines"]
    long.write_text(f'"""Many things.\n\n{REASON}: they share one state."""\n' + "x = 1\n" * 700)
    assert long_modules_without_reason([long]) == []
    benchmarks = LIBRARY.parents[1] / "benchmarks"
    ours = [*LIBRARY.rglob("*.py"), *benchmarks.glob("*.py"), *benchmarks.glob("peers/*.py")]
    assert long_modules_without_reason(ours) == []
