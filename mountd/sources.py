"""Where a mounted file's bytes come from: verified objects, kept within bounds.

The kernel reads a file by inode (sapwood answers ENOSYS to open, so there are no file
handles; see mountd/fuse_ops.py). The first read of an object verifies it: wrong bytes
are never served, and a damaged object (corrupt, missing, or anything but a regular
file of the recorded size in its place: a FIFO, a symlink, a directory) is an error
for that file alone. Object files are opened by the store only (Repository.open_file_fd
and open_file: without following symlinks, without blocking).

What is kept is bounded by count and by bytes, whatever the objects' sizes:

- uncompressed modes: the open files of the 256 objects read last. An object verified
  once, and unchanged since (same inode number and ctime of its file), costs an open
  and a stat the next time. A small object is verified with one read, and the read
  that asked for it is served from those bytes. An open file survives a prune that
  unlinks its object.
- archive mode: objects up to 1 MiB are decompressed (and verified) into memory, 32 MiB
  of them in all, each weighed with what keeping it costs beyond its bytes (its id, the
  bytes object, the LRU's entry: about 300 bytes, so a million tiny files cannot take
  300 MB); the daemon gives them half its memory budget where that is less
  (mountd/mapped.py ``bound_view_memory``: 16 MiB by default). One that alone passes
  the budget (a budget under 2 MiB) is not kept: it serves the read that asked for it.
  A larger object is never held whole: it is verified once (inflated and hashed as it
  streams), where each 1 MiB frame starts noted on the way (store/framed.py), and a
  read then inflates the frames it covers, kept with the small objects until read to
  their end (a reader going through a file inflates each frame once). 256 such objects
  are kept open (an fd and 8 bytes a MiB each, 8 MiB of those in all: a hostile
  object of a terabyte of zeros takes 8 MiB); one evicted and read again is not
  verified again if its file is unchanged (same inode and ctime), only its frames
  located. However many readers at
  once, none decompresses more than a frame per read (the spools before: a reader whose
  spool was evicted decompressed the whole object again for its next read).
  An object from before zstd (SWZ1: one zlib stream, no frames) is decompressed once,
  verified as it goes, into an unlinked temporary file (mountd/spools.py: in TMPDIR or
  /var/tmp, within their free space, the spools under way together), and served from
  there; 64 of those are kept, 4 GiB in all, the least recently read going first.

Verifying a large object (hashing it, and inflating it in archive mode) takes seconds
for a file of gigabytes: ``preparation`` hands that part to the caller, which runs it in
a worker thread (mountd/preparing.py) while the daemon serves other requests, pacing it
between chunks. An object refused is refused at once the next time, while its file is
unchanged (same inode and ctime: mountd/refusals.py), not inflated (nor spooled) again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

from mountd.lru import Lru, RecentKeys
from mountd.refusals import Refusals
from mountd.spools import Spooler
from store import (
    FramedContent,
    ObjectId,
    ObjectReadError,
    Repository,
    require_content,
)

_OPEN_FILES = 256  # object files kept open (uncompressed modes)
_SMALL = 1 << 20  # up to this size: verified with one read, or decompressed into memory
_KEPT_BYTES = 32 << 20  # decompressed small archive objects and frames kept (hold_at_most)
_KEPT_ENTRY_COST = 320  # what one kept object costs beyond its bytes (measured: ~300)
_FRAMED = 256  # large archive objects kept open, their frames located (an fd each)
_FRAMED_BYTES = 8 << 20  # where their frames start, in all: 8 bytes a MiB (1 TiB of them)
_SPOOLS = 64  # large SWZ1 archive objects kept decompressed in temporary files (fds)
_SPOOL_BYTES = 4 << 30  # the disk those files take, in all
_SHOWN = 1 << 14  # which object the inodes read lately show
_VERIFIED = 1 << 16  # objects verified and unchanged since: about 100 bytes each
_CHUNK = 1 << 20

_Source = int | bytes | FramedContent
# Called by a preparation's work after each chunk (MiB) it verifies: it may block (the
# work waits for its turn) or raise (the work is given up). mountd/preparing.py.
Pace = Callable[[], None]


@dataclass(frozen=True)
class Preparation:
    """The slow part of making an object readable: verifying (hashing) a large object,
    or decompressing an SWZ1 one to a spool. ``work`` blocks and touches nothing the
    loop uses (it may run in a worker thread); ``finish``, given what it returned, keeps
    it (on the loop, or wherever the sources are used)."""

    file_id: ObjectId
    work: Callable[[Pace], object]
    finish: Callable[[object], None]
    size: int = 0  # the object's: what the work takes grows with it (mountd/preparing.py)

    def run(self) -> None:
        """Both steps, here and now."""
        self.finish(self.work(_unpaced))


class ObjectSources:
    """Verified sources of file objects: open files, decompressed bytes, located frames
    of archive objects, spooled files.

    Used from one thread; only a Preparation's ``work`` may run in another.
    """

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._compressed = repo.stores_compressed
        self._shown: Lru[int, ObjectId] = Lru(_SHOWN)
        self._files: Lru[ObjectId, int] = Lru(_OPEN_FILES, _OPEN_FILES, os.close)
        self._small: Lru[ObjectId | tuple[ObjectId, int], bytes] = Lru(
            _entries(_KEPT_BYTES), _KEPT_BYTES
        )
        self._framed: Lru[ObjectId, FramedContent] = Lru(
            _FRAMED, _FRAMED_BYTES, FramedContent.close
        )
        self._spools: Lru[ObjectId, int] = Lru(_SPOOLS, _SPOOL_BYTES, os.close)
        self._verified: RecentKeys[int] = RecentKeys(_VERIFIED)
        self._refused = Refusals()
        self._fresh: tuple[ObjectId, bytes] | None = None  # a small object just read whole
        self.spooler = Spooler(repo)

    def prepare(self, ino: int, file_id: ObjectId, header: bytes, size: int) -> None:
        """Make ``ino`` readable now (verifying its object), or raise why it is not."""
        slow = self.preparation(ino, file_id, header, size)
        if slow is not None:
            slow.run()

    def preparation(
        self, ino: int, file_id: ObjectId, header: bytes, size: int
    ) -> Preparation | None:
        """Make ``ino`` readable, or say what would take long doing so: a large object
        not kept (up to 1 MiB: made readable here, at once, or refused)."""
        self._shown.add(ino, file_id, 1)
        if self._kept(file_id) is not None:
            return None
        if size > _SMALL:
            return self._large(file_id, header, size)
        try:  # no context manager: this runs for every file's first read
            if self.repo.stores_compressed:
                content = self.repo.read_file(file_id)
                held = self._hold(file_id, content)  # else for the read that asked alone:
                self._fresh = None if held else (file_id, content)
            else:
                fd, key, whole = self._open_verified(file_id, header, size)
                self._keep_file(file_id, fd, key)
                self._fresh = None if whole is None else (file_id, whole)
        except OSError as exc:
            raise _read_error(file_id, exc) from exc
        return None

    def _large(self, file_id: ObjectId, header: bytes, size: int) -> Preparation:
        """What making a large object readable takes: in a worker thread, verifying it
        (and spooling an SWZ1 one); then, where the sources are used, keeping it."""
        if not self.repo.stores_compressed:

            def verify_file(pace: Pace) -> object:
                with _read_errors(file_id):
                    fd, key, _ = self._open_verified(file_id, header, size, pace)
                    return fd, key

            def keep_file(got: object) -> None:
                fd, key = cast(tuple[int, int], got)
                self._keep_file(file_id, fd, key)

            return Preparation(file_id, verify_file, keep_file, size)

        self._room_for_a_spool(file_id, size)

        def open_archive(pace: Pace) -> object:
            with _read_errors(file_id):
                return self._open_archive(file_id, header, size, pace)

        def keep_archive(got: object) -> None:
            self._keep_archive(file_id, cast(tuple[FramedContent, int] | int, got), size)

        return Preparation(file_id, open_archive, keep_archive, size)

    def read(self, ino: int, offset: int, size: int) -> bytes:
        """Bytes of a prepared inode."""
        file_id = self._shown.get(ino)
        if file_id is None:
            raise KeyError(ino)  # not prepared: the view prepares before it reads
        if self._fresh is not None and self._fresh[0] == file_id:
            return self._fresh[1][offset : offset + size]  # read whole to verify it
        source = self._kept(file_id)
        if source is None:
            raise KeyError(ino)  # not prepared: the view prepares before it reads
        if isinstance(source, bytes):
            return source[offset : offset + size]
        try:  # no context manager: this runs for every read
            if isinstance(source, FramedContent):
                return self._read_frames(source, offset, size)
            return os.pread(source, size, offset)
        except OSError as exc:
            raise _read_error(file_id, exc) from exc

    def hold_at_most(self, limit: int) -> None:
        """Keep decompressed objects and frames (archive mode) within ``limit`` bytes
        from now on, their cost in memory counted as ``held_bytes`` counts it; never
        more than _KEPT_BYTES, however large ``limit``: a budget raised to keep a large
        index mapped (page cache, which the kernel can reclaim) is no reason to hold
        more anonymous memory, which it cannot."""
        self._small.budget = min(limit, _KEPT_BYTES)
        self._small.count = _entries(self._small.budget)
        self._small.make_room(0)

    def held_bytes(self) -> int:
        """The memory the kept decompressed objects and frames take (archive mode; none
        otherwise: the other modes keep open files, and spools are files)."""
        return self._small.weight

    def is_open(self, ino: int) -> bool:
        file_id = self._shown.get(ino)
        return file_id is not None and self._kept(file_id) is not None

    def close(self) -> None:
        for pool in (self._files, self._small, self._framed, self._spools):
            pool.clear()
        self._fresh = None
        self.spooler.close()

    def _kept(self, file_id: ObjectId) -> _Source | None:
        if not self._compressed:  # open files only (asked at every read: no more looks)
            return self._files.get(file_id)
        found: _Source | None = self._small.get(file_id)
        if found is None:
            found = self._framed.get(file_id)
        if found is None:
            found = self._spools.get(file_id)
        return found

    def _hold(self, key: ObjectId | tuple[ObjectId, int], content: bytes) -> bool:
        """Keep decompressed bytes within the budget; False if they alone pass it (a
        budget under 1 MiB: review8 7): then they are not kept at all, rather than
        held beyond it (which made the index bound drop the index's pages at every
        look, none of them mapped)."""
        weight = len(content) + _KEPT_ENTRY_COST
        if weight > self._small.budget:
            return False
        self._small.add(key, content, weight)
        return True

    def _keep_file(self, file_id: ObjectId, fd: int, key: int) -> None:
        if not self._verified.seen(key):  # seen: now the most recent
            self._verified.add(key, True)
        self._files.add(file_id, fd, 1)

    # ----- archive objects -------------------------------------------------------------
    def _open_archive(
        self, file_id: ObjectId, header: bytes, size: int, pace: Pace
    ) -> tuple[FramedContent, int] | int:
        """A large archive object, verified: its frames located (SWZ2) and the key of
        its verified file, or an fd of its content spooled (SWZ1: no frames)."""
        framed = self.repo.open_framed_file(file_id, size)
        if framed is None:  # SWZ1: its file's key as it is now, to refuse it at once
            st = os.lstat(self.repo.object_path(file_id))  # (its spool opens it again)
            with self._refused.noted(hash((file_id, st.st_ino, st.st_ctime_ns)), file_id):
                return self.spooler.spool(file_id, header, size, pace)
        try:
            st = framed.stat()
            key = hash((file_id, st.st_ino, st.st_ctime_ns))
            if key in self._verified:  # a look only: another thread may add to it
                framed.locate()
            else:
                with self._refused.noted(key, file_id):
                    framed.verify(header, pace)
        except BaseException:
            framed.close()
            raise
        return framed, key

    def _room_for_a_spool(self, file_id: ObjectId, size: int) -> None:
        """Drop the spools kept, least recently used first, until TMPDIR could hold
        one of ``size`` bytes (should the object be SWZ1: which it is, only its worker
        finds out). Kept spools are files in TMPDIR: without this, once they filled it,
        every further SWZ1 object was refused for room for as long as the mount lived
        (attack20 2). Here, in the thread that owns the pools, before the worker starts.
        None dropped where dropping them all would not make the room (an object claiming
        more than TMPDIR holds: each read of a hostile one emptied every other reader's
        spools, review16 R16-2). Nor for an object whose spool is under way (each
        request of it asks: mountd/spools.py's ``fits``)."""
        if not self.spooler.fits(file_id, size, freed=self._spools.weight):
            return
        while not self.spooler.fits(file_id, size) and self._spools.drop_oldest():
            pass

    def _keep_archive(
        self, file_id: ObjectId, got: tuple[FramedContent, int] | int, size: int
    ) -> None:
        if isinstance(got, int):
            self._spools.add(file_id, got, size)
            return
        framed, key = got
        self._verified.add(key, True)
        self._framed.add(file_id, framed, framed.located_bytes)

    def _read_frames(self, framed: FramedContent, offset: int, size: int) -> bytes:
        """Bytes of a large archive object: the frames they lie in, inflated and kept
        with the small objects (a reader going through a file inflates each once)
        until a read takes a frame's last bytes: the kernel keeps what it was given
        (keep_cache), so a frame read to its end is seldom asked for again, and the
        budget is better left to the frames readers are still in (and the index)."""
        end = min(offset + size, framed.size)
        pieces = []
        while offset < end:
            index, skip = divmod(offset, _CHUNK)
            key = (framed.object_id, index)
            chunk = self._small.get(key)
            if chunk is None:
                chunk = framed.chunk(index)
                self._hold(key, chunk)
            piece = chunk[skip : skip + end - offset]
            if skip + len(piece) == len(chunk):
                self._small.discard(key)
            pieces.append(piece)
            offset += len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    # ----- uncompressed objects --------------------------------------------------------
    def _open_verified(
        self, file_id: ObjectId, header: bytes, size: int, pace: Pace | None = None
    ) -> tuple[int, int, bytes | None]:
        """An fd of the object's file, verified; the key that says so (see _verify); and
        its whole content if that took one read. The store refuses what is not a
        regular file of the recorded size."""
        fd = self.repo.open_file_fd(file_id, size)
        try:
            return fd, *self._verify(file_id, header, size, fd, pace)
        except BaseException:
            os.close(fd)
            raise

    def _verify(
        self, file_id: ObjectId, header: bytes, size: int, fd: int, pace: Pace | None
    ) -> tuple[int, bytes | None]:
        """Re-hash the object unless verified before (the same file, unchanged: its
        inode and ctime); the key of this file, and a small object's bytes. Adds
        nothing to ``_verified`` (only looks: it may run in a worker thread)."""
        st = os.fstat(fd)
        key = hash((file_id, st.st_ino, st.st_ctime_ns))
        if key in self._verified:
            return key, None
        whole = None
        if size <= _SMALL:  # one read; one byte more shows a grown object
            whole = os.pread(fd, size + 1, 0)
        with self._refused.noted(key, file_id):
            require_content(fd if whole is None else whole, file_id, header, size, pace)
        return key, whole


def _unpaced() -> None:
    """A preparation run here and now: never waits, never given up."""


def _entries(budget: int) -> int:
    """How many kept objects a byte budget can hold: each weighs its cost at least, so
    the count never binds before the bytes do (review8 8: it was set to the bytes)."""
    return budget // _KEPT_ENTRY_COST + 1


def _read_error(file_id: ObjectId, exc: OSError) -> ObjectReadError:
    """An OSError reading an object is an ObjectReadError naming it (EIO for that file)."""
    return ObjectReadError(f"object {file_id.hex()}: {exc.strerror or exc}")


@contextmanager
def _read_errors(file_id: ObjectId) -> Iterator[None]:
    """_read_error around a block (the worker threads' work: once an object)."""
    try:
        yield
    except OSError as exc:
        raise _read_error(file_id, exc) from exc
