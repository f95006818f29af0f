"""review22 (session 17): pull-local's lock on its source (98717ac), attacked.

A defect found and not fixed yet is an xfail(strict=True) test naming its finding in
/work/plan/review22.md; a guard that passes is a plain test."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from store import RepoBusyError, RepoMode, Repository
from store.pull import PullReport, pull_local
from tests.helpers import (
    IS_ROOT,
    commit_files,
    give_to_user,
    read_commit_tree,
    run_as_user,
    sapwood_argv,
    user_dir,
)

FILES = {f"d{n}/f{k}": os.urandom(300 + k) for n in range(2) for k in range(3)}
ROOT = Path(__file__).resolve().parents[2]


def _source(path: Path, tree: Path, branch: str = "os") -> Path:
    with Repository.init(path, RepoMode.BARE_USER) as source:
        commit_files(source, tree, FILES, branch=branch)
        return source.path


def _held(path: Path, operation: int) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, operation)
    return fd


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not IS_ROOT, reason="another user's repository needs root to make")
def test_a_searchable_but_unreadable_source_is_still_pulled(tmp_path: Path) -> None:
    home, theirs = user_dir(), Path(tempfile.mkdtemp(prefix="sapwood-r22-", dir="/tmp"))
    try:
        source = _source(theirs / "src", theirs / "tree")
        subprocess.run(["chmod", "-R", "a+rX", str(theirs)], check=True)
        os.chmod(source, 0o711)  # root's: others may enter it, not list it
        dest = home / "dest"
        give_to_user(home)
        made = run_as_user("--repo", dest, "init", "--mode", "bare-user")
        assert made.returncode == 0, made.stderr
        pulled = run_as_user("--repo", dest, "pull-local", source, "os")
        assert pulled.returncode == 0, pulled.stderr
        assert read_commit_tree(dest, "os") == read_commit_tree(source, "os")
    finally:
        subprocess.run(["rm", "-rf", str(home), str(theirs)], check=False)


def test_a_source_without_flock_is_still_pulled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _source(tmp_path / "src", tmp_path / "tree")
    real = fcntl.flock

    def no_locks_there(fd: int, operation: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}") == str(source):
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", no_locks_there)  # as store.locking calls it
    with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
        pull_local(dest, source, ["os"])
    assert read_commit_tree(tmp_path / "dest", "os") == read_commit_tree(source, "os")


_SELF_PULL = """
import sys
from pathlib import Path
from store import Repository
from store.pull import pull_local
with Repository.open(Path(sys.argv[1])) as repo:
    report = pull_local(repo, sys.argv[2], ["os"])
print(report.content_fetched)
"""


@pytest.mark.parametrize("how", ["same path", "symlink to it"])
def test_a_pull_from_itself_ends(tmp_path: Path, how: str) -> None:
    """The source's lock (shared) and the destination's transaction lock (shared) are two
    open files of one directory: no self-deadlock, nothing fetched."""
    repo = _source(tmp_path / "repo", tmp_path / "tree")
    source = repo
    if how == "symlink to it":
        source = tmp_path / "alias"
        source.symlink_to(repo)
    proc = subprocess.run(
        [sys.executable, "-c", _SELF_PULL, str(repo), str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"


def test_a_refused_wait_leaves_no_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _source(tmp_path / "src", tmp_path / "tree")
    monkeypatch.setattr("store.pull.local.SOURCE_LOCK_WAIT", 0.1)
    held = _held(source, fcntl.LOCK_EX)
    try:
        with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
            before = _open_fds()
            for _ in range(3):
                with pytest.raises(RepoBusyError):
                    pull_local(dest, source, ["os"])
            assert _open_fds() == before
    finally:
        os.close(held)
    # and the lock was let go each time: an exclusive one is granted now
    probe = _held(source, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(probe)


def test_ctrl_c_while_waiting_for_the_source_ends_at_once(tmp_path: Path) -> None:
    source = _source(tmp_path / "src", tmp_path / "tree")
    Repository.init(tmp_path / "dest", RepoMode.BARE_USER).close()
    held = _held(source, fcntl.LOCK_EX)
    try:
        child = subprocess.Popen(
            sapwood_argv("pull-local", source, "os", repo=tmp_path / "dest"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        # waiting for the lock: it polls flock() (LOCK_NB), sleeping between tries
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            fds = Path(f"/proc/{child.pid}/fd")
            try:
                opened = {os.readlink(fds / n) for n in os.listdir(fds)}
            except OSError:
                opened = set()
            if str(source) in opened:
                break
            time.sleep(0.05)
        time.sleep(1.5)  # past Repository.open: in the wait loop
        child.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, err = child.communicate(timeout=20)
        took = time.monotonic() - started
    finally:
        os.close(held)
    assert child.returncode == 130, err
    assert err.splitlines() == ["sapwood: interrupted"]
    assert took < 5
    with Repository.open(tmp_path / "dest") as dest:
        assert dest.refs() == {}


def test_opposite_pulls_with_prunes_waiting_on_both_end(tmp_path: Path) -> None:
    """R1 -> R2 and R2 -> R1 at once, each repository's prune already waiting for its
    exclusive lock: flock grants a shared lock beside a waiting exclusive one, so
    neither pull waits for a prune that waits for the other pull."""
    one = _source(tmp_path / "r1", tmp_path / "t1", branch="one")
    two = _source(tmp_path / "r2", tmp_path / "t2", branch="two")
    readers = [_held(one, fcntl.LOCK_SH), _held(two, fcntl.LOCK_SH)]  # the prunes wait
    prunes = [
        subprocess.Popen(sapwood_argv("prune", repo=r), cwd=ROOT, stderr=subprocess.PIPE)
        for r in (one, two)
    ]
    try:
        time.sleep(0.5)
        assert [p.poll() for p in prunes] == [None, None]  # waiting
        pulls = [
            subprocess.Popen(
                sapwood_argv("pull-local", src, ref, repo=dst),
                cwd=ROOT,
                stderr=subprocess.PIPE,
                text=True,
            )
            for src, dst, ref in ((one, two, "one"), (two, one, "two"))
        ]
        for pull in pulls:
            _, err = pull.communicate(timeout=60)
            assert pull.returncode == 0, err
    finally:
        for fd in readers:
            os.close(fd)
    for prune in prunes:
        _, said = prune.communicate(timeout=60)
        assert prune.returncode == 0, said
    assert read_commit_tree(two, "one") == read_commit_tree(one, "one")
    assert read_commit_tree(one, "two") == read_commit_tree(two, "two")


def test_a_prune_waiting_for_a_pull_local_of_its_repository_says_so(tmp_path: Path) -> None:
    import threading

    import store.pull.local as local
    from store.progress import TaskProgress
    from store.prune import prune

    source = _source(tmp_path / "src", tmp_path / "tree")
    reading, go_on = threading.Event(), threading.Event()
    real_run = local._LocalPull.run

    def paused(job: local._LocalPull, refs: Sequence[str]) -> PullReport:
        reading.set()  # the source's lock is held (shared) by now
        go_on.wait(30)
        return real_run(job, refs)

    phases: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local._LocalPull, "run", paused)
        with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
            puller = threading.Thread(target=pull_local, args=(dest, source, ["os"]))
            puller.start()
            try:
                assert reading.wait(30)
                with Repository.open(source) as src:

                    def told(progress: TaskProgress) -> None:
                        phases.append(progress.phase)

                    pruner = threading.Thread(target=prune, args=(src,), kwargs={"progress": told})
                    pruner.start()
                    time.sleep(1.0)
                    seen = list(phases)
                    go_on.set()
                    pruner.join(60)
                    assert not pruner.is_alive()
            finally:
                go_on.set()
                puller.join(60)
    assert any("waiting" in phase for phase in seen), seen


def test_a_pull_that_fails_midway_lets_go_of_the_source(tmp_path: Path) -> None:
    """An error inside the pull (no such ref) ends the source's lock with it: no
    descriptor left, an exclusive lock (a prune's) granted at once."""
    from store import RefNotFoundError

    source = _source(tmp_path / "src", tmp_path / "tree")
    with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
        before = _open_fds()
        with pytest.raises(RefNotFoundError):
            pull_local(dest, source, ["nope"])
        assert _open_fds() == before
    os.close(_held(source, fcntl.LOCK_EX | fcntl.LOCK_NB))
