"""Imports run down the layers, never up, and never in a circle (read from the source with ``ast``;
nothing is imported). A reader can hold one layer in mind with only those below it, and the layout
cannot drift without this failing."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[1] / "server"

# Top to bottom. A module may import from its own layer or any below; a module belongs to the
# longest prefix listed.
LAYERS = (
    ("server.cli", "server.background", "server.http_server", "server.demo"),  # the process
    ("server.app",),  # builds the app from the settings
    # The wiring of settings, metrics, store and device, and the routes that span families.
    ("server.families", "server.runtime", "server.api.health", "server.api.model_list"),
    ("server.embedding", "server.reranker", "server.asr"),  # the families
    # What every family's edge shares: the HTTP helpers, the API dialects' shared parts, metrics,
    # and the family contract.
    ("server.api", "server.tei", "server.metrics", "server.family"),
    ("server.engine",),  # the batcher and its scheduling: no HTTP, no settings
    ("server.weights", "server.compute"),  # the weight store; devices and the network code the adapters share
    ("server.config", "server.errors", "server"),
)
FAMILIES = LAYERS[3]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(SERVER.parent).with_suffix("").parts).removesuffix(".__init__")


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(SERVER.rglob("*.py"))}


def imported(tree: ast.AST, known: set[str], top_level_only: bool = False) -> set[str]:
    """The project modules ``tree`` imports (``from a import b`` names ``a.b`` when that is a module).
    ``top_level_only``: only what runs at import (not inside functions: lazy imports are deliberate)."""
    nodes = ast.iter_child_nodes(tree) if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if top_level_only and isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks
            found |= imported(node, known, top_level_only=True)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "server":
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names} & known
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "server"}
    return found


def layer_of(module: str) -> int:
    best, layer = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), index
    assert layer is not None, f"{module} is in no layer: add it to LAYERS"
    return layer


def family_of(module: str) -> str | None:
    return next((f for f in FAMILIES if module == f or module.startswith(f + ".")), None)


def test_no_import_runs_up_a_layer_and_families_stay_apart():
    trees = modules()
    upward = []
    for module, tree in trees.items():
        for target in imported(tree, set(trees)):
            if layer_of(target) < layer_of(module):
                upward.append(f"{module} -> {target}")
            mine, theirs = family_of(module), family_of(target)
            if mine and theirs and mine != theirs:
                upward.append(f"{module} -> {target} (another family)")
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_no_circle_of_imports():
    trees = modules()
    graph = {m: imported(t, set(trees), top_level_only=True) & set(trees) for m, t in trees.items()}
    circles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "circles of imports:\n" + "\n".join(circles)


def test_the_check_sees_an_upward_import():
    """The check itself: an engine module that imported the app would be caught."""
    tree = ast.parse("from server.app import create_app\n")
    assert imported(tree, {"server.app"}) == {"server.app"}
    assert layer_of("server.app") < layer_of("server.engine.batching")
