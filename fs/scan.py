"""Committing a real directory: scan it into a MutableDir, storing file objects.

One thread does it all, because that measured fastest: on /usr/share (54,000
entries) a pool of Python threads doing read+hash+stage per file spent more in GIL
hand-offs than it won (25-27 s against 19-20 s inline, warm cache). The overlap
that pays comes from the kernel and from blake3 instead:

- before the files of a directory are read, each is opened and announced with
  posix_fadvise(WILLNEED), so the disk works on many reads at once (cold cache);
- large files are hashed by blake3 on its own threads, outside the GIL;
- once the walk's own directory listings are seen to read the disk (a cold tree),
  a few threads list and lstat the directories ahead of it (fs/prefetch.py), so that
  the disk serves many of those small reads at once; what they read is thrown away.

Below its root, the source is never touched by a path string. A tree that another
user can write to may have any directory swapped for a symlink between the lstat
that classified it and its use, and a path would follow the symlink out of the
tree (into a mode-0700 directory, as root). So every directory is opened with
openat(parent fd, name, O_NOFOLLOW | O_DIRECTORY) and its (st_dev, st_ino) checked
against that lstat; files are opened relative to their directory's fd with
O_NOFOLLOW | O_NONBLOCK (a FIFO swapped in is never waited on) and checked the same
way, including that they are still regular files; xattrs and content come from the
open fd (a file that the store recognises, by its lstat, as one of its own objects
linked by a checkout is not opened at all: store/inodes.py); symlinks are read
through an O_PATH fd checked likewise. Any mismatch fails the commit: "changed while
it was being committed". A directory's entries are listed through /proc/self/fd/N of
its fd (a link to the open directory itself, not a path looked up again: names come as
bytes, no DirEntry made, nothing decoded and encoded again; warm farm re-commit, main
CPU median 1.99 -> 1.86 s) and lstat'ed relative to the fd; without /proc, by scandir
of the fd.

The walk is depth-first and iterative, so the depth of a tree is limited by
nothing but memory (MutableDir.write refuses trees deeper than store allows). At
most _MAX_OPEN_DIRS directory fds are open at once (plus the _READAHEAD_BATCH files
being read): past that the shallowest are closed, and reopened when the walk comes
back to them by ".." from the child it leaves, checked as above.

When the scan is the commit's last layer (``seal``), each directory's dirtree is
written as soon as the walk leaves it, and the directory is kept in its parent as a
reference to that tree: the names and ids of a million files are never all held at
once, only those of the directories on the walk's path.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

from fs.options import ContentOptions, clean_xattrs
from fs.prefetch import Prefetcher
from fs.statcache import Granularity, cacheable, header_digest
from store import (
    MAX_TREE_DEPTH,
    SMALL_FILE,
    DirMeta,
    FileHeader,
    LinkedObject,
    MutableDir,
    ObjectId,
    Repository,
    Snapshot,
    SourceError,
    StatCacheRecord,
    Transaction,
    UnsupportedFileTypeError,
    check_names,
    read_xattrs,
    show_path,
)

log = logging.getLogger(__name__)
Progress = Callable[[int], None]
_READ_CHUNK = 1 << 20
_READAHEAD_BATCH = 64  # files announced to the kernel ahead of reading
_MAX_OPEN_DIRS = 32  # directory fds held at once, whatever the depth of the tree
_RELEASE_EVERY = 32768  # files scanned between releases of the index's pages
_DIRMETAS_KEPT = 256  # distinct dirmetas a scan remembers the ids of (_dirmeta)
_SYMLINKS_KEPT = 4096  # distinct symlinks a scan remembers the ids of (_symlink)
_SYMLINK_KEPT_BYTES = 512  # ... each of at most this many bytes of target and xattrs
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_LINK_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# What opening a name gives when its entry was swapped for something else: a symlink
# (ELOOP, or ENOTDIR with O_DIRECTORY), a file where a directory was, a socket.
_SWAPPED = frozenset({errno.ELOOP, errno.ENOTDIR, errno.ENXIO})
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


class _Dir:
    """A directory of the walk: its fd while still needed, the subdirectories left."""

    __slots__ = ("fd", "fsid", "name", "st", "subdirs", "target", "tree_path")

    def __init__(self, name: bytes, st: os.stat_result, tree_path: bytes, target: MutableDir):
        self.name, self.st, self.tree_path, self.target = name, st, tree_path, target
        self.fd: int | None = None
        self.fsid = 0  # statvfs f_fsid, the stat cache's filesystem identity
        self.subdirs: list[_Dir] = []  # still to enter, the next one last


class _PendingFile:
    """A regular file, open, that must be read (a stat-cache miss)."""

    __slots__ = ("digest", "fd", "fsid", "header", "name", "st", "tree_path")

    def __init__(
        self,
        fd: int,
        fsid: int,
        tree_path: bytes,
        name: bytes,
        st: os.stat_result,
        header: FileHeader,
        digest: bytes,
    ) -> None:
        self.fd, self.fsid, self.tree_path, self.name = fd, fsid, tree_path, name
        self.st, self.header, self.digest = st, header, digest


_Candidate = tuple[bytes, os.stat_result]  # name, lstat


class DirScanner:
    """Scans one source directory into a MutableDir (one --tree=dir= layer)."""

    def __init__(
        self,
        repo: Repository,
        txn: Transaction,
        options: ContentOptions,
        started_ns: int,
        progress: Progress | None = None,
        seal: ObjectId | None = None,
        read_all: bool = False,
    ) -> None:
        """``seal``: write each directory when the walk leaves it (no later layer can
        change it), with this dirmeta for the directories that have none. ``read_all``:
        no file is vouched for by the stat cache (CommitRequest.read_all)."""
        self._repo = repo
        self._seal = seal
        self._txn = txn
        self._options = options
        self._started_ns = started_ns
        self._progress = progress
        self._count = 0
        self._source = b""
        self._open_dirs = 0
        self._release_at = _RELEASE_EVERY
        self._snapshot_flushes = 0
        self._renewed: Snapshot | None = None  # the last snapshot: a renewal keeps its inodes
        self._granularity = Granularity()
        self.files_read = 0
        self.cache_hits = 0
        self.linked = 0  # files recognised as the repository's objects (never read)
        self.coarse_files = 0  # files whose timestamps are too coarse for the cache
        self._read_all = read_all
        self._adjusting = _adjusts_owner_or_mode(options)
        self._prefetch: Prefetcher | None = None  # while walking: fs/prefetch.py
        self._dirmetas: dict[tuple[int, int, int, tuple[tuple[bytes, bytes], ...]], ObjectId] = {}
        self._symlinks: dict[tuple[int, int, int, bytes, tuple[tuple[bytes, bytes], ...]], ObjectId]
        self._symlinks = {}

    def scan(self, source: Path, target: MutableDir) -> None:
        self._source = os.fsencode(source)
        try:
            st = os.lstat(source)
        except OSError as exc:
            raise SourceError(f"{source}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise SourceError(f"{source}: not a directory")
        with ExitStack() as self._snapshot_scope:
            self._renew_snapshot()
            self._walk(_Dir(b"", st, b"/", target))
        log.info(
            "scanned %s: %d files read, %d from the stat cache, %d linked objects, "
            "%d with coarse timestamps",
            source,
            self.files_read,
            self.cache_hits,
            self.linked,
            self.coarse_files,
        )

    def _renew_snapshot(self) -> None:
        """Read the index from a new snapshot (after the transaction flushed objects),
        and let the pages read so far leave memory (Transaction.release_index_pages)."""
        self._snapshot_scope.close()
        renewal = self._repo.snapshot(after=self._renewed)  # objects/ is not listed again
        self._snapshot = self._renewed = self._snapshot_scope.enter_context(renewal)
        self._snapshot_flushes = self._txn.flushes
        self._txn.release_index_pages()

    # ----- the walk -------------------------------------------------------------------
    def _walk(self, root: _Dir) -> None:
        """Depth first, with an explicit stack of the directories being walked."""
        stack = [root]
        below: int | None = None  # the fd of the directory just left, to climb from
        try:
            self._open_dir(root, None)
            assert root.fd is not None
            self._prefetch = Prefetcher(root.fd, self._options.skip)
            self._enter(root)
            while stack:
                top = stack[-1]
                if not top.subdirs:
                    done = stack.pop()
                    below = self._leave(done, below)
                    if stack and self._seal is not None:
                        self._write_sealed(done, stack[-1], len(stack))
                    continue
                child = top.subdirs.pop()
                self._open_dir(child, self._fd_of(top, below), top)
                if below is not None:
                    os.close(below)
                    below = None
                stack.append(child)
                self._bound(stack)
                self._enter(child)
        finally:
            if self._prefetch is not None:
                self._prefetch.stop()
                self._prefetch = None
            if below is not None:
                os.close(below)
            for directory in stack:
                self._close(directory)

    def _write_sealed(self, done: _Dir, parent: _Dir, depth: int) -> None:
        """Write a directory the walk has finished, keeping only a reference to its
        tree in its parent (see the module's docstring)."""
        assert self._seal is not None
        if depth > MAX_TREE_DEPTH:  # as MutableDir.write would refuse it from the root
            raise SourceError(
                f"the tree nests directories more than {MAX_TREE_DEPTH} deep, which sapwood refuses"
            )
        entry = done.target.write(self._txn, self._seal)
        sealed = MutableDir.from_existing(self._repo, entry)  # a DirEntry, frozen
        parent.target.entries[done.name] = sealed

    def _open_dir(self, directory: _Dir, parent_fd: int | None, parent: _Dir | None = None) -> None:
        """Open a directory the walk has classified (the root: by its path). Its
        filesystem's id is its parent's when both are on one device (st_dev names one
        mounted filesystem: a btrfs subvolume has its own), else asked."""
        fd, st = self._openat(parent_fd, directory.name, directory)
        directory.fd, directory.st = fd, st
        self._open_dirs += 1
        if parent is not None and parent.st.st_dev == st.st_dev:
            directory.fsid = parent.fsid
        else:
            try:
                directory.fsid = os.fstatvfs(fd).f_fsid
            except OSError as exc:
                raise SourceError(f"{self._shown(directory.tree_path)}: {exc.strerror}") from None
        self._granularity.observe(directory.fsid, st)

    def _openat(
        self, parent_fd: int | None, name: bytes, directory: _Dir
    ) -> tuple[int, os.stat_result]:
        """Open ``name`` in ``parent_fd``: it must be ``directory``, as its lstat saw it."""
        if parent_fd is None:
            return self._open_seen(
                self._source, None, _DIR_FLAGS, directory.tree_path, directory.st
            )
        return self._open_seen(name, parent_fd, _DIR_FLAGS, directory.tree_path, directory.st)

    def _open_seen(
        self,
        name: bytes,
        dir_fd: int | None,
        flags: int,
        tree_path: bytes,
        seen: os.stat_result,
        doing: str = "",
    ) -> tuple[int, os.stat_result]:
        """Open what ``seen`` (its lstat) saw: the same inode, of the same type; a swap
        since then is "changed while it was being committed"."""
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in _SWAPPED:
                raise self._changed(tree_path) from None
            raise SourceError(f"{self._shown(tree_path)}: {doing}{exc.strerror}") from None
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise SourceError(f"{self._shown(tree_path)}: {doing}{exc.strerror}") from None
        if not _same(st, seen) or stat.S_IFMT(st.st_mode) != stat.S_IFMT(seen.st_mode):
            os.close(fd)
            raise self._changed(tree_path)
        return fd, st

    def _leave(self, done: _Dir, below: int | None) -> int:
        """Pop ``done``; return an fd of it, from which its parent can be reached.

        Its own fd if _bound left it open, else one climbed to from the directory
        left before it (a leaf of the walk is never closed, so there is one).
        """
        if done.fd is not None:
            fd, done.fd = done.fd, None
            self._open_dirs -= 1
        else:
            assert below is not None
            fd, _ = self._openat(below, b"..", done)
        if below is not None:
            os.close(below)
        return fd

    def _fd_of(self, top: _Dir, below: int | None) -> int:
        """The fd of ``top``, which has subdirectories left to open.

        If _bound closed it, it is reopened from the child just left by ".." and
        checked like any other directory: an fd of a directory follows that
        directory wherever it is moved, so the checked ".." of the child is the
        directory itself, and a child moved elsewhere fails the check. Climbing out
        of a deep tree costs one open per level.
        """
        if top.fd is None:
            assert below is not None
            top.fd, _ = self._openat(below, b"..", top)
            self._open_dirs += 1
        return top.fd

    def _bound(self, stack: list[_Dir]) -> None:
        """Close the shallowest directory fds (not the root's) past _MAX_OPEN_DIRS."""
        for directory in stack[1:-1]:
            if self._open_dirs <= _MAX_OPEN_DIRS:
                return
            self._close(directory)

    def _close(self, directory: _Dir) -> None:
        if directory.fd is not None:
            os.close(directory.fd)
            directory.fd = None
            self._open_dirs -= 1

    # ----- one directory --------------------------------------------------------------
    def _enter(self, directory: _Dir) -> None:
        """Record a directory's metadata and files; queue its subdirectories."""
        fd = directory.fd
        assert fd is not None
        if self._txn.flushes != self._snapshot_flushes:
            self._renew_snapshot()
        elif self._count >= self._release_at:
            self._release_at = self._count + _RELEASE_EVERY
            self._txn.release_index_pages()
        directory.target.meta = self._dirmeta(directory, fd)
        pending: list[_PendingFile] = []
        candidates: list[_Candidate] = []
        prefix = directory.tree_path.rstrip(b"/") + b"/"
        try:
            assert self._prefetch is not None
            entries = self._prefetch.listing(lambda: self._entries(directory, fd))
            self._classify_all(directory, fd, prefix, entries, pending, candidates)
            for name, st in self._not_linked(directory, prefix, candidates):
                self._regular(directory, fd, name, prefix + name, st, pending)
            self._read_batch(pending, directory.target)
        finally:
            for item in pending:
                os.close(item.fd)
        directory.subdirs.reverse()  # entered in name order, popped from the end

    def _dirmeta(self, directory: _Dir, fd: int) -> ObjectId:
        """The directory's dirmeta, written. Most directories of a tree share a few
        (owner, mode, xattrs): one seen before in this scan is its id at once (its
        DirMeta was checked and written then, a failure failing the commit), not
        checked, encoded, hashed and looked up in the index again (3,302 directories of
        /usr/share: 10% of a farm re-commit's scan)."""
        xattrs = clean_xattrs(self._xattrs(fd, directory.tree_path))
        st = directory.st
        uid, gid, mode = self._options.adjust(directory.tree_path, st.st_uid, st.st_gid, st.st_mode)
        key = (uid, gid, mode, xattrs)
        known = self._dirmetas.get(key)
        if known is None:
            meta = DirMeta(uid, gid, mode, xattrs)
            known = self._txn.write_dirmeta(meta, show_path(directory.tree_path))
            if len(self._dirmetas) == _DIRMETAS_KEPT:  # a hostile tree's: each its own
                self._dirmetas.clear()
            self._dirmetas[key] = known
        return known

    def _entries(self, directory: _Dir, fd: int) -> list[bytes]:
        """The names of the directory's entries, sorted: listed through /proc/self/fd,
        whose link is the open directory itself, never a path looked up again (bytes
        in, bytes out: no DirEntry, no name decoded and encoded again); without /proc,
        by scandir of the fd."""
        try:
            names = os.listdir(b"/proc/self/fd/%d" % fd)
        except FileNotFoundError:  # no /proc
            names = self._scanned_names(directory, fd)
        except OSError as exc:
            raise SourceError(f"{self._shown(directory.tree_path)}: {exc.strerror}") from None
        names.sort()
        return names

    def _scanned_names(self, directory: _Dir, fd: int) -> list[bytes]:
        """The names of the entries of ``fd`` by scandir (where /proc is missing)."""
        try:
            with os.scandir(fd) as listing:  # os.fsencode's encoding, without its calls
                return [entry.name.encode(_FS_ENCODING, _FS_ERRORS) for entry in listing]
        except OSError as exc:
            raise SourceError(f"{self._shown(directory.tree_path)}: {exc.strerror}") from None

    def _classify_all(
        self,
        directory: _Dir,
        fd: int,
        prefix: bytes,
        entries: list[bytes],
        pending: list[_PendingFile],
        candidates: list[_Candidate],
    ) -> None:
        """lstat each entry and classify it (_classify), but for the regular files that
        may be the repository's objects, linked by a checkout: those wait in
        ``candidates`` (_not_linked), their tree paths (``prefix`` + name) not even
        made. In one loop, without a call for those: a farm's re-commit does little
        else per file."""
        self._check_names(directory, entries)
        skip = self._options.skip
        lstat = os.lstat
        for name in entries:
            if skip and prefix + name in skip:
                continue
            try:
                st = lstat(name, dir_fd=fd)
            except OSError as exc:
                raise SourceError(f"{self._shown(prefix + name)}: {exc.strerror}") from None
            if st.st_nlink > 1 and st.st_mtime_ns == 0 and stat.S_ISREG(st.st_mode):
                candidates.append((name, st))  # as every linked object shows
            else:
                self._classify(directory, fd, name, prefix + name, st, pending)

    def _check_names(self, directory: _Dir, names: list[bytes]) -> None:
        """Refuse a listed name that no tree may hold (a damaged filesystem's): store's
        check of a whole directory at once, a name at a time only for the error."""
        check_names(names, self._shown(directory.tree_path))

    def _classify(
        self,
        directory: _Dir,
        fd: int,
        name: bytes,
        tree_path: bytes,
        st: os.stat_result,
        pending: list[_PendingFile],
    ) -> None:
        """Queue a subdirectory, record a symlink, record a regular file (or open it to
        be read, in ``pending``); refuse or skip anything else."""
        if stat.S_ISDIR(st.st_mode):
            child = _Dir(name, st, tree_path, directory.target.child_dir(name))
            directory.subdirs.append(child)
        elif stat.S_ISREG(st.st_mode):
            self._regular(directory, fd, name, tree_path, st, pending)
        elif stat.S_ISLNK(st.st_mode):
            self._symlink(directory, fd, name, tree_path, st)
        elif self._options.skip_special:
            log.info("skipping special file %s", self._shown(tree_path))
        else:
            raise UnsupportedFileTypeError(
                f"{self._shown(tree_path)}: device nodes, fifos and sockets cannot be "
                "committed (remove it, skip its path, or skip special files)",
                path=self._shown(tree_path),
            )

    # ----- files ----------------------------------------------------------------------
    def _xattrs(self, source: int | bytes, tree_path: bytes) -> tuple[tuple[bytes, bytes], ...]:
        """The xattrs of an open fd, or of /proc/self/fd/N for an O_PATH fd (followed:
        the magic link lands on the symlink itself, never on its target)."""
        try:
            return read_xattrs(source, follow_symlinks=True)
        except OSError as exc:
            reason = exc.strerror
            if exc.errno == errno.ENOENT and isinstance(source, bytes):
                reason = "/proc is not mounted"  # the symlink's fd path is missing
            raise SourceError(f"{self._shown(tree_path)}: cannot read xattrs: {reason}") from None

    def _not_linked(
        self, directory: _Dir, prefix: bytes, candidates: list[_Candidate]
    ) -> list[_Candidate]:
        """Record the candidates that are the repository's objects, unchanged since a
        checkout linked them, by those objects' ids: never opened, never read (see
        store/inodes.py for when the store recognises one, asked once a directory);
        return the others, to be read as usual.

        The recorded header is the file's, as the commit options leave it: an option
        that would change its owner or mode (an owner, canonical permissions, a stat
        override) needs the content to make the new object, so such a file is read as
        usual, with what it shows (as OSTree does without --devino-canonical).
        """
        if not candidates:
            return candidates
        found = self._snapshot.objects_for_inodes([st for _, st in candidates], directory.st)
        others: list[_Candidate] = []
        target = directory.target
        target.expand()
        entries = target.entries  # set_file's, without a call a file
        for candidate, linked in zip(candidates, found, strict=True):
            name = candidate[0]
            if linked is None or (self._adjusting and not self._kept(prefix + name, linked)):
                others.append(candidate)
            else:
                entries[name] = linked.object_id
        recognised = len(candidates) - len(others)
        self.linked += recognised
        self._tick(recognised)
        return others

    def _kept(self, tree_path: bytes, linked: LinkedObject) -> bool:
        """Whether the commit options record a linked file's owner and mode as they are."""
        recorded = (linked.uid, linked.gid, linked.mode)
        return self._options.adjust(tree_path, *recorded) == recorded

    def _regular(
        self,
        directory: _Dir,
        dir_fd: int,
        name: bytes,
        tree_path: bytes,
        lstat: os.stat_result,
        pending: list[_PendingFile],
    ) -> None:
        """Record a cached file now; queue one that must be read, open, in ``pending``
        (read a batch at a time: _read_batch)."""
        item = self._open_regular(directory, dir_fd, name, tree_path, lstat)
        if item is not None:
            pending.append(item)
            if len(pending) == _READAHEAD_BATCH:
                self._read_batch(pending, directory.target)

    def _open_regular(
        self, directory: _Dir, dir_fd: int, name: bytes, tree_path: bytes, lstat: os.stat_result
    ) -> _PendingFile | None:
        """Record a cached file now; return one that must be read, open."""
        fd, st = self._open_file(dir_fd, name, tree_path, lstat)
        try:
            uid, gid, mode = self._options.adjust(tree_path, st.st_uid, st.st_gid, st.st_mode)
            header = FileHeader(uid, gid, mode, b"", clean_xattrs(self._xattrs(fd, tree_path)))
            digest = header_digest(header.encode())
            fsid = directory.fsid if st.st_dev == directory.st.st_dev else _fsid(fd)
            cached = self._cached(fsid, st, digest)
            if cached is None:
                if st.st_size:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                return _PendingFile(fd, fsid, tree_path, name, st, header, digest)
        except OSError as exc:
            os.close(fd)
            raise SourceError(f"{self._shown(tree_path)}: {exc.strerror}") from None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        self.cache_hits += 1
        directory.target.set_file(name, cached)
        self._tick()
        return None

    def _open_file(
        self, dir_fd: int, name: bytes, tree_path: bytes, lstat: os.stat_result
    ) -> tuple[int, os.stat_result]:
        """Open the regular file that ``lstat`` saw, never blocking, never following."""
        return self._open_seen(name, dir_fd, _FILE_FLAGS, tree_path, lstat, "cannot read: ")

    def _symlink(
        self, directory: _Dir, dir_fd: int, name: bytes, tree_path: bytes, lstat: os.stat_result
    ) -> None:
        """Record a symlink, read through an O_PATH fd of it (its xattrs via /proc)."""
        try:
            fd = os.open(name, _LINK_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            raise SourceError(f"{self._shown(tree_path)}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not _same(st, lstat) or not stat.S_ISLNK(st.st_mode):
                raise self._changed(tree_path)
            target = os.readlink(b"", dir_fd=fd)  # readlinkat(fd, ""): the link itself
            xattrs = self._xattrs(b"/proc/self/fd/%d" % fd, tree_path)
        except OSError as exc:
            raise SourceError(f"{self._shown(tree_path)}: {exc.strerror}") from None
        finally:
            os.close(fd)
        uid, gid, mode = self._options.adjust(tree_path, st.st_uid, st.st_gid, st.st_mode)
        cleaned = clean_xattrs(xattrs)
        key = (uid, gid, mode, target, cleaned)
        known = self._symlinks.get(key)
        if known is None:
            header = FileHeader(uid, gid, mode, target, cleaned)
            known = self._txn.write_file(header, b"", show_path(tree_path))
            self._keep_symlink(key, known)
        directory.target.set_file(name, known)
        self._tick()

    def _keep_symlink(
        self, key: tuple[int, int, int, bytes, tuple[tuple[bytes, bytes], ...]], known: ObjectId
    ) -> None:
        """Remember a small symlink's id for the rest of the scan: many symlinks of a tree
        are alike (2,416 of the 4,147 of /usr/share point where another one does), and
        each was checked (FileHeader), encoded, hashed and looked up in the index again
        (a symlink object's id is its header's: the same header, the same object, staged
        or in the index since). At most _SYMLINKS_KEPT, cleared when full, and only those
        of at most _SYMLINK_KEPT_BYTES: a hostile tree's costs no memory."""
        size = len(key[3])
        for xattr_name, value in key[4]:
            size += len(xattr_name) + len(value)
        if size > _SYMLINK_KEPT_BYTES:
            return
        if len(self._symlinks) == _SYMLINKS_KEPT:
            self._symlinks.clear()
        self._symlinks[key] = known

    def _cached(self, fsid: int, st: os.stat_result, digest: bytes) -> ObjectId | None:
        if self._read_all:
            return None
        if not self._granularity.can_vouch(fsid, st):
            self.coarse_files += 1
            return None  # timestamps too coarse to witness a rewrite: fs/statcache.py
        record = self._snapshot.stat_cache(st)  # None too if its object was pruned since
        if record is None or not record.matches(fsid, st, digest):
            return None
        return ObjectId(record.file_id)

    def _read_batch(self, batch: list[_PendingFile], target: MutableDir) -> None:
        """Read the announced files, closing them all; empties ``batch``."""
        try:
            for item in batch:
                target.set_file(item.name, self._ingest(item))
                self._tick()
        finally:
            for item in batch:
                os.close(item.fd)
            batch.clear()

    def _ingest(self, item: _PendingFile) -> ObjectId:
        where = show_path(item.tree_path)
        st, fd = item.st, item.fd
        try:
            if st.st_size <= SMALL_FILE:
                data = _read_all(fd, st.st_size)
                file_id = self._txn.write_file(item.header, data, where)
            else:
                file_id = self._txn.write_file_chunks(item.header, lambda: _chunks(fd), where)
            after = os.fstat(fd)
        except OSError as exc:
            raise SourceError(
                f"{self._shown(item.tree_path)}: cannot read: {exc.strerror}"
            ) from None
        if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
        ):
            raise self._changed(item.tree_path)
        self.files_read += 1
        if cacheable(after, self._started_ns) and self._granularity.can_vouch(item.fsid, st):
            record = StatCacheRecord.of(item.fsid, st, item.digest, file_id)
            self._txn.put_stat_cache(st, record)
        return file_id

    # ----- helpers --------------------------------------------------------------------
    def _shown(self, tree_path: bytes) -> str:
        """The source path of ``tree_path``, for messages only (never opened)."""
        if tree_path == b"/":
            return show_path(self._source)
        return show_path(self._source.rstrip(b"/") + tree_path)

    def _changed(self, tree_path: bytes) -> SourceError:
        return SourceError(f"{self._shown(tree_path)}: changed while it was being committed")

    def _tick(self, files: int = 1) -> None:
        before, self._count = self._count, self._count + files
        if self._progress is not None and before >> 10 != self._count >> 10:
            self._progress(self._count & ~1023)  # every 1024th file, as one at a time


def _adjusts_owner_or_mode(options: ContentOptions) -> bool:
    """Whether ``options`` may record some file with another owner or mode than it has."""
    return (
        options.owner_uid is not None
        or options.owner_gid is not None
        or options.canonical_permissions
        or bool(options.statoverride)
    )


def _same(st: os.stat_result, lstat: os.stat_result) -> bool:
    return (st.st_dev, st.st_ino) == (lstat.st_dev, lstat.st_ino)


def _fsid(fd: int) -> int:
    """The filesystem of a file that is a mount point of its own (a bind mount)."""
    return os.fstatvfs(fd).f_fsid


def _read_all(fd: int, size: int) -> bytes:
    """Read a whole small file; one pread in the usual case."""
    data = os.pread(fd, size + 1, 0)
    if len(data) == size:
        return data
    return b"".join(_chunks(fd))


def _chunks(fd: int) -> Iterator[bytes]:
    offset = 0
    while chunk := os.pread(fd, _READ_CHUNK, offset):
        offset += len(chunk)
        yield chunk
