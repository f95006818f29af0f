"""log -p of files too large to diff (attack-history.md 24): two sides are compared a
MiB at a time, cut at the same offsets however each stream splits its reads, and the
comparison stops at the first piece that differs."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

import sapwood
from sapwood.cli import patch_view
from tests.helpers import cli

SIZE = 3 << 20  # "large" below: the bound is lowered to 1 MiB for the test


class _ShortReads:
    """A stream that gives at most an odd number of bytes a read, and counts them."""

    def __init__(self, inner: BinaryIO, most: int, counter: list[int]) -> None:
        self._inner, self._most, self._counter = inner, most, counter

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(self._most if size < 0 else min(size, self._most))
        self._counter[0] += len(data)
        return data

    def __enter__(self) -> _ShortReads:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()


@pytest.fixture
def read_bytes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Lower log -p's "too large to diff" to 1 MiB; every other stream opened reads in
    odd short pieces; the list's one item counts the bytes read."""
    monkeypatch.setattr(patch_view, "_LARGEST_TEXT", 1 << 20)
    real = sapwood.Repository.open_file
    odd = itertools.cycle([333_331, 1 << 22])
    counter = [0]

    def open_file(self: sapwood.Repository, object_id: Any) -> Any:
        return _ShortReads(real(self, object_id), next(odd), counter)

    monkeypatch.setattr(sapwood.Repository, "open_file", open_file)
    yield counter


def _two_commits(tmp_path: Path, second: bytes, mode: int = 0o644) -> Path:
    repo, tree = tmp_path / "repo", tmp_path / "tree"
    assert cli("--repo", repo, "init").code == 0
    tree.mkdir()
    first = bytes(range(256)) * (SIZE // 256)
    for content, file_mode in ((first, 0o644), (second, mode)):
        (tree / "f").write_bytes(content)
        os.chmod(tree / "f", file_mode)
        assert cli("--repo", repo, "commit", "-b", "main", tree).code == 0
    return repo


def _newest(repo: Path) -> str:
    shown = cli("--repo", repo, "log", "-p", "main")
    assert shown.code == 0, shown.err
    return shown.out.split("\ncommit ")[0] + "\n"


def test_a_mode_change_of_a_large_file_is_no_content_change(
    tmp_path: Path, read_bytes: list[int]
) -> None:
    repo = _two_commits(tmp_path, bytes(range(256)) * (SIZE // 256), mode=0o755)
    read_bytes[0] = 0
    patch = _newest(repo)
    assert "old mode 100644\nnew mode 100755\n" in patch
    assert "Binary files" not in patch and "index " not in patch
    assert read_bytes[0] == 2 * SIZE  # equal: both read to the end


def test_a_large_file_changed_in_its_last_byte_differs(
    tmp_path: Path, read_bytes: list[int]
) -> None:
    data = bytearray(range(256)) * (SIZE // 256)
    data[-1] ^= 1
    patch = _newest(_two_commits(tmp_path, bytes(data)))
    assert "Binary files a/f and b/f differ\n" in patch


def test_the_comparison_stops_at_the_first_piece_that_differs(
    tmp_path: Path, read_bytes: list[int]
) -> None:
    data = bytearray(range(256)) * (SIZE // 256)
    data[0] ^= 1
    repo = _two_commits(tmp_path, bytes(data))
    read_bytes[0] = 0
    assert "Binary files a/f and b/f differ\n" in _newest(repo)
    assert read_bytes[0] <= 2 << 20  # one MiB of each side
