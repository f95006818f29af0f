"""Walking the tree of a commit: looking up paths, listing, diffing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from store.errors import CorruptObjectError, NotADirectoryInTreeError, PathNotFoundError
from store.ids import ObjectId
from store.mtree import MAX_TREE_DEPTH
from store.names import show_path, split_path
from store.objects import Commit, DirEntry, DirTree
from store.repo import Repository


@dataclass(frozen=True, slots=True)
class Node:
    """An entry of a committed tree: a file object, or a directory (tree + meta)."""

    path: bytes  # "/" for the root, "/usr/bin" below it
    file: ObjectId | None = None
    dir: DirEntry | None = None

    @property
    def is_dir(self) -> bool:
        """Whether this node is a directory (``dir`` set) rather than a file object."""
        return self.dir is not None


def root_node(repo: Repository, commit_id: ObjectId) -> Node:
    """The root directory of a commit, as a Node whose path is "/"."""
    return commit_root(repo.read_commit(commit_id))


def commit_root(commit: Commit) -> Node:
    """The root directory of a commit already read, as a Node whose path is "/"."""
    return Node(b"/", dir=DirEntry(commit.tree, commit.meta))


def _join(parent: bytes, name: bytes) -> bytes:
    return (parent.rstrip(b"/") + b"/" + name) if parent != b"/" else b"/" + name


def lookup(repo: Repository, commit_id: ObjectId, path: str) -> Node:
    """The node at ``path`` inside a commit; raises PathNotFoundError."""
    node = root_node(repo, commit_id)
    for name in split_path(path):
        if node.dir is None:
            raise NotADirectoryInTreeError(
                f"{path}: {show_path(node.path)} is not a directory", path=path
            )
        found = find_child(repo.read_dirtree(node.dir.tree), name)
        if found is None:
            raise PathNotFoundError(f"{path}: no such file or directory in the commit", path=path)
        file_id, entry = found
        node = Node(_join(node.path, name), file=file_id, dir=entry)
    return node


def locate_child(tree: DirTree, name: bytes) -> tuple[bool, int] | None:
    """(is a directory, index in tree.dirs or tree.files) of ``name``: a binary search."""
    for entries, is_dir in ((tree.files, False), (tree.dirs, True)):
        lo, hi = 0, len(entries)
        while lo < hi:
            mid = (lo + hi) // 2
            if entries[mid][0] < name:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(entries) and entries[lo][0] == name:
            return is_dir, lo
    return None


def find_child(tree: DirTree, name: bytes) -> tuple[ObjectId | None, DirEntry | None] | None:
    """(file id, None) or (None, subdirectory entry) of ``name`` in a dirtree."""
    found = locate_child(tree, name)
    if found is None:
        return None
    is_dir, index = found
    if is_dir:
        return None, tree.dirs[index][1]
    return tree.files[index][1], None


def _require_dir(node: Node) -> DirEntry:
    if node.dir is None:
        shown = show_path(node.path)
        raise NotADirectoryInTreeError(f"{shown}: is not a directory", path=shown)
    return node.dir


def children(repo: Repository, node: Node) -> list[Node]:
    """Entries of a directory node, sorted by name; NotADirectoryInTreeError for a file."""
    tree = repo.read_dirtree(_require_dir(node).tree)
    items = [Node(_join(node.path, n), file=f) for n, f in tree.files]
    items += [Node(_join(node.path, n), dir=d) for n, d in tree.dirs]
    return sorted(items, key=lambda item: item.path)


def walk(repo: Repository, node: Node) -> Iterator[Node]:
    """``node`` and everything below it, depth first, each directory before its entries.

    Iterative, so a deep tree costs memory, never Python's recursion limit. A tree
    deeper than any commit may hold (a damaged index, or one whose dirtree names
    itself, which would never end) raises CorruptObjectError.
    """
    stack = [iter([node])]
    while stack:
        current = next(stack[-1], None)
        if current is None:
            stack.pop()
            continue
        if current.dir is not None and len(stack) > MAX_TREE_DEPTH + 1:
            raise CorruptObjectError(
                f"{show_path(current.path)}: the tree nests directories more than "
                f"{MAX_TREE_DEPTH} deep, which no commit holds",
                object_id=current.dir.tree,
            )
        yield current
        if current.dir is not None:
            stack.append(iter(children(repo, current)))


# made by call, not by class: see store/objects.py's FileStat
Change = NamedTuple(  # noqa: UP014 (see above)
    "Change", [("kind", str), ("path", bytes), ("old", Node | None), ("new", Node | None)]
)
Change.__doc__ = """One difference between two trees, at ``path``.

``kind`` is "A" (added: ``old`` is None), "D" (deleted: ``new`` is None) or "M"
(modified: both set; a directory whose metadata changed, a file whose object
changed, or an entry that changed type). An added or deleted directory is one
change: walk ``change.new`` (or ``change.old``) to see its contents. Unpacking as
``kind, path, *_ = change`` works as with the (kind, path) pairs of before.
"""


def diff_trees(
    repo: Repository, old: Node, new: Node, paths: str | Iterable[str] | None = None
) -> Iterator[Change]:
    """A :class:`Change` for every difference between two directory nodes, by path.

    Unchanged subtrees (same dirtree id) are never read. Iterative, like walk().
    NotADirectoryInTreeError if either node is a file.

    With ``paths`` (as lookup() takes them, relative to ``old`` and ``new``), only the
    changes at or below those paths, still in path order: each path is followed down
    from the two nodes, stopping where both sides share a dirtree id, and nothing
    outside the paths is read. A path neither side holds gives nothing; "/" is the
    whole tree; an empty ``paths`` gives nothing; one str is one path. A path ending
    in '/' names a directory only, as a git pathspec does (:func:`dir_only_paths`).
    InvalidNameError for a path holding '..' (or any name a tree cannot hold).
    """
    _require_dir(old)
    _require_dir(new)
    if paths is None:
        yield from _diff_below(repo, old, new)
        return
    paths = [paths] if isinstance(paths, str) else list(paths)
    only_dirs = dir_only_paths(paths)
    for names in distinct_paths(paths):
        yield from _diff_at(repo, old, new, names, names in only_dirs)


def distinct_paths(paths: Iterable[str]) -> list[tuple[bytes, ...]]:
    """The checked names of each path, in tree order, without paths below another
    (``/etc`` covers ``/etc/ssh``) or repeated; InvalidNameError for '..'. One str is
    one path (not its characters)."""
    if isinstance(paths, str):
        paths = [paths]
    split = sorted({tuple(split_path(path)) for path in paths})
    kept: list[tuple[bytes, ...]] = []
    for names in split:
        if not kept or names[: len(kept[-1])] != kept[-1]:
            kept.append(names)
    return kept


def dir_only_paths(paths: Iterable[str]) -> set[tuple[bytes, ...]]:
    """The names of the paths that ask for a directory only: every form of them given
    ends in '/' (a file or symlink there is as good as absent; `diff A B -- /f/`
    showed the file /f). One str is one path."""
    if isinstance(paths, str):
        paths = [paths]
    only: dict[tuple[bytes, ...], bool] = {}
    for path in paths:
        names = tuple(split_path(path))
        only[names] = only.get(names, True) and path.endswith("/")
    return {names for names, dir_only in only.items() if dir_only}


def _diff_at(
    repo: Repository, old: Node, new: Node, names: tuple[bytes, ...], dir_only: bool = False
) -> Iterator[Change]:
    """The changes at or below ``names``: down to it on both sides, then compared
    (``dir_only``: a side that is no directory there counts as absent)."""
    if not names:
        yield from _diff_below(repo, old, new)
        return
    a: Node | None = old
    b: Node | None = new
    for name in names:
        if _same_subtree(a, b):
            return  # nothing below changed
        a, b = child_node(repo, a, name), child_node(repo, b, name)
        if a is None and b is None:
            return
    if dir_only:
        a, b = _dir_or_none(a), _dir_or_none(b)
        if a is None and b is None:
            return
    yield from _diff_pair(repo, a, b)


def _dir_or_none(node: Node | None) -> Node | None:
    return node if node is not None and node.dir is not None else None


def _same_subtree(a: Node | None, b: Node | None) -> bool:
    """Whether two nodes are directories with one dirtree id (their metadata aside)."""
    return (
        a is not None
        and b is not None
        and a.dir is not None
        and b.dir is not None
        and (a.dir.tree == b.dir.tree)
    )


def child_node(repo: Repository, node: Node | None, name: bytes) -> Node | None:
    """The entry ``name`` of a directory node; None when there is none (or ``node`` is
    None or a file: a path through a file names nothing)."""
    if node is None or node.dir is None:
        return None
    found = find_child(repo.read_dirtree(node.dir.tree), name)
    if found is None:
        return None
    file_id, entry = found
    return Node(_join(node.path, name), file=file_id, dir=entry)


def _diff_pair(repo: Repository, a: Node | None, b: Node | None) -> Iterator[Change]:
    """The changes of one path present on at least one side, as diff_trees reports
    them: the entry itself, then (two directories) what changed below it."""
    if a is None:
        assert b is not None
        yield Change("A", b.path, None, b)
    elif b is None:
        yield Change("D", a.path, a, None)
    elif a.dir is not None and b.dir is not None:
        if a.dir.meta != b.dir.meta:
            yield Change("M", a.path, a, b)
        yield from _diff_below(repo, a, b)
    elif a.file != b.file:
        yield Change("M", a.path, a, b)


def _diff_below(repo: Repository, old: Node, new: Node) -> Iterator[Change]:
    """The changes below two directory nodes (never the nodes themselves)."""
    stack = [_diff_level(repo, old, new)]
    while stack:
        event = next(stack[-1], None)
        if event is None:
            stack.pop()
        elif isinstance(event, _Descend):
            stack.append(_diff_level(repo, event.old, event.new))
        else:
            yield event


# two directories of one path, whose own changes come next in the output
_Descend = NamedTuple("_Descend", [("old", Node), ("new", Node)])  # noqa: UP014 (see Change)


def _diff_level(repo: Repository, old: Node, new: Node) -> Iterator[Change | _Descend]:
    """The changes of one directory pair, in path order; a pair of subdirectories to
    compare stands where their changes belong."""
    assert old.dir is not None and new.dir is not None
    if old.dir.tree == new.dir.tree:
        return
    before = {c.path: c for c in children(repo, old)}
    after = {c.path: c for c in children(repo, new)}
    for path in sorted(before.keys() | after.keys()):
        a, b = before.get(path), after.get(path)
        if a is None:
            yield Change("A", path, None, b)
        elif b is None:
            yield Change("D", path, a, None)
        elif a.dir is not None and b.dir is not None:
            if a.dir.meta != b.dir.meta:
                yield Change("M", path, a, b)
            yield _Descend(a, b)
        elif a.file != b.file:
            yield Change("M", path, a, b)
