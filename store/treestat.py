"""What a diff amounts to, per top-level directory: ``diff --stat`` and ``show --stat``.

Counting is per entry (file, symlink or directory), not per line of the diff: an
added or deleted directory counts itself and every entry below it, as if each were
listed. A modified entry counts once; one that changed type (a file that became a
directory, say) is one modified entry, and what the directory side holds below it is
added (or deleted) entry by entry.

Bytes are content sizes as the repository records them: a regular file's length, 0
for symlinks and directories. An added file adds its size, a deleted one removes it,
and a modified file removes its old size and adds its new one (so a chmod of a 1 MiB
file is +1 MiB -1 MiB): lines are not counted, as sapwood holds binary trees (see
docs/decisions.md, "diff --stat").

Each entry belongs to the top-level directory it is in (or is): ``/etc/ssh/x`` and
``/etc`` itself to ``/etc``. Entries directly in the root that are not a directory on
either side are grouped under ``/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from store.ids import ObjectId
from store.repo import Repository
from store.trees import (
    Change,
    Node,
    child_node,
    children,
    diff_trees,
    dir_only_paths,
    distinct_paths,
    root_node,
    walk,
)

ROOT_GROUP = b"/"


@dataclass(frozen=True, slots=True)
class DirStat:
    """Counts of one top-level directory (``path`` as ``b"/etc"``, ``b"/"`` for the
    root's own files), or of the whole diff (``path`` is ``b""``)."""

    path: bytes
    added: int = 0
    modified: int = 0
    deleted: int = 0
    bytes_added: int = 0
    bytes_removed: int = 0

    @property
    def entries(self) -> int:
        """Entries changed in any way: added + modified + deleted."""
        return self.added + self.modified + self.deleted


@dataclass(frozen=True, slots=True)
class DiffStat:
    """A diff summed up: one :class:`DirStat` per top-level directory with a change,
    sorted by path, and their sum (``total``; all zero when nothing changed)."""

    directories: tuple[DirStat, ...]
    total: DirStat


def diff_stat(
    repo: Repository, old: Node | None, new: Node, paths: str | Iterable[str] | None = None
) -> DiffStat:
    """The :class:`DiffStat` of ``diff_trees(repo, old, new, paths)``.

    ``old`` None stands for the empty tree: everything in ``new`` is added (``paths``
    then limit what is counted to those paths of ``new``). Reads what diff_trees reads,
    plus every dirtree below an added or deleted directory and one index record per
    file whose size is counted.
    """
    if old is None:
        return stat_changes(repo, _everything_added(repo, new, paths))
    return stat_changes(repo, diff_trees(repo, old, new, paths))


def commit_stat(repo: Repository, commit_id: ObjectId) -> DiffStat:
    """The :class:`DiffStat` of a commit against its parent, or against the empty tree
    when it has none the repository holds: a root commit, or the oldest commit of a
    history pulled with a depth (as git treats a shallow clone's boundary commit, and
    as ``log -p`` and ``path_history`` treat it)."""
    commit = repo.read_commit(commit_id)
    new = root_node(repo, commit_id)
    if commit.parent is None or not repo.has_object(commit.parent):
        return diff_stat(repo, None, new)
    return diff_stat(repo, root_node(repo, commit.parent), new)


def stat_changes(repo: Repository, changes: Iterable[Change]) -> DiffStat:
    """Sum up changes of two committed trees (diff_trees' output: ``old`` and ``new``
    set as it sets them) per top-level directory."""
    tally = _Tally(repo)
    for change in changes:
        tally.add_change(change)
    return tally.result()


def _everything_added(repo: Repository, new: Node, paths: Iterable[str] | None) -> Iterator[Change]:
    """The changes from the empty tree to ``new``: each top entry (or path) added."""
    if paths is None:
        tops = children(repo, new)
    else:
        tops = []
        paths = [paths] if isinstance(paths, str) else list(paths)
        only_dirs = dir_only_paths(paths)
        for names in distinct_paths(paths):
            node: Node | None = new
            for name in names:
                node = child_node(repo, node, name)
            if node is not None and (node.dir is not None or names not in only_dirs):
                tops.extend(children(repo, node) if not names else [node])
    for node in tops:
        yield Change("A", node.path, None, node)


@dataclass(slots=True)
class _Group:
    """A DirStat being counted."""

    added: int = 0
    modified: int = 0
    deleted: int = 0
    bytes_added: int = 0
    bytes_removed: int = 0


_SIZES_AT_ONCE = 4096  # file sizes read per index snapshot: bounds memory on huge diffs


class _Tally:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.groups: dict[bytes, _Group] = {}
        self.pending: list[tuple[_Group, bool, ObjectId]] = []  # (group, removed, file)

    def group(self, path: bytes, is_dir: bool) -> _Group:
        names = path.split(b"/")  # b"/etc/x" -> ["", "etc", "x"]
        key = b"/" + names[1] if len(names) > 2 or is_dir else ROOT_GROUP
        return self.groups.setdefault(key, _Group())

    def add_change(self, change: Change) -> None:
        old, new = change.old, change.new
        either_dir = (old is not None and old.is_dir) or (new is not None and new.is_dir)
        group = self.group(change.path, either_dir)
        if old is not None and new is not None:
            group.modified += 1
            self.count_bytes(group, old, removed=True)
            self.count_bytes(group, new, removed=False)
            if old.is_dir != new.is_dir:  # a type change: the directory side's contents
                self.add_below(old if old.is_dir else new, added=new.is_dir)
        elif new is not None:
            group.added += 1
            self.count_bytes(group, new, removed=False)
            self.add_below(new, added=True)
        elif old is not None:
            group.deleted += 1
            self.count_bytes(group, old, removed=True)
            self.add_below(old, added=False)

    def add_below(self, node: Node, added: bool) -> None:
        """Every entry below a directory node, as added or deleted ones."""
        if not node.is_dir:
            return
        below = walk(self.repo, node)
        next(below)  # the node itself, counted by the caller
        for entry in below:
            group = self.group(entry.path, entry.is_dir)
            if added:
                group.added += 1
            else:
                group.deleted += 1
            self.count_bytes(group, entry, removed=not added)

    def count_bytes(self, group: _Group, node: Node, removed: bool) -> None:
        """Add a file's size to ``group`` (soon: sizes are read a batch at a time)."""
        if node.file is not None:
            self.pending.append((group, removed, node.file))
            if len(self.pending) >= _SIZES_AT_ONCE:
                self.flush()

    def flush(self) -> None:
        wanted = sorted({file_id for _, _, file_id in self.pending})
        headers = self.repo.read_file_headers(wanted)
        sizes = {f: size for f, (_, size) in zip(wanted, headers, strict=True)}
        for group, removed, file_id in self.pending:
            if removed:
                group.bytes_removed += sizes[file_id]
            else:
                group.bytes_added += sizes[file_id]
        self.pending.clear()

    def result(self) -> DiffStat:
        self.flush()
        lines = tuple(
            DirStat(path, g.added, g.modified, g.deleted, g.bytes_added, g.bytes_removed)
            for path, g in sorted(self.groups.items())
        )
        return DiffStat(lines, _sum(lines))


def _sum(lines: Sequence[DirStat]) -> DirStat:
    return DirStat(
        b"",
        sum(line.added for line in lines),
        sum(line.modified for line in lines),
        sum(line.deleted for line in lines),
        sum(line.bytes_added for line in lines),
        sum(line.bytes_removed for line in lines),
    )
