"""The library's imports run one way: no import cycle, and prediction never needs training.

Every ``import`` and ``from ... import`` statement of ``lib/microseg`` counts, at module level or
inside a function, so a cycle hidden in a function body is found too. Only imports under
``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "lib" / "microseg"


def module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under an ``if TYPE_CHECKING:`` block."""
    found, pending = [], [tree]
    while pending:
        node = pending.pop()
        found.append(node)
        if isinstance(node, ast.If) and ast.unparse(node.test) in {"TYPE_CHECKING",
                                                                  "typing.TYPE_CHECKING"}:
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the microseg modules it imports (a package import counts as its __init__)."""
    modules = {module_name(p): p for p in LIBRARY.rglob("*.py")}
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for name, path in modules.items():
        for node in runtime_nodes(ast.parse(path.read_text())):
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


def test_imports_for_type_checking_only_are_left_out():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nelse:\n"
                     "    import b\ndef f():\n    import c\n")
    imported = {a.name for n in runtime_nodes(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported == {"b", "c"}


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
