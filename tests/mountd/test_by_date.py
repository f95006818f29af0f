"""history/REF/by-date/DATE of the repository mount: the view, then a real FUSE mount."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from pathlib import Path

import pytest

from mountd.repo_view import RepositoryView
from mountd.view import ROOT_INODE
from store import ObjectId, PathNotFoundError, Repository
from tests.helpers import Mounts, commit_files, record_calls, run
from tests.history_tree import SSHD, HistoryTree

DAY = 86400
NOV_1_NOON = 1_793_534_400  # 2026-11-01T12:00:00Z


def _daily(
    repo: Repository, tmp_path: Path, branch: str = "main", count: int = 5
) -> list[ObjectId]:
    """``count`` commits of ``branch`` at noon UTC of 2026-11-01, 11-02, ...; file
    ``version`` holds the commit's number."""
    source = tmp_path / f"src-{branch.replace('/', '_')}"
    return [
        commit_files(
            repo,
            source,
            {"version": str(n)},
            branch,
            subject=f"{n}",
            timestamp=NOV_1_NOON + n * DAY,
        )
        for n in range(count)
    ]


def _path(view: RepositoryView, *parts: bytes) -> int:
    ino = ROOT_INODE
    for part in parts:
        ino = view.lookup(ino, part).ino
    return ino


def _names(view: RepositoryView, ino: int) -> list[bytes]:
    return [name for name, *_ in view.entries(ino, 0)]


def _commit_of(view: RepositoryView, ino: int) -> str:
    return view.getxattr(ino, b"user.sapwood.commit").decode()


def test_by_date_names_the_commit_of_that_time(user_repo: Repository, tmp_path: Path) -> None:
    ids = _daily(user_repo, tmp_path)
    view = RepositoryView(user_repo)
    by_date = _path(view, b"history", b"main", b"by-date")
    for name, expected in (
        (b"2026-11-03", ids[1]),  # midnight: the day before's noon commit
        (b"2026-11-03T12:00:00", ids[2]),  # at the time counts
        (b"2026-11-03 11:59", ids[1]),
        (b"2026-11-03T14:00:00+02:00", ids[2]),
        (b"2026-11-03T120000Z", ids[2]),  # the time as history/ names show it
        (b"2030-01-01", ids[4]),
        (f"@{NOV_1_NOON}".encode(), ids[0]),
    ):
        ino = view.lookup(by_date, name).ino
        assert _commit_of(view, ino) == expected.hex(), name
    same = [view.lookup(by_date, n).ino for n in (b"2026-11-03T12:00:00", b"2026-11-03T13:00")]
    assert same[0] == same[1]  # one commit, one directory, whatever the date's spelling
    tree = view.lookup(by_date, b"2026-11-02T12:00:00").ino
    assert _names(view, tree) == [b"version"]
    version = view.lookup(tree, b"version").ino
    assert view.read(version, 0, 10) == b"1"


def test_relative_dates_count_back_from_now(user_repo: Repository, tmp_path: Path) -> None:
    now = int(time.time())
    source = tmp_path / "src"
    ids = [
        commit_files(user_repo, source, {"v": str(days)}, timestamp=now - days * DAY)
        for days in (10, 5, 2)
    ]
    view = RepositoryView(user_repo)
    by_date = _path(view, b"history", b"main", b"by-date")
    for name, expected in (
        (b"yesterday", ids[2]),
        (b"3 days ago", ids[1]),
        (b"3.days.ago", ids[1]),
        (b"1 week ago", ids[0]),
        (b"now", ids[2]),
    ):
        assert _commit_of(view, view.lookup(by_date, name).ino) == expected.hex(), name


def test_by_date_lists_nothing_and_history_lists_only_commits(
    user_repo: Repository, tmp_path: Path
) -> None:
    ids = _daily(user_repo, tmp_path, count=3)
    view = RepositoryView(user_repo)
    history = _path(view, b"history", b"main")
    listing = _names(view, history)
    assert len(listing) == len(ids) and all(b"_" in name for name in listing)
    assert b"by-date" not in listing
    by_date = view.lookup(history, b"by-date").ino
    assert _names(view, by_date) == [] and view.volatile_dir(by_date)
    # a history entry's name is DATE_ID: it is never 'by-date', and by-date never one of them
    entry = view.lookup(history, listing[0]).ino
    assert _commit_of(view, entry) == ids[-1].hex()


@pytest.mark.parametrize(
    ("name", "says"),
    [
        (b"2026-10-31", "the earliest in its history is"),
        (b"someday", "not a date"),
        (b"2026-02-30", "day is out of range"),
        (b"1793534400", "write seconds since the epoch as @1793534400"),
        (b"x" * 255, "longer than 64 characters"),
        (b"\xff\xfe", "not a date"),
    ],
)
def test_a_bad_or_too_early_date_is_not_found(
    user_repo: Repository, tmp_path: Path, name: bytes, says: str
) -> None:
    _daily(user_repo, tmp_path, count=2)
    view = RepositoryView(user_repo)
    by_date = _path(view, b"history", b"main", b"by-date")
    with pytest.raises(PathNotFoundError, match=says):
        view.lookup(by_date, name)


def test_by_date_of_a_nested_ref_and_a_deleted_one(user_repo: Repository, tmp_path: Path) -> None:
    ids = _daily(user_repo, tmp_path, "os/x86_64/stable", count=2)
    view = RepositoryView(user_repo)
    by_date = _path(view, b"history", b"os", b"x86_64", b"stable", b"by-date")
    assert _commit_of(view, view.lookup(by_date, b"2026-11-01T18:00").ino) == ids[0].hex()
    user_repo.delete_ref("os/x86_64/stable")
    with pytest.raises(PathNotFoundError):
        view.lookup(by_date, b"2026-11-01T18:00")


def test_by_date_through_a_real_mount(user_repo: Repository, tmp_path: Path, mount: Mounts) -> None:
    ids = _daily(user_repo, tmp_path)
    mnt = mount.background(user_repo.path)
    by_date = mnt / "history" / "main" / "by-date"
    assert (by_date / "2026-11-03" / "version").read_text() == "1"
    assert (by_date / "2026-11-03T12:00:00" / "version").read_text() == "2"
    assert (by_date / "2026-11-03T14:00:00+02:00" / "version").read_text() == "2"
    assert os.getxattr(by_date / "2030-01-01", "user.sapwood.commit") == ids[4].hex().encode()
    assert (by_date / "3 days ago").is_dir()  # a date with spaces is a file name too
    assert os.listdir(by_date) == []
    listing = os.listdir(mnt / "history" / "main")
    assert len(listing) == 5 and "by-date" not in listing
    for name in ("2026-10-01", "not-a-date", "2026-13-01"):
        with pytest.raises(FileNotFoundError):
            os.stat(by_date / name)
    with pytest.raises(OSError) as info:
        (by_date / "2026-11-03" / "version").write_text("x")
    assert info.value.errno in (errno.EROFS, errno.EACCES)


def test_by_date_follows_a_moving_ref(user_repo: Repository, tmp_path: Path, mount: Mounts) -> None:
    _daily(user_repo, tmp_path, count=2)
    mnt = mount.background(user_repo.path)
    now = mnt / "history" / "main" / "by-date" / "now"
    assert (now / "version").read_text() == "1"
    source = tmp_path / "src-main"
    (source / "version").write_text("new")
    result = run("commit", "-b", "main", source, repo=user_repo.path, text=True)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while (now / "version").read_text() != "new":  # the kernel keeps a lookup for a second
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_by_date_on_the_shared_history(history_tree: HistoryTree, mount: Mounts) -> None:
    mnt = mount.background(history_tree.repo_path)
    by_date = mnt / "history" / "os" / "main" / "by-date"
    for commit in history_tree.commits:
        day = time.strftime("%Y-%m-%d", time.gmtime(commit.timestamp))
        for name in (day, f"{day}T23:59:59", f"@{commit.timestamp}"):
            shown = os.getxattr(by_date / name, "user.sapwood.commit").decode()
            assert shown == commit.commit_id, name
    for commit in history_tree.commits[::5]:  # content as the tree on disk held it
        day = time.strftime("%Y-%m-%dT12:00", time.gmtime(commit.timestamp))
        kind, *_, digest, _ = commit.manifest[SSHD]
        assert kind == "file"
        assert hashlib.sha256((by_date / day / SSHD.lstrip("/")).read_bytes()).hexdigest() == digest
    with pytest.raises(FileNotFoundError):
        os.stat(by_date / "2025-12-31T23:59:59")


def test_by_date_reads_each_commit_once(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every lookup walked the history from the head again (74 ms a lookup at 5,000
    commits, on the daemon's request path): the walk is kept per head and scanned."""
    ids = _daily(user_repo, tmp_path, count=20)
    view = RepositoryView(user_repo)
    by_date = _path(view, b"history", b"main", b"by-date")
    reads = record_calls(monkeypatch, user_repo, "read_commit")
    for _ in range(5):
        with pytest.raises(PathNotFoundError, match="the earliest in its history is"):
            view.lookup(by_date, b"2026-10-31")
        assert _commit_of(view, view.lookup(by_date, b"2026-11-05T12:00").ino) == ids[4].hex()
    assert reads.count(ids[0]) == 1  # the oldest, read only by the walk: was once a lookup
