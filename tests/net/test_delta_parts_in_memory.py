"""A delta part up to 8 MiB is read into memory (store/pull/delta_apply.py
_PART_IN_MEMORY), not spooled: a server that sends it short, or with other bytes of the
declared length, is refused all the same, nothing stored, and the next pull from a good
server succeeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from store import CorruptObjectError, NetworkError, RepoMode, Repository
from store.deltas import generate_delta
from store.fsck import fsck
from store.pull import Remote, add_remote, pull
from store.summary import update_summary
from tests.helpers import commit_dir, write_tree
from tests.store.pull_server import serve
from tests.store.test_pull_http import FAST


def _archive_with_delta(tmp_path: Path) -> tuple[Path, Path]:
    tree = write_tree(tmp_path / "tree", {f"f{n}": os.urandom(200_000) for n in range(6)})
    with Repository.init(tmp_path / "archive", RepoMode.ARCHIVE) as archive:
        head = commit_dir(archive, tree, "main")
        delta = generate_delta(archive, None, head)
        update_summary(archive)
    part = delta / "0"
    assert part.stat().st_size < 8 << 20  # the in-memory way
    part.chmod(0o644)
    return tmp_path / "archive", part


@pytest.mark.parametrize("damage", ["short", "other-bytes"])
def test_a_damaged_part_held_in_memory_is_refused(tmp_path: Path, damage: str) -> None:
    archive, part = _archive_with_delta(tmp_path)
    good = part.read_bytes()
    if damage == "short":
        part.write_bytes(good[: len(good) // 2])  # served whole, with its shorter length
    else:
        part.write_bytes(good[:1000] + bytes(len(good) - 1000))
    with (
        serve(archive) as served,
        Repository.init(tmp_path / "local", RepoMode.BARE_USER) as local,
    ):
        add_remote(local.path, Remote("origin", served.url))
        with pytest.raises((CorruptObjectError, NetworkError)):
            pull(local, "origin", settings=FAST)
        assert local.refs() == {}
        assert fsck(local).clean
        part.write_bytes(good)  # the server mended
        report = pull(local, "origin", settings=FAST)
        assert local.refs() and report.deltas
        assert fsck(local).clean
