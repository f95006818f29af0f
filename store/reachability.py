"""Which objects a set of commits needs: the traversal fsck and prune share."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from store.errors import CorruptObjectError, FormatError
from store.ids import ObjectId, ObjectType, digest
from store.index import IndexReader, ObjectRecord
from store.objects import Commit, DirMeta, DirTree

_M = TypeVar("_M", Commit, DirMeta, DirTree)
_RELEASE_EVERY = 512  # dirtrees read between two calls of walk_commits' ``release``


@dataclass
class Reachable:
    """Objects reachable from some commits, and what was found wrong on the way."""

    commits: set[ObjectId] = field(default_factory=set)
    metadata: set[ObjectId] = field(default_factory=set)  # dirtrees and dirmetas
    files: set[ObjectId] = field(default_factory=set)
    # object -> problem, for metadata objects that are missing or corrupt
    bad_metadata: dict[ObjectId, str] = field(default_factory=dict)

    def needs(self, object_id: ObjectId) -> bool:
        """Whether ``object_id`` is reachable (without building the union of the sets:
        a million ids more)."""
        return object_id in self.files or object_id in self.metadata or object_id in self.commits


def commit_history(reader: IndexReader, head: ObjectId, depth: int) -> list[ObjectId]:
    """``head`` and up to ``depth`` ancestors (all if depth < 0) that the index holds."""
    found: list[ObjectId] = []
    seen: set[ObjectId] = set()
    current: ObjectId | None = head
    while current is not None and (depth < 0 or len(found) <= depth):
        if current in seen:
            break  # a loop: only a tampered index has one, and verifying finds it
        seen.add(current)
        record = _readable(reader, current)
        if record is None or record.kind is not ObjectType.COMMIT:
            break
        found.append(current)
        try:
            current = Commit.decode(record.payload).parent
        except FormatError:
            break
    return found


def _meta_payload(reader: IndexReader, object_id: ObjectId, kind: ObjectType) -> bytes:
    record = reader.object(object_id)
    if record is None:
        raise CorruptObjectError(f"{kind.suffix} object is missing")
    if record.kind is not kind:
        raise CorruptObjectError(f"is a {record.kind.suffix}, expected a {kind.suffix}")
    if digest(record.payload) != object_id:
        raise CorruptObjectError(f"corrupted {kind.suffix} object: its bytes do not hash to its id")
    return record.payload


def walk_commits(
    reader: IndexReader,
    commits: Iterable[ObjectId],
    verify: bool,
    release: Callable[[], None] | None = None,
) -> Reachable:
    """Everything the given commits need; each dirtree is visited once.

    With ``verify``, every metadata object is re-hashed and strictly decoded, and what
    is wrong is collected in ``bad_metadata`` instead of raising. ``release`` is called
    every few thousand trees (Index.release_pages: the trees read leave memory).
    """
    result = Reachable()
    stack: list[ObjectId] = []
    due = _RELEASE_EVERY
    for commit_id in commits:
        if commit_id in result.commits:
            continue
        result.commits.add(commit_id)
        commit = _decode(reader, result, commit_id, ObjectType.COMMIT, Commit.decode, verify)
        if commit is None:
            continue
        _add_meta(reader, result, commit.meta, verify)
        stack.append(commit.tree)
        while stack:
            _visit_tree(reader, result, stack.pop(), stack, verify)
            if release is not None and len(result.metadata) >= due:
                due = len(result.metadata) + _RELEASE_EVERY
                release()
    return result


def _decode(
    reader: IndexReader,
    result: Reachable,
    object_id: ObjectId,
    kind: ObjectType,
    decode: Callable[[bytes], _M],
    verify: bool,
) -> _M | None:
    """A metadata object, decoded; None (and the reason in bad_metadata) if it is not sound."""
    try:
        return decode(_load(reader, object_id, kind, verify))
    except (CorruptObjectError, FormatError) as exc:
        result.bad_metadata[object_id] = str(exc)
        return None


def _load(reader: IndexReader, object_id: ObjectId, kind: ObjectType, verify: bool) -> bytes:
    """A metadata object's bytes; re-hashed against its id when verifying."""
    if verify:
        return _meta_payload(reader, object_id, kind)
    record = reader.object(object_id)
    if record is None:
        raise CorruptObjectError(f"{kind.suffix} object is missing")
    return record.payload


def _add_meta(reader: IndexReader, result: Reachable, meta_id: ObjectId, verify: bool) -> None:
    if meta_id in result.metadata:
        return
    result.metadata.add(meta_id)
    _decode(reader, result, meta_id, ObjectType.DIRMETA, DirMeta.decode, verify)


def _visit_tree(
    reader: IndexReader, result: Reachable, tree_id: ObjectId, stack: list[ObjectId], verify: bool
) -> None:
    if tree_id in result.metadata:
        return
    result.metadata.add(tree_id)
    tree = _decode(reader, result, tree_id, ObjectType.DIRTREE, DirTree.decode, verify)
    if tree is None:
        return
    result.files.update(file_id for _, file_id in tree.files)
    for _, entry in tree.dirs:
        _add_meta(reader, result, entry.meta, verify)
        stack.append(entry.tree)


def commits_needing(
    reader: IndexReader, commits: Iterable[ObjectId], bad: set[ObjectId]
) -> dict[ObjectId, list[ObjectId]]:
    """For each bad object, the commits (among ``commits``) whose tree needs it."""
    memo: dict[ObjectId, frozenset[ObjectId]] = {}
    needed_by: dict[ObjectId, list[ObjectId]] = {}
    for commit_id in commits:
        found: set[ObjectId] = {commit_id} & bad
        record = _readable(reader, commit_id)
        if record is not None and commit_id not in bad:
            try:
                commit = Commit.decode(record.payload)
            except FormatError:
                commit = None
            if commit is not None:
                found |= {commit.meta} & bad
                found |= _bad_below(reader, commit.tree, bad, memo)
        for object_id in found:
            needed_by.setdefault(object_id, []).append(commit_id)
    return needed_by


def _bad_below(
    reader: IndexReader,
    tree_id: ObjectId,
    bad: set[ObjectId],
    memo: dict[ObjectId, frozenset[ObjectId]],
) -> frozenset[ObjectId]:
    if tree_id in memo:
        return memo[tree_id]
    found: set[ObjectId] = {tree_id} & bad
    record = _readable(reader, tree_id)
    if record is not None and tree_id not in bad:
        try:
            tree = DirTree.decode(record.payload)
        except FormatError:
            tree = DirTree()
        found |= {file_id for _, file_id in tree.files} & bad
        for _, entry in tree.dirs:
            found |= {entry.meta} & bad
            found |= _bad_below(reader, entry.tree, bad, memo)
    memo[tree_id] = frozenset(found)
    return memo[tree_id]


def _readable(reader: IndexReader, object_id: ObjectId) -> ObjectRecord | None:
    """An object's index record, or None if it is missing or not even a record."""
    try:
        return reader.object(object_id)
    except FormatError:
        return None


def orphan_files(
    objects_dir: Path, reader: IndexReader, release: Callable[[], None] | None = None
) -> list[Path]:
    """Object files the index does not list: leftovers of interrupted transactions.

    Only meaningful under the exclusive lock: a running transaction's files are
    renamed into objects/ just before its index commit. One directory at a time, its
    names in id order (neighbours in the index); ``release`` is called after each
    (a million lookups would leave most of the index's pages resident).
    """
    orphans: list[Path] = []
    try:
        top = sorted(entry.name for entry in os.scandir(objects_dir) if entry.is_dir())
    except FileNotFoundError:
        return orphans
    for sub in top:
        if sub.startswith("."):
            continue
        directory = objects_dir / sub
        try:
            names = sorted(name for name in os.listdir(directory) if not name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            try:
                object_id = bytes.fromhex(sub + name.split(".")[0])
            except ValueError:
                continue
            if not reader.has_object(object_id):
                orphans.append(directory / name)
        if release is not None:
            release()
    return orphans
