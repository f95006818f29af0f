"""The layering of DESIGN.md, checked on the source rather than remembered.

store imports nothing of fs or mountd (nor trio or pyfuse3); fs imports store's
public API only (``store``, never ``store.x``); only mountd may be async; nothing
beneath sapwood/ imports it (the facade and the command line sit on top). No module
outside store/ reaches into a repository's index or content store: none uses an
attribute named ``index`` or ``content`` on anything (the name alone is checked, as
types are not known here; ``getattr`` with those names counts too), nor imports
store.index or store.content. Repository offers what they need instead.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += _imported_from(node.module, [alias.name for alias in node.names])
    return names


def _imported_from(module: str, names: list[str]) -> list[str]:
    """What ``from module import names`` imports: the submodules among names (``from
    store.pull import formats`` needs store.pull.formats, not the package's __init__),
    and the module itself for the rest."""
    folder = ROOT.joinpath(*module.split("."))
    bound = _names_bound_in(folder / "__init__.py")
    submodules = [
        f"{module}.{name}"
        for name in names
        if name not in bound and (folder / f"{name}.py").is_file()
    ]
    rest = len(submodules) < len(names)
    return [*submodules, module] if rest else submodules


def _names_bound_in(init: Path) -> set[str]:
    """The names a package's __init__ binds at its top level: ``from store import
    prune`` is store's prune function (store/__init__.py has it), not the module. A
    lazy package binds the keys of its ``_HOMES`` table (name -> module, imported on
    first use by its module ``__getattr__``)."""
    if not init.is_file():
        return set()
    bound: set[str] = set()
    for node in ast.parse(init.read_text(), str(init)).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif _is_lazy_table(node):
            assert isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Dict)
            bound |= {
                key.value
                for key in node.value.keys
                if isinstance(key, ast.Constant) and isinstance(key.value, str)
            }
    return bound


def _is_lazy_table(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id == "_HOMES"
        and isinstance(node.value, ast.Dict)
    )


def test_a_lazy_package_binds_its_table() -> None:
    """``from store import prune`` is the function (not the private module store.prune)
    although store/__init__.py imports it only on first use."""
    assert {"prune", "fsck", "Repository"} <= _names_bound_in(ROOT / "store" / "__init__.py")
    assert _imported_from("store", ["prune", "filez"]) == ["store.filez", "store"]
    assert "Repository" in _names_bound_in(ROOT / "sapwood" / "__init__.py")


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("store"), ids=lambda p: p.name)
def test_store_imports_nothing_above_it(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        assert top not in {"sapwood", "fs", "mountd", "trio", "pyfuse3"}, f"{path} imports {name}"


@pytest.mark.parametrize("path", _modules("fs"), ids=lambda p: p.name)
def test_fs_uses_only_public_store_api(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        assert top not in {"sapwood", "mountd", "trio", "pyfuse3"}, f"{path} imports {name}"
        assert not name.startswith("store."), f"{path} imports private {name}"


@pytest.mark.parametrize("path", _modules("mountd"), ids=lambda p: p.name)
def test_mountd_uses_only_public_apis(path: Path) -> None:
    for name in _imports(path):
        assert not name.startswith("store."), f"{path} imports private {name}"
        assert name.split(".")[0] != "sapwood", f"{path} imports {name}, which sits above it"


@pytest.mark.parametrize("path", _modules("store") + _modules("fs"), ids=lambda p: p.name)
def test_store_and_fs_are_synchronous(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert not any(isinstance(n, ast.AsyncFunctionDef) for n in ast.walk(tree)), path


@pytest.mark.parametrize("path", _modules("store") + _modules("fs"), ids=lambda p: p.name)
def test_library_code_never_prints(path: Path) -> None:
    tree = ast.parse(path.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert not any(isinstance(c.func, ast.Name) and c.func.id == "print" for c in calls), path


_STORE_INSIDES = frozenset({"index", "content"})
_OUTSIDE_STORE = _modules("sapwood") + _modules("fs") + _modules("mountd")


def _reaches_inside(tree: ast.AST) -> list[str]:
    """Where ``tree`` uses an attribute ``index`` or ``content`` or imports those modules."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _STORE_INSIDES:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "setattr", "hasattr"}
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in _STORE_INSIDES
        ):
            found.append(f"line {node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {alias.name}"
                for alias in node.names
                if alias.name in {"store.index", "store.content"}
            ]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module in {"store.index", "store.content"}:
                found.append(f"line {node.lineno}: from {node.module}")
            elif node.module == "store":
                found += [
                    f"line {node.lineno}: from store import {alias.name}"
                    for alias in node.names
                    if alias.name in _STORE_INSIDES
                ]
    return found


@pytest.mark.parametrize("path", _OUTSIDE_STORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_outside_store_reaches_into_the_index_or_content(path: Path) -> None:
    found = _reaches_inside(ast.parse(path.read_text(), str(path)))
    assert not found, f"{path.relative_to(ROOT)} reaches into the store: {found}"


@pytest.mark.parametrize(
    "source",
    [
        "repo.index.reader()",
        "self.repo.content.compressed",
        "with r.index.reader() as x: pass",
        "getattr(repo, 'content')",
        "from store.index import Access",
        "import store.content",
        "from store import index",
    ],
)
def test_the_check_finds_every_way_in(source: str) -> None:
    assert _reaches_inside(ast.parse(source))


def test_the_check_passes_the_repository_api() -> None:
    source = "with repo.snapshot() as s: s.ref('main')\nrepo.stores_compressed\n"
    assert _reaches_inside(ast.parse(source)) == []


def test_the_check_sees_every_package() -> None:
    packages = {path.relative_to(ROOT).parts[0] for path in _OUTSIDE_STORE}
    assert packages == {"sapwood", "fs", "mountd"}


# Type-only imports that close a cycle, each a leaf type named in annotations. store.errors
# names ObjectId in its errors' fields, and store.ids raises those errors.
_TYPE_ONLY_EDGES = frozenset({("store.errors", "store.ids")})


def _dotted(path: Path) -> str:
    """The module name of a file: store/pull/objects.py is store.pull.objects, not
    store.objects (a subpackage's module must not pass for a store module it shadows)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_module_names_follow_their_packages() -> None:
    assert _dotted(ROOT / "store" / "pull" / "objects.py") == "store.pull.objects"
    assert _dotted(ROOT / "store" / "pull" / "__init__.py") == "store.pull"
    assert _dotted(ROOT / "store" / "objects.py") == "store.objects"


def _store_graph() -> dict[str, set[str]]:
    """store's modules and the store modules each imports (under TYPE_CHECKING too)."""
    graph: dict[str, set[str]] = {}
    for path in _modules("store"):
        module = _dotted(path)
        names = {name for name in _imports(path) if name.startswith("store.")}
        graph[module] = {name for name in names if (module, name) not in _TYPE_ONLY_EDGES}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (depth first, colouring), or []."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = 1
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == 1:
                return [*path[path.index(imported) :], imported]
            if imported not in state and (found := visit(imported)):
                return found
        path.pop()
        state[module] = 2
        return []

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return []


def test_store_has_no_import_cycle() -> None:
    """Not even one hidden behind TYPE_CHECKING (repo and transaction had one)."""
    assert _cycle(_store_graph()) == []


def test_the_cycle_check_finds_a_hidden_cycle() -> None:
    graph = {"store.repo": {"store.transaction"}, "store.transaction": {"store.repo"}}
    assert _cycle(graph) == ["store.repo", "store.transaction", "store.repo"]


# Libraries of the terminal, not layers: tqdm draws progress (sapwood/cli/progress.py).
_CLI_LIBRARIES = frozenset({"tqdm"})


def _cli_may_import(name: str) -> bool:
    """The command line is a client of ``import sapwood`` and the standard library only
    (and of the terminal libraries above)."""
    top = name.split(".")[0]
    return (
        name == "sapwood"
        or name.startswith("sapwood.cli")
        or top in sys.stdlib_module_names
        or top in _CLI_LIBRARIES
    )


@pytest.mark.parametrize("path", _modules("sapwood/cli"), ids=lambda p: p.name)
def test_the_command_line_uses_only_the_facade(path: Path) -> None:
    for name in _imports(path):
        assert _cli_may_import(name), f"{path} imports {name}: add it to the facade instead"


def test_the_facade_check_refuses_the_layers_beneath() -> None:
    refused = ["store", "store.repo", "fs.checkout", "mountd.daemon", "sapwood._mount", "lmdb"]
    assert not any(_cli_may_import(name) for name in refused)
    assert all(_cli_may_import(name) for name in ["sapwood", "sapwood.cli.output", "argparse"])
