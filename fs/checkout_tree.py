"""Checkout's walk of the commit's directories: each directory made, its files written
a window at a time (fs.checkout_files), its metadata given once its entries exist.
A union checkout's handling of what DEST already holds is fs.checkout_union's.
"""

from __future__ import annotations

import os

from fs.checkout_files import Entry
from fs.checkout_options import CheckoutOptions, apply_meta, dir_mode
from fs.checkout_remove import FileEntries, open_existing_dir, split_whiteouts
from fs.checkout_union import UnionChecks, entries_prefix
from store import (
    MAX_TREE_DEPTH,
    CorruptObjectError,
    DirMeta,
    FileHeader,
    Node,
    Repository,
    TaskCallback,
    Ticker,
    show_path,
)

_WINDOW = 64  # copies whose objects are opened and announced to the kernel at once


class TreeBuilder(UnionChecks):
    """Walks the commit's directories; the files themselves are FileWriter's."""

    def __init__(
        self, repo: Repository, options: CheckoutOptions, progress: TaskCallback | None = None
    ) -> None:
        super().__init__(repo, options)
        self.progress = progress
        self.ticker = Ticker(None, "checking out", None)  # counts nothing until checkout's

    # ----- directories ---------------------------------------------------------------
    def fill(self, node: Node, dirfd: int, existing: bool) -> None:
        """Create the entries of directory ``node`` inside the open directory ``dirfd``.

        ``existing``: ``dirfd`` was in DEST before this checkout. Whiteouts remove
        entries only there, and before anything is written into it, so they apply to
        what lies below the commit, never to the commit's own entries.
        """
        assert node.dir is not None
        tree = self.repo.read_dirtree(node.dir.tree)
        prefix = entries_prefix(node)
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
