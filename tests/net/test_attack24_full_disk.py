"""attack24 (/work/plan/attack24.md): a full disk under pull-local, ``static-delta
generate`` and ``summary -u`` (a pull's own full disk: test_storage_attacks.py). Each
fails in one line with a non-zero exit, leaves no ref moved and fsck clean, and the same
command succeeds once space is freed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import cli, small_tmpfs, write_tree
from tests.net.repos import archive_of, fsck_clean, local_repo, refs, sapwood_ok

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a tmpfs to mount")


def _files(count: int, size: int) -> dict[str, str | bytes]:
    return {f"d{n % 5}/f{n:03d}": os.urandom(size) for n in range(count)}


@contextlib.contextmanager
def _full(disk: Path, leave: int = 0) -> Iterator[None]:
    """Fill ``disk`` but ``leave`` bytes with a filler file, removed afterwards."""
    filler = disk / "filler"
    with open(filler, "wb") as out:
        chunk = b"\0" * (1 << 16)
        try:
            while True:
                free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
                if free <= leave:
                    break
                out.write(chunk[: max(1, min(len(chunk), free - leave))])
                out.flush()
        except OSError:
            pass
    try:
        yield
    finally:
        filler.unlink()


def _refused(*args: str | Path) -> str:
    result = cli(*args)
    assert result.code != 0, result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    return lines[0]


def test_pull_local_on_a_full_disk(tmp_path: Path) -> None:
    source = tmp_path / "source"
    commit = archive_of(source, write_tree(tmp_path / "t", _files(40, 150_000)))
    with small_tmpfs(tmp_path / "small", "4m") as small:
        local = local_repo(small / "local")
        _refused("--repo", local, "pull-local", source, "main")
        assert refs(local) == {}
        fsck_clean(local)
    with small_tmpfs(tmp_path / "big", "64m") as big:
        local = local_repo(big / "local")
        with _full(big, leave=1 << 20):
            _refused("--repo", local, "pull-local", source, "main")
            assert refs(local) == {}
            fsck_clean(local)
        sapwood_ok(local, "pull-local", source, "main")
        assert refs(local) == {"main": commit}
        fsck_clean(local)


def test_static_delta_generate_on_a_full_disk(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "48m") as disk:
        archive = disk / "archive"
        archive_of(archive, write_tree(tmp_path / "a", _files(30, 200_000)))
        archive_of(archive, write_tree(tmp_path / "b", _files(30, 200_000)))
        before = sapwood_ok(archive, "static-delta", "list")
        with _full(disk, leave=256 << 10):
            _refused(
                "--repo", archive, "static-delta", "generate", "--from", "main^", "--to", "main"
            )
            assert sapwood_ok(archive, "static-delta", "list") == before
            fsck_clean(archive)
        sapwood_ok(archive, "static-delta", "generate", "--from", "main^", "--to", "main")
        assert sapwood_ok(archive, "static-delta", "list") != before
        fsck_clean(archive)


def test_summary_update_on_a_full_disk(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "16m") as disk:
        archive = disk / "archive"
        archive_of(archive, write_tree(tmp_path / "a", _files(10, 10_000)))
        for n in range(20):
            sapwood_ok(archive, "refs", "--create", f"branch/{n:04d}", "main")
        summary = (archive / "summary").read_bytes()
        with _full(disk):
            _refused("--repo", archive, "summary", "-u")
            assert (archive / "summary").read_bytes() == summary
            fsck_clean(archive)
        sapwood_ok(archive, "summary", "-u")
        assert (archive / "summary").read_bytes() != summary
        fsck_clean(archive)
