"""Checkout into an existing DEST: what is already there, and whiteouts.

A union checkout first runs ``precheck``, which reads only (DEST and the commit's
headers) and finds what ``fill`` would fail on: a directory where the commit has a
file, a file that differs (--union-identical), a whiteout of the repository or of a
mount point, an object that fails --verify. While it fills, an entry already in DEST
is kept, compared or replaced (``_settle_existing``), and a whiteout removes its
target (``_remove``). The walk itself is fs.checkout_tree's; the files are written by
fs.checkout_files.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass

from fs.checkout_files import FileWriter
from fs.checkout_options import CheckoutConflictError, CheckoutOptions
from fs.checkout_remove import (
    FileEntries,
    empty_dir,
    open_dir,
    open_existing_dir,
    require_device,
    split_whiteouts,
)
from fs.mounts import mount_points
from store import (
    DirTree,
    FileHeader,
    Node,
    ObjectId,
    Repository,
    file_matches,
    show_path,
)

log = logging.getLogger(__name__)


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


def entries_prefix(node: Node) -> bytes:
    """The path of directory ``node`` as its entries' paths begin: ending in one '/'."""
    return node.path.rstrip(b"/") + b"/"


@dataclass(frozen=True)
class _Here:
    """One directory as the pre-check sees it: the commit's path of its entries
    (``prefix``, ending in '/'), what DEST holds there by name (``present``: empty
    where DEST has no such directory) and DEST's fd of it (``dirfd``: None then)."""

    prefix: bytes
    present: dict[bytes, os.DirEntry[str]]
    dirfd: int | None


class UnionChecks(FileWriter):
    """What a checkout into an existing DEST adds to writing files: the pre-check,
    entries already there, whiteouts."""

    def __init__(self, repo: Repository, options: CheckoutOptions) -> None:
        super().__init__(repo, options)
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
        present: dict[bytes, os.DirEntry[str]] = {}
        if dirfd is not None:
            present = {os.fsencode(e.name): e for e in os.scandir(dirfd)}
        here = _Here(entries_prefix(node), present, dirfd)
        files = self._precheck_whiteouts(tree, here)
        self._precheck_files(files, here)
        self._precheck_subdirs(tree, here)

    def _precheck_whiteouts(self, tree: DirTree, here: _Here) -> FileEntries:
        """The directory's files but its whiteouts. A whiteout's target in DEST is taken
        out of ``here.present`` (``fill`` removes it first) once it is found to be
        neither the repository nor a mount point, nor to hold one."""
        if not self.options.whiteouts:
            return tree.files
        files, targets = split_whiteouts(tree.files, here.prefix)
        for target, where in targets:
            if here.present.pop(target, None) is not None:
                assert here.dirfd is not None
                self._refuse_repository(here.dirfd, target, where)
                self._refuse_mount_points(here.dirfd, target, where)
        return files

    def _precheck_files(self, files: FileEntries, here: _Here) -> None:
        """No directory of DEST where the commit has a file; then the contents, if
        --verify or --union-identical asks."""
        for name, file_id in files:
            found = here.present.get(name)
            if found is not None and found.is_dir(follow_symlinks=False):
                raise _dir_where_file(Node(here.prefix + name, file=file_id))
        if self.options.verify or (self.options.union == "identical" and here.present):
            self._precheck_contents(files, here)

    def _precheck_subdirs(self, tree: DirTree, here: _Here) -> None:
        """Each subdirectory, against DEST's directory of its name if there is one."""
        for name, entry in tree.dirs:
            child = Node(here.prefix + name, dir=entry)
            if name not in here.present:
                self.precheck(child, None)
                continue
            assert here.dirfd is not None
            fd = open_existing_dir(name, here.dirfd, show_path(child.path))
            try:
                self.precheck(child, fd)
            finally:
                os.close(fd)

    def _precheck_contents(self, files: FileEntries, here: _Here) -> None:
        """--union-identical: DEST's files are the commit's; --verify: objects to link."""
        headers = self.repo.read_file_headers([file_id for _, file_id in files])
        for (name, file_id), (header, size) in zip(files, headers, strict=True):
            found = here.present.get(name)
            if found is not None and self.options.union == "identical":
                assert here.dirfd is not None
                st = found.stat(follow_symlinks=False)
                if not self._identical(file_id, header, size, name, here.dirfd, st):
                    raise _differs(Node(here.prefix + name, file=file_id))
            if self.options.verify and self._linkable(header, size):
                self._verify(here.prefix + name, file_id, header, size)

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
