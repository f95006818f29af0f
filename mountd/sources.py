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
  (mountd/mapped.py ``bound_view_memory``: 16 MiB by default). A larger object is
  never held in memory: it is decompressed once, verified as it goes, into an
  unlinked temporary file in a private directory under TMPDIR (O_TMPFILE where the
  filesystem has it), and served from there; 64 of those are kept, 4 GiB in all, the
  least recently read going first (a reader whose spool is evicted decompresses the
  whole object again for its next read: more readers at once than spools thrash).
  One that TMPDIR's free space cannot hold is an error for that file, before any of
  it is decompressed.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from mountd.lru import Lru, RecentKeys
from store import ObjectId, ObjectReadError, Repository, require_content

_OPEN_FILES = 256  # object files kept open (uncompressed modes)
_SMALL = 1 << 20  # up to this size: verified with one read, or decompressed into memory
_KEPT_BYTES = 32 << 20  # decompressed small archive objects kept, in all (hold_at_most)
_KEPT_ENTRY_COST = 320  # what one kept object costs beyond its bytes (measured: ~300)
_SPOOLS = 64  # large archive objects kept decompressed in temporary files (fds: cheap)
_SPOOL_BYTES = 4 << 30  # the disk those files take, in all
_SPOOL_RESERVE = 64 << 20  # TMPDIR's space a spool leaves free (1/16 of a smaller one)
_SHOWN = 1 << 14  # which object the inodes read lately show
_VERIFIED = 1 << 16  # objects verified and unchanged since: about 100 bytes each
_CHUNK = 1 << 20


class ObjectSources:
    """Verified sources of file objects: open files, decompressed bytes, spooled files."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._shown: Lru[int, ObjectId] = Lru(_SHOWN)
        self._files: Lru[ObjectId, int] = Lru(_OPEN_FILES, _OPEN_FILES, os.close)
        self._small: Lru[ObjectId, bytes] = Lru(_KEPT_BYTES, _KEPT_BYTES)
        self._spools: Lru[ObjectId, int] = Lru(_SPOOLS, _SPOOL_BYTES, os.close)
        self._verified: RecentKeys[int] = RecentKeys(_VERIFIED)
        self._fresh: tuple[ObjectId, bytes] | None = None  # a small object just read whole
        self._spool_dir: tempfile.TemporaryDirectory[str] | None = None

    def prepare(self, ino: int, file_id: ObjectId, header: bytes, size: int) -> None:
        """Make ``ino`` readable now (verifying its object), or raise why it is not."""
        self._shown.add(ino, file_id, 1)
        if self._kept(file_id) is not None:
            return
        try:
            self._keep(file_id, header, size)
        except OSError as exc:
            raise ObjectReadError(f"object {file_id.hex()}: {exc.strerror or exc}") from exc

    def _keep(self, file_id: ObjectId, header: bytes, size: int) -> None:
        """Verify the object and keep a source of it, within the bounds of its kind."""
        if not self.repo.stores_compressed:
            fd, whole = self._open_verified(file_id, header, size)
            self._files.add(file_id, fd, 1)
            self._fresh = None if whole is None else (file_id, whole)
        elif size <= _SMALL:
            self._small.add(file_id, self.repo.read_file(file_id), size + _KEPT_ENTRY_COST)
        else:
            self._spools.make_room(size)  # before the new file takes its disk space
            self._require_room(file_id, size)
            self._spools.add(file_id, self._spool(file_id), size)

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
        try:
            return os.pread(source, size, offset)
        except OSError as exc:
            raise ObjectReadError(f"object {file_id.hex()}: {exc.strerror or exc}") from exc

    def hold_at_most(self, limit: int) -> None:
        """Keep decompressed objects (archive mode) within ``limit`` bytes from now on,
        their cost in memory counted as ``held_bytes`` counts it; never more than
        _KEPT_BYTES, however large ``limit``: a budget raised to keep a large index
        mapped (page cache, which the kernel can reclaim) is no reason to hold more
        anonymous memory, which it cannot."""
        self._small.count = self._small.budget = min(limit, _KEPT_BYTES)
        self._small.make_room(0)

    def held_bytes(self) -> int:
        """The memory the kept decompressed objects take (archive mode; none otherwise:
        the other modes keep open files, and spools are files)."""
        return self._small.weight

    def is_open(self, ino: int) -> bool:
        file_id = self._shown.get(ino)
        return file_id is not None and self._kept(file_id) is not None

    def close(self) -> None:
        for pool in (self._files, self._small, self._spools):
            pool.clear()
        self._fresh = None
        if self._spool_dir is not None:
            self._spool_dir.cleanup()
            self._spool_dir = None

    def _kept(self, file_id: ObjectId) -> int | bytes | None:
        found: int | bytes | None = self._files.get(file_id)
        if found is None:
            found = self._small.get(file_id)
        if found is None:
            found = self._spools.get(file_id)
        return found

    # ----- archive objects -------------------------------------------------------------
    def _spool(self, file_id: ObjectId) -> int:
        """An fd of an unlinked file holding the object's content, verified.

        Repository.open_file verifies as it streams (and refuses a stream that inflates
        beyond the recorded size), so reading it to the end either gives the object's
        bytes or raises; the file is gone with its fd in either case.
        """
        with (
            self.repo.open_file(file_id) as stream,
            tempfile.TemporaryFile(dir=self._private_dir()) as spool,
        ):
            shutil.copyfileobj(stream, spool, _CHUNK)
            spool.flush()
            return os.dup(spool.fileno())

    def _require_room(self, file_id: ObjectId, size: int) -> None:
        """Refuse, before decompressing any of it, an object that TMPDIR's free space
        (less a reserve) cannot hold: an object a few KiB compressed may claim
        terabytes, and spooling it would fill the filesystem before failing, on every
        read. ``_spools`` holds one object, however large, when nothing else fits: its
        byte budget does not bound this."""
        where = self._private_dir()
        st = os.statvfs(where)
        free = st.f_bavail * st.f_frsize
        reserve = min(_SPOOL_RESERVE, st.f_blocks * st.f_frsize // 16)
        if size + reserve > free:
            raise ObjectReadError(
                f"object {file_id.hex()}: its {size} bytes do not fit in {where} "
                f"({free} bytes free, {reserve} left free); set TMPDIR elsewhere"
            )

    def _private_dir(self) -> str:
        """A directory of this daemon's alone (mode 0700) for its temporary files, removed
        on close (or when the sources are garbage collected)."""
        if self._spool_dir is None or not os.path.isdir(self._spool_dir.name):  # a tmp cleaner
            self._spool_dir = tempfile.TemporaryDirectory(
                prefix="sapwood-mount-", ignore_cleanup_errors=True
            )
        return self._spool_dir.name

    # ----- uncompressed objects --------------------------------------------------------
    def _open_verified(
        self, file_id: ObjectId, header: bytes, size: int
    ) -> tuple[int, bytes | None]:
        """An fd of the object's file, verified; and its whole content if that took one
        read. The store refuses what is not a regular file of the recorded size."""
        fd = self.repo.open_file_fd(file_id, size)
        try:
            return fd, self._verify(file_id, header, size, fd)
        except BaseException:
            os.close(fd)
            raise

    def _verify(self, file_id: ObjectId, header: bytes, size: int, fd: int) -> bytes | None:
        """Re-hash the object unless verified before; a small object's bytes come back."""
        st = os.fstat(fd)
        key = hash((file_id, st.st_ino, st.st_ctime_ns))
        if self._verified.seen(key):
            return None
        whole = None
        if size <= _SMALL:  # one read; one byte more shows a grown object
            whole = os.pread(fd, size + 1, 0)
        require_content(fd if whole is None else whole, file_id, header, size)
        self._verified.add(key, True)
        return whole
