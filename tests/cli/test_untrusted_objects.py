"""cat never prints bytes that are not the object's, whatever stands in objects/."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from store import Repository, lookup
from tests.helpers import commit_dir, run

CONTENT = b"the real content of the file\n" * 100


def _flip(path: Path) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _secret_link(path: Path) -> None:
    secret = path.parent.parent.parent.parent / "secret"
    secret.write_bytes(b"root:secret\n")
    path.unlink()
    path.symlink_to(secret)


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


@pytest.mark.parametrize("damage", [_flip, _secret_link, _fifo], ids=["flip", "symlink", "fifo"])
def test_cat_prints_nothing_of_a_damaged_object(
    repo: Repository, tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "file").write_bytes(CONTENT)
    commit_id = commit_dir(repo, source)
    file_id = lookup(repo, commit_id, "/file").file
    assert file_id is not None
    damage(repo.content.path(file_id))
    result = run("cat", "main", "/file", repo=repo.path, timeout=60)
    assert result.returncode != 0
    assert result.stdout == b"", "bytes of a damaged object reached stdout"
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
