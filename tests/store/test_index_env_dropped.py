"""Repositories dropped without close() (store/index_env.py, store/index.py's finalizer):
each open index maps 1 TiB of address space (MAP_SIZE) until its last user gives it
back, and a process has 128 TiB; ~127 dropped repositories used to fill it, and every
later open failed (ENOMEM)."""

from __future__ import annotations

import gc
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import FileHeader, RepoMode, Repository
from store.index_env import SharedEnv
from tests.helpers import SAPWOOD

REG = 0o100644
ROOT = Path(__file__).resolve().parents[2]
DROPPED = 300  # more than the ~127 indexes the address space holds


def _copies(tmp_path: Path, count: int) -> list[Path]:
    """``count`` repositories, each an index of its own (LMDB knows one by its data
    file's inode): copies of one empty archive repository's config and index, which
    is all that opening reads (an init each would take ~60 ms under load)."""
    original = tmp_path / "original"
    Repository.init(original, RepoMode.ARCHIVE).close()
    copies = []
    for number in range(count):
        copy = tmp_path / f"r{number}"
        (copy / "index").mkdir(parents=True)
        shutil.copyfile(original / "config", copy / "config")
        shutil.copyfile(original / "index" / "data.mdb", copy / "index" / "data.mdb")
        copies.append(copy)
    return copies


def _open_under(tmp_path: Path) -> list[str]:
    """The index environments still open under ``tmp_path``."""
    prefix = os.path.realpath(tmp_path) + os.sep
    return [key for key in SharedEnv._open if key.startswith(prefix)]


@pytest.fixture(autouse=True)
def _resource_warnings_quiet() -> Iterator[None]:
    """The finalizer's ResourceWarnings are expected here (one test checks one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield


def test_dropped_repositories_give_back_their_address_space(tmp_path: Path) -> None:
    """300 repositories made and dropped unclosed in one process, then one more: it
    opens, and none of the 300 is still open (failed with ENOMEM at about 127)."""
    for copy in _copies(tmp_path, DROPPED):
        assert Repository.open(copy).refs() == {}  # dropped at once
    with Repository.init(tmp_path / "last", RepoMode.ARCHIVE) as last:
        with last.transaction() as txn:
            txn.write_file(FileHeader(0, 0, REG), b"written")
        assert _open_under(tmp_path) == [os.path.realpath(tmp_path / "last" / "index")]
    assert _open_under(tmp_path) == []


def test_a_dropped_repository_says_so_with_a_resource_warning(tmp_path: Path) -> None:
    """As an unclosed file does; a closed one says nothing. The words say what was
    done (its share given back: the environment closes only with its last share, and
    never in a forked child), and the warning names the finalizer's own line, not
    weakref's machinery (review13 I2)."""
    Repository.init(tmp_path / "closed", RepoMode.ARCHIVE).close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        Repository.open(tmp_path / "closed").close()
        Repository.open(tmp_path / "closed")
    assert [str(w.message) for w in caught] == [
        f"a sapwood repository was not closed (index {tmp_path / 'closed' / 'index'});"
        " its share of the index given back"
    ]
    assert Path(caught[0].filename).parts[-2:] == ("store", "index.py")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="fills x86-64's 128 TiB")
def test_repositories_dropped_in_reference_cycles_are_collected_when_space_runs_out(
    tmp_path: Path,
) -> None:
    """A repository in a reference cycle is freed only by a collection, which may not
    come before the address space is full: the open that finds it full collects and
    tries again."""
    gc.disable()
    try:
        copies = _copies(tmp_path, 140)
        for copy in copies:
            repository = Repository.open(copy)
            repository.cycle = repository  # type: ignore[attr-defined]
        del repository
        assert len(_open_under(tmp_path)) < len(copies)  # a full space made a collection
        with Repository.init(tmp_path / "last", RepoMode.ARCHIVE) as last:
            assert last.refs() == {}
    finally:
        gc.enable()
    gc.collect()  # those dropped after the collection
    assert _open_under(tmp_path) == []


def test_a_repository_still_referenced_is_not_closed_under_its_user(tmp_path: Path) -> None:
    """Dropping one Repository of a path gives back its share only: another of the
    same path (one environment per path and process) stays usable; so does one only
    a snapshot's block or a thread's arguments still refer to."""
    Repository.init(tmp_path / "repo", RepoMode.ARCHIVE).close()
    kept = Repository.open(tmp_path / "repo")
    Repository.open(tmp_path / "repo")  # dropped
    gc.collect()
    with kept.transaction() as txn:
        file_id = txn.write_file(FileHeader(0, 0, REG), b"kept")
    with Repository.open(tmp_path / "repo").snapshot() as snap:
        gc.collect()
        assert snap.has_object(file_id)
    kept.close()

    go, found = threading.Event(), []

    def read(repository: Repository) -> None:
        go.wait()
        found.append(repository.has_object(file_id))

    reader = threading.Thread(target=read, args=(Repository.open(tmp_path / "repo"),))
    reader.start()
    gc.collect()
    assert _open_under(tmp_path) != []
    go.set()
    reader.join()
    assert found == [True]
    del reader
    gc.collect()
    assert _open_under(tmp_path) == []


def test_a_finalizer_that_finds_the_lock_taken_leaves_its_share_to_the_next_open(
    tmp_path: Path,
) -> None:
    """A finalizer runs in whichever thread drops the last reference, which may hold
    SharedEnv's lock (a collection during an open): it never waits for the lock, and
    the next open or close gives its share back."""
    Repository.init(tmp_path / "dropped", RepoMode.ARCHIVE).close()
    Repository.init(tmp_path / "other", RepoMode.ARCHIVE).close()
    dropped = Repository.open(tmp_path / "dropped")
    with SharedEnv._lock:
        del dropped  # its finalizer runs now, with the lock taken
        assert len(_open_under(tmp_path)) == 1
        assert len(SharedEnv._dropped) == 1
    with Repository.open(tmp_path / "other"):
        assert _open_under(tmp_path) == [os.path.realpath(tmp_path / "other" / "index")]


def test_threads_opening_and_dropping_repositories_leave_none_open(tmp_path: Path) -> None:
    """Eight threads open, read and drop repositories of four paths at once (shares
    given back by finalizers in every thread, some while another holds the lock)."""
    paths = [tmp_path / f"r{number}" for number in range(4)]
    for path in paths:
        Repository.init(path, RepoMode.ARCHIVE).close()
    errors: list[BaseException] = []

    def churn(start: int) -> None:
        try:
            for turn in range(50):
                repository = Repository.open(paths[(start + turn) % len(paths)])
                assert repository.refs() == {}
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    Repository.open(paths[0]).close()  # gives back any share queued meanwhile
    assert _open_under(tmp_path) == []
    assert not SharedEnv._dropped


def _limited_address_space() -> None:
    """In the child: 4 GiB of address space, far less than an index's 1 TiB map."""
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def test_a_full_address_space_is_not_called_a_damaged_index(tmp_path: Path) -> None:
    """review13 M2: the index is intact, only this process cannot map it: its own
    error and words, exit 1, never exit 3 (rebuild-index advice for a healthy index)."""
    Repository.init(tmp_path / "repo", RepoMode.BARE_USER).close()
    result = subprocess.run(
        [*SAPWOOD, "--repo", str(tmp_path / "repo"), "refs"],
        capture_output=True,
        text=True,
        preexec_fn=_limited_address_space,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "address space is full" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "damaged" not in result.stderr


def test_a_remap_that_cannot_map_again_raises_the_library_error(tmp_path: Path) -> None:
    """review13 M1: Repository.refresh's remap met a full address space as a private
    exception outside store.errors."""
    Repository.init(tmp_path / "repo", RepoMode.BARE_USER).close()
    script = (
        "import resource, sys\n"
        "from store import Repository, AddressSpaceError\n"
        f"repo = Repository.open({str(tmp_path / 'repo')!r})\n"
        "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
        "try:\n"
        "    repo.refresh()\n"
        "except AddressSpaceError as exc:\n"
        "    print('raised', exc.needed)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == f"raised {1 << 40}", result.stderr


_OPENS_WHEN_COLLECTED = r"""
import gc, resource, sys, warnings
warnings.simplefilter("ignore", ResourceWarning)
from store import AddressSpaceError, Repository
path = sys.argv[1]
seen = []
class OpensWhenCollected:
    def __del__(self):
        try:
            Repository.open(path).close()
            seen.append("opened")
        except AddressSpaceError:
            seen.append("full")
gc.disable()
cycle = OpensWhenCollected()
cycle.cycle = cycle
del cycle
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
try:
    Repository.open(path)
except AddressSpaceError:
    print("full; collected:", *seen)
"""


def test_the_collection_of_a_full_address_space_runs_outside_the_lock(tmp_path: Path) -> None:
    """review13 I3: an open that finds the address space full collects, and whatever
    the collection finalizes may open a repository itself. The collection ran under
    SharedEnv's plain Lock, so such a ``__del__`` waited for a lock its own thread
    held: the process hung. Now it collects outside the lock: the inner open is
    refused as the outer one is, and both end."""
    Repository.init(tmp_path / "repo", RepoMode.BARE_USER).close()
    result = subprocess.run(
        [sys.executable, "-c", _OPENS_WHEN_COLLECTED, str(tmp_path / "repo")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.stdout.strip() == "full; collected: full", result.stderr
