"""Opening the index's LMDB environment: one per path and process, shared by every
Index of the process, and checked before use (a missing, empty, truncated or symlinked
data file is an IndexDamagedError, never a crash inside LMDB)."""

from __future__ import annotations

import contextlib
import enum
import gc
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import lmdb

from store.errors import AddressSpaceError, IndexDamagedError, UsageError
from store.mapped_pages import madvise_dontneed, mapped_ranges

MAP_SIZE = 1 << 40  # address space only; the file grows as data is written
_DATABASES = ("objects", "commits", "refs", "partial", "statcache")
_OPTIONAL_DATABASES = ("commitmeta",)  # absent from older indexes until first written
_MIN_DATA_BYTES = 2 * 4096  # LMDB's two meta pages
COUNT_PER_LOOK = 256  # point reads or rows between two looks at what is mapped
MAPPED_BUDGET = 64 << 20  # file-backed memory mapped past the baseline before a release


class PageBudget:
    """Holds the pages of an index's map that this process keeps resident to a budget.

    A point read faults in a leaf page at random (and the branch pages above it), and
    a page once read stays in the resident set until released: a checkout or
    re-commit of a million files read every page of a 480 MiB index (504 and 593 MiB
    resident, issue 15) although the explicit releases of the long walks came every
    32,768 files; the commit point's write transaction, checking a million required
    ids and putting a hundred thousand trees, held 357 MiB of it (prune's removal of a
    million-file tree's directories, 420 MiB). So IndexReader's point reads and the
    commit point's rows are counted here (:meth:`note`), and every COUNT_PER_LOOK
    (:meth:`look`) the pages are let go of if the file-backed memory this process
    maps (/proc/self/statm, opened anew: an fd kept open would read the parent's after
    a fork; about 10 us) has grown MAPPED_BUDGET past the baseline.

    The baseline is what was mapped right after the last release (the libraries'
    pages, other files', other indexes'), lowered to what is mapped whenever that is
    less: kept from the first release instead, file-backed memory mapped later kept
    the process past the budget for good and every look released an index that fits
    it (review10). The mount daemon holds a PageBudget of its own, with its own budget
    and the bytes it holds besides (mountd/mapped.py): one rule, two budgets. An
    index that fits the budget (about 140,000 files at the
    million-file run's 480 bytes a file) is never released; a larger one is held to
    about 100 MiB (the first 256 reads after a release map about 37 MiB of a 408 MiB
    index: each fault maps up to 64 KiB, the kernel's fault-around, and the branch
    pages fault back too). A release is not free: 0.3-0.5 ms, and the pages read again fault back in
    (point reads of a 408 MiB index: 1.3 us each with every page mapped, 4-5 us held
    to the budget; review10). Threads share the count unlocked: a lost increment only
    delays a look, two looks at once release twice at worst.

    Inside the commit point's write transaction too: LMDB reads the pages it descends
    through from the map and copies those it changes into memory of its own, so
    dropping the read-only map's pages mid-transaction is safe (they fault back in
    from the page cache)."""

    def __init__(
        self,
        drop: Callable[[], None],
        budget: int | None = None,
        held: Callable[[], int] | None = None,
        resident: Callable[[], int] | None = None,
    ) -> None:
        """``drop`` lets the map's pages go (SharedEnv, under its map lock). The rest is
        for a caller with a budget of its own (the mount daemon, mountd/mapped.py):
        ``budget`` bytes instead of MAPPED_BUDGET; ``held``, bytes held elsewhere that
        count against it too (the daemon's decompressed archive objects); ``resident``,
        the file-backed resident bytes measured its own way."""
        self._drop = drop
        self._budget = budget
        self._held = held or _nothing_held
        self._resident = resident or _file_backed_resident
        self._count = 0
        self._baseline: int | None = None  # file-backed resident bytes after a release
        # off: point reads are not counted, the caller keeps a budget of its own (the
        # mount daemon: Repository.take_over_index_page_releases)
        self.counting_reads = True

    def note_reads(self, count: int = 1) -> None:
        """Count ``count`` point reads (IndexReader), unless the caller took the releases
        over: asked at each read, so that a snapshot opened before stops too."""
        if self.counting_reads:
            self.note(count)

    def note(self, count: int = 1) -> None:
        """Count ``count`` point reads or rows; look every COUNT_PER_LOOK."""
        self._count += count
        if self._count >= COUNT_PER_LOOK:
            self._count = 0
            self.look()

    def look(self) -> None:
        """Release the pages if the file-backed memory mapped grew MAPPED_BUDGET past
        the baseline; otherwise lower the baseline to it, should it be less (a
        baseline measured while something since unmapped was mapped would let the
        index grow by as much again)."""
        resident = self._resident()
        if self._baseline is None or resident + self._held() - self._baseline > self.budget:
            self.release()
        else:
            self._baseline = min(self._baseline, resident)

    def release(self) -> None:
        """Let the map's pages go now (Index.release_pages, or a look), and measure
        the baseline: what is mapped now is not the index's."""
        self._drop()
        self.measure()

    def measure(self) -> None:
        """Take what is mapped now as the baseline, releasing nothing (the daemon, once
        mounted: what it maps then is its libraries, none of the index)."""
        self._baseline = self._resident()

    @property
    def budget(self) -> int:
        """Bytes mapped (and held) past the baseline before a release."""
        return MAPPED_BUDGET if self._budget is None else self._budget

    @property
    def limit(self) -> int | None:
        """Mapped and held bytes past which a look releases (None until the first
        release or measure)."""
        return None if self._baseline is None else self._baseline + self.budget


class SharedEnv:
    """One LMDB environment per path and process: LMDB forbids opening one twice.

    Each Index holds one share (``users``); the last share given back closes the
    environment and unmaps its MAP_SIZE of address space. An Index collected without
    close() gives its share back through :meth:`release_dropped` (its finalizer),
    which never waits for a lock: a finalizer runs in whichever thread drops the last
    reference or triggers a collection, and that thread may be inside acquire or
    release here, holding the locks. A share it cannot give back at once is queued
    and given back by the next acquire or release (whoever holds the lock)."""

    _lock = threading.Lock()
    _open: ClassVar[dict[str, SharedEnv]] = {}
    _dropped: ClassVar[deque[SharedEnv]] = deque()  # shares of Indexes collected unclosed

    def __init__(self, key: str, access: Access) -> None:
        self.key = key
        self.users = 0
        self.access = access
        self._mapped: list[tuple[int, int]] | None = None
        # Held while the map's pages are let go of, and while the map is unmapped
        # (close, reopen): addresses kept from a map that is gone may hold anything by
        # then, the interpreter's heap too, which madvise(DONTNEED) would zero.
        self._map_lock = threading.Lock()
        self.pages = PageBudget(self._drop_mapped_pages)
        self.env, self.dbs = self._open_env()
        _OPENED_IN[key] = os.getpid()
        # Forks between the process that opened it and this one (_mark_inherited): not
        # 0 in a forked child, which never closes it; a read transaction of it whose
        # count changed since it began is the parent's (store/index.py, Index.reader)
        self.forks = 0
        self._identity = _file_identity(Path(key, "data.mdb"))
        if access is Access.CREATE:  # made now: a reopen (remap) must find it, never make one
            self.access = Access.READ_WRITE

    def _open_env(self) -> tuple[Any, dict[str, Any]]:
        access = self.access
        if access is not Access.CREATE:
            _check_data_file(Path(self.key))
        locked = access is not Access.READ_ONLY or _lock_file_writable(Path(self.key))
        try:
            env = lmdb.open(
                self.key,
                map_size=MAP_SIZE,
                max_dbs=len(_DATABASES) + len(_OPTIONAL_DATABASES),
                readonly=access is Access.READ_ONLY,
                lock=locked,
                max_readers=1024,
                subdir=True,
                create=access is Access.CREATE,
            )
        except lmdb.MemoryError as exc:
            raise _AddressSpaceFull(str(exc)) from None
        except lmdb.Error as exc:
            if "already open in this process" in str(exc):
                if os.getpid() != _OPENED_IN.get(self.key, os.getpid()):
                    raise _opened_before_fork(self.key) from None
                raise _open_elsewhere(self.key) from None
            raise IndexDamagedError(f"{self.key}: the index cannot be opened: {exc}") from None
        if locked:
            _clear_dead_readers(env)
        try:
            if access is not Access.CREATE:
                _check_not_truncated(env, Path(self.key))
            dbs = {
                name: env.open_db(name.encode(), create=access is Access.CREATE)
                for name in _DATABASES
            }
            dbs.update(_optional_dbs(env, access))
        except lmdb.NotFoundError:
            env.close()
            raise IndexDamagedError(f"{self.key}: the index lacks sapwood's tables") from None
        except (lmdb.Error, IndexDamagedError) as exc:
            env.close()
            if isinstance(exc, IndexDamagedError):
                raise
            raise IndexDamagedError(f"{self.key}: the index is damaged: {exc}") from None
        return env, dbs

    def reopen(self) -> None:
        with self._map_lock:
            self.env.close()
            self._mapped = []  # nothing to let go of, should the reopening fail
            try:
                self.env, self.dbs = self._open_env()
            except _AddressSpaceFull as exc:
                raise _address_space_error(self.key, exc) from None
            self._identity = _file_identity(Path(self.key, "data.mdb"))
            self._mapped = None

    def mapped_ranges(self) -> list[tuple[int, int]]:
        """Where this environment's data file is mapped (read once: /proc/self/maps of a
        Python process is long, 0.5 ms to parse; LMDB maps the file once, at open)."""
        if self._mapped is None:
            self._mapped = mapped_ranges(os.path.join(self.key, "data.mdb"), self._identity)
        return self._mapped

    def release_pages(self) -> None:
        """Drop the map's pages from this process's resident set (Index.release_pages)."""
        self.pages.release()

    def _drop_mapped_pages(self) -> None:
        """madvise(DONTNEED) the map; nothing once the environment is closed (a snapshot
        read after its repository was closed still counts its read: see _map_lock)."""
        with self._map_lock:
            for start, length in self.mapped_ranges():
                madvise_dontneed(start, length)

    @classmethod
    def acquire(cls, path: Path, access: Access) -> SharedEnv:
        """A share of the environment at ``path``, opened if none is. When the address
        space is full, once more after a collection: repositories dropped unclosed in
        reference cycles are collected only then, and their finalizers give back their
        maps. The collection runs outside the lock (review13 I3): a finalizer or
        ``__del__`` it runs may open or close a repository, which takes the lock, a
        plain Lock this thread would otherwise hold already."""
        key = os.path.realpath(path)
        try:
            return cls._share(key, access)
        except _AddressSpaceFull:
            gc.collect()
        try:
            return cls._share(key, access)
        except _AddressSpaceFull as exc:
            raise _address_space_error(key, exc) from None

    @classmethod
    def _share(cls, key: str, access: Access) -> SharedEnv:
        with cls._lock:
            cls._give_back_dropped()
            shared = cls._open.get(key)
            if shared is not None and shared.forks:
                raise _opened_before_fork(key)
            shared = shared or cls(key, access)
            cls._open[key] = shared
            shared.users += 1
            return shared

    def release(self) -> None:
        with self._lock:
            self._give_back(wait=True)
            self._give_back_dropped()

    def release_dropped(self) -> None:
        """Give back the share of an Index collected without close() (its finalizer):
        now if no thread holds the lock, else queued for the next acquire or release.
        Never waits (see the class's docstring)."""
        self._dropped.append(self)
        if self._lock.acquire(blocking=False):
            try:
                self._give_back_dropped()
            finally:
                self._lock.release()

    @classmethod
    def _give_back_dropped(cls) -> None:
        """Give back the queued shares (with the lock held). One whose environment
        would close while its map lock is held stays queued: the holder may be this
        very thread, letting the map's pages go when a collection came."""
        kept = []
        while cls._dropped:
            shared = cls._dropped.popleft()
            if not shared._give_back(wait=False):
                kept.append(shared)
        cls._dropped.extend(kept)

    def _give_back(self, wait: bool) -> bool:
        """One share given back (with the lock held); the last closes the environment.
        False, and nothing done, if that needs the map lock and ``wait`` is False and
        another holds it."""
        if self.users <= 0:  # nothing left: never expected (close() detaches the finalizer)
            return True
        if self.users == 1:
            if not self._map_lock.acquire(blocking=wait):
                return False
            try:
                if self._open.get(self.key) is self:
                    del self._open[self.key]
                self._mapped = []  # gone: never to be let go of again
                if not self.forks:  # a forked child leaves the parent's alone
                    self.env.close()
            finally:
                self._map_lock.release()
        self.users -= 1
        return True

    @classmethod
    def _mark_inherited(cls) -> None:
        """In a forked child (os.register_at_fork), every environment open at the fork
        is the parent's: LMDB forbids using one across fork, and ending anything of it
        here would end the parent's. Closing the environment clears the reader slots
        its opener holds in lock.mdb, the parent's; so does ending a read transaction
        begun before the fork (an abort, or its object's deallocation: attack18 3),
        and writers then reuse pages the parent's open snapshots still read. So the
        child gives back its shares without closing (:meth:`_give_back`), and its
        Index keeps the transactions begun before the fork instead of ending them
        (store/index.py, _INHERITED_READERS). One count, raised once per fork in the
        child, instead of comparing os.getpid() (a system call) at every close and
        every snapshot."""
        cls._lock = threading.Lock()  # held by the forking thread (_before_fork)
        for shared in {*cls._open.values(), *cls._dropped}:
            shared.forks += 1
            # copied in whatever state a thread of the parent's left it, a thread the
            # child does not have: the child's give-back must not wait for it
            shared._map_lock = threading.Lock()

    @classmethod
    def _before_fork(cls) -> None:
        """No fork while another thread shares or gives back an environment: the child
        would get the lock held by a thread it does not have, and its first open of any
        repository would wait for ever (attack21 5). Released in the parent after the
        fork; the child makes a new one (:meth:`_mark_inherited`)."""
        cls._lock.acquire()

    @classmethod
    def _after_fork_in_parent(cls) -> None:
        cls._lock.release()


os.register_at_fork(
    before=SharedEnv._before_fork,
    after_in_parent=SharedEnv._after_fork_in_parent,
    after_in_child=SharedEnv._mark_inherited,
)


def _address_space_error(key: str, exc: _AddressSpaceFull) -> AddressSpaceError:
    return AddressSpaceError(
        f"{key}: the index cannot be mapped: this process's address space is full"
        f" ({exc}; each open repository maps {MAP_SIZE >> 30} GiB of it until closed)",
        needed=MAP_SIZE,
    )


class _AddressSpaceFull(Exception):
    """LMDB could not map MAP_SIZE (ENOMEM): this process's address space is full,
    most likely of indexes still open (SharedEnv._new collects and tries again)."""


class Access(enum.Enum):
    """How an index is opened: created by init, read and written, or only read."""

    CREATE = "create"
    READ_WRITE = "read-write"
    READ_ONLY = "read-only"


def _optional_dbs(env: Any, access: Access) -> dict[str, Any]:
    """Sub-databases newer than the index format: made by a writer, absent (None) to a
    reader of an index made before them."""
    found: dict[str, Any] = {}
    for name in _OPTIONAL_DATABASES:
        try:
            found[name] = env.open_db(name.encode(), create=access is not Access.READ_ONLY)
        except lmdb.NotFoundError:
            found[name] = None
    return found


def _damaged(path: Path, what: str) -> IndexDamagedError:
    return IndexDamagedError(
        f"{path}: {what}; the repository cannot be used (see 'Damaged index' in "
        "docs/decisions.md: archive repositories can rebuild it with sapwood rebuild-index)"
    )


# The process that opened each index path: a forked child that gave its inherited share
# back and opens the path again is refused by py-lmdb ("already open in this process",
# the parent's environment never closed in the child): said as the fork it is (R17-14).
_OPENED_IN: dict[str, int] = {}


def _opened_before_fork(key: str) -> UsageError:
    """A forked child opening a repository its parent had open at the fork: the only
    environment this process may have on that file is the parent's (py-lmdb refuses a
    second), and LMDB forbids using it across fork: the child's snapshots would hold
    reader slots under the parent's pid, cleared when the parent closes or exits, and
    then read pages writers reuse (attack21 2: garbage or other commits' ids)."""
    return UsageError(
        f"{key}: this repository was open when the process forked, and the index cannot "
        "be used in the child: close it before forking, or start workers with spawn"
    )


def _open_elsewhere(key: str) -> UsageError:
    """py-lmdb refuses a second environment on one file in a process (found by device
    and inode): the same repository reached by another path, not a damaged index."""
    return UsageError(
        f"{key}: this index is already open in this process under another path (the same "
        "repository through a bind mount, or a copy made with hard links, whose index is "
        "the original's)"
    )


def _file_identity(data: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the data file just mapped: what finds its mapping once it is
    renamed or deleted (store/mapped_pages.py)."""
    try:
        st = os.stat(data)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _check_data_file(path: Path) -> None:
    """An existing index has a data file of at least LMDB's two meta pages, and neither
    it nor the lock file is a symlink: LMDB opens both read-write through one (creating,
    truncating and rewriting the lock file), so another user's repository could have a
    root process overwrite any file."""
    for name in ("data.mdb", "lock.mdb"):
        if os.path.islink(path / name):
            raise _damaged(path, f"index/{name} is a symlink")
    data = path / "data.mdb"
    try:
        size = os.stat(data).st_size
    except FileNotFoundError:
        raise _damaged(path, "the index is missing (no data.mdb)") from None
    except OSError as exc:
        raise _damaged(path, f"the index cannot be read: {exc.strerror}") from None
    if size < _MIN_DATA_BYTES:
        raise _damaged(path, f"the index is empty or truncated ({size} bytes)")


def _check_not_truncated(env: Any, path: Path) -> None:
    """Every page the index says it uses must be in the file: LMDB maps the file, and
    touching a page past its end kills the process with SIGBUS instead of an error."""
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = os.stat(path / "data.mdb").st_size
    if size < needed:
        raise _damaged(path, f"the index is truncated ({size} bytes of {needed})")


def _clear_dead_readers(env: Any) -> None:
    """Free the reader slots of processes that died reading (a commit killed during its
    scan holds a snapshot). LMDB clears its reader table only when a process opens the
    index with no other process holding it; while one does (a mount daemon), a dead
    slot stays, no page freed after its snapshot is ever reused, and every commit and
    prune grows the index for good. Checking costs a look at each slot's pid."""
    with contextlib.suppress(lmdb.Error):  # the table is LMDB's to keep; reads work anyway
        env.reader_check()


def _lock_file_writable(path: Path) -> bool:
    """Readers of LMDB register in lock.mdb; where they cannot write it (another user's
    repository, read-only media) they read without registering, as LMDB allows."""
    return os.access(path / "lock.mdb", os.R_OK | os.W_OK)


def _nothing_held() -> int:
    return 0


def _file_backed_resident() -> int:
    """Bytes of this process's resident set that are file-backed or shared (statm's
    third field), the index's mapped pages among them."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[2]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
