"""The import graph of ``src/strongroom``: no cycles, and dependencies pointing the way
docs/design.md ("Package rooms") says.

Every module is parsed with ``ast`` (nothing is imported); every ``import`` counts, also
those inside functions and under ``if TYPE_CHECKING:``, so a cycle cannot hide behind a
function-local import. An edge goes to the most specific strongroom module named
(``from strongroom.engines import base`` -> ``strongroom.engines.base``); importing a
submodule does not count as importing its package's ``__init__``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "strongroom"

# docs/design.md: "Dependencies point one way: cli -> services -> {engines, repository,
# pipeline, storage}; repository -> {pipeline, storage}." A room may not import a room
# that (directly or through others) depends on it.
ARROWS: dict[str, set[str]] = {
    "cli": {"services"},
    "services": {"engines", "repository", "pipeline", "storage"},
    "repository": {"pipeline", "storage"},
}
# "Engines never import storage or repository; storage never imports anything about
# databases." Engines also import nothing from services, cli or web.
NEVER: dict[str, set[str]] = {
    "engines": {"services", "cli", "web", "repository", "storage"},
    "storage": {"engines"},
}
# Nothing outside cli imports cli; nothing outside web imports web.
PRIVATE = {"cli", "web"}

# Imports that break a rule today, (importer, imported). Each is a known exception: the
# test fails on any import not listed here, and on an entry no longer needed.
ALLOWED: dict[tuple[str, str], str] = {
    # `strongroom web` (cli/web_cmd.py) creates, migrates and serves the web app's
    # database and users: the CLI entry point of the web room.
    ("strongroom.cli.web_cmd", "strongroom.web.accounts"): "the web command manages accounts",
    ("strongroom.cli.web_cmd", "strongroom.web.app"): "the web command serves the app",
    ("strongroom.cli.web_cmd", "strongroom.web.db"): "the web command opens its database",
    ("strongroom.cli.web_cmd", "strongroom.web.index"): "the web command rebuilds its index",
}


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    where: str  # path:line of the import statement

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} ({self.where})"


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _imported_names(node: ast.AST, package: str) -> Iterator[str]:
    """The dotted names an import statement may refer to (most specific first)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join([*base, *([node.module] if node.module else [])])
        else:
            module = node.module or ""
        for alias in node.names:
            yield f"{module}.{alias.name}"  # a submodule, or a name in ``module``


@cache
def import_graph() -> tuple[frozenset[str], tuple[Edge, ...]]:
    """All strongroom modules and the imports between them."""
    files = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        name, is_package = _module_name(path)
        files[name] = (path, is_package)
    modules = frozenset(files)
    edges: set[Edge] = set()
    for name, (path, is_package) in files.items():
        package = name if is_package else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _imported_names(node, package):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    where = f"{path.relative_to(SRC.parent)}:{node.lineno}"
                    edges.add(Edge(name, target, where))
    return modules, tuple(sorted(edges, key=lambda e: (e.importer, e.imported, e.where)))


def room(module: str) -> str:
    """``strongroom.engines.mysql.dump`` -> ``engines``; ``strongroom.errors`` -> ``errors``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _above(start: str) -> set[str]:
    """Rooms that depend on ``start`` through the arrows (directly or not)."""
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for source, targets in ARROWS.items():
            if source not in found and (start in targets or targets & found):
                found.add(source)
                changed = True
    return found


def rule_broken(edge: Edge) -> str | None:
    """Which rule ``edge`` breaks, or ``None``."""
    source, target = room(edge.importer), room(edge.imported)
    if source == target:
        return None
    if target in PRIVATE:
        return f"only {target} imports {target}"
    if target in NEVER.get(source, set()):
        return f"{source} may not import {target}"
    if target in _above(source):
        return f"dependencies point one way: {target} depends on {source}, not back"
    return None


def _cycles(modules: frozenset[str], edges: tuple[Edge, ...]) -> list[tuple[set[str], list[Edge]]]:
    """Each group of modules that import each other, with one cycle (as edges) in it."""
    succ: dict[str, list[Edge]] = {m: [] for m in modules}
    for edge in edges:
        succ[edge.importer].append(edge)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan; the graph is shallow enough to recurse
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in succ[node]:
            nxt = edge.imported
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for module in sorted(modules):
        if module not in index:
            visit(module)
    cycles = []
    for group in groups:  # shortest way from the group's first module back to it
        start = min(group)
        paths: dict[str, list[Edge]] = {start: []}
        queue = [start]
        cycle: list[Edge] | None = None
        while queue and cycle is None:
            node = queue.pop(0)
            for edge in succ[node]:
                if edge.imported == start:
                    cycle = [*paths[node], edge]
                    break
                if edge.imported in group and edge.imported not in paths:
                    paths[edge.imported] = [*paths[node], edge]
                    queue.append(edge.imported)
        assert cycle is not None
        cycles.append((group, cycle))
    return cycles


def test_the_graph_is_read() -> None:
    modules, edges = import_graph()
    assert "strongroom.engines.mysql.engine" in modules
    assert "strongroom.cli.app" in modules
    assert any(e.importer == "strongroom.cli.app" for e in edges)
    # A function-local import is seen (engines/__init__.py opens engines lazily).
    assert any(
        e.importer == "strongroom.engines" and e.imported == "strongroom.engines.sqlite"
        for e in edges
    )


def test_no_import_cycles() -> None:
    modules, edges = import_graph()
    cycles = _cycles(modules, edges)
    shown = [
        f"{', '.join(sorted(group))}\n    e.g. "
        + " -> ".join([cycle[0].importer, *(e.imported for e in cycle)])
        + "".join(f"\n      {e}" for e in cycle)
        for group, cycle in cycles
    ]
    assert not cycles, "modules that import each other:\n  " + "\n  ".join(shown)


def test_imports_point_the_way_the_design_says() -> None:
    _, edges = import_graph()
    broken = [
        f"{edge}: {reason}"
        for edge in edges
        if (reason := rule_broken(edge)) is not None
        and (edge.importer, edge.imported) not in ALLOWED
    ]
    assert not broken, "imports against docs/design.md (Package rooms):\n  " + "\n  ".join(broken)


def test_allowed_exceptions_are_still_needed() -> None:
    _, edges = import_graph()
    present = {(e.importer, e.imported) for e in edges if rule_broken(e) is not None}
    stale = sorted(set(ALLOWED) - present)
    assert not stale, f"remove from ALLOWED in {Path(__file__).name} (no longer imported): {stale}"


def test_the_rules_catch_what_they_should() -> None:
    def broken(importer: str, imported: str) -> str | None:
        return rule_broken(Edge(f"strongroom.{importer}", f"strongroom.{imported}", "-"))

    assert broken("engines.mysql.engine", "storage.base") == "engines may not import storage"
    assert broken("engines.base", "repository.manifest") == "engines may not import repository"
    assert broken("engines.base", "services.backup") is not None
    assert broken("storage.s3", "engines.base") == "storage may not import engines"
    assert broken("services.backup", "cli.output") == "only cli imports cli"
    assert broken("services.backup", "web.app") == "only web imports web"
    assert broken("repository.chunks", "services.backup") is not None
    assert broken("pipeline.hashing", "repository.ids") is not None
    assert broken("storage.local", "repository.layout") is not None
    assert broken("cli.app", "services.backup") is None
    assert broken("web.app", "services.backup") is None
    assert broken("services.backup", "engines.base") is None
    assert broken("repository.chunks", "pipeline.hashing") is None
    assert broken("engines.mysql.dump", "engines.mysql.stats") is None


# The CLI and the web read run records, verification records and pins through
# services/records.py, and never the repository modules that store them.
RECORD_MODULES = {
    "strongroom.repository.runs",
    "strongroom.repository.verifications",
    "strongroom.repository.pins",
}


def test_the_cli_and_the_web_read_records_through_services() -> None:
    _, edges = import_graph()
    wrong = [
        str(edge)
        for edge in edges
        if edge.importer.startswith(("strongroom.cli.", "strongroom.web."))
        and edge.imported in RECORD_MODULES
    ]
    assert not wrong, "use strongroom.services.records instead:\n" + "\n".join(wrong)


def test_the_product_never_imports_the_test_servers() -> None:
    """``strongroom_servers`` (throwaway servers for tests and benchmarks) is not used by
    ``strongroom`` itself."""
    root = Path(__file__).resolve().parent.parent / "src" / "strongroom"
    users = [
        f"{path.relative_to(root.parent)}:{node.lineno}"
        for path in sorted(root.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Import | ast.ImportFrom)
        and any(
            name.split(".")[0] == "strongroom_servers"
            for name in (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
        )
    ]
    assert not users, users
