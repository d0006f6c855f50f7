"""The layout is one stack: topics <- projections <- alerts <- processor. These tests read
the source (no imports run), so a new upward import, a Faust private member outside the
compatibility module or a sprawling shell function fails here before review."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("topics", "projections", "alerts", "processor")
#: What each layer may import of ours, besides itself.
ALLOWED = {
    "topics": set(),
    "projections": {"topics"},
    "alerts": {"topics", "projections"},
    "processor": {"topics", "projections", "alerts"},
}
#: The pure layers touch no broker, no network, no event loop and no clock.
IMPURE = {"faust", "aiokafka", "aiosmtplib", "aiohttp", "asyncio", "time", "mode", "socket"}
#: The one exception: SPEC 10.6 puts the producer library next to the contract it produces.
BROKER_CLIENTS = {"topics.publish": {"aiokafka", "asyncio"}}
FAUST_PRIVATE = {"_set_current_event", "_committed_offset", "_gap"}
MAX_SHELL_FUNCTION_LINES = 60


def modules() -> Iterator[tuple[str, Path, ast.Module]]:
    paths = sorted(path for package in LAYERS for path in (ROOT / package).rglob("*.py"))
    for path in paths:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        yield name.removesuffix(".__init__"), path, ast.parse(path.read_text(encoding="utf-8"))


def imports(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def layer(module: str) -> str | None:
    top = module.split(".")[0]
    return top if top in LAYERS else None


def test_no_layer_imports_upward_or_sideways() -> None:
    wrong = []
    for name, _, tree in modules():
        own = layer(name)
        if own is None:
            continue
        for imported in imports(tree):
            target = layer(imported)
            if target is not None and target != own and target not in ALLOWED[own]:
                wrong.append(f"{name} imports {imported}")
    assert wrong == []


def test_pure_layers_touch_no_io_or_clock() -> None:
    wrong = []
    for name, _, tree in modules():
        if layer(name) in ("topics", "projections", "alerts"):
            impure = IMPURE - BROKER_CLIENTS.get(name, set())
            wrong += [f"{name} imports {m}" for m in imports(tree) if m.split(".")[0] in impure]
    assert wrong == []


def test_import_graph_has_no_cycle() -> None:
    graph = {
        name: {m for m in imports(tree) if layer(m) is not None} for name, _, tree in modules()
    }
    graph = {name: {m for m in deps if m in graph} for name, deps in graph.items()}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            pytest.fail("import cycle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for dep in sorted(graph[node]):
            visit(dep, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])


def test_faust_private_members_only_in_the_compat_module() -> None:
    users = set()
    for name, _, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in FAUST_PRIVATE:
                users.add(name)
    assert users == {"processor.faust_compat"}


def test_shell_functions_stay_short() -> None:
    long = []
    for name, _, tree in modules():
        if layer(name) != "processor":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_SHELL_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


def test_the_checks_see_the_code() -> None:
    """Guards the guards: the walkers find the modules and imports they reason about."""
    names = {name for name, _, _ in modules()}
    assert {"topics.codec", "projections.envoy", "processor.topology"} <= names
    topology = next(tree for name, _, tree in modules() if name == "processor.topology")
    assert "processor.faust_compat" in set(imports(topology))
