"""Archive objects from before zstd (SWZ1: one zlib stream, no frames), spooled.

Such an object cannot be read at random: it is decompressed once, verified as it goes,
into an unlinked temporary file in a private directory under TMPDIR, or /var/tmp if
unset (O_TMPFILE where the filesystem has it; not /tmp, often a tmpfs: RAM), and
served from there (mountd/sources.py keeps 64 of them, 4 GiB in all).

An object a few KiB compressed may claim terabytes, and spooling it would fill the
filesystem before failing, on every read. So one that TMPDIR's free space (less a
reserve) cannot hold is an error for that file, before any of it is decompressed; and
the spools under way share one account (attack18 2): the bytes each was promised and
has not written yet count against the free space of the next, so that together they
never take TMPDIR below its reserve (each checked alone, three hostile objects of
50 MiB read at once took a 96 MiB TMPDIR to 0 bytes free, ENOSPC for everyone).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable

from store import ObjectId, ObjectReadError, Repository

SPOOL_RESERVE = 64 << 20  # TMPDIR's space spools leave free (1/16 of a smaller one)
_CHUNK = 1 << 20
_DISK_TMP = "/var/tmp"  # where spools go when TMPDIR is unset (spool_parent)
_SPOOL_PREFIX = "sapwood-mount-"  # then the daemon's pid, "-" and a random part


class _Promise:
    """One spool under way: of which object, the bytes it claimed and those it has
    written so far."""

    def __init__(self, file_id: ObjectId, claimed: int) -> None:
        self.file_id = file_id
        self.claimed = claimed
        self.written = 0  # set by its thread after each write (read by others unlocked)
        self.allocated = False  # its room taken on the disk at once: counted by statvfs

    @property
    def outstanding(self) -> int:
        return 0 if self.allocated else max(0, self.claimed - self.written)

    @property
    def taken(self) -> int:
        """What it takes on the disk now (its room allocated, or what it wrote)."""
        return self.claimed if self.allocated else self.written


class Spooler:
    """Spools of SWZ1 objects in a directory of this daemon's, within TMPDIR's room.
    ``spool`` runs in worker threads (several at once)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._dir_lock = threading.Lock()
        self._closed = False  # an abandoned thread makes no spool directory after close
        self._account = threading.Lock()
        self._under_way: set[_Promise] = set()

    @property
    def directory(self) -> str | None:
        """The private directory, once a spool has made it."""
        return None if self._dir is None else self._dir.name

    @property
    def promised(self) -> int:
        """Bytes the spools under way claimed and have not written yet."""
        with self._account:
            return sum(promise.outstanding for promise in self._under_way)

    def spool(self, file_id: ObjectId, header: bytes, size: int, pace: Callable[[], None]) -> int:
        """An fd of an unlinked file holding the object's content, verified.

        Repository.open_recorded_file verifies as it streams (and refuses a stream that
        inflates beyond the recorded size), so reading it to the end either gives the
        object's bytes or raises; the file is gone with its fd in either case. It looks
        nothing up in the index: this runs in a worker thread.
        """
        where = self._private_dir()  # made when first needed (SWZ2 objects need none)
        promise = self._promise(file_id, size, where)
        try:
            with (
                self.repo.open_recorded_file(file_id, header, size) as stream,
                tempfile.TemporaryFile(dir=where, buffering=0) as spool,
            ):
                self._allocate(file_id, spool.fileno(), promise, where, pace)
                while chunk := stream.read(_CHUNK):
                    _write_all(spool.fileno(), chunk)
                    promise.written += len(chunk)
                    pace()
                return os.dup(spool.fileno())
        finally:
            with self._account:
                self._under_way.discard(promise)

    def close(self) -> None:
        """Remove the private directory; make none from now on."""
        with self._dir_lock:
            self._closed = True
            if self._dir is not None:
                self._dir.cleanup()
                self._dir = None

    def _promise(self, file_id: ObjectId, size: int, where: str) -> _Promise:
        """Refuse, before decompressing any of it, an object that TMPDIR's free space,
        less its reserve and less what the spools under way were promised and have not
        written yet, cannot hold; else promise it its bytes. mountd/sources.py's pool
        holds one object, however large, when nothing else fits: its byte budget does
        not bound this. What the others have written is counted (by them) after the
        free space shows it: never less than is promised."""
        with self._account:
            free, others, reserve = self._room(where)
            if size + others + reserve > free:
                raise ObjectReadError(
                    f"object {file_id.hex()}: its {size} bytes do not fit in {where} "
                    f"({free} bytes free, {others} promised to spools under way, "
                    f"{reserve} left free); set TMPDIR elsewhere"
                )
            promise = _Promise(file_id, size)
            self._under_way.add(promise)
            return promise

    def _allocate(
        self, file_id: ObjectId, fd: int, promise: _Promise, where: str, pace: Callable[[], None]
    ) -> None:
        """Take the spool's room on the disk before inflating into it (fallocate), so
        that other processes see it gone too: the account above is this daemon's, and
        two mounts spooling into one TMPDIR took it to 0 bytes free (attack20 4). In
        steps of a quarter of the reserve, the free space checked before each: two
        daemons allocating at once go at most a step or two into the reserve, where one
        allocation of the whole could take the last byte before failing. A spool whose
        next step does not fit is refused (its file, unlinked, goes with its room). A
        filesystem that cannot allocate ahead leaves the account alone, as before. Paced
        after each step as after each chunk written: a spool given up stops allocating
        (gigabytes on a tmpfs take a second), its room back the sooner."""
        step = 0
        offset = 0
        while offset < promise.claimed:
            with self._account:
                free, others, reserve = self._room(where)  # others: this one's rest too
            step = step or max(_CHUNK, reserve // 4)
            if free < reserve + others:
                raise _does_not_fit(file_id, promise.claimed, where, free, reserve)
            length = min(step, promise.claimed - offset)
            try:
                os.posix_fallocate(fd, offset, length)
            except OSError:
                self._after_a_failed_allocation(file_id, promise, where)
                return
            offset += length
            promise.written = offset  # allocated counts as written for the account
            pace()
        promise.allocated = True

    def _after_a_failed_allocation(self, file_id: ObjectId, promise: _Promise, where: str) -> None:
        """glibc emulates fallocate where the filesystem lacks it, so a failure is most
        often the room gone (another writer took it since the look, a quota): refused
        when the free space says so, as a step that does not fit (review16 R16-3: the
        spool went on inflating to 0 bytes free); else the filesystem cannot allocate
        ahead, and the account alone holds, as before (what was allocated is counted
        twice: on the safe side). No errno is told apart: the free space says which."""
        with self._account:
            free, others, reserve = self._room(where)
        if free < reserve + others:
            raise _does_not_fit(file_id, promise.claimed, where, free, reserve)
        promise.written = 0

    def fits(self, file_id: ObjectId, size: int, freed: int = 0) -> bool:
        """Whether a spool of ``size`` bytes of ``file_id`` would be promised its room
        now, or once ``freed`` more bytes were free (a look: mountd/sources.py drops the
        spools it keeps until one fits, attack20 2). A spool of the same object under
        way counts as room: it ends kept (and none is needed) or given up, its room back
        (mountd/preparing.py waits for that); each request of a file being spooled
        asks, and each found the spool's own room taken and dropped kept spools."""
        where = self.directory or spool_parent() or tempfile.gettempdir()
        try:
            with self._account:
                free, others, reserve = self._room(where)
                same = [promise for promise in self._under_way if promise.file_id == file_id]
                others -= sum(promise.outstanding for promise in same)
                freed += sum(promise.taken for promise in same)
        except OSError:  # no such TMPDIR: the spool itself says so, for that file
            return True
        return size + others + reserve <= free + freed

    def _room(self, where: str) -> tuple[int, int, int]:
        """TMPDIR's free bytes, those promised to spools under way and not written
        yet, and the reserve spools leave free. Called with the account's lock held."""
        others = sum(promise.outstanding for promise in self._under_way)
        st = os.statvfs(where)
        reserve = min(SPOOL_RESERVE, st.f_blocks * st.f_frsize // 16)
        return st.f_bavail * st.f_frsize, others, reserve

    def _private_dir(self) -> str:
        """A directory of this daemon's alone (mode 0700) for its temporary files, removed
        on close (or when the spooler is garbage collected). Refused after close: a
        thread an unmount abandoned would make one that nothing removes (the daemon
        ends with os._exit), left in /var/tmp (attack12 3)."""
        with self._dir_lock:  # worker threads spool
            if self._closed:
                raise ObjectReadError("the mount is closing: nothing is spooled any more")
            if self._dir is None or not os.path.isdir(self._dir.name):  # a cleaner
                parent = spool_parent()
                _remove_dead_daemons_dirs(parent)
                self._dir = tempfile.TemporaryDirectory(
                    prefix=f"{_SPOOL_PREFIX}{os.getpid()}-",
                    dir=parent,
                    ignore_cleanup_errors=True,
                )
            return self._dir.name


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def spool_parent() -> str | None:
    """Where spools go (review8 5): TMPDIR if set; else /var/tmp, a disk on every common
    system, where /tmp is often a tmpfs (Debian 13, Fedora, Arch), whose files are RAM
    counted in no budget of the daemon's and not in its RSS; else (None) Python's
    choice. A TMPDIR on a tmpfs is the user's choice: the reserve check bounds it."""
    chosen = os.environ.get("TMPDIR")
    if chosen:
        return chosen
    if os.path.isdir(_DISK_TMP) and os.access(_DISK_TMP, os.W_OK | os.X_OK):
        return _DISK_TMP
    return None


def _remove_dead_daemons_dirs(parent: str | None) -> None:
    """Remove the spool directories of this user's daemons that were killed (SIGKILL, a
    crash: nothing removed theirs), named by their pid: /var/tmp is not cleaned at boot
    (attack12 5). Their spools had no names; a live daemon whose directory this takes
    (one in another pid namespace) makes a new one at its next spool."""
    where = parent or tempfile.gettempdir()
    try:
        names = os.listdir(where)
    except OSError:
        return
    for name in names:
        pid, dash, _ = name.removeprefix(_SPOOL_PREFIX).partition("-")
        if not name.startswith(_SPOOL_PREFIX) or not dash or not pid.isdigit():
            continue
        path = os.path.join(where, name)
        try:
            found = os.lstat(path)
        except OSError:
            continue
        mine = found.st_uid == os.getuid() and stat.S_ISDIR(found.st_mode)
        if mine and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: alive
        return True
    return True


def _does_not_fit(
    file_id: ObjectId, size: int, where: str, free: int, reserve: int
) -> ObjectReadError:
    return ObjectReadError(
        f"object {file_id.hex()}: its {size} bytes do not fit in "
        f"{where} ({free} bytes free, {reserve} left free); set TMPDIR elsewhere"
    )
