"""The layout is one stack: topics <- projections <- alerts <- processor. These tests read
the source (no imports run), so a new upward import, a Faust private member outside the
compatibility module or a sprawling shell function fails here before review."""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Iterable, Iterator
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
MAX_SHELL_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 200


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


def module_level_imports(tree: ast.Module) -> Iterator[str]:
    """Imports that run when the module is imported (not those inside a function)."""
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


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


def defined_private_names(trees: Iterable[ast.Module]) -> set[str]:
    """Single-underscore names a body of code defines: functions, methods, class attributes
    and `self._x = ...` assignments."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def installed_sources(*packages: str) -> Iterator[ast.Module]:
    for package in packages:
        # Faust, once imported, leaves its __spec__ None: then ask the module itself.
        module = sys.modules.get(package)
        if module is not None:
            locations = list(module.__path__)
        else:
            spec = importlib.util.find_spec(package)
            assert spec is not None and spec.submodule_search_locations, package
            locations = list(spec.submodule_search_locations)
        for location in locations:
            for path in sorted(Path(location).rglob("*.py")):
                yield ast.parse(path.read_text(encoding="utf-8"))


def faust_private_names() -> set[str]:
    """The private names Faust and mode define, read from the installed packages, less the
    ones our own code defines too (an access to those is ambiguous, and ours)."""
    ours = defined_private_names(tree for _, _, tree in modules())
    return defined_private_names(installed_sources("faust", "mode")) - ours


def private_accesses(tree: ast.Module, private: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in private:
            found.add(node.attr)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in private
        ):
            found.add(str(node.args[1].value))
    return found


def test_faust_private_members_only_in_the_compat_package() -> None:
    private = faust_private_names()
    users: dict[str, set[str]] = {}
    for name, _, tree in modules():
        used = private_accesses(tree, private)
        if used and not name.startswith("processor.faust_compat"):
            users[name] = used
    assert users == {}


def test_the_private_name_check_sees_faust_compat_use_them() -> None:
    """Guards the guard: the names read from Faust include the ones the compat layer uses."""
    private = faust_private_names()
    assert {"_set_current_event", "_committed_offset", "_gap"} <= private
    used = set()
    for name, _, tree in modules():
        if name.startswith("processor.faust_compat"):
            used |= private_accesses(tree, private)
    assert len(used) >= 10, sorted(used)


def test_nothing_under_cli_reaches_faust_at_import_time() -> None:
    """`vigocli` and friends start fast and fail in one line: no Faust, no mode, even through
    one of our modules, at module level (the worker's entry point imports it in `main`)."""
    top_level = {name: set(module_level_imports(tree)) for name, _, tree in modules()}

    def reaches_faust(name: str, seen: set[str]) -> str | None:
        for imported in sorted(top_level.get(name, set())):
            if imported.split(".")[0] in ("faust", "mode"):
                return f"{name} -> {imported}"
            if imported in top_level and imported not in seen:
                seen.add(imported)
                found = reaches_faust(imported, seen)
                if found:
                    return f"{name} -> {found}"
        return None

    cli = [name for name in top_level if name.startswith("processor.cli")]
    assert len(cli) >= 6
    wrong = [path for name in cli if (path := reaches_faust(name, set()))]
    assert wrong == []


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


def test_modules_and_classes_stay_readable() -> None:
    """A shell module a reader can hold in mind: no file over MAX_MODULE_LINES, no class over
    MAX_CLASS_LINES (split along what the parts do, as processor/cli, web, alerting and
    faust_compat are)."""
    long = []
    for name, path, tree in modules():
        if layer(name) != "processor":
            continue
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            long.append(f"{name}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    long.append(f"{name}.{node.name}: {size} lines")
    assert long == []


def test_the_checks_see_the_code() -> None:
    """Guards the guards: the walkers find the modules and imports they reason about."""
    names = {name for name, _, _ in modules()}
    assert {"topics.codec", "projections.envoy", "processor.topology"} <= names
    topology = next(tree for name, _, tree in modules() if name == "processor.topology")
    assert "processor.faust_compat" in set(imports(topology))
