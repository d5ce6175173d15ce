"""The library's layers (docs/architecture.md): every import of every module — at the top, inside
functions and for type hints alike — goes to its own layer or one below, and no modules import
each other, directly or round a longer loop. Old module names still import, with a warning
naming the new place."""

from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

import microseg

PACKAGE = Path(microseg.__file__).resolve().parent
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


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """``{dotted name: file}`` of every module of the package (a package by its __init__)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph(found: dict[str, Path]) -> dict[str, set[str]]:
    """Which modules each module imports, every import statement counted."""

    def owner(name: str) -> str | None:
        while name and name not in found:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in found}
    for module, path in found.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = owner(name) if name.startswith("microseg") else None
                # a package's own modules may use its __init__ and the root package's errors
                if target and target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({LAYER_NAMES[layer(a)]}) imports {b} ({LAYER_NAMES[layer(b)]})"
                  for a, targets in graph.items() for b in targets if layer(b) > layer(a))


def import_loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that reach each other through imports (Tarjan's strongly connected
    components of more than one module, or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                loops.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return loops


def test_the_checks_find_an_upward_import_and_a_loop():
    graph = {"microseg.runs": {"microseg.models.trained"},
             "microseg.models.trained": {"microseg.inference.tiling"},
             "microseg.inference.tiling": {"microseg.models.trained"},
             "microseg.recipes.train": {"microseg.models.trained", "microseg.notebook.session"},
             "microseg.notebook.session": {"microseg.recipes.train"}}
    assert upward_imports(graph) == [
        "microseg.recipes.train (recipes) imports microseg.notebook.session (notebook)",
        "microseg.runs (base) imports microseg.models.trained (domain)"]
    assert sorted(import_loops(graph)) == [
        ["microseg.inference.tiling", "microseg.models.trained"],
        ["microseg.notebook.session", "microseg.recipes.train"]]


def test_the_graph_sees_imports_inside_functions_and_for_type_hints(tmp_path):
    package = tmp_path / "microseg"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "runs.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from microseg.models import x\n")
    (package / "models" / "__init__.py").write_text(
        "def f():\n    import microseg.runs\n")
    graph = import_graph(modules(package))
    assert graph["microseg.runs"] == {"microseg.models"}
    assert graph["microseg.models"] == {"microseg.runs"}


def test_no_import_goes_up_a_layer():
    assert upward_imports(import_graph(modules())) == []


def test_no_modules_import_each_other():
    assert import_loops(import_graph(modules())) == []


def test_the_top_of_the_package_holds_the_base_and_the_packages():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == sorted(["__init__", "__main__"] + [m.split(".")[1] for m in BASE - {"microseg"}])
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
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
    benchmarks = PACKAGE.parents[1] / "benchmarks"
    ours = [*modules().values(), *benchmarks.glob("*.py"), *benchmarks.glob("peers/*.py")]
    assert long_modules_without_reason(ours) == []
