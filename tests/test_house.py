"""The package's layout holds: data flows down through the layers docs/ARCHITECTURE.md lists,
no import runs back up or in a circle, and modules and functions stay small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "headstart"

# Bottom to top, as in docs/ARCHITECTURE.md: a module may import its own package and the layers
# below it, never a layer above or beside it.
LAYERS = [
    ["errors", "_version", "paths", "threads"],
    ["tasks", "heads"],
    ["data"],
    ["backbones"],
    ["features", "lab"],
    ["training", "evaluation"],
    ["model"],
    ["estimator"],
    ["serve"],
    ["cli", "__init__"],
]
LAYER = {part: i for i, parts in enumerate(LAYERS) for part in parts}
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        rel = f.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every module of the package that ``name`` imports, at its top or inside functions."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg and name != "__init__" else name.split(".")[:-1]
    if name == "__init__":
        here = []
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "headstart":
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # "from . import cluster" names a module
                sub = ".".join(target + [alias.name])
                found.add(sub if sub in MODULES else ".".join(target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("headstart."):
                    found.add(alias.name[len("headstart."):])
    return {m or "__init__" for m in found if (m or "__init__") in MODULES and m != name}


MODULES = _modules()
GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _top(name: str) -> str:
    return name.split(".")[0]


def test_every_package_has_a_layer():
    assert {_top(m) for m in MODULES} <= set(LAYER), sorted({_top(m) for m in MODULES} - set(LAYER))


def test_no_import_runs_up_or_sideways():
    wrong = [f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets
             if _top(a) != _top(b) and LAYER[_top(b)] >= LAYER[_top(a)]]
    assert not wrong, "imports against the layers: " + ", ".join(sorted(wrong))


def test_no_import_circles():
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_fit_on_a_screen(name):
    path = MODULES[name]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{name}: {len(text.splitlines())} lines"
    long = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:] or body  # the docstring does not count
            n = node.end_lineno - body[0].lineno + 1
            if n > MAX_FUNCTION_LINES:
                long.append(f"{node.name} ({n} lines)")
    assert not long, f"{name}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def test_the_graph_sees_imports_inside_functions():
    """The checks above must read lazy imports too (most of ours are)."""
    assert "model.folder" in GRAPH["estimator.classifier"] or "model" in GRAPH["estimator.classifier"]
    assert "estimator" in GRAPH["cli.train"]
