"""Checkout: a commit made real on disk, as a hardlink farm or as copies.

Everything is done relative to directory file descriptors opened with O_NOFOLLOW,
and entries are created with O_EXCL semantics, so no symlink (from the commit or
already in DEST) is ever followed: nothing is written outside DEST. A whiteout
removes only an entry of its own directory (its target must be a valid name, never
'.' or '..'), never follows a symlink and never removes another filesystem's files.

Object files are not trusted. A copy hashes every byte it copies and is removed if
they were not the object's; a hardlink is checked, once made, to be a regular file
of the recorded size, and re-hashed only with --verify (the cost of a farm is the
cost of its links; fsck re-hashes the store).

Without a union option (or when DEST does not exist yet) the tree is built in a
hidden sibling of DEST and renamed into place at the end, so a failed checkout
leaves nothing. A union checkout writes into an existing DEST and cannot be rolled
back cheaply: it first checks, without writing, what it can (conflicts, whiteouts,
with --verify the objects it will hardlink), so most failures leave DEST unchanged;
an error after it began to write says that DEST is partly updated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from fs.checkout_files import Entry, FileWriter
from fs.checkout_options import (
    CheckoutConflictError,
    CheckoutError,
    CheckoutOptions,
    CheckoutStats,
    SubpathNotADirectoryError,
    Union,
    apply_meta,
    check_options,
    dir_mode,
)
from fs.checkout_remove import (
    WHITEOUT,
    FileEntries,
    empty_dir,
    open_dir,
    open_existing_dir,
    remove_tree,
    require_device,
    split_whiteouts,
)
from fs.mounts import mount_points
from store import (
    MAX_TREE_DEPTH,
    CorruptObjectError,
    DirMeta,
    FileHeader,
    Node,
    ObjectId,
    OutOfSpaceError,
    Repository,
    SapwoodError,
    TaskCallback,
    Ticker,
    UsageError,
    count_files,
    file_matches,
    lookup,
    show_path,
    space_errors,
    syncfs,
    tick,
)

__all__ = [  # the names callers import from here; they live in the fs.checkout_* modules
    "WHITEOUT",
    "CheckoutConflictError",
    "CheckoutError",
    "CheckoutOptions",
    "CheckoutStats",
    "SubpathNotADirectoryError",
    "Union",
    "checkout",
    "remove_tree",
]
log = logging.getLogger(__name__)
_PARTLY_UPDATED = "is partly updated; re-run the checkout or remove it"
_UNCHANGED = "was not changed"
_WINDOW = 64  # copies whose objects are opened and announced to the kernel at once


def checkout(
    repo: Repository,
    commit_id: ObjectId,
    dest: Path,
    options: CheckoutOptions,
    progress: TaskCallback | None = None,
) -> CheckoutStats:
    """Check ``options.subpath`` of a commit out into ``dest``. ``progress`` is told of
    the count of the commit's files (a quick read of the trees: only when it is given),
    then of the files (and symlinks) checked out of that total, then of the sync."""
    check_options(repo, options)
    _refuse_dest_in_repository(repo, dest)
    node = lookup(repo, commit_id, options.subpath)
    if node.dir is None:
        raise SubpathNotADirectoryError(subpath=options.subpath)
    builder = _Builder(repo, options, progress)
    if progress is not None:
        tick(progress, "reading trees")
        builder.ticker = Ticker(progress, "checking out", count_files(repo, node.dir.tree), "file")
    if options.union == "none":
        return _fresh_checkout(builder, node, dest)
    if not os.path.lexists(dest):  # nothing to unite with: build aside, as a fresh checkout
        dest.parent.mkdir(parents=True, exist_ok=True)
        return _fresh_checkout(builder, node, dest)
    return _union_checkout(builder, node, dest)


def _refuse_dest_in_repository(repo: Repository, dest: Path) -> None:
    """A checkout never writes among the repository's own files."""
    inside = os.path.realpath(dest)
    home = os.path.realpath(repo.path)
    if inside == home or inside.startswith(home + "/"):
        raise UsageError(f"{dest}: is inside the repository {repo.path}; check out elsewhere")


def _repository_chain(repo: Repository) -> set[tuple[int, int]]:
    """(device, inode) of the repository directory and of every directory above it:
    what a whiteout may never remove, since removing it removes the repository."""
    chain = set()
    path = os.path.realpath(repo.path)
    while True:
        st = os.stat(path)
        chain.add((st.st_dev, st.st_ino))
        if path == "/":
            return chain
        path = os.path.dirname(path)


def _fresh_checkout(builder: _Builder, node: Node, dest: Path) -> CheckoutStats:
    if os.path.lexists(dest):
        raise CheckoutConflictError(f"{dest}: exists; check out with a union mode to write into it")
    if not dest.parent.is_dir():
        raise UsageError(f"{dest.parent}: no such directory")
    building = dest.parent / f".{dest.name}.sapwood-checkout-{uuid.uuid4().hex[:8]}"
    os.mkdir(building, 0o700)
    try:
        fd = open_dir(building, None)
        try:
            with space_errors("the checkout was removed"):
                builder.fill(node, fd, existing=False)
            builder.finish_dir(node, fd)
        finally:
            os.close(fd)
        builder.ticker.finish()
        if builder.options.fsync:
            tick(builder.progress, "syncing")
            syncfs(building)
        os.rename(building, dest)
    except BaseException:
        _remove_leftover(building)
        raise
    return builder.stats


def _union_checkout(builder: _Builder, node: Node, dest: Path) -> CheckoutStats:
    fd = open_existing_dir(dest, None, str(dest))
    try:
        with _dest_state_on_failure(dest, _UNCHANGED):
            builder.precheck(node, fd)
        with (
            _dest_state_on_failure(dest, _PARTLY_UPDATED),
            space_errors(f"{dest} {_PARTLY_UPDATED}"),
        ):
            builder.fill(node, fd, existing=True)
            builder.ticker.finish()
            if builder.options.fsync:
                tick(builder.progress, "syncing")
                syncfs(dest)
    finally:
        os.close(fd)
    return builder.stats


@contextlib.contextmanager
def _dest_state_on_failure(dest: Path, state: str) -> Iterator[None]:
    """Add to an error raised in the block what it left DEST as (``state``)."""
    try:
        yield
    except OutOfSpaceError:
        raise  # space_errors has said it
    except SapwoodError as exc:
        raise _amended(exc, f"{dest} {state}") from exc
    except OSError as exc:
        name = exc.filename
        where = f": {show_path(name) if isinstance(name, bytes) else name}" if name else ""
        raise CheckoutError(f"{exc.strerror or exc}{where}; {dest} {state}") from exc
    except BaseException:
        log.warning("%s %s", dest, state)
        raise


def _amended(exc: SapwoodError, note: str) -> SapwoodError:
    """The same kind of error (class and facts), its message followed by ``note``."""
    try:
        amended = type(exc)(f"{exc}; {note}")
    except TypeError:  # an error class with another constructor
        return CheckoutError(f"{exc}; {note}")
    amended.__dict__.update(exc.__dict__)
    return amended


def _remove_leftover(building: Path) -> None:
    try:
        remove_tree(building)
    except (OSError, SapwoodError) as exc:
        log.warning("could not remove the partial checkout %s: %s", building, exc)


def _prefix(node: Node) -> bytes:
    return node.path.rstrip(b"/") + b"/"


class _Builder(FileWriter):
    """Walks the commit's directories; the files themselves are FileWriter's."""

    def __init__(
        self, repo: Repository, options: CheckoutOptions, progress: TaskCallback | None = None
    ) -> None:
        super().__init__(repo, options)
        self.progress = progress
        self.ticker = Ticker(None, "checking out", None)  # counts nothing until checkout's
        self.protected = _repository_chain(repo) if options.whiteouts else set()
        self._same: set[tuple[int, int, int, int, int]] = set()  # identical by content (stat)
        self._mounts: list[bytes] | None = None

    # ----- the union pre-check: reads only --------------------------------------------
    def precheck(self, node: Node, dirfd: int | None) -> None:
        """Find, without writing, what ``fill`` would fail on in a union checkout.

        ``dirfd`` is DEST's directory for ``node``, or None where DEST has none (then
        only the commit is checked: its whiteouts, and with --verify its objects).
        Whiteouts are applied first, as ``fill`` applies them. File headers are read
        only when --union-identical or --verify needs them.
        """
        assert node.dir is not None
        if dirfd is None and not (self.options.whiteouts or self.options.verify):
            return  # a new subtree: nothing in DEST to conflict with
        tree = self.repo.read_dirtree(node.dir.tree)
        prefix = _prefix(node)
        present: dict[bytes, os.DirEntry[str]] = {}
        if dirfd is not None:
            present = {os.fsencode(e.name): e for e in os.scandir(dirfd)}
        files: FileEntries = tree.files
        targets: list[tuple[bytes, bytes]] = []
        if self.options.whiteouts:
            files, targets = split_whiteouts(tree.files, prefix)
        for target, where in targets:
            if present.pop(target, None) is not None:
                assert dirfd is not None
                self._refuse_repository(dirfd, target, where)
                self._refuse_mount_points(dirfd, target, where)
        for name, file_id in files:
            found = present.get(name)
            if found is not None and found.is_dir(follow_symlinks=False):
                raise _dir_where_file(Node(prefix + name, file=file_id))
        if self.options.verify or (self.options.union == "identical" and present):
            self._precheck_contents(prefix, files, present, dirfd)
        for name, entry in tree.dirs:
            child = Node(prefix + name, dir=entry)
            if name not in present:
                self.precheck(child, None)
                continue
            assert dirfd is not None
            fd = open_existing_dir(name, dirfd, show_path(child.path))
            try:
                self.precheck(child, fd)
            finally:
                os.close(fd)

    def _precheck_contents(
        self,
        prefix: bytes,
        files: FileEntries,
        present: dict[bytes, os.DirEntry[str]],
        dirfd: int | None,
    ) -> None:
        """--union-identical: DEST's files are the commit's; --verify: objects to link."""
        headers = self.repo.read_file_headers([file_id for _, file_id in files])
        for (name, file_id), (header, size) in zip(files, headers, strict=True):
            found = present.get(name)
            if found is not None and self.options.union == "identical":
                assert dirfd is not None
                st = found.stat(follow_symlinks=False)
                if not self._identical(file_id, header, size, name, dirfd, st):
                    raise _differs(Node(prefix + name, file=file_id))
            if self.options.verify and self._linkable(header, size):
                self._verify(prefix + name, file_id, header, size)

    def _refuse_repository(self, dirfd: int, target: bytes, where: bytes) -> None:
        """Refuse a whiteout of the repository itself or of a directory holding it."""
        try:
            st = os.lstat(target, dir_fd=dirfd)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) in self.protected:
            raise CheckoutConflictError(
                f"whiteout {show_path(where)} refused: {show_path(target)} is or holds the "
                "repository"
            )

    def _refuse_mount_points(self, dirfd: int, target: bytes, where: bytes) -> None:
        """Refuse a whiteout of an entry that is, or holds, a mount point.

        Bind mounts of the same filesystem share its device number, so the mount
        table is asked; removal also stops at any change of device (``_empty_dir``).
        """
        try:
            parent = os.readlink(b"/proc/self/fd/%d" % dirfd)
        except OSError:
            return
        path = parent.rstrip(b"/") + b"/" + target
        if self._mounts is None:
            self._mounts = mount_points()
        if any(m == path or m.startswith(path + b"/") for m in self._mounts):
            raise CheckoutConflictError(
                f"whiteout {show_path(where)} refused: {show_path(path)} is or holds a mount "
                "point, and a whiteout never removes another filesystem's files"
            )

    # ----- directories ---------------------------------------------------------------
    def fill(self, node: Node, dirfd: int, existing: bool) -> None:
        """Create the entries of directory ``node`` inside the open directory ``dirfd``.

        ``existing``: ``dirfd`` was in DEST before this checkout. Whiteouts remove
        entries only there, and before anything is written into it, so they apply to
        what lies below the commit, never to the commit's own entries.
        """
        assert node.dir is not None
        tree = self.repo.read_dirtree(node.dir.tree)
        prefix = _prefix(node)
        files: FileEntries = tree.files
        if self.options.whiteouts:
            files, targets = split_whiteouts(tree.files, prefix)
            for target, where in targets if existing else ():
                self._remove(dirfd, target, where)
        headers = self.repo.read_file_headers([file_id for _, file_id in files])
        entries: list[Entry] = list(zip(files, headers, strict=True))
        for start in range(0, len(entries), _WINDOW):
            window = entries[start : start + _WINDOW]
            if not (self.can_link or existing):
                self._open_ahead(window)
            try:
                for (name, file_id), (header, size) in window:
                    child = Node(prefix + name, file=file_id)
                    self._file(child, name, dirfd, existing, header, size)
            finally:
                self._close_ahead()
            self.ticker.add(len(window))
        self.ticker.add(len(tree.files) - len(files))  # whiteouts: entries of the total too
        for name, entry in tree.dirs:
            self._subdir(Node(prefix + name, dir=entry), name, dirfd, existing)

    def _subdir(self, child: Node, name: bytes, dirfd: int, existing: bool) -> None:
        if child.path.count(b"/") > MAX_TREE_DEPTH:  # no commit holds one: a damaged index
            assert child.dir is not None
            raise CorruptObjectError(
                f"{show_path(child.path)}: the commit's tree nests directories more than "
                f"{MAX_TREE_DEPTH} deep; run sapwood fsck",
                object_id=child.dir.tree,
            )
        created = True
        try:
            os.mkdir(name, 0o700, dir_fd=dirfd)
        except FileExistsError:
            if not existing:
                raise
            created = False
        fd = open_existing_dir(name, dirfd, show_path(child.path))
        try:
            self.fill(child, fd, existing=existing and not created)
            if created:
                self.finish_dir(child, fd)
        finally:
            os.close(fd)

    def finish_dir(self, node: Node, fd: int) -> None:
        """Give a directory we created its recorded metadata, once its entries exist."""
        assert node.dir is not None
        meta: DirMeta = self.repo.read_dirmeta(node.dir.meta)
        bits = dir_mode(self.options, meta.mode)
        apply_meta(fd, self.options, (meta.uid, meta.gid), meta.xattrs, bits)
        self.stats.directories += 1

    # ----- files ----------------------------------------------------------------------
    def _file(
        self, child: Node, name: bytes, dirfd: int, existing: bool, header: FileHeader, size: int
    ) -> None:
        assert child.file is not None
        if existing and self._settle_existing(child, name, dirfd, header, size):
            return
        if header.is_symlink:
            self._symlink(header, name, dirfd)
        elif not (self._linkable(header, size) and self._link(child, header, size, name, dirfd)):
            self._copy(child, header, size, name, dirfd)

    def _settle_existing(
        self, child: Node, name: bytes, dirfd: int, header: FileHeader, size: int
    ) -> bool:
        """Deal with an entry already at ``name``; True if nothing more is to be done."""
        try:
            st = os.lstat(name, dir_fd=dirfd)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            raise _dir_where_file(child)
        if self.options.union == "add":
            self.stats.skipped += 1
            return True
        if self.options.union == "identical":
            assert child.file is not None
            if self._identical(child.file, header, size, name, dirfd, st):
                self.stats.skipped += 1
                return True
            raise _differs(child)
        os.unlink(name, dir_fd=dirfd)  # --union: the commit's version wins
        return False

    def _identical(
        self,
        file_id: ObjectId,
        header: FileHeader,
        size: int,
        name: bytes,
        dirfd: int,
        st: os.stat_result,
    ) -> bool:
        """Same type and content as the object (a same-inode link is the object itself)."""
        if header.is_symlink:
            return (
                stat.S_ISLNK(st.st_mode)
                and os.readlink(name, dir_fd=dirfd) == header.symlink_target
            )
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return False
        if self._is_object_file(file_id, st):
            return True
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key in self._same:  # hashed by the pre-check, unchanged since
            return True
        if not file_matches(name, dirfd, file_id, header.encode(), size):
            return False
        self._same.add(key)
        return True

    def _is_object_file(self, file_id: ObjectId, st: os.stat_result) -> bool:
        try:
            obj = os.lstat(self.repo.object_path(file_id))
        except FileNotFoundError:
            return False
        return (obj.st_dev, obj.st_ino) == (st.st_dev, st.st_ino)

    def _remove(self, dirfd: int, target: bytes, where: bytes) -> None:
        """What a whiteout does: remove ``target`` (file, symlink or tree) from ``dirfd``."""
        self._refuse_repository(dirfd, target, where)
        try:
            st = os.lstat(target, dir_fd=dirfd)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            fd = open_dir(target, dirfd)
            try:
                require_device(fd, os.fstat(dirfd).st_dev, target)
                empty_dir(fd, target)
            finally:
                os.close(fd)
            os.rmdir(target, dir_fd=dirfd)
        else:
            os.unlink(target, dir_fd=dirfd)  # a symlink goes, what it points to stays
        self.stats.removed += 1
        log.info("whiteout %s removed %s", show_path(where), show_path(target))


def _dir_where_file(child: Node) -> CheckoutConflictError:
    return CheckoutConflictError(
        f"{show_path(child.path)}: a directory in DEST stands where the commit has a file"
    )


def _differs(child: Node) -> CheckoutConflictError:
    return CheckoutConflictError(
        f"{show_path(child.path)}: File exists and differs (union mode 'identical')"
    )
