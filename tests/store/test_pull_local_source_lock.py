"""pull-local holds its source's lock shared while it reads the source's objects, as a
writer holds its own: a prune of the source (exclusive) cannot remove an object the
pull is about to read. It waits for that lock at most SOURCE_LOCK_WAIT seconds: the
source may be another user's repository, whose owner can hold it exclusively for ever."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import store.pull.local
from sapwood.cli.main import main
from store import RepoBusyError, RepoMode, Repository
from store.fsck import fsck
from store.pull import pull_local
from tests.helpers import commit_files, read_commit_tree

FILES = {f"d{n}/f{k}": os.urandom(500 + k) for n in range(2) for k in range(4)}


def _source(tmp_path: Path) -> Path:
    with Repository.init(tmp_path / "src", RepoMode.BARE_USER) as source:
        commit_files(source, tmp_path / "tree", FILES, branch="os")
        return source.path


def _held_exclusively(path: Path) -> int:
    """A descriptor holding ``path``'s repository lock exclusively, as a prune does."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_source_locked_past_the_wait_is_refused_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _source(tmp_path)
    monkeypatch.setattr(store.pull.local, "SOURCE_LOCK_WAIT", 0.3)
    fd = _held_exclusively(source)
    try:
        with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
            started = time.monotonic()
            with pytest.raises(RepoBusyError, match="locked by another process") as raised:
                pull_local(dest, source, ["os"])
            assert time.monotonic() - started < 10  # gave up, did not hang
            assert raised.value.path == str(source)
            assert dest.refs() == {}
            assert not list((dest.path / "objects").rglob("*.file"))
    finally:
        os.close(fd)


def test_the_command_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _source(tmp_path)
    Repository.init(tmp_path / "dest", RepoMode.BARE_USER).close()
    monkeypatch.setattr(store.pull.local, "SOURCE_LOCK_WAIT", 0.2)
    fd = _held_exclusively(source)
    try:
        code = main(["--repo", str(tmp_path / "dest"), "pull-local", str(source), "os"])
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines() == [
        f"sapwood: error: {source}: the repository is locked by another process (a prune "
        "or a repair) for more than 0.2 s"
    ]


def test_a_pull_waits_for_a_lock_let_go_within_the_wait(tmp_path: Path) -> None:
    """The pull ends after the prune holding the source's lock let it go (measured from
    the release itself: a fixed delay counted from before the destination was made
    failed once under load, the destination's init having taken part of it)."""
    source = _source(tmp_path)
    fd = _held_exclusively(source)
    released: list[float] = []

    def prune_ends() -> None:
        released.append(time.monotonic())
        os.close(fd)

    with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
        threading.Timer(0.4, prune_ends).start()
        report = pull_local(dest, source, ["os"])
        ended = time.monotonic()
        assert released and ended >= released[0], "the pull did not wait for the lock"
        assert report.content_fetched > 0 and fsck(dest).clean
    assert read_commit_tree(tmp_path / "dest", "os") == read_commit_tree(source, "os")


def test_a_prune_of_the_source_waits_for_the_pull(tmp_path: Path) -> None:
    """While pull-local reads, the source's lock is held shared: an exclusive lock (a
    prune's) is not granted until it ends."""
    source = _source(tmp_path)
    probe = (
        "import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    print('free')\n"
        "except BlockingIOError:\n    print('held')\n"
    )
    seen: list[str] = []
    real_run = store.pull.local._LocalPull.run

    def run_and_look(job: store.pull.local._LocalPull, refs: object) -> object:
        look = [sys.executable, "-c", probe, str(source)]
        seen.append(subprocess.run(look, capture_output=True, text=True).stdout.strip())
        return real_run(job, refs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store.pull.local._LocalPull, "run", run_and_look)
        with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
            pull_local(dest, source, ["os"])
    assert seen == ["held"]
    after = subprocess.run([sys.executable, "-c", probe, str(source)], capture_output=True)
    assert after.stdout.decode().strip() == "free"  # let go at the end
