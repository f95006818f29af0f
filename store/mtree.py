"""A mutable tree: where a commit is assembled before it is written.

Layers (a directory, a tar, an existing commit) are overlaid in order, as OSTree's
``--tree`` options are: a later file replaces an earlier entry of that name, and a
later directory is merged into an earlier directory (taking the later metadata).
A directory taken from an existing commit stays a reference to its dirtree and is
only expanded if a later layer writes inside it, so overlaying a large ref is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from store.errors import SourceError
from store.ids import ObjectId
from store.objects import DirEntry, DirTree
from store.repo import Repository
from store.transaction import Transaction

MAX_TREE_DEPTH = 256  # directories below the root (real trees: 20-30; see decisions.md)


@dataclass
class MutableDir:
    meta: ObjectId | None = None
    entries: dict[bytes, ObjectId | MutableDir] = field(default_factory=dict)
    base: DirEntry | None = None  # unexpanded dirtree of an existing commit
    _repo: Repository | None = None

    @classmethod
    def from_existing(cls, repo: Repository, entry: DirEntry) -> MutableDir:
        return cls(meta=entry.meta, base=entry, _repo=repo)

    def expand(self) -> None:
        """Turn a reference to a stored dirtree into editable entries."""
        if self.base is None:
            return
        assert self._repo is not None
        tree = self._repo.read_dirtree(self.base.tree)
        for name, file_id in tree.files:
            self.entries[name] = file_id
        for name, entry in tree.dirs:
            self.entries[name] = MutableDir.from_existing(self._repo, entry)
        self.base = None

    def child_dir(self, name: bytes) -> MutableDir:
        """The subdirectory ``name``, created (or replacing a file) if needed."""
        self.expand()
        current = self.entries.get(name)
        if isinstance(current, MutableDir):
            return current
        child = MutableDir()
        self.entries[name] = child
        return child

    def existing_dir(self, name: bytes, where: str) -> MutableDir:
        """The subdirectory ``name`` for a path that passes through it; never a file."""
        self.expand()
        current = self.entries.get(name)
        if current is None:
            return self.child_dir(name)
        if not isinstance(current, MutableDir):
            raise SourceError(f"{where}: a path passes through a file or symlink")
        return current

    def overlay(self, other: MutableDir) -> None:
        """Put ``other`` over this directory: its entries win, directories merge."""
        if self.base is None and not self.entries:
            self.base, self._repo, self.entries = other.base, other._repo, dict(other.entries)
            self.meta = other.meta or self.meta
            return
        self.expand()
        other.expand()
        self.meta = other.meta or self.meta
        for name, value in other.entries.items():
            existing = self.entries.get(name)
            if isinstance(existing, MutableDir) and isinstance(value, MutableDir):
                existing.overlay(value)
            else:
                self.entries[name] = value

    def set_file(self, name: bytes, file_id: ObjectId) -> None:
        self.expand()
        self.entries[name] = file_id

    def write(self, txn: Transaction, default_meta: ObjectId) -> DirEntry:
        """Write the dirtrees of this directory and below; return its (tree, meta).

        Children are written before their parent (their ids are in it), with an
        explicit stack: a tree as deep as MAX_TREE_DEPTH needs no deep recursion.
        """
        written: dict[int, DirEntry] = {}
        stack: list[tuple[MutableDir, int, bool]] = [(self, 0, False)]
        while stack:
            directory, depth, children_done = stack.pop()
            if directory.base is not None:
                meta = directory.meta or default_meta
                written[id(directory)] = DirEntry(directory.base.tree, meta)
            elif children_done:
                written[id(directory)] = directory._write_one(txn, default_meta, written)
            else:
                if depth > MAX_TREE_DEPTH:
                    raise SourceError(
                        f"the tree nests directories more than {MAX_TREE_DEPTH} deep, which "
                        "sapwood refuses"
                    )
                stack.append((directory, depth, True))
                stack += [
                    (child, depth + 1, False)
                    for child in directory.entries.values()
                    if isinstance(child, MutableDir)
                ]
        return written[id(self)]

    def _write_one(
        self, txn: Transaction, default_meta: ObjectId, written: dict[int, DirEntry]
    ) -> DirEntry:
        files: dict[bytes, ObjectId] = {}
        dirs: dict[bytes, DirEntry] = {}
        for name, value in self.entries.items():
            if isinstance(value, MutableDir):
                dirs[name] = written.pop(id(value))
            else:
                files[name] = value
        tree_id = txn.write_dirtree(DirTree.build(files, dirs))
        return DirEntry(tree_id, self.meta or default_meta)
