"""The import graph keeps the layers of docs/architecture.md: no cycle, no upward import.

The graph is read with ``ast`` from the source (nothing is imported), with the package-dir mapping of
pyproject.toml: ``extproc/`` is ``tokenvoy.extproc``, ``ratelimit/`` is ``tokenvoy.ratelimit``. Imports
inside functions count (they run, only later); imports under ``if TYPE_CHECKING:`` do not.
"""

from __future__ import annotations

import ast
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = {
    "tokenvoy": ROOT / "tokenvoy",
    "tokenvoy.extproc": ROOT / "extproc",
    "tokenvoy.ratelimit": ROOT / "ratelimit",
}
GENERATED = "tokenvoy.pb"  # protoc output: imports only protobuf and itself

DATA_PLANE = ("tokenvoy.extproc", "tokenvoy.ratelimit")
TRANSLATE = "tokenvoy.extproc.translate"
# Pure modules of extproc that translators may use: parsing and usage, no I/O, no state beyond a call.
PURE_EXTPROC = {
    "tokenvoy.extproc.errors",
    "tokenvoy.extproc.usage",
    "tokenvoy.extproc.sse",
    "tokenvoy.extproc.jsonedit",
    "tokenvoy.extproc.eventstream",
    "tokenvoy.extproc.estimate",
    "tokenvoy.extproc.costs",  # estimate's CallContext
    "tokenvoy.extproc.pricing",
}
IO_MODULES = {"grpc", "asyncio", "socket", "redis", "httpx", "subprocess", "io", "shutil", "tempfile", "pathlib"}

# Imports that break a rule and that another engineer is removing right now. The list may only shrink:
# test_the_allowlist_only_names_imports_that_exist fails for an entry whose import is gone.
ALLOWED: set[tuple[str, str]] = set()
SERVICE_SHELLS = ("tokenvoy.extproc.server", "tokenvoy.ratelimit.server")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module of this package (or the top-level name of a foreign one)
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source} imports {self.target}"


def _inside(module: str, *packages: str) -> bool:
    return any(module == package or module.startswith(f"{package}.") for package in packages)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for prefix, directory in PACKAGE_DIRS.items():
        for path in directory.rglob("*.py"):
            parts = path.relative_to(directory).with_suffix("").parts
            if ".venv" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((prefix, *parts))
            if name.startswith(f"{GENERATED}.") or name == GENERATED:
                continue
            if any(_inside(name, other) for other in PACKAGE_DIRS if len(other) > len(prefix)):
                continue  # a tokenvoy/extproc/ dir would be shadowed by the mapping
            found[name] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The longest prefix of ``name`` that is a module here, or its first component (a foreign module)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return parts[0]


def _imports() -> list[Import]:
    modules = _modules()
    found = []
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        file = str(path.relative_to(ROOT))
        for node in _import_nodes(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join([*base, node.module] if node.module else base)
                else:
                    origin = node.module or ""
                if origin == "__future__":
                    continue
                # `from package import module` imports the module; `from module import name` the module
                names = [f"{origin}.{alias.name}" for alias in node.names]
            for name in names:
                found.append(Import(module, _resolve(name, modules), file, node.lineno))
    return found


IMPORTS = _imports()
MODULES = _modules()


def _violations(rule) -> list[Import]:
    return [i for i in IMPORTS if rule(i) and (i.source, i.target) not in ALLOWED]


def _report(found: list[Import]) -> str:
    return "\n".join(sorted({str(i) for i in found}))


def test_the_graph_sees_the_whole_package():
    # the mapping is right: the three package dirs and their imports are all read
    assert {"tokenvoy.contract", "tokenvoy.extproc.router", "tokenvoy.ratelimit.limiter"} <= MODULES.keys()
    assert any(i.target == "tokenvoy.contract" and i.source.startswith("tokenvoy.extproc") for i in IMPORTS)


def test_no_import_cycle():
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for i in IMPORTS:
        if i.target in MODULES and i.target != i.source:
            graph[i.source].add(i.target)
    # Tarjan's strongly connected components, iteratively
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[set[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(component)
    edges = [i for i in IMPORTS if any(i.source in c and i.target in c for c in cycles)]
    assert not cycles, "import cycles (each edge inside one):\n" + _report(edges)


def test_the_data_plane_imports_neither_render_nor_runner():
    found = _violations(
        lambda i: _inside(i.source, *DATA_PLANE) and _inside(i.target, "tokenvoy.render", "tokenvoy.runner")
    )
    assert not found, "extproc/ratelimit import the renderer or the runner:\n" + _report(found)


def test_the_runner_starts_the_services_without_importing_their_shells():
    # `tokenvoy run` runs extproc and ratelimit as processes; what it shares with them lives below both
    found = _violations(lambda i: _inside(i.source, "tokenvoy.runner") and i.target in SERVICE_SHELLS)
    assert not found, "runner/ imports a service's process shell:\n" + _report(found)


def test_config_imports_no_layer_above_it():
    above = ("tokenvoy.extproc", "tokenvoy.ratelimit", "tokenvoy.render", "tokenvoy.runner")
    found = _violations(lambda i: _inside(i.source, "tokenvoy.config") and _inside(i.target, *above))
    assert not found, "config/ imports a layer above it:\n" + _report(found)


def test_translate_is_pure():
    def impure(i: Import) -> bool:
        if not _inside(i.source, TRANSLATE):
            return False
        if i.target in IO_MODULES:
            return True
        return (
            _inside(i.target, "tokenvoy.extproc") and not _inside(i.target, TRANSLATE) and i.target not in PURE_EXTPROC
        )

    found = _violations(impure)
    assert not found, "extproc/translate/ imports I/O or a stateful extproc module:\n" + _report(found)


def test_the_pure_core_does_no_io():
    # what translate/ may use, the RLS's config and limit arithmetic and the CEL cost compiler are as pure as
    # translate/ itself
    core = PURE_EXTPROC | {"tokenvoy.ratelimit.config", "tokenvoy.ratelimit.limiter", "tokenvoy.config.cel"}
    found = _violations(lambda i: i.source in core and i.target in IO_MODULES)
    assert not found, "a pure core module imports an I/O module:\n" + _report(found)


def test_the_contract_imports_nothing_from_tokenvoy():
    found = _violations(lambda i: i.source == "tokenvoy.contract" and _inside(i.target, "tokenvoy"))
    assert not found, "tokenvoy/contract.py sits below every layer:\n" + _report(found)


def test_the_allowlist_only_names_imports_that_exist():
    present = {(i.source, i.target) for i in IMPORTS}
    gone = sorted(ALLOWED - present)
    assert not gone, f"allowlisted imports that no longer exist (remove them from ALLOWED): {gone}"


def test_no_file_cites_the_missing_design_document():
    # The design lives in docs/ (docs/architecture.md); a citation of a file outside the repo helps no one.
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    needle = "DESIGN" + ".md"
    found = []
    for name in tracked.splitlines():
        path = ROOT / name
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        found.extend(f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if needle in line)
    assert not found, f"{needle} is cited (cite a docs/ page instead):\n" + "\n".join(found)
