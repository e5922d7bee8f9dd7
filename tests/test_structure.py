"""The house's shape (ARCHITECTURE.md, "Layout" and "House rules"), checked on the source.

Every module of ``slicebox_lab`` belongs to a named part; each part has never-rules (what it must not
import); no import circle between modules, counting imports inside functions and under
``TYPE_CHECKING``; SQL only in ``index/``; no module over 800 lines.  The imports are read from
the source (``ast``), not by importing anything.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "slicebox_lab"
MAX_LINES = 800

#: what no domain part imports (house rule 2): the server, the browser side, the widgets
SERVER_SIDE = frozenset({"tornado", "jupyter_server", "traitlets", "ipywidgets", "anywidget", "voila"})
#: the kernels' side of the node (client, widgets) talks HTTP: it never loads the server's machinery
KERNEL_SIDE_NEVER = frozenset({"tornado", "sqlalchemy", "alembic", "pynetdicom", "pebble"})
#: the services: long-lived threads over the context that the app builds, keeps and stops
SERVICES = frozenset(
    {
        "slicebox_lab.net.scp",
        "slicebox_lab.watch.service",
        "slicebox_lab.box.service",
        "slicebox_lab.routing.forwarding",
        "slicebox_lab.organize.seriestypes",
        "slicebox_lab.apps.service",
        "slicebox_lab.server.services",
    }
)


@dataclass(frozen=True)
class Part:
    """A named part of the package: its modules (by prefix) and what they may never import."""

    name: str
    prefixes: tuple[str, ...]
    never_external: frozenset[str] = frozenset()
    #: modules of slicebox_lab it may import (None: any)
    only_internal: tuple[str, ...] | None = None


_DOMAIN = (
    "storage", "index", "dicom", "anonymization", "net", "dicomweb", "watch", "box", "routing", "organize", "apps",
)  # fmt: skip
PARTS = (
    Part("core", ("__init__", "_version", "errors", "events", "model", "context", "exports", "upload"), SERVER_SIDE),
    Part("jobs", ("jobs",), SERVER_SIDE),
    Part("workers", ("workers",), SERVER_SIDE),
    Part("access", ("access",), SERVER_SIDE),
    *(Part(name, (name,), SERVER_SIDE) for name in _DOMAIN),
    Part("app", ("app",)),
    Part("server", ("server",), frozenset({"ipywidgets", "anywidget"})),
    Part("handlers", ("handlers",), frozenset({"ipywidgets", "anywidget"})),
    Part(
        "client", ("client",), KERNEL_SIDE_NEVER, ("slicebox_lab.client", "slicebox_lab.model", "slicebox_lab._version")
    ),
    Part(
        "ui",
        ("ui",),
        KERNEL_SIDE_NEVER | {"jupyter_server"},
        ("slicebox_lab.ui", "slicebox_lab.client", "slicebox_lab.model", "slicebox_lab._version"),
    ),
    Part("sample", ("sample",), SERVER_SIDE | KERNEL_SIDE_NEVER, ("slicebox_lab.sample", "slicebox_lab.client")),
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _part_of(module: str) -> Part | None:
    inner = module.split(".")[1:] or ["__init__"]
    for part in PARTS:
        if inner[0] in part.prefixes:
            return part
    return None


@dataclass(frozen=True)
class Import:
    target: str  # the module imported (a slicebox_lab module, or the top name of another package)
    internal: bool
    line: int


def _imports(module: str) -> Iterator[Import]:
    """Every import statement of the module, wherever it stands (functions, TYPE_CHECKING included)."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                yield Import(_known(alias.name) if top == "slicebox_lab" else top, top == "slicebox_lab", node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if not target.startswith("slicebox_lab"):
                yield Import(target.split(".")[0], False, node.lineno)
                continue
            for alias in node.names:
                # ``from package import submodule`` imports that submodule; any other name, the module
                candidate = f"{target}.{alias.name}"
                yield Import(_known(candidate if candidate in MODULES else target), True, node.lineno)


def _known(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _graph() -> dict[str, set[str]]:
    return {m: {i.target for i in _imports(m) if i.internal and i.target != m} for m in MODULES}


def test_every_module_belongs_to_a_named_part():
    assert [m for m in MODULES if _part_of(m) is None] == []


@pytest.mark.parametrize("part", PARTS, ids=lambda p: p.name)
def test_each_part_keeps_its_never_rules(part: Part):
    broken = []
    for module in MODULES:
        if _part_of(module) is not part:
            continue
        for imp in _imports(module):
            if not imp.internal and imp.target in part.never_external:
                broken.append(f"{module}:{imp.line} imports {imp.target}")
            if imp.internal and part.only_internal is not None:
                if not any(imp.target == o or imp.target.startswith(o + ".") for o in part.only_internal):
                    broken.append(f"{module}:{imp.line} imports {imp.target}")
    assert broken == []


def test_sql_lives_only_in_the_index():
    outside = [
        f"{m}:{i.line}"
        for m in MODULES
        if not m.startswith("slicebox_lab.index")
        for i in _imports(m)
        if (not i.internal and i.target in ("sqlalchemy", "alembic")) or i.target == "slicebox_lab.index.schema"
    ]
    assert outside == []


def test_the_core_uses_no_service():
    core = [m for m in MODULES if _part_of(m) is not None and _part_of(m).name == "core"]  # type: ignore[union-attr]
    graph = _graph()
    used = {f"{m} -> {t}" for m in core if m != "slicebox_lab" for t in graph[m] if t in SERVICES}
    assert used == set()


def test_no_import_circle():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                circles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert circles == []


def test_no_module_is_over_800_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_the_walker_sees_imports_inside_functions_and_type_checking():
    """The checks above would be hollow if the walker missed these kinds of import."""
    found = {i.target for i in _imports("slicebox_lab")}
    assert "slicebox_lab.app" in found  # imported inside _jupyter_server_extension_points
    assert "slicebox_lab.client" in found  # under TYPE_CHECKING, and inside connect()
