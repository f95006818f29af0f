"""How the scan lists a directory (fs/scan.py _entries): through /proc/self/fd/N of the
directory's fd, which is the open directory itself, never its path looked up again; by
scandir of the fd where /proc is missing. Both give the same names, as bytes, sorted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fs.options import ContentOptions
from fs.scan import DirScanner, _Dir
from store import MutableDir, Repository
from tests.helpers import commit_dir

_NAMES = [b"b", b"a", b"\xff\xfe", "é".encode(), b"z" * 255, b"dir"]


def _tree(root: Path) -> Path:
    root.mkdir()
    for name in _NAMES:
        path = os.path.join(os.fsencode(root), name)
        if name == b"dir":
            os.mkdir(path)
            os.symlink(b"../a", os.path.join(path, b"link"))
        else:
            with open(path, "wb") as out:
                out.write(name)
    return root


@pytest.mark.parametrize("proc", [True, False], ids=["proc", "no-proc"])
def test_a_directory_is_listed_by_its_fd_even_once_its_path_names_another(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proc: bool
) -> None:
    """The directory's fd was opened, then its path made to name another directory: the
    names listed are the first one's, in byte order, with /proc or without."""
    listed: list[bytes] = []
    real_listdir = os.listdir

    def listdir(path: bytes) -> list[bytes]:
        listed.append(path)
        if not proc:
            raise FileNotFoundError(2, "No such file or directory")
        return real_listdir(path)

    monkeypatch.setattr("fs.scan.os.listdir", listdir)
    source = _tree(tmp_path / "src")
    fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rename(source, tmp_path / "moved")
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "other").write_bytes(b"")
        with user_repo.transaction() as txn:
            scanner = DirScanner(user_repo, txn, ContentOptions(), time.time_ns())
            directory = _Dir(b"", os.fstat(fd), b"/", MutableDir())
            assert scanner._entries(directory, fd) == sorted(_NAMES)
            txn.abort()
    finally:
        os.close(fd)
    assert listed == [b"/proc/self/fd/%d" % fd]


def test_a_commit_without_proc_records_the_same_tree(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _tree(tmp_path / "src")
    with_proc = commit_dir(user_repo, source, "proc")

    def no_proc(path: bytes) -> list[bytes]:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr("fs.scan.os.listdir", no_proc)
    without = commit_dir(user_repo, source, "no-proc")
    trees = [user_repo.read_commit(commit) for commit in (with_proc, without)]
    assert (trees[0].tree, trees[0].meta) == (trees[1].tree, trees[1].meta)
