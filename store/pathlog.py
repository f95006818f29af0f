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

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from store.errors import (
    CorruptObjectError,
    FormatError,
    InvalidNameError,
    UsageError,
)
from store.ids import ObjectId, ObjectType
from store.names import split_path
from store.objects import Commit, DirEntry
from store.repo import Repository
from store.revs import history
from store.trees import Node, commit_root


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
    repo: Repository, commit_id: ObjectId, paths: str | Iterable[str]
) -> Iterator[PathLogEntry]:
    """The commits of ``commit_id``'s history (newest first, as :func:`history`) that
    changed any of ``paths`` (files or directories; a directory changes with anything
    below it).

    A path that never existed yields nothing. Paths are normalised by
    :func:`normalize_path` (InvalidNameError for '..'); no path at all is a UsageError;
    one str is one path (not its letters).
    A path ending in '/' names a directory only, as a git pathspec does: a file or
    symlink there is as good as absent (unless the path is also given without it).
    """
    wanted = _wanted(paths)
    if not wanted:
        raise UsageError("a path history needs at least one path")
    names = [_names(p) for p in wanted]
    trees = _TreeCache(repo)
    child: tuple[ObjectId, Commit, list[_Spine]] | None = None
    known: Sequence[_Spine | None] = [None] * len(names)
    for current_id, commit in history(repo, commit_id):
        root = commit_root(commit)
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


def _wanted(paths: Iterable[str]) -> dict[bytes, bool]:
    """Each normalised path, in the order given, and whether only a directory there
    counts (every form of it given ended in '/': `log -- /mode/` matched the file
    /mode, attack8.md 12)."""
    wanted: dict[bytes, bool] = {}
    for path in [paths] if isinstance(paths, str) else paths:  # a str is one path
        normal = normalize_path(path)
        wanted[normal] = wanted.get(normal, True) and path.endswith("/")
    return wanted


def _names(path: bytes) -> list[bytes]:
    return [name for name in path.split(b"/") if name]


def _entry(
    child: tuple[ObjectId, Commit, list[_Spine]], parent: list[_Spine], paths: dict[bytes, bool]
) -> PathLogEntry | None:
    """The child commit's entry if any path's last node differs from its parent's."""
    commit_id, commit, spines = child
    changes: list[PathChange] = []
    for (path, dir_only), old_spine, new_spine in zip(paths.items(), parent, spines, strict=True):
        old, new = _as_asked(old_spine[-1], dir_only), _as_asked(new_spine[-1], dir_only)
        if old != new:
            changes.append(PathChange(path, old, new))
    return PathLogEntry(commit_id, commit, tuple(changes)) if changes else None


def _as_asked(node: Node | None, dir_only: bool) -> Node | None:
    """``node``, or None where the path asks for a directory and it is none."""
    return None if dir_only and (node is None or node.dir is None) else node


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
        found = trees.find(here.dir.tree, name)
        if found is None:
            spine.append(None)
        else:
            path = here.path.rstrip(b"/") + b"/" + name
            spine.append(Node(path, file=found[0], dir=found[1]))
    return spine


class _TreeCache:
    """Finds one name in stored dirtrees, keeping the encodings read lately (several
    paths share their ancestors' trees).

    Bounded by count and by bytes: a directory of 100,000 entries is a 6 MB encoding,
    and a history that changes one in every commit filled 256 entries with 1.5 GB.
    """

    _LIMIT = 256
    _LIMIT_BYTES = 32 << 20

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._payloads: dict[ObjectId, bytes] = {}
        self._bytes = 0

    def find(
        self, tree_id: ObjectId, name: bytes
    ) -> tuple[ObjectId | None, DirEntry | None] | None:
        """(file id, None) or (None, subdirectory entry) of ``name``, None if absent."""
        payload = self._payloads.get(tree_id)
        if payload is None:
            payload = dirtree_payload(self._repo, tree_id)
            if len(self._payloads) >= self._LIMIT or self._bytes + len(payload) > self._LIMIT_BYTES:
                self._payloads.clear()
                self._bytes = 0
            self._payloads[tree_id] = payload
            self._bytes += len(payload)
        try:
            return _scan(payload, name)
        except (struct.error, FormatError) as exc:
            raise CorruptObjectError(
                f"dirtree {tree_id.hex()} does not decode: {exc}", object_id=tree_id
            ) from None


def dirtree_payload(repo: Repository, tree_id: ObjectId) -> bytes:
    """The encoded dirtree ``tree_id`` (Repository.read_payload); a seam for tests."""
    return repo.read_payload(tree_id, ObjectType.DIRTREE)


_U32 = struct.Struct(">I")


def _scan(data: bytes, name: bytes) -> tuple[ObjectId | None, DirEntry | None] | None:
    """``name``'s entry in an encoded dirtree (DirTree.encode's layout), read in place.

    A history reads one name of each tree it passes, in trees of thousands of entries:
    decoding and checking them all (DirTree.decode) cost ten times as much. The bounds
    are checked (struct.error, FormatError); the other names are not validated.
    """
    if data[:2] != b"T\x01":
        raise FormatError("not a version 1 dirtree")
    pos, wanted = 2, len(name)
    for width in (32, 64):  # files: one id; directories: tree and meta
        (count,) = _U32.unpack_from(data, pos)
        pos += 4
        for _ in range(count):
            (length,) = _U32.unpack_from(data, pos)
            start = pos + 4
            pos = start + length + width
            if length == wanted and data[start : start + length] == name:
                ids = data[start + length : pos]
                if len(ids) != width:
                    raise FormatError("truncated dirtree")
                if width == 32:
                    return ObjectId(ids), None
                return None, DirEntry(ObjectId(ids[:32]), ObjectId(ids[32:]))
    return None
