"""The package's layers: a module imports only from its own layer or the ones below, and never in a cycle.

Every import that can run counts: at module level and inside functions, ``import x`` and
``from x import y``, relative ones resolved. Imports under ``if TYPE_CHECKING:`` never run: they name
a lazy facade's exports for editors and type checkers (``volsr/__init__.py``, ``volsr/api/__init__.py``).
A module inside a sub-package shares the sub-package's layer. Adding a
module or sub-package: give it a layer in :data:`LAYERS`.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "volsr"

#: lowest first; a name covers the module or sub-package of that name and everything inside it
LAYERS = {
    "volsr": 0,  # the package's own __init__ (light: names its API lazily, by string)
    "volsr.errors": 0,
    "volsr.geometry": 1,
    "volsr.data": 2,
    "volsr.transforms": 3,
    "volsr.networks": 4,
    "volsr.inference": 5,
    "volsr.evaluation": 6,
    "volsr.training": 7,
    "volsr.api": 8,
    "volsr.demo": 8,
    "volsr.cli": 9,
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its ``__init__.py``)."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    if module in LAYERS:
        return LAYERS[module]
    owners = [name for name in LAYERS if name != "volsr" and module.startswith(name + ".")]
    return LAYERS[max(owners, key=len)] if owners else None


def _known(name: str, known: set[str]) -> str | None:
    """``name`` or the closest enclosing module that exists (``volsr.x.f`` -> ``volsr.x``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> list[tuple[str, int]]:
    """``(imported volsr module, line)`` for every import anywhere in ``source`` that can run."""
    found = []
    tree = ast.parse(source)
    for_tools = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for statement in node.body
        for inner in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if id(node) in for_tools:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            # ``from pkg import sub`` imports the submodule ``pkg.sub``, ``from mod import name`` ``mod``
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            resolved = _known(target, known) if target.split(".")[0] == "volsr" else None
            if resolved and resolved != module and (resolved, node.lineno) not in found:
                found.append((resolved, node.lineno))
    return sorted(found, key=lambda edge: edge[1])


def import_graph(root: Path = PACKAGE) -> dict[str, list[tuple[str, int]]]:
    """module -> [(imported module, line)], volsr modules only."""
    found = modules(root)
    known = set(found)
    return {
        name: imports_of(path.read_text(), name, path.name == "__init__.py", known)
        for name, path in found.items()
    }


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _edge(src: str, dst: str, line: int) -> str:
    path = modules()[src].relative_to(PACKAGE.parent)
    return f"{path}:{line}: {src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})"


def test_every_module_has_a_layer():
    unplaced = [name for name in modules() if layer_of(name) is None]
    assert not unplaced, f"give these modules a layer in LAYERS: {unplaced}"


def test_no_module_imports_a_higher_layer():
    graph = import_graph()
    upward = [
        _edge(src, dst, line)
        for src, targets in graph.items()
        for dst, line in targets
        if layer_of(dst) > layer_of(src)
    ]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = import_graph()
    found = []
    for component in cycles(graph):
        members = set(component)
        edges = [_edge(src, dst, line) for src in component for dst, line in graph[src] if dst in members]
        found.append(f"cycle among {', '.join(component)}:\n  " + "\n  ".join(edges))
    assert not found, "import cycles (function-level imports count):\n" + "\n".join(found)


def test_the_checker_sees_imports_inside_functions_relative_and_from_packages(tmp_path):
    root = tmp_path / "volsr"
    for rel, text in {
        "__init__.py": "",
        "geometry/__init__.py": "",
        "geometry/grids.py": "def f():\n    from volsr.api import SuperResolver\n",
        "geometry/meta.py": "from . import grids\nfrom .grids import f\n",
        "api.py": "import volsr.geometry.meta\nfrom volsr.geometry import grids\n",
        "errors.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from volsr.api import x\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    graph = import_graph(root)
    assert graph["volsr.geometry.grids"] == [("volsr.api", 2)]
    assert graph["volsr.geometry.meta"] == [("volsr.geometry.grids", 1), ("volsr.geometry.grids", 2)]
    assert sorted(graph["volsr.api"]) == [("volsr.geometry.grids", 2), ("volsr.geometry.meta", 1)]
    assert graph["volsr.errors"] == []  # under TYPE_CHECKING: for tools, never run
    assert cycles(graph) == [["volsr.api", "volsr.geometry.grids", "volsr.geometry.meta"]]
