"""The package's import graph: no cycles, and every import runs down the layers.

Read from the source (imports inside functions included, `if TYPE_CHECKING:` blocks left out:
they never run), so a new upward import fails here, not in a user's import order.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

CAI = Path(__file__).resolve().parents[2] / "cai"
# Bottom to top. A module may import its own package and any package below it, never above.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset(
        {
            "cai",
            "chat",
            "errors",
            "label_methods",
            "outputs",
            "paths",
            "progress",
            "redact",
            "settings",
            "stats",
            "verbosity",
        }
    ),
    frozenset({"io"}),
    frozenset({"models"}),
    frozenset({"templates"}),
    frozenset({"constitution"}),
    frozenset({"cards"}),
    frozenset({"train"}),
    frozenset({"stages"}),
    frozenset({"run"}),
    frozenset({"cli"}),
)
# The longest a module and a function may be, in lines: past that, split by concern.
MAX_MODULE, MAX_FUNCTION = 450, 60


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(CAI.rglob("*.py")):
        parts = path.relative_to(CAI.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:`."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                todo.extend(child.orelse)
                continue
            todo.append(child)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t == "cai" or t.startswith("cai."):
                    found = owner(t)
                    if found and found != name:
                        edges[name].add(found)
    return edges


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cai"


def _layer(module: str) -> int:
    pkg = _package(module)
    return next(i for i, layer in enumerate(LAYERS) if pkg in layer)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(set(edges) | set().union(*edges.values())):
        if v not in index:
            visit(v)
    return found


def test_every_package_has_a_layer() -> None:
    known = set().union(*LAYERS)
    assert {_package(m) for m in _modules()} <= known


def test_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_no_import_runs_up_the_layers() -> None:
    upward = sorted(f"{a} -> {b}" for a, targets in _graph().items() for b in targets if _layer(b) > _layer(a))
    assert upward == []


def test_the_checks_see_what_they_look_for() -> None:
    """The graph is read right: known imports are there, and a cycle or an upward edge is found."""
    edges = _graph()
    assert "cai.io.atomic" in edges["cai.io.store"] and "cai.run.registry" in edges["cai.run.recipe"]
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _layer("cai.cli.app") > _layer("cai.run.pipeline") > _layer("cai.io.store")


def test_modules_and_functions_stay_short() -> None:
    too_long = []
    for path in _modules().values():
        rel = path.relative_to(CAI.parent).as_posix()
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE:
            too_long.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION:
                    too_long.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []


def test_no_test_module_imports_another() -> None:
    """Shared test code lives in tests/*.py helpers (doubles, helpers, servers…), not in test modules."""
    tests = CAI.parent / "tests"
    crossing = []
    for path in sorted(tests.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and any(part.startswith("test_") for part in module.split(".")):
                crossing.append(f"{path.relative_to(tests)} imports {module}")
    assert crossing == []
