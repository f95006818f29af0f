"""The layering of DESIGN.md, checked on the source rather than remembered.

store imports nothing of fs or mountd (nor trio or pyfuse3); fs imports store's
public API only (``store``, never ``store.x``); only mountd may be async; nothing
beneath sapwood/ imports it (the facade and the command line sit on top).
"""

from __future__ import annotations

import ast
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
            names.append(node.module)
    return names


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
