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
import errno
import logging
import os
import stat
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from fs.copy import Copier, copy_stream
from fs.mounts import mount_points
from store import (
    MAX_TREE_DEPTH,
    ContentCheck,
    CorruptObjectError,
    DirMeta,
    FileHeader,
    InvalidNameError,
    Node,
    ObjectId,
    ObjectMissingError,
    OutOfSpaceError,
    PermissionDeniedError,
    RepoMode,
    Repository,
    SapwoodError,
    UsageError,
    check_name,
    file_matches,
    lookup,
    show_path,
    space_errors,
    syncfs,
)

log = logging.getLogger(__name__)
Union = Literal["none", "union", "add", "identical"]
WHITEOUT = b".wh."
_SETID = stat.S_ISUID | stat.S_ISGID
_LINK_FALLBACK = {errno.EMLINK, errno.EXDEV, errno.EPERM}
_PARTLY_UPDATED = "is partly updated; re-run the checkout or remove it"
_UNCHANGED = "was not changed"
_FileEntries = Sequence[tuple[bytes, ObjectId]]
_Entry = tuple[tuple[bytes, ObjectId], tuple[FileHeader, int]]  # (name, id), (header, size)
_WINDOW = 64  # copies whose objects are opened and announced to the kernel at once


class CheckoutConflictError(SapwoodError):
    """An entry in DEST stands where the commit needs something else."""


class SubpathNotADirectoryError(UsageError):
    """``CheckoutOptions.subpath`` names a file of the commit, not a directory."""

    def __init__(self, message: str = "", *, subpath: str = ""):
        super().__init__(message or f"subpath {subpath}: is not a directory")
        self.subpath = subpath


class CheckoutError(SapwoodError):
    """A system call failed during a union checkout; the message says what DEST holds."""


@dataclass
class CheckoutOptions:
    """How to check out: hardlinks or copies, user mode, union modes, a subpath."""

    user_mode: bool = False  # -U: owned by the caller, no setuid/setgid, no xattrs
    copy: bool = False  # -C: never hardlink
    require_hardlinks: bool = False  # -H: never fall back to copying
    union: Union = "none"
    subpath: str = "/"
    whiteouts: bool = False  # .wh.NAME deletes NAME instead of being checked out
    fsync: bool = True
    verify: bool = False  # re-hash objects before hardlinking them (copies always are)


@dataclass
class CheckoutStats:
    """What a checkout made: hardlinks, copies, symlinks, directories, removals."""

    hardlinks: int = 0
    copies: int = 0
    symlinks: int = 0
    directories: int = 0
    skipped: int = 0
    removed: int = 0  # entries of DEST removed by whiteouts


def checkout(
    repo: Repository, commit_id: ObjectId, dest: Path, options: CheckoutOptions
) -> CheckoutStats:
    """Check ``options.subpath`` of a commit out into ``dest``."""
    _check_options(repo, options)
    _refuse_dest_in_repository(repo, dest)
    node = lookup(repo, commit_id, options.subpath)
    if node.dir is None:
        raise SubpathNotADirectoryError(subpath=options.subpath)
    builder = _Builder(repo, options)
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


def _check_options(repo: Repository, options: CheckoutOptions) -> None:
    if options.union not in get_args(Union):  # any other word was taken for "union"
        raise UsageError(
            f"union mode {options.union!r}: not one of 'none', 'union', 'add', 'identical'"
        )
    if options.union == "identical" and not options.require_hardlinks:
        raise UsageError("union mode 'identical' needs require_hardlinks")
    if options.copy and options.require_hardlinks:
        raise UsageError("copy and require_hardlinks contradict each other")
    if not options.user_mode and os.geteuid() != 0:
        raise PermissionDeniedError(
            "a checkout with the recorded ownership needs root; set user_mode"
        )
    if options.require_hardlinks:
        if repo.mode is RepoMode.ARCHIVE:
            raise UsageError("an archive repository stores compressed objects: it cannot hardlink")
        if repo.mode is RepoMode.BARE and options.user_mode:
            raise UsageError(
                "a bare repository "
                "cannot hardlink in user mode; drop require_hardlinks or user_mode"
            )
        if repo.mode is not RepoMode.BARE and not options.user_mode:
            raise UsageError(
                f"a {repo.mode.value} repository hardlinks only in user mode: set user_mode"
            )


def _fresh_checkout(builder: _Builder, node: Node, dest: Path) -> CheckoutStats:
    if os.path.lexists(dest):
        raise CheckoutConflictError(f"{dest}: exists; check out with a union mode to write into it")
    if not dest.parent.is_dir():
        raise UsageError(f"{dest.parent}: no such directory")
    building = dest.parent / f".{dest.name}.sapwood-checkout-{uuid.uuid4().hex[:8]}"
    os.mkdir(building, 0o700)
    try:
        fd = _open_dir(building, None)
        try:
            with space_errors("the checkout was removed"):
                builder.fill(node, fd, existing=False)
            builder.finish_dir(node, fd)
        finally:
            os.close(fd)
        if builder.options.fsync:
            syncfs(building)
        os.rename(building, dest)
    except BaseException:
        _remove_leftover(building)
        raise
    return builder.stats


def _union_checkout(builder: _Builder, node: Node, dest: Path) -> CheckoutStats:
    fd = _open_existing_dir(dest, None, str(dest))
    try:
        with _dest_state_on_failure(dest, _UNCHANGED):
            builder.precheck(node, fd)
        with (
            _dest_state_on_failure(dest, _PARTLY_UPDATED),
            space_errors(f"{dest} {_PARTLY_UPDATED}"),
        ):
            builder.fill(node, fd, existing=True)
            if builder.options.fsync:
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


def _amended_front(exc: SapwoodError, where: str, advice: str) -> SapwoodError:
    """The same error (class and facts), its message as ``where: message; advice``."""
    amended = type(exc)(f"{where}: {exc}; {advice}")
    amended.__dict__.update(exc.__dict__)
    return amended


def _remove_leftover(building: Path) -> None:
    try:
        remove_tree(building)
    except (OSError, SapwoodError) as exc:
        log.warning("could not remove the partial checkout %s: %s", building, exc)


def _open_dir(path: Path | bytes, dir_fd: int | None) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def _open_existing_dir(name: Path | bytes, dir_fd: int | None, where: str) -> int:
    """A directory already in DEST; anything else (a symlink too) is a conflict."""
    try:
        return _open_dir(name, dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise CheckoutConflictError(
                f"{where}: exists in DEST and is not a directory (symlinks are not followed)"
            ) from None
        raise


def _prefix(node: Node) -> bytes:
    return node.path.rstrip(b"/") + b"/"


def _split_whiteouts(
    files: _FileEntries, prefix: bytes
) -> tuple[_FileEntries, list[tuple[bytes, bytes]]]:
    """(the files that are not whiteouts, [(name a whiteout removes, the whiteout's path)])."""
    kept: list[tuple[bytes, ObjectId]] = []
    targets: list[tuple[bytes, bytes]] = []
    for name, file_id in files:
        if not name.startswith(WHITEOUT):
            kept.append((name, file_id))
            continue
        target = _whiteout_target(name, prefix + name)
        if target is not None:
            targets.append((target, prefix + name))
    return kept, targets


def _whiteout_target(name: bytes, where: bytes) -> bytes | None:
    """The entry ``.wh.NAME`` removes: NAME, which must be a valid entry name.

    '.wh..' and '.wh...' would name the directory itself and its parent (outside DEST
    at the top); they, and '.wh.' alone, are refused: a layer holding them is broken.
    """
    target = name[len(WHITEOUT) :]
    if target.startswith(WHITEOUT):
        log.debug("%s: an aufs marker (opaque directories are not supported)", show_path(where))
        return None
    try:
        return check_name(target)
    except InvalidNameError as exc:
        raise InvalidNameError(
            f"whiteout {show_path(where)} refused: {exc}; "
            "a whiteout removes only an entry of its own directory"
        ) from None


class _Builder:
    def __init__(self, repo: Repository, options: CheckoutOptions) -> None:
        self.repo = repo
        self.options = options
        self.protected = _repository_chain(repo) if options.whiteouts else set()
        self.stats = CheckoutStats()
        self.can_link = not options.copy and (
            (repo.mode is RepoMode.BARE and not options.user_mode)
            or (repo.mode in (RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY) and options.user_mode)
        )
        self.copier = Copier()
        self._verified: set[ObjectId] = set()  # --verify: each object is re-hashed once
        self._same: set[tuple[int, int, int, int, int]] = set()  # identical by content (stat)
        self._mounts: list[bytes] | None = None
        self._opened: dict[ObjectId, int] = {}  # objects opened ahead of their copies

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
        files: _FileEntries = tree.files
        targets: list[tuple[bytes, bytes]] = []
        if self.options.whiteouts:
            files, targets = _split_whiteouts(tree.files, prefix)
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
            fd = _open_existing_dir(name, dirfd, show_path(child.path))
            try:
                self.precheck(child, fd)
            finally:
                os.close(fd)

    def _precheck_contents(
        self,
        prefix: bytes,
        files: _FileEntries,
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
        files: _FileEntries = tree.files
        if self.options.whiteouts:
            files, targets = _split_whiteouts(tree.files, prefix)
            for target, where in targets if existing else ():
                self._remove(dirfd, target, where)
        headers = self.repo.read_file_headers([file_id for _, file_id in files])
        entries: list[_Entry] = list(zip(files, headers, strict=True))
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
        for name, entry in tree.dirs:
            self._subdir(Node(prefix + name, dir=entry), name, dirfd, existing)

    def _open_ahead(self, window: list[_Entry]) -> None:
        """Open the objects a window of copies will read, and tell the kernel to read them.

        On a cold disk this keeps many reads in flight instead of one; the copies take
        these fds. An object that cannot be opened here is opened again by its copy,
        which reports the problem with its path.
        """
        if self.repo.stores_compressed:
            return
        for (_, file_id), (header, size) in window:
            if header.is_symlink or size == 0 or file_id in self._opened:
                continue
            try:
                fd = self.repo.open_file_fd(file_id, size)
            except (SapwoodError, OSError):
                continue
            self._opened[file_id] = fd
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)

    def _close_ahead(self) -> None:
        for fd in self._opened.values():
            os.close(fd)
        self._opened.clear()

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
        fd = _open_existing_dir(name, dirfd, show_path(child.path))
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
        if not self.options.user_mode:
            os.fchown(fd, meta.uid, meta.gid)
            for key, value in meta.xattrs:
                os.setxattr(fd, key, value)
        mode = stat.S_IMODE(meta.mode) & ~(_SETID if self.options.user_mode else 0)
        os.fchmod(fd, mode)
        os.utime(fd, ns=(0, 0))
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

    def _linkable(self, header: FileHeader, size: int) -> bool:
        """Hardlinked, unless the mode cannot or the file is empty or unreadable (as OSTree)."""
        return self.can_link and size > 0 and bool(header.mode & stat.S_IRUSR)

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

    def _link(self, child: Node, header: FileHeader, size: int, name: bytes, dirfd: int) -> bool:
        assert child.file is not None
        if self.options.verify:
            self._verify(child.path, child.file, header, size)
        try:
            # linkat never follows the object's path; what it linked is checked below
            os.link(
                self.repo.object_path(child.file),
                name,
                dst_dir_fd=dirfd,
                follow_symlinks=False,
            )
        except FileNotFoundError:
            raise ObjectMissingError(
                f"{show_path(child.path)}: object {child.file.hex()} is missing from objects/; "
                "run sapwood fsck",
                object_id=child.file,
            ) from None
        except OSError as exc:
            if exc.errno not in _LINK_FALLBACK:
                raise
            if self.options.require_hardlinks:
                raise UsageError(
                    f"{show_path(name)}: cannot hardlink ({exc.strerror}) "
                    "and require_hardlinks forbids copying"
                ) from None
            log.info("cannot hardlink %s (%s): copying", show_path(name), exc.strerror)
            return False
        try:
            _check_linked(child, size, name, dirfd)
        except BaseException:
            os.unlink(name, dir_fd=dirfd)
            raise
        self.stats.hardlinks += 1
        return True

    def _verify(self, path: bytes, file_id: ObjectId, header: FileHeader, size: int) -> None:
        if file_id in self._verified:
            return
        problem = self.repo.verify_file(file_id, header, size)
        if problem:
            raise CorruptObjectError(
                f"{show_path(path)}: object {file_id.hex()}: {problem}; run sapwood fsck",
                object_id=file_id,
            )
        self._verified.add(file_id)

    def _copy(self, child: Node, header: FileHeader, size: int, name: bytes, dirfd: int) -> None:
        if self.options.require_hardlinks and self._linkable(header, size):
            raise UsageError(
                f"{show_path(name)}: cannot hardlink and require_hardlinks forbids copying"
            )
        fd = os.open(
            name,
            os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,  # a clone is re-read
            0o600,
            dir_fd=dirfd,
        )
        try:
            try:
                self._copy_content(child, header, size, fd)
                self._apply_file_meta(fd, header)
            finally:
                os.close(fd)
        except BaseException:
            os.unlink(name, dir_fd=dirfd)  # never leave bytes that were not the object's
            raise
        self.stats.copies += 1

    def _copy_content(self, child: Node, header: FileHeader, size: int, fd: int) -> None:
        """Copy the object's content into ``fd``, hashing it; raise if it was not the object's."""
        assert child.file is not None
        try:
            if self.repo.stores_compressed:
                with self.repo.open_file(child.file) as stream:  # inflates and verifies itself
                    copy_stream(stream, fd)
                return
            check = ContentCheck(child.file, header.encode(), size)
            src = self._opened.pop(child.file, None)
            if src is None:
                src = self.repo.open_file_fd(child.file, size)  # regular, of the recorded size
            try:
                self.copier.copy_fd(src, fd, size, check)
            finally:
                os.close(src)
        except (CorruptObjectError, ObjectMissingError) as exc:
            raise _amended_front(exc, show_path(child.path), "run sapwood fsck") from None
        problem = check.problem()
        if problem is not None:
            raise CorruptObjectError(
                f"{show_path(child.path)}: object {child.file.hex()}: {problem}; run sapwood fsck",
                object_id=child.file,
            )

    def _apply_file_meta(self, fd: int, header: FileHeader) -> None:
        if not self.options.user_mode:
            os.fchown(fd, header.uid, header.gid)
            for key, value in header.xattrs:
                os.setxattr(fd, key, value)
        os.fchmod(fd, stat.S_IMODE(header.mode) & ~(_SETID if self.options.user_mode else 0))
        os.utime(fd, ns=(0, 0))

    def _symlink(self, header: FileHeader, name: bytes, dirfd: int) -> None:
        os.symlink(header.symlink_target, name, dir_fd=dirfd)
        if not self.options.user_mode:
            os.chown(name, header.uid, header.gid, dir_fd=dirfd, follow_symlinks=False)
        os.utime(name, ns=(0, 0), dir_fd=dirfd, follow_symlinks=False)
        self.stats.symlinks += 1

    def _remove(self, dirfd: int, target: bytes, where: bytes) -> None:
        """What a whiteout does: remove ``target`` (file, symlink or tree) from ``dirfd``."""
        self._refuse_repository(dirfd, target, where)
        try:
            st = os.lstat(target, dir_fd=dirfd)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            fd = _open_dir(target, dirfd)
            try:
                _require_device(fd, os.fstat(dirfd).st_dev, target)
                _empty_dir(fd, target)
            finally:
                os.close(fd)
            os.rmdir(target, dir_fd=dirfd)
        else:
            os.unlink(target, dir_fd=dirfd)  # a symlink goes, what it points to stays
        self.stats.removed += 1
        log.info("whiteout %s removed %s", show_path(where), show_path(target))


def _check_linked(child: Node, size: int, name: bytes, dirfd: int) -> None:
    """Refuse a link to anything but a regular file of the recorded size.

    The link is checked, not the object's path before it: the link is what DEST holds.
    """
    st = os.lstat(name, dir_fd=dirfd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        assert child.file is not None
        raise CorruptObjectError(
            f"{show_path(child.path)}: object {child.file.hex()}: its file is not a regular "
            f"file of {size} bytes; run sapwood fsck",
            object_id=child.file,
        )


def _dir_where_file(child: Node) -> CheckoutConflictError:
    return CheckoutConflictError(
        f"{show_path(child.path)}: a directory in DEST stands where the commit has a file"
    )


def _differs(child: Node) -> CheckoutConflictError:
    return CheckoutConflictError(
        f"{show_path(child.path)}: File exists and differs (union mode 'identical')"
    )


def _require_device(fd: int, device: int, where: bytes) -> None:
    """Refuse to empty a directory of another filesystem than ``device`` (a mount point)."""
    if os.fstat(fd).st_dev != device:
        raise CheckoutConflictError(
            f"{show_path(where)}: is on another filesystem (a mount point): not removed"
        )


def _empty_dir(fd: int, where: bytes, depth: int = 0) -> None:
    """Remove everything inside an open directory, never following a symlink and never
    entering another filesystem.

    Subdirectories are made writable first: a partial checkout may hold read-only ones.
    A directory nested deeper than MAX_TREE_DEPTH below is refused before anything of
    it is removed (the walk recurses, one fd a level).
    """
    if depth == 0:
        _require_shallow(fd, where)
    device = os.fstat(fd).st_dev
    for entry in os.scandir(fd):
        name = os.fsencode(entry.name)
        if entry.is_dir(follow_symlinks=False):
            child = _open_dir(name, fd)
            try:
                _require_device(child, device, where + b"/" + name)
                os.fchmod(child, 0o700)
                _empty_dir(child, where + b"/" + name, depth + 1)
            finally:
                os.close(child)
            os.rmdir(name, dir_fd=fd)
        else:
            os.unlink(name, dir_fd=fd)


def _require_shallow(fd: int, where: bytes) -> None:
    """Refuse to remove a tree deeper than MAX_TREE_DEPTH (checked without recursion,
    one fd a level)."""
    fds = [os.dup(fd)]
    listings = [os.scandir(fds[0])]
    try:
        while listings:
            entry = next(listings[-1], None)
            if entry is None:
                listings.pop().close()
                os.close(fds.pop())
            elif entry.is_dir(follow_symlinks=False):
                if len(fds) > MAX_TREE_DEPTH:
                    raise CheckoutConflictError(
                        f"{show_path(where)}: nests directories more than {MAX_TREE_DEPTH} "
                        "deep: not removed"
                    )
                fds.append(_open_dir(os.fsencode(entry.name), fds[-1]))
                listings.append(os.scandir(fds[-1]))
    finally:
        for listing in listings:
            listing.close()
        for leftover in fds:
            os.close(leftover)


def remove_tree(path: Path) -> None:
    """Remove a (partial) checkout."""
    if not os.path.lexists(path):
        return
    try:
        fd = _open_dir(path, None)
    except OSError:
        os.unlink(path)
        return
    try:
        os.fchmod(fd, 0o700)
        _empty_dir(fd, os.fsencode(path))
    finally:
        os.close(fd)
    os.rmdir(path)
