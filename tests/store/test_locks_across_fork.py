"""The repository's locks across fork (store/locking.py): a forked child that unwinds
through a lock's block lets go of nothing of its parent's (R17-3: its unlock released
the parent's shared lock, and a prune could take the exclusive one beside a live
writer); the parent's own unlock still frees the lock however long the child lives
(attack21 9)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_CHILD_UNWINDS = r"""
import fcntl, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from store.locking import repo_lock
d = Path(sys.argv[1])
def exclusive_free():
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
with repo_lock(d, exclusive=False):
    pid = os.fork()
    if pid == 0:
        sys.exit(0)  # the child unwinds through the with: its finally runs
    os.waitpid(pid, 0)
    print("held" if not exclusive_free() else "let go by the child")
"""


def test_a_child_unwinding_through_the_lock_leaves_the_parents_held(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD_UNWINDS, str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "held", done.stdout + done.stderr


def test_the_lock_is_free_once_its_holder_left_it_though_a_child_lives(tmp_path: Path) -> None:
    from store.locking import repo_lock

    read_end, write_end = os.pipe()
    with repo_lock(tmp_path, exclusive=False):
        pid = os.fork()
        if pid == 0:  # a worker that lives on, holding a copy of the lock's fd
            os.close(write_end)
            os.read(read_end, 1)
            os._exit(0)
    try:
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while still held
        finally:
            os.close(fd)
    finally:
        os.close(write_end)
        os.close(read_end)
        os.waitpid(pid, 0)


_CHILD_USES_THE_PARENTS = r"""
import os, sys, warnings
warnings.simplefilter("ignore", ResourceWarning)
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from store import RepoMode, Repository
from store.errors import UsageError
from tests.helpers import commit_dir
base = Path(sys.argv[1]); src = base / "src"; src.mkdir(); (src / "a").write_bytes(b"a" * 5000)
with Repository.init(base / "repo", RepoMode.ARCHIVE) as r:
    commit_dir(r, src)
repo = Repository.open(base / "repo")
scope = repo.snapshot(); snap = scope.__enter__(); before = snap.refs()
pid = os.fork()
if pid == 0:
    said = []
    for step in (repo.refresh, repo.close, lambda: Repository.open(base / "repo")):
        try:
            step()
        except UsageError as exc:
            said.append(str(exc))
    ok = len(said) == 2 and all("forked" in line for line in said)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert snap.refs() == before
scope.__exit__(None, None, None)
repo.close()
print("ok")
"""


def test_a_child_is_refused_a_refresh_and_a_reopen_of_its_parents_repository(
    tmp_path: Path,
) -> None:
    """In a forked child, refresh() (a remap: it closed the parent's environment, and
    the parent's open snapshot lost its pages, R17-11) and, once its inherited copy is
    closed, a re-open (py-lmdb's "already open" blamed bind mounts, R17-14) are refused
    with one UsageError that says the fork; the parent's snapshot reads as before."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD_USES_THE_PARENTS, str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
