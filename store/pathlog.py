"""The history of paths: which commits changed a file or a directory (``log -- PATH``).

A commit changed a path when the path's entry differs from the parent's: another file
object id (content, type, mode, owner, xattrs or a symlink's target: the id covers them
all), another (dirtree, dirmeta) pair for a directory (anything below it, or its own
metadata), or present on one side only. A commit whose parent is absent (a root commit,
or the oldest commit of a history pulled with a depth) changed the path if it has it.

Ids are compared along the path from the root, never below it: a directory whose
dirtree id is the same in both commits holds the same entries at every depth, so the
rest of the path is known without reading further. Walking history newest first, the
parent's entries along the path are read only from the first directory that differs
from its child's; a commit that leaves the path's ancestors alone costs one commit
read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from store.errors import InvalidNameError, UsageError
from store.ids import ObjectId
from store.names import split_path
from store.objects import Commit, DirEntry, DirTree
from store.repo import Repository
from store.revs import history
from store.trees import Node, find_child


@dataclass(frozen=True, slots=True)
class PathChange:
    """One asked-for path that a commit changed: its node in the parent and in the
    commit (None where it is absent: ``old`` None is an addition, ``new`` None a
    deletion). Either may be a file or a directory: a type change has one of each."""

    path: bytes  # normalised: "/etc/ssh", "/" for the root
    old: Node | None
    new: Node | None


@dataclass(frozen=True, slots=True)
class PathLogEntry:
    """A commit that changed at least one of the paths, with those changes in the order
    the paths were given."""

    commit_id: ObjectId
    commit: Commit
    changes: tuple[PathChange, ...]


def normalize_path(path: str) -> bytes:
    """A path inside a commit as the root-anchored bytes its nodes carry: leading and
    trailing slashes, empty and '.' components dropped ("etc/ssh/." is "/etc/ssh",
    "" is "/"). '..' is refused (InvalidNameError): a commit has no parent directory to
    resolve it against, and guessing would show another path's history."""
    if ".." in path.split("/"):
        raise InvalidNameError(f"{path}: '..' is not allowed in a path inside a commit")
    return b"/" + b"/".join(split_path(path))


def path_history(
    repo: Repository, commit_id: ObjectId, paths: Iterable[str]
) -> Iterator[PathLogEntry]:
    """The commits of ``commit_id``'s history (newest first, as :func:`history`) that
    changed any of ``paths`` (files or directories; a directory changes with anything
    below it).

    A path that never existed yields nothing. Paths are normalised by
    :func:`normalize_path` (InvalidNameError for '..'); no path at all is a UsageError.
    """
    wanted = list(dict.fromkeys(normalize_path(p) for p in paths))
    if not wanted:
        raise UsageError("a path history needs at least one path")
    names = [_names(p) for p in wanted]
    trees = _TreeCache(repo)
    child: tuple[ObjectId, Commit, list[_Spine]] | None = None
    known: Sequence[_Spine | None] = [None] * len(names)
    for current_id, commit in history(repo, commit_id):
        root = _root(commit)
        spines = [_spine(trees, root, n, k) for n, k in zip(names, known, strict=True)]
        known = spines
        if child is not None:
            entry = _entry(child, spines, wanted)
            if entry is not None:
                yield entry
        child = (current_id, commit, spines)
    if child is not None:
        absent: list[_Spine] = [[None] * (len(n) + 1) for n in names]
        entry = _entry(child, absent, wanted)
        if entry is not None:
            yield entry


_Spine = list[Node | None]  # the root, then the node of each name of a path (None: absent)


def _names(path: bytes) -> list[bytes]:
    return [name for name in path.split(b"/") if name]


def _root(commit: Commit) -> Node:
    return Node(b"/", dir=DirEntry(commit.tree, commit.meta))


def _entry(
    child: tuple[ObjectId, Commit, list[_Spine]], parent: list[_Spine], paths: list[bytes]
) -> PathLogEntry | None:
    """The child commit's entry if any path's last node differs from its parent's."""
    commit_id, commit, spines = child
    changes = tuple(
        PathChange(path, old[-1], new[-1])
        for path, old, new in zip(paths, parent, spines, strict=True)
        if old[-1] != new[-1]
    )
    return PathLogEntry(commit_id, commit, changes) if changes else None


def _below(node: Node | None) -> ObjectId | None:
    """What decides everything below a node: a directory's dirtree id (None: nothing)."""
    return node.dir.tree if node is not None and node.dir is not None else None


def _spine(trees: _TreeCache, root: Node, names: list[bytes], known: _Spine | None) -> _Spine:
    """The nodes along ``names`` from ``root``. ``known`` is another commit's spine of
    the same path: from the first directory whose dirtree id it shares, its nodes are
    this commit's too, and nothing more is read."""
    spine: _Spine = [root]
    for depth, name in enumerate(names):
        here = spine[depth]
        if known is not None and _below(known[depth]) == _below(here):
            return spine + known[depth + 1 :]
        if here is None or here.dir is None:  # absent, or a file where a directory would be
            return spine + [None] * (len(names) - depth)
        found = find_child(trees.get(here.dir.tree), name)
        if found is None:
            spine.append(None)
        else:
            path = here.path.rstrip(b"/") + b"/" + name
            spine.append(Node(path, file=found[0], dir=found[1]))
    return spine


class _TreeCache:
    """The dirtrees read lately: several paths share their ancestors' trees."""

    _LIMIT = 256

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._trees: dict[ObjectId, DirTree] = {}

    def get(self, tree_id: ObjectId) -> DirTree:
        tree = self._trees.get(tree_id)
        if tree is None:
            if len(self._trees) >= self._LIMIT:
                self._trees.clear()
            tree = self._trees[tree_id] = self._repo.read_dirtree(tree_id)
        return tree
