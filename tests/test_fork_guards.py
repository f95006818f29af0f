"""The index across fork (store/index_env.py, SharedEnv._mark_inherited; store/index.py,
Index.reader): a forked child never ends what it inherited of its parent's index, the
environment or a read transaction begun before the fork (either would clear the
parent's reader slots in lock.mdb, and writers would then reuse pages the parent's open
snapshots read: attack18 3), and ends what it opened itself. One count per environment,
raised by an os.register_at_fork hook in the child, holds the rule; a snapshot no
longer asks the kernel for the process's id."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import RepoMode, Repository
from tests.helpers import commit_dir

ROOT = Path(__file__).resolve().parents[1]

# The parent fills the refs table, holds a snapshot across the fork, lets the child do
# what argv[2] says, then rewrites the table six times: pages no live reader protects
# are reused, so a parent's snapshot whose reader slot the child cleared reads changed
# refs (attack18 3's way of seeing it).
_SCRIPT = r"""
import gc, multiprocessing, os, sys, warnings
warnings.simplefilter("ignore", ResourceWarning)
from pathlib import Path
from store import RepoMode, Repository
from store.index_env import SharedEnv
from tests.helpers import raw_index
path, mode = Path(sys.argv[1]), sys.argv[2]
repo = Repository.open(path)
main = repo.refs()["main"]
with raw_index(path) as (txn, dbs):
    for n in range(400):
        txn.put(b"r%04d" % n, bytes(main), db=dbs["refs"])
cm = repo.snapshot()
snap = cm.__enter__()
before = snap.refs()


def let_go():
    cm.__exit__(None, None, None)  # ended, not merely dropped
    repo.close()


def own_repository():
    # one the child opens itself: its own to end, and ended for real
    fresh = Repository.init(path.parent / f"fresh-{os.getpid()}", RepoMode.ARCHIVE)
    shared = fresh.index._shared
    with fresh.snapshot() as own:
        assert own.refs() == {}
    fresh.close()
    assert shared.forks == 0 and shared.key not in SharedEnv._open
    try:
        shared.env.info()
    except Exception:
        return
    raise AssertionError("the child's own environment was left open")


def in_grandchild():
    assert {shared.forks for shared in SharedEnv._open.values()} == {2}
    let_go()
    sys.exit(0)


if mode == "grandchild":
    pid = os.fork()
    if pid == 0:
        assert {shared.forks for shared in SharedEnv._open.values()} == {1}
        inner = os.fork()
        if inner == 0:
            in_grandchild()
        _, status = os.waitpid(inner, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        own_repository()
        let_go()
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
else:
    def target():
        own_repository()
        let_go()
    child = multiprocessing.get_context("fork").Process(target=target)
    child.start()
    child.join()
    assert child.exitcode == 0, child.exitcode
assert {shared.forks for shared in SharedEnv._open.values()} == {0}
for round in range(6):
    with raw_index(path) as (txn, dbs):
        for n in range(400):
            key = b"r%04d" % n
            if (n + round) % 2:
                txn.delete(key, db=dbs["refs"])
            else:
                txn.put(key, bytes(main), db=dbs["refs"])
after = snap.refs()
print("unchanged" if after == before else f"changed: {len(before)} refs, then {len(after)}")
cm.__exit__(None, None, None)
repo.close()
"""


@pytest.fixture(autouse=True)
def _resource_warnings_quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield


def _repo(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_bytes(b"a" * 5000)
    with Repository.init(tmp_path / "repo", RepoMode.ARCHIVE) as repo:
        commit_dir(repo, source)
    return tmp_path / "repo"


@pytest.mark.parametrize("mode", ["grandchild", "multiprocessing"])
def test_children_end_only_what_they_opened(tmp_path: Path, mode: str) -> None:
    """A child and a grandchild (os.fork, each ending through the interpreter's exit),
    or a multiprocessing child (the fork method), end their copy of the parent's
    snapshot and close their copy of its repository: the parent's snapshot reads the
    same refs after six rewrites. A repository the child opens itself is closed for
    real (its environment gone), its snapshot ended."""
    path = _repo(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(path), mode],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "unchanged", done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr


def test_a_snapshot_asks_no_process_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fork guard is a count the fork hook raises, not an os.getpid() (a system
    call) at each snapshot's start and end (note10: the reader's getpid per snapshot)."""
    path = _repo(tmp_path)
    asked: list[int] = []
    real_getpid = os.getpid

    def counted() -> int:
        asked.append(1)
        return real_getpid()

    with Repository.open(path) as repo:
        monkeypatch.setattr(os, "getpid", counted)
        for _ in range(3):
            with repo.snapshot() as snap:
                assert "main" in snap.refs()
        monkeypatch.undo()
    assert asked == []
