"""Inode numbers without a table entry per file: a directory instance and a position.

Every directory the mount shows gets an *instance* number the first time its parent is
expanded (listed or looked into); the subdirectories of one parent get consecutive
instances in one go. An instance is a row of flat arrays (its parent instance, its
position among the parent's subdirectories, the first instance of its own
subdirectories): 24 bytes, whatever the directory holds. Inode numbers are derived:

    directory   2 * instance + 1                      (the root, instance 0, is inode 1)
    file        2 * (parent instance << 24 | index + 1)

So an inode number leads back to its entry through the arrays and the directory trees
(which the view caches), the kernel forgetting an inode costs nothing to remember, and a
walk of a million files adds rows only for its directories. Numbers are stable for the
life of a mount; directories never share one. A directory may hold up to 2**24 - 2 files.

Roots (a commit's tree, and the repository view's listings) are instances whose parent
is themselves; what they show is kept by the view, not here.
"""

from __future__ import annotations

from array import array

from store import TooManyFilesError

FILE_INDEX_BITS = 24
MAX_FILES_PER_DIR = (1 << FILE_INDEX_BITS) - 2
_INDEX_MASK = (1 << FILE_INDEX_BITS) - 1


def dir_ino(instance: int) -> int:
    return 2 * instance + 1


def file_ino(parent: int, index: int) -> int:
    if index >= MAX_FILES_PER_DIR:
        raise TooManyFilesError(f"a directory holds more than {MAX_FILES_PER_DIR} files")
    return 2 * (parent << FILE_INDEX_BITS | (index + 1))


def is_dir_ino(ino: int) -> bool:
    return bool(ino & 1)


def instance_of(ino: int) -> int:
    """The instance of a directory inode."""
    return ino >> 1


def file_position(ino: int) -> tuple[int, int]:
    """(parent instance, index in the parent's files) of a file inode."""
    value = ino >> 1
    return value >> FILE_INDEX_BITS, (value & _INDEX_MASK) - 1


class InstanceTable:
    """The directory instances handed out so far; grows, never shrinks."""

    def __init__(self) -> None:
        self._parent = array("Q")
        self._position = array("Q")
        self._first_child = array("Q")  # 0: not expanded yet (instance 0 is a root)
        self.add_root()

    def __len__(self) -> int:
        return len(self._parent)

    def add_root(self) -> int:
        instance = len(self._parent)
        self._parent.append(instance)
        self._position.append(0)
        self._first_child.append(0)
        return instance

    def known(self, instance: int) -> bool:
        return 0 <= instance < len(self._parent)

    def parent(self, instance: int) -> tuple[int, int]:
        """(parent instance, position among its subdirectories)."""
        return self._parent[instance], self._position[instance]

    def child(self, instance: int, position: int, subdirs: int) -> int:
        """The instance of subdirectory ``position`` (of ``subdirs``) of ``instance``."""
        first = self._first_child[instance]
        if first == 0:
            first = len(self._parent)
            self._parent.extend([instance] * subdirs)
            self._position.extend(range(subdirs))
            self._first_child.extend([0] * subdirs)
            self._first_child[instance] = first
        return first + position
