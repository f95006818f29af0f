"""Checkout's file writers: hardlinks to objects, verified copies, symlinks.

A hardlink is checked, once made, to be a regular file of the recorded size, and
re-hashed first only with --verify; a copy hashes every byte it copies and is removed
if they were not the object's. Permission bits come from fs.checkout_options.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

from fs.checkout_options import CheckoutOptions, CheckoutStats, apply_meta, file_mode
from fs.copy import Copier, copy_stream
from store import (
    ContentCheck,
    CorruptObjectError,
    FileHeader,
    Node,
    ObjectId,
    ObjectMissingError,
    RepoMode,
    Repository,
    SapwoodError,
    UsageError,
    show_path,
)

log = logging.getLogger(__name__)
_LINK_FALLBACK = {errno.EMLINK, errno.EXDEV, errno.EPERM}
Entry = tuple[tuple[bytes, ObjectId], tuple[FileHeader, int]]  # (name, id), (header, size)


class FileWriter:
    """Creates one file of a checkout at a time; counts what it made in ``stats``."""

    def __init__(self, repo: Repository, options: CheckoutOptions) -> None:
        self.repo = repo
        self.options = options
        self.stats = CheckoutStats()
        self.can_link = not options.copy and (
            (repo.mode is RepoMode.BARE and not options.user_mode)
            or (repo.mode in (RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY) and options.user_mode)
        )
        self.copier = Copier()
        self._verified: set[ObjectId] = set()  # --verify: each object is re-hashed once
        self._opened: dict[ObjectId, int] = {}  # objects opened ahead of their copies
        # objects whose inode has all the links its filesystem allows (EMLINK): copied
        # even with require_hardlinks, which forbids copying what could be linked
        self._at_link_limit: set[ObjectId] = set()

    def _open_ahead(self, window: list[Entry]) -> None:
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

    def _linkable(self, header: FileHeader, size: int) -> bool:
        """Hardlinked, unless the mode cannot or the file is empty or unreadable (as OSTree)."""
        return self.can_link and size > 0 and bool(header.mode & stat.S_IRUSR)

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
            if exc.errno == errno.EMLINK:  # no more links to this inode: a copy (attack23 23)
                self._at_link_limit.add(child.file)
            elif self.options.require_hardlinks:
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
        limit = child.file in self._at_link_limit
        if self.options.require_hardlinks and self._linkable(header, size) and not limit:
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
        bits = file_mode(self.options, header.mode)
        apply_meta(fd, self.options, (header.uid, header.gid), header.xattrs, bits)

    def _symlink(self, header: FileHeader, name: bytes, dirfd: int) -> None:
        os.symlink(header.symlink_target, name, dir_fd=dirfd)
        if not self.options.user_mode:
            os.chown(name, header.uid, header.gid, dir_fd=dirfd, follow_symlinks=False)
        os.utime(name, ns=(0, 0), dir_fd=dirfd, follow_symlinks=False)
        self.stats.symlinks += 1


def _amended_front(exc: SapwoodError, where: str, advice: str) -> SapwoodError:
    """The same error (class and facts), its message as ``where: message; advice``."""
    amended = type(exc)(f"{where}: {exc}; {advice}")
    amended.__dict__.update(exc.__dict__)
    return amended


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
