"""``sapwood.path_history``, ``diff_trees`` and ``diff_stat``: the store's, taking a
single path given as a str as that one path.

A str is an ``Iterable[str]`` of its letters, so ``path_history(repo, head, "/etc")``
type-checks and would ask for "/", "e", "t", "c": every commit changes "/", so every
commit would be listed, silently (attack23 18). As dulwich and git's pathspecs do, a
str here is one path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from store import Change, DiffStat, Node, PathLogEntry, Repository
from store import diff_stat as _diff_stat
from store import diff_trees as _diff_trees
from store import path_history as _path_history
from store.ids import ObjectId


def one_or_many(items: str | Iterable[str]) -> Iterable[str]:
    """``items`` as an iterable of names: a single str is one name, not its letters."""
    return (items,) if isinstance(items, str) else items


def path_history(
    repo: Repository, commit_id: ObjectId, paths: str | Iterable[str]
) -> Iterator[PathLogEntry]:
    """The commits of ``commit_id``'s history (newest first) that changed any of
    ``paths`` (one path as a str, or several): see store.pathlog.path_history."""
    return _path_history(repo, commit_id, one_or_many(paths))


def diff_trees(
    repo: Repository, old: Node, new: Node, paths: str | Iterable[str] | None = None
) -> Iterator[Change]:
    """A Change for every difference between two directory nodes, limited to ``paths``
    (one path as a str, or several) when given: see store.trees.diff_trees."""
    return _diff_trees(repo, old, new, None if paths is None else one_or_many(paths))


def diff_stat(
    repo: Repository, old: Node | None, new: Node, paths: str | Iterable[str] | None = None
) -> DiffStat:
    """The DiffStat of ``diff_trees(repo, old, new, paths)`` (one path as a str, or
    several): see store.treestat.diff_stat."""
    return _diff_stat(repo, old, new, None if paths is None else one_or_many(paths))
