"""Committing a tree that another user can write to, as root (issue 9).

The other user (uid 65534, really: the swaps run under setpriv) swaps entries of
the tree while the scanner is between classifying an entry and using it. The swap
is made deterministic by a hook on a call the scanner makes in that window: the
read of a file's content (which comes after its directory is listed and before
its subdirectories are entered) or the open of the file itself. Whatever is
swapped in, the commit must fail with "changed while it was being committed" and
nothing from outside the tree (a mode-0700 directory of root's) may reach the
repository.
"""

from __future__ import annotations

import contextlib
import os
import resource
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fs.options import ContentOptions
from fs.scan import DirScanner
from store import MutableDir, Repository, SourceError
from tests.helpers import IS_ROOT, as_user, cat_bytes, commit_dir, give_to_user, open_fds

if TYPE_CHECKING:
    from _typeshed import StrOrBytesPath

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a tree of another user's, committed by root")
CHANGED = "changed while it was being committed"


@pytest.fixture
def secret(shared: Path) -> bytes:
    """Root's private file, outside the tree; its content must never be committed."""
    private = shared / "private"
    private.mkdir(mode=0o700)
    marker = b"TOP SECRET " + os.urandom(16).hex().encode()
    (private / "secret").write_bytes(marker)
    return marker


@pytest.fixture
def tree(shared: Path) -> Path:
    """src/{a, swapme, victim/inner}, all owned by uid 65534."""
    source = shared / "src"
    (source / "victim").mkdir(parents=True)
    (source / "a").write_bytes(b"read first")
    (source / "swapme").write_bytes(b"an ordinary file")
    (source / "victim" / "inner").write_bytes(b"inner file")
    give_to_user(source)
    return source


def as_nobody(script: str, cwd: Path) -> None:
    """What the other user does, in the tree it owns."""
    as_user("sh", "-ec", script, cwd=cwd)


def when_reading(monkeypatch: pytest.MonkeyPatch, path: Path, action: Callable[[], None]) -> None:
    """Run ``action`` once, when the scanner reads the content of ``path``."""
    ino, real_pread = path.stat().st_ino, os.pread
    done: list[bool] = []

    def pread(fd: int, n: int, offset: int) -> bytes:
        if not done and os.fstat(fd).st_ino == ino:
            done.append(True)
            action()
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)


def when_opening(monkeypatch: pytest.MonkeyPatch, name: str, action: Callable[[], None]) -> None:
    """Run ``action`` once, just before the scanner opens the entry ``name``."""
    real_open = os.open
    done: list[bool] = []

    def opener(
        path: StrOrBytesPath, flags: int, mode: int = 0o777, *, dir_fd: int | None = None
    ) -> int:
        if not done and os.path.basename(os.fsencode(path)) == os.fsencode(name):
            done.append(True)
            action()
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", opener)


def assert_not_in_repo(repo: Repository, marker: bytes) -> None:
    for path in repo.path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert marker not in path.read_bytes(), f"{path} holds the outside file"


def test_a_directory_swapped_for_a_symlink_is_not_followed(
    user_repo: Repository, tree: Path, secret: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = tree.parent / "private"
    when_reading(
        monkeypatch, tree / "a", lambda: as_nobody(f"mv victim old && ln -s {private} victim", tree)
    )
    with pytest.raises(SourceError, match=f"victim: {CHANGED}"):
        commit_dir(user_repo, tree)
    assert (tree / "victim").is_symlink()  # the swap did happen inside the window
    assert_not_in_repo(user_repo, secret)


def test_a_directory_swapped_for_a_file_is_refused(
    user_repo: Repository, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    when_reading(
        monkeypatch, tree / "a", lambda: as_nobody("mv victim old && echo x > victim", tree)
    )
    with pytest.raises(SourceError, match=f"victim: {CHANGED}"):
        commit_dir(user_repo, tree)


def test_a_directory_swapped_for_another_directory_is_refused(
    user_repo: Repository, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = tree.parent / "theirs"
    (theirs / "elsewhere").mkdir(parents=True)
    (theirs / "elsewhere" / "inner").write_bytes(b"not what was listed")
    give_to_user(theirs)
    when_reading(
        monkeypatch,
        tree / "a",
        lambda: as_nobody(f"mv victim old && mv {theirs / 'elsewhere'} victim", tree),
    )
    with pytest.raises(SourceError, match=f"victim: {CHANGED}"):
        commit_dir(user_repo, tree)


def test_a_file_swapped_for_a_symlink_is_not_followed(
    user_repo: Repository, tree: Path, secret: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tree.parent / "private" / "secret"
    when_opening(
        monkeypatch, "swapme", lambda: as_nobody(f"mv swapme old && ln -s {target} swapme", tree)
    )
    with pytest.raises(SourceError, match=f"swapme: {CHANGED}"):
        commit_dir(user_repo, tree)
    assert_not_in_repo(user_repo, secret)


def test_a_file_swapped_for_a_fifo_does_not_hang(
    user_repo: Repository, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    when_opening(monkeypatch, "swapme", lambda: as_nobody("mv swapme old && mkfifo swapme", tree))
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            commit_dir(user_repo, tree)
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # blocked opening the FIFO: give it a writer, then fail
        os.close(os.open(tree / "swapme", os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=30)
        pytest.fail("the scanner blocked opening a FIFO swapped in for a file")
    assert len(outcome) == 1 and isinstance(outcome[0], SourceError), outcome
    assert f"swapme: {CHANGED}" in str(outcome[0])


def test_a_symlink_swapped_for_a_file_is_refused(
    user_repo: Repository, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_nobody("ln -s a link", tree)
    when_opening(monkeypatch, "link", lambda: as_nobody("mv link old && echo x > link", tree))
    with pytest.raises(SourceError, match=f"link: {CHANGED}"):
        commit_dir(user_repo, tree)


def test_an_unswapped_tree_of_another_user_commits(user_repo: Repository, tree: Path) -> None:
    commit_id = commit_dir(user_repo, tree).hex()
    assert cat_bytes(user_repo.path, commit_id, "/victim/inner") == b"inner file"
    assert cat_bytes(user_repo.path, commit_id, "/swapme") == b"an ordinary file"


# ----- depth ---------------------------------------------------------------------------
DEPTH = 1000
LEVEL = b"level-%04d"  # 11 bytes a level: the deepest path is far beyond PATH_MAX


def _build_deep(root: Path) -> None:
    """root/level-0000/level-0001/... with a file f at each level, and a sibling z/g
    at every other level.

    Built through directory fds: no path to the bottom fits in PATH_MAX. The sibling
    ``z`` is entered after ``level-N``: below such a level the walk still needs its
    fd (where one fd per level would be held), below the others it does not.
    """
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(DEPTH):
            if level % 2 == 0:
                os.mkdir(b"z", dir_fd=fd)
                os.close(os.open(b"z/g", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
            file_fd = os.open(b"f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(file_fd, b"%d" % level)
            os.close(file_fd)
            os.mkdir(LEVEL % level, dir_fd=fd)
            next_fd = os.open(LEVEL % level, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    finally:
        os.close(fd)


def _remove_deep(root: Path) -> None:
    """Remove what _build_deep made, bottom up (shutil.rmtree recurses once a level)."""
    if not root.exists():
        return
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        while _names(fds[-1]).issuperset({LEVEL % (len(fds) - 1)}):
            level = LEVEL % (len(fds) - 1)
            fds.append(os.open(level, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        while fds:
            fd = fds[-1]
            for name in _names(fd):
                if name == b"f":
                    os.unlink(name, dir_fd=fd)
                else:
                    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                        os.unlink(name + b"/g", dir_fd=fd)
                    os.rmdir(name, dir_fd=fd)
            os.close(fds.pop())
    finally:
        for fd in fds:
            os.close(fd)
    root.rmdir()


def _names(fd: int) -> set[bytes]:
    return {os.fsencode(name) for name in os.listdir(fd)}


def _deepest(root: MutableDir) -> tuple[int, set[bytes]]:
    """How many levels the scanned tree has, and the content ids of its files."""
    depth, node = 0, root
    files: set[bytes] = set()
    while True:
        files.update(v for k, v in node.entries.items() if k == b"f" and isinstance(v, bytes))
        child = node.entries.get(LEVEL % depth)
        if not isinstance(child, MutableDir):
            return depth, files
        if depth % 2 == 0:
            sibling = node.entries[b"z"]  # entered after level-N, from a reopened fd
            assert isinstance(sibling, MutableDir) and sibling.meta is not None
            assert b"g" in sibling.entries
        else:
            assert b"z" not in node.entries
        depth, node = depth + 1, child


def test_a_deep_tree_needs_neither_deep_recursion_nor_one_fd_per_level(
    user_repo: Repository, tmp_path: Path
) -> None:
    source = tmp_path / "deep"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        _build_deep(source)
        open_now = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 150, hard))  # far below DEPTH
        with user_repo.transaction() as txn:
            root = MutableDir()
            DirScanner(user_repo, txn, ContentOptions(), 0).scan(source, root)
            txn.abort()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        _remove_deep(source)
    depth, files = _deepest(root)
    assert depth == DEPTH
    assert len(files) == DEPTH  # every level's file, each with its own content


def test_no_fd_is_left_open(
    user_repo: Repository, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit_dir(user_repo, tree)  # whatever the repository opens once
    before = open_fds()
    commit_dir(user_repo, tree)
    # changed, so that the commit reads it: on a slow machine it was old enough by now
    # for the stat cache to vouch for it, and the swap below never happened
    (tree / "a").write_bytes(b"read first, changed")
    when_reading(
        monkeypatch, tree / "a", lambda: as_nobody("mv victim old && ln -s a victim", tree)
    )
    with pytest.raises(SourceError, match=CHANGED):
        commit_dir(user_repo, tree)
    assert open_fds() == before
    assert stat.S_ISLNK(os.lstat(tree / "victim").st_mode)
