"""log -p names files as git does (review6.md 15): unusual names are C-quoted, a
``---``/``+++`` name with a space ends with a tab, and git apply and patch(1) take the
patch of such names (with ls's quoting they did not)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import cli, cli_commits, newest_patch

NAMES = [b"plain", b"a b", b"tab\tname", b'q"uote', b"back\\slash", "é".encode(), b"\xff"]


def _tree(root: Path, version: str, names: list[bytes]) -> Path:
    root.mkdir(parents=True)
    for name in names:
        (root / os.fsdecode(name)).write_bytes(
            f"line one\n{version} of {name.hex()}\nend\n".encode()
        )
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    first = _tree(tmp_path / "v1", "first", [*NAMES, b"gone name"])
    second = _tree(tmp_path / "v2", "second", [*NAMES, "new \x01 ü".encode()])
    return cli_commits(tmp_path / "repo", first, second)


def test_headers_quote_as_git_does(repo: Path) -> None:
    patch = newest_patch(repo)
    assert b"diff --git a/plain b/plain\n" in patch
    assert b"diff --git a/a b b/a b\n--- " not in patch  # extended lines between
    assert b"--- a/a b\t\n+++ b/a b\t\n" in patch
    assert b'diff --git "a/tab\\tname" "b/tab\\tname"\n' in patch
    assert b'--- "a/q\\"uote"\n+++ "b/q\\"uote"\n' in patch
    assert b'"a/back\\\\slash"' in patch
    assert b'diff --git "a/\\303\\251" "b/\\303\\251"\n' in patch
    assert b'diff --git "a/\\377" "b/\\377"\n' in patch
    assert b'+++ "b/new \\001 \\303\\274"\t\n' in patch
    assert b"--- a/gone name\t\n+++ /dev/null\n" in patch
    assert b"\x01" not in patch and b"\xff" not in patch and b"'" not in patch


@pytest.mark.parametrize("tool", [["git", "apply", "-"], ["patch", "-p1", "-s"]])
def test_git_apply_and_patch_take_the_patch(repo: Path, tmp_path: Path, tool: list[str]) -> None:
    if shutil.which(tool[0]) is None:
        pytest.skip(f"needs {tool[0]}")
    work, want = tmp_path / "work", tmp_path / "want"
    assert cli("--repo", repo, "checkout", "-U", "main~1", work).code == 0
    assert cli("--repo", repo, "checkout", "-U", "main", want).code == 0
    applied = subprocess.run(
        tool,
        input=newest_patch(repo),
        cwd=work,
        capture_output=True,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    assert _files(work) == _files(want)


def _files(root: Path) -> dict[bytes, bytes]:
    return {os.fsencode(p.name): p.read_bytes() for p in root.iterdir()}
