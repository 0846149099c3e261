"""The package's import graph has no cycle: a cycle makes the import order matter, and one
import order (a test file, a notebook, ``python -m``) finds a partially initialised module.

The graph is read from the source with :mod:`ast`: module-level imports and those inside
functions (they close a cycle as soon as the function runs), not ``if TYPE_CHECKING:`` blocks
(never executed).  Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, so each
import also depends on the target's packages, except those that enclose the importer (already
running when it is imported).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pyro_dcim"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, at any depth, skipping the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield from _import_nodes(ast.Module(body=[stmt], type_ignores=[]))
        else:
            yield from _import_nodes(child)


def _resolve(node: ast.ImportFrom, name: str, is_package: bool) -> Optional[str]:
    """The absolute module ``from … import`` names (``None``: outside any package)."""
    if not node.level:
        return node.module
    base = name.split(".") if is_package else name.split(".")[:-1]
    if node.level > 1:
        base = base[:-(node.level - 1)]
    return ".".join([*base, node.module] if node.module else base) or None


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package's modules that importing ``name`` (the file ``path``) runs, directly."""
    tree = ast.parse(path.read_text(), str(path))
    targets: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = _resolve(node, name, path.name == "__init__.py")
        if base is None:
            continue
        targets.add(base)
        targets.update(f"{base}.{alias.name}" for alias in node.names)   # `from pkg import submodule`
    found = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):     # the packages above the target run first
            dep = ".".join(parts[:i])
            if dep in modules and dep != name and not name.startswith(dep + "."):
                found.add(dep)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    return {name: imports_of(path, name, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """One cycle of ``graph`` as ``[a, b, …, a]``, or ``None``."""
    state: dict[str, int] = {}     # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _write(tmp_path: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)


@pytest.mark.parametrize("files, cycle", [
    # a function-level import closes the cycle
    ({"pkg/__init__.py": "", "pkg/a.py": "def f():\n    from .sub.b import g\n",
      "pkg/sub/__init__.py": "", "pkg/sub/b.py": "from ..a import f\n"},
     ["pkg.a", "pkg.sub.b", "pkg.a"]),
    # through a package's __init__, which importing any of its modules runs
    ({"pkg/__init__.py": "", "pkg/a.py": "from .sub.c import h\n",
      "pkg/sub/__init__.py": "from .b import g\n", "pkg/sub/b.py": "from .. import a\n", "pkg/sub/c.py": ""},
     ["pkg.a", "pkg.sub", "pkg.sub.b", "pkg.a"]),
    # TYPE_CHECKING imports never run; a package importing its own modules is no cycle
    ({"pkg/__init__.py": "from .a import f\n", "pkg/a.py": "from typing import TYPE_CHECKING\n"
      "if TYPE_CHECKING:\n    from .b import g\n", "pkg/b.py": "from .a import f\n"},
     None),
])
def test_find_cycle(tmp_path, files, cycle):
    _write(tmp_path, files)
    assert find_cycle(import_graph(tmp_path, "pkg")) == cycle
