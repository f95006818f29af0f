"""A directory's tree as the mount keeps it in its caches: compact, and searched in place."""

from __future__ import annotations

from bisect import bisect_left

from store import DirTree, ObjectId

_ID = 32  # bytes of an object id


class Listing:
    """A directory's tree as the view keeps it: about 90 bytes a file (its name, and its
    id in one string of all the ids), where a decoded DirTree holds about 200 (a tuple,
    a name and an id object per file). Made from a DirTree, so checked as one."""

    __slots__ = ("_file_ids", "dir_names", "dirs", "file_names")

    def __init__(self, tree: DirTree) -> None:
        self.file_names = tuple(name for name, _ in tree.files)
        self._file_ids = b"".join(file_id for _, file_id in tree.files)
        self.dir_names = tuple(name for name, _ in tree.dirs)
        self.dirs = tuple(entry for _, entry in tree.dirs)

    def __len__(self) -> int:
        return len(self.file_names) + len(self.dirs)

    def file_id(self, index: int) -> ObjectId:
        return ObjectId(self._file_ids[_ID * index : _ID * (index + 1)])

    def file_ids(self, start: int, stop: int) -> list[ObjectId]:
        stop = min(stop, len(self.file_names))
        ids = self._file_ids
        return [ObjectId(ids[_ID * index : _ID * (index + 1)]) for index in range(start, stop)]

    def locate(self, name: bytes) -> tuple[bool, int] | None:
        """(is a directory, index among the files or the directories) of ``name``."""
        for names, is_dir in ((self.file_names, False), (self.dir_names, True)):
            index = bisect_left(names, name)
            if index < len(names) and names[index] == name:
                return is_dir, index
        return None
