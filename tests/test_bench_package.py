"""scripts/benchlib's shape, read from its source with ``ast`` (nothing is imported, so no torch): the
package never imports the command lines in scripts/ (they import it: one direction, no cycle), its
modules import each other without a cycle and use no other module's private (``_``) names, and no
script or test edits sys.path (pytest's pythonpath and Python's own scripts/ entry do that)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
PACKAGE = SCRIPTS / "benchlib"
ENTRY_POINTS = {path.stem for path in SCRIPTS.glob("*.py")}
MODULES = {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.glob("*.py"))}


def imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """Every import anywhere in the module (functions' own included): (module, names taken from it)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def package_imports(tree: ast.Module) -> set[str]:
    """The benchlib modules this one imports (``from benchlib import x`` and ``from benchlib.x import y``)."""
    found = set()
    for module, names in imports(tree):
        if module == "benchlib":
            found |= {name for name in names if name in MODULES}
        elif module.startswith("benchlib."):
            found.add(module.split(".")[1])
    return found


def test_the_package_and_its_entry_points_are_where_this_test_reads_them():
    assert {"bench", "bench_stream", "soak", "gpu_check"} <= ENTRY_POINTS
    assert {"load", "endpoint", "throughput", "mixed", "overload"} <= set(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_package_module_imports_an_entry_point(name):
    taken = {module.split(".")[0] for module, _ in imports(MODULES[name])}
    assert not taken & ENTRY_POINTS, f"benchlib/{name}.py imports the scripts {sorted(taken & ENTRY_POINTS)}"


@pytest.mark.parametrize("path", sorted(SCRIPTS.glob("*.py")), ids=lambda p: p.name)
def test_no_entry_point_imports_another(path):
    taken = {module.split(".")[0] for module, _ in imports(ast.parse(path.read_text()))}
    assert not taken & (ENTRY_POINTS - {path.stem})


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_uses_another_modules_private_names(name):
    tree = MODULES[name]
    private = [f"{module}.{n}" for module, names in imports(tree) if module.split(".")[0] == "benchlib"
               for n in names if n.startswith("_")]
    # Modules bound by ``from benchlib import x``: ``x._name`` reaches into x.
    bound = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             and node.module == "benchlib" for alias in node.names}
    private += [f"{node.value.id}.{node.attr}" for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in bound and node.attr.startswith("_")]
    assert not private, f"benchlib/{name}.py uses {private}"


def test_the_package_imports_form_no_cycle():
    graph = {name: package_imports(tree) - {name} for name, tree in MODULES.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(name):] + [name]))
        if name in done:
            return
        for other in sorted(graph[name]):
            visit(other, path + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_nothing_edits_sys_path():
    edits = [str(path.relative_to(ROOT)) for path in [*SCRIPTS.rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and node.attr in ("insert", "append", "extend")
             and isinstance(node.value, ast.Attribute) and node.value.attr == "path"
             and isinstance(node.value.value, ast.Name) and node.value.value.id == "sys"]
    assert not edits
