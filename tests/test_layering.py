"""The packages import one way: shm <- core <- sources/workers/interpreters/storage/live <-
cluster <- roles <- engine <- tuning/training/viewer <- cli.

Every ``import`` and ``from ... import`` in every module is read from the source (module
level and inside functions alike: a lazy import is still a dependency), so a new upward or
sideways import fails here with the line that made it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"rt_eda": ROOT / "rt_eda", "rt_eda.shm": ROOT / "shm",
           "rt_eda.workers": ROOT / "workers", "rt_eda.viewer": ROOT / "viewer"}

#: Layer of each package; a module may import its own package and lower layers only.
LAYERS: dict[str, int] = {
    "rt_eda.shm": 0,
    "rt_eda.core": 1,
    "rt_eda.sources": 2, "rt_eda.workers": 2, "rt_eda.interpreters": 2,
    "rt_eda.storage": 2, "rt_eda.live": 2,
    "rt_eda.cluster": 3,  # the Ray actors run workers; the bridge role drives them
    "rt_eda.actuators": 3,  # decide in the interpreter role, apply in the camera role
    "rt_eda.roles": 4,
    "rt_eda.engine": 5,
    "rt_eda.tuning": 6, "rt_eda.training": 6, "rt_eda.viewer": 6, "rt_eda.terminal": 6,
    "rt_eda.cli": 7,
    "rt_eda": 0,  # the root package itself: its version, nothing imported
}

#: The one import that goes up a layer, and why.
ALLOWED_UP = {
    ("rt_eda.roles.viewer", "rt_eda.viewer"):
        "the viewer role shows the Qt window, inside the viewer's own process only",
}


#: Imports that break the layering and are being moved (issue 13); each must still exist
#: (so the list only shrinks) and the list must be empty when the issue closes.
PENDING: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            found.setdefault(name, path)
    return found


def package_of(module: str) -> str:
    """The layered package a module belongs to (the longest prefix in LAYERS)."""
    if module == "rt_eda":
        return module
    best = ""
    for package in LAYERS:
        if package == "rt_eda":
            continue
        if (module == package or module.startswith(package + ".")) and len(package) > len(best):
            best = package
    return best


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("rt_eda")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("rt_eda"):
                out.append((target, node.lineno))
    return out


def _edges() -> list[tuple[str, str, str]]:
    """(importing module, imported module, "file:line") for every rt-eda import."""
    edges = []
    for module, path in _modules().items():
        for target, line in _imports(module, path):
            edges.append((module, target, f"{path.relative_to(ROOT)}:{line}"))
    return edges


def test_every_module_belongs_to_a_layer() -> None:
    unplaced = sorted(m for m in _modules() if not package_of(m))
    assert not unplaced, f"modules in no layer (add their package to LAYERS): {unplaced}"


def test_imports_go_down_only() -> None:
    wrong = []
    pending_seen = set()
    for importer, target, where in _edges():
        src, dst = package_of(importer), package_of(target)
        if src == dst or (importer, dst) in ALLOWED_UP:
            continue
        if (importer, target) in PENDING:
            pending_seen.add((importer, target))
            continue
        if LAYERS[dst] > LAYERS[src]:
            wrong.append(f"{where}: {importer} (layer {LAYERS[src]}) imports {target} "
                         f"(layer {LAYERS[dst]}): upward")
        elif LAYERS[dst] == LAYERS[src]:
            wrong.append(f"{where}: {importer} imports {target}: sideways within layer "
                         f"{LAYERS[src]}")
    assert not wrong, "\n".join(wrong)
    assert pending_seen == PENDING, f"fixed, remove from PENDING: {PENDING - pending_seen}"


def test_no_package_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for importer, target, _ in _edges():
        src, dst = package_of(importer), package_of(target)
        if src != dst and (importer, dst) not in ALLOWED_UP \
                and (importer, target) not in PENDING:
            graph.setdefault(src, set()).add(dst)
    seen: set[str] = set()
    stack: list[str] = []

    def visit(node: str) -> None:
        if node in stack:
            cycle = [*stack[stack.index(node):], node]
            pytest.fail("package cycle: " + " -> ".join(cycle))
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()

    for package in sorted(graph):
        visit(package)


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    # The parser must resolve relative imports: "from ..engine import x" in rt_eda.core.y
    # is rt_eda.engine, an upward import.
    path = tmp_path / "y.py"
    path.write_text("from ..engine import Engine\nimport rt_eda.viewer\n")
    targets = [t for t, _ in _imports("rt_eda.core.y", path)]
    assert targets == ["rt_eda.engine", "rt_eda.viewer"]
    assert [LAYERS[package_of(t)] for t in targets] == [5, 6]
