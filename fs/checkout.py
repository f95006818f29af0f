"""Checkout: a commit made real on disk, as a hardlink farm or as copies.

Everything is done relative to directory file descriptors opened with O_NOFOLLOW,
and entries are created with O_EXCL semantics, so no symlink (from the commit or
already in DEST) is ever followed: nothing is written outside DEST.

Without a union option the tree is built in a hidden sibling of DEST and renamed
into place at the end, so a failed checkout (a full disk, a corrupt object)
leaves no half tree that a later checkout trips over.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fs.copy import copy_fd, copy_stream
from store import (
    CorruptObjectError,
    DirMeta,
    FileHeader,
    Node,
    ObjectId,
    PermissionDeniedError,
    RepoMode,
    Repository,
    SapwoodError,
    UsageError,
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


class CheckoutConflictError(SapwoodError):
    """An entry in DEST stands where the commit needs something else."""


@dataclass
class CheckoutOptions:
    user_mode: bool = False  # -U: owned by the caller, no setuid/setgid, no xattrs
    copy: bool = False  # -C: never hardlink
    require_hardlinks: bool = False  # -H: never fall back to copying
    union: Union = "none"
    subpath: str = "/"
    whiteouts: bool = False  # .wh.NAME deletes NAME instead of being checked out
    fsync: bool = True
    verify: bool = False  # re-hash every object before it is used


@dataclass
class CheckoutStats:
    hardlinks: int = 0
    copies: int = 0
    symlinks: int = 0
    directories: int = 0
    skipped: int = 0


def checkout(
    repo: Repository, commit_id: ObjectId, dest: Path, options: CheckoutOptions
) -> CheckoutStats:
    _check_options(repo, options)
    node = lookup(repo, commit_id, options.subpath)
    if node.dir is None:
        raise UsageError(f"--subpath {options.subpath}: is not a directory")
    builder = _Builder(repo, options)
    if options.union == "none":
        return _fresh_checkout(builder, node, dest)
    dest.mkdir(parents=True, exist_ok=True)
    fd = _open_dir(dest, None)
    try:
        with space_errors("the checkout was removed"):
            builder.fill(node, fd, existing=True)
        if options.fsync:
            syncfs(dest)
    finally:
        os.close(fd)
    return builder.stats


def _check_options(repo: Repository, options: CheckoutOptions) -> None:
    if options.union == "identical" and not options.require_hardlinks:
        raise UsageError("--union-identical needs -H (--require-hardlinks)")
    if options.copy and options.require_hardlinks:
        raise UsageError("-C (copy) and -H (require hardlinks) contradict each other")
    if not options.user_mode and os.geteuid() != 0:
        raise PermissionDeniedError("a checkout with the recorded ownership needs root; use -U")
    if options.require_hardlinks:
        if repo.mode is RepoMode.ARCHIVE:
            raise UsageError("an archive repository stores compressed objects: it cannot hardlink")
        if repo.mode is RepoMode.BARE and options.user_mode:
            raise UsageError("a bare repository cannot hardlink in user mode (-U); drop -H or -U")
        if repo.mode is not RepoMode.BARE and not options.user_mode:
            raise UsageError(f"a {repo.mode.value} repository hardlinks only in user mode: add -U")


def _fresh_checkout(builder: _Builder, node: Node, dest: Path) -> CheckoutStats:
    if os.path.lexists(dest):
        raise CheckoutConflictError(
            f"{dest}: exists; use --union, --union-add or --union-identical"
        )
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
        remove_tree(building)
        raise
    return builder.stats


def _open_dir(path: Path | bytes, dir_fd: int | None) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


class _Builder:
    def __init__(self, repo: Repository, options: CheckoutOptions) -> None:
        self.repo = repo
        self.options = options
        self.stats = CheckoutStats()
        self.can_link = not options.copy and (
            (repo.mode is RepoMode.BARE and not options.user_mode)
            or (repo.mode in (RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY) and options.user_mode)
        )

    # ----- directories ---------------------------------------------------------------
    def fill(self, node: Node, dirfd: int, existing: bool) -> None:
        """Create the entries of directory ``node`` inside the open directory ``dirfd``."""
        assert node.dir is not None
        tree = self.repo.read_dirtree(node.dir.tree)
        prefix = node.path.rstrip(b"/") + b"/"
        headers = self.repo.read_file_headers([file_id for _, file_id in tree.files])
        for (name, file_id), (header, size) in zip(tree.files, headers, strict=True):
            child = Node(prefix + name, file=file_id)
            if self.options.whiteouts and name.startswith(WHITEOUT):
                self._whiteout(dirfd, name[len(WHITEOUT) :], child.path)
            else:
                self._file(child, name, dirfd, existing, header, size)
        for name, entry in tree.dirs:
            self._subdir(Node(prefix + name, dir=entry), name, dirfd, existing)

    def _subdir(self, child: Node, name: bytes, dirfd: int, existing: bool) -> None:
        created = True
        try:
            os.mkdir(name, 0o700, dir_fd=dirfd)
        except FileExistsError:
            if not existing:
                raise
            created = False
        try:
            fd = _open_dir(name, dirfd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise CheckoutConflictError(
                    f"{show_path(child.path)}: exists in DEST and is not a directory "
                    "(symlinks are not followed)"
                ) from None
            raise
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
        elif (
            self.can_link
            and size > 0
            and header.mode & stat.S_IRUSR
            and self._link(child.file, header, size, name, dirfd)
        ):
            return
        else:
            self._copy(child.file, header, size, name, dirfd)

    def _settle_existing(
        self, child: Node, name: bytes, dirfd: int, header: FileHeader, size: int
    ) -> bool:
        """Deal with an entry already at ``name``; True if nothing more is to be done."""
        try:
            st = os.lstat(name, dir_fd=dirfd)
        except FileNotFoundError:
            return False
        where = show_path(child.path)
        if stat.S_ISDIR(st.st_mode):
            raise CheckoutConflictError(
                f"{where}: a directory in DEST stands where the commit has a file"
            )
        if self.options.union == "add":
            self.stats.skipped += 1
            return True
        if self.options.union == "identical":
            assert child.file is not None
            if self._identical(child.file, header, size, name, dirfd, st):
                self.stats.skipped += 1
                return True
            raise CheckoutConflictError(f"{where}: File exists and differs (--union-identical)")
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
        if header.is_symlink:
            return (
                stat.S_ISLNK(st.st_mode)
                and os.readlink(name, dir_fd=dirfd) == header.symlink_target
            )
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return False
        try:
            obj = os.stat(self.repo.content.path(file_id))
            if (obj.st_dev, obj.st_ino) == (st.st_dev, st.st_ino):
                return True
        except FileNotFoundError:
            pass
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        with os.fdopen(fd, "rb") as mine, self.repo.open_file(file_id) as theirs:
            return mine.read() == theirs.read()

    def _link(
        self, file_id: ObjectId, header: FileHeader, size: int, name: bytes, dirfd: int
    ) -> bool:
        if self.options.verify:
            self._verify(file_id, header, size)
        try:
            os.link(
                self.repo.content.pathstr(file_id), name, dst_dir_fd=dirfd, follow_symlinks=False
            )
        except OSError as exc:
            if exc.errno not in _LINK_FALLBACK:
                raise
            if self.options.require_hardlinks:
                raise UsageError(
                    f"{show_path(name)}: cannot hardlink ({exc.strerror}) and -H forbids copying"
                ) from None
            log.info("cannot hardlink %s (%s): copying", name, exc.strerror)
            return False
        self.stats.hardlinks += 1
        return True

    def _verify(self, file_id: ObjectId, header: FileHeader, size: int) -> None:
        problem = self.repo.content.verify(file_id, header.encode(), size)
        if problem:
            raise CorruptObjectError(f"object {file_id.hex()}: {problem}; run sapwood fsck")

    def _copy(
        self, file_id: ObjectId, header: FileHeader, size: int, name: bytes, dirfd: int
    ) -> None:
        if self.options.require_hardlinks and not (size == 0 or not header.mode & stat.S_IRUSR):
            raise UsageError(f"{show_path(name)}: cannot hardlink and -H forbids copying")
        if self.options.verify:
            self._verify(file_id, header, size)
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dirfd,
        )
        try:
            if self.repo.content.compressed:
                with self.repo.open_file(file_id) as stream:
                    copy_stream(stream, fd)
            else:
                src = os.open(self.repo.content.pathstr(file_id), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    copy_fd(src, fd, size)
                finally:
                    os.close(src)
            self._apply_file_meta(fd, header)
        finally:
            os.close(fd)
        self.stats.copies += 1

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

    def _whiteout(self, dirfd: int, target: bytes, where: bytes) -> None:
        if not target or target.startswith(b".wh."):
            return  # opaque markers (.wh..wh..opq) are not supported; nothing to delete
        try:
            st = os.lstat(target, dir_fd=dirfd)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            fd = _open_dir(target, dirfd)
            try:
                _empty_dir(fd)
            finally:
                os.close(fd)
            os.rmdir(target, dir_fd=dirfd)
        else:
            os.unlink(target, dir_fd=dirfd)
        log.info("whiteout %s removed %s", show_path(where), show_path(target))


def _empty_dir(fd: int) -> None:
    """Remove everything inside an open directory, never following a symlink.

    Subdirectories are made writable first: a partial checkout may hold read-only ones.
    """
    for entry in os.scandir(fd):
        if entry.is_dir(follow_symlinks=False):
            child = _open_dir(os.fsencode(entry.name), fd)
            try:
                os.fchmod(child, 0o700)
                _empty_dir(child)
            finally:
                os.close(child)
            os.rmdir(entry.name, dir_fd=fd)
        else:
            os.unlink(entry.name, dir_fd=fd)


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
        _empty_dir(fd)
    finally:
        os.close(fd)
    os.rmdir(path)
