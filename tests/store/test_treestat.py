"""diff_trees limited to paths, and diff --stat's counts (store.treestat), checked
against what the two source trees on disk say, never against diff_trees itself."""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from store import InvalidNameError, ObjectId, Repository, root_node, treestat
from store.trees import child_node, diff_trees
from store.treestat import DiffStat, DirStat, commit_stat, diff_stat
from tests.helpers import commit_dir, write_tree


class Entry(NamedTuple):
    """One entry of a tree on disk, as a commit records it."""

    is_dir: bool
    mode: int
    content: bytes  # a file's bytes, a symlink's target, b"" for a directory

    @property
    def size(self) -> int:
        return len(self.content) if stat.S_ISREG(self.mode) else 0


Tree = dict[bytes, Entry]


def scan(root: Path) -> Tree:
    """Every entry below ``root`` by its path in a commit (b"/etc/x")."""
    tree: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode):
                content = b""
            elif stat.S_ISLNK(st.st_mode):
                content = os.fsencode(os.readlink(path))
            else:
                content = path.read_bytes()
            key = b"/" + os.fsencode(path.relative_to(root))
            tree[key] = Entry(stat.S_ISDIR(st.st_mode), st.st_mode, content)
    return tree


def parent(path: bytes) -> bytes:
    return path.rsplit(b"/", 1)[0] or b"/"


def is_dir(tree: Tree, path: bytes) -> bool:
    return path == b"/" or (path in tree and tree[path].is_dir)


def at_or_below(path: bytes, top: bytes) -> bool:
    return top == b"/" or path == top or path.startswith(top + b"/")


def expected_changes(old: Tree, new: Tree, top: bytes = b"/") -> list[tuple[str, bytes]]:
    """diff_trees' report limited to ``top``: ``top`` itself (unless the root), then
    each path whose parent is a directory on both sides, in tree order."""
    found = []
    for path in old.keys() | new.keys():
        if not at_or_below(path, top):
            continue
        if path != top and not (is_dir(old, parent(path)) and is_dir(new, parent(path))):
            continue  # inside something added, deleted or of another type: one change
        a, b = old.get(path), new.get(path)
        if a is None:
            found.append(("A", path))
        elif b is None:
            found.append(("D", path))
        elif a != b:
            found.append(("M", path))
    return sorted(found, key=lambda change: change[1].split(b"/"))


def expected_stat(old: Tree, new: Tree) -> DiffStat:
    """The counts as docs/decisions.md defines them, entry by entry."""
    groups: dict[bytes, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for path in old.keys() | new.keys():
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        names = path.split(b"/")
        a_dir, b_dir = a is not None and a.is_dir, b is not None and b.is_dir
        key = b"/" + names[1] if len(names) > 2 or a_dir or b_dir else b"/"
        counts = groups[key]
        counts[0 if a is None else 2 if b is None else 1] += 1
        if b is not None:
            counts[3] += b.size
        if a is not None:
            counts[4] += a.size
    lines = tuple(DirStat(key, *counts) for key, counts in sorted(groups.items()))
    total = DirStat(b"", *(sum(column) for column in zip(*groups.values(), strict=True)))
    return DiffStat(lines, total if lines else DirStat(b""))


OLD: dict[str, str | bytes] = {
    "etc/passwd": "root:x:0:0\n",
    "etc/ssh/sshd_config": "Port 22\n",
    "etc/ssh/keys/host": b"\x00" * 300,
    "usr/bin/tool": "#!/bin/sh\n",
    "usr/lib/libx.so": b"\x7fELF" + b"\x01" * 1000,
    "usr/lib/deeper/liby.so": b"y" * 77,
    "usr/share/doc/x/README": "docs\n",
    "readme.txt": "hello\n",
    "link": "->usr/bin/tool",
    "gone-top": "bye\n",
}


def make_new(root: Path) -> None:
    """Every kind of change: content, deletion of a tree, additions deep and at the
    top, a chmod, a file that becomes a directory and one the other way, a retarget."""
    (root / "etc/passwd").write_text("root:x:0:0\nuser:x:1000:1000\n")
    for path in ("etc/ssh/keys/host", "etc/ssh/sshd_config"):
        (root / path).unlink()
    for path in ("etc/ssh/keys", "etc/ssh"):
        (root / path).rmdir()
    write_tree(root, {"opt/app/bin/run": "run\n", "opt/app/data": b"d" * 4096, "new-top": "n"})
    (root / "usr/bin/tool").chmod(0o755)
    (root / "readme.txt").unlink()
    write_tree(root, {"readme.txt/inside": "now a directory\n"})
    for path in ("usr/lib/deeper/liby.so", "usr/lib/libx.so"):
        (root / path).unlink()
    (root / "usr/lib/deeper").rmdir()
    (root / "usr/lib").rmdir()
    (root / "usr/lib").write_bytes(b"now a file")
    (root / "link").unlink()
    (root / "link").symlink_to("etc/passwd")
    (root / "gone-top").unlink()
    (root / "etc").chmod(0o750)


class Pair(NamedTuple):
    repo: Repository
    old_id: ObjectId
    new_id: ObjectId
    old: Tree
    new: Tree


@pytest.fixture
def pair(repo: Repository, tmp_path: Path) -> Iterator[Pair]:
    source = write_tree(tmp_path / "src", OLD)
    old_tree = scan(source)
    old_id = commit_dir(repo, source, timestamp=1_000)
    make_new(source)
    new_id = commit_dir(repo, source, timestamp=2_000)
    yield Pair(repo, old_id, new_id, old_tree, scan(source))


def limited(pair: Pair, *paths: str) -> list[tuple[str, bytes]]:
    old, new = root_node(pair.repo, pair.old_id), root_node(pair.repo, pair.new_id)
    return [(c.kind, c.path) for c in diff_trees(pair.repo, old, new, paths)]


def test_the_fixture_changes_what_it_means_to(pair: Pair) -> None:
    kinds = {kind for kind, _ in expected_changes(pair.old, pair.new)}
    assert kinds == {"A", "M", "D"}
    assert pair.old[b"/readme.txt"].is_dir != pair.new[b"/readme.txt"].is_dir


@pytest.mark.parametrize(
    "top",
    [
        "/",
        "/etc",
        "/etc/ssh",
        "/etc/ssh/keys/host",
        "/usr",
        "/usr/lib",
        "/usr/lib/libx.so",
        "/readme.txt",
        "/readme.txt/inside",
        "/opt/app",
        "/usr/share",
        "/link",
    ],
)
@pytest.mark.long(keep=("bare-user-/*", "*-/usr/lib/libx.so", "*-/link"))
def test_a_path_limit_gives_what_the_trees_on_disk_say(pair: Pair, top: str) -> None:
    assert limited(pair, top) == expected_changes(pair.old, pair.new, top.encode())


def test_the_old_call_and_the_root_path_give_the_whole_diff(pair: Pair) -> None:
    old, new = root_node(pair.repo, pair.old_id), root_node(pair.repo, pair.new_id)
    whole = [(c.kind, c.path) for c in diff_trees(pair.repo, old, new)]
    assert whole == expected_changes(pair.old, pair.new) == limited(pair, "/")


def test_several_paths_come_once_each_in_tree_order(pair: Pair) -> None:
    got = limited(pair, "/usr/bin", "/etc/passwd", "/usr", "usr/bin/", "/etc/passwd")
    expected = expected_changes(pair.old, pair.new, b"/etc/passwd")
    expected += expected_changes(pair.old, pair.new, b"/usr")
    assert got == expected and len(got) == len(set(got))


def test_paths_that_name_nothing_give_nothing(pair: Pair) -> None:
    assert limited(pair, "/no/such/path") == []
    assert limited(pair, "/usr/bin/tool/below-a-file") == []
    assert limited(pair) == []


def test_one_str_is_one_path(pair: Pair) -> None:
    old, new = root_node(pair.repo, pair.old_id), root_node(pair.repo, pair.new_id)
    got = [(c.kind, c.path) for c in diff_trees(pair.repo, old, new, "/etc/passwd")]
    assert got == [("M", b"/etc/passwd")]


def test_dot_dot_is_refused(pair: Pair) -> None:
    with pytest.raises(InvalidNameError, match=r"'\.\.'"):
        limited(pair, "/etc/../usr")


def test_a_limit_reads_only_the_dirtrees_on_the_way(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/usr/share is the same subtree on both sides: the walk stops at /usr, having read
    the two roots and the two /usr dirtrees, never /etc's or /usr/share's."""
    read: list[ObjectId] = []
    original = pair.repo.read_dirtree

    def counting(object_id: ObjectId) -> object:
        read.append(object_id)
        return original(object_id)

    monkeypatch.setattr(pair.repo, "read_dirtree", counting)
    assert limited(pair, "/usr/share/doc") == []
    assert len(read) == 4
    monkeypatch.undo()
    share = root_node(pair.repo, pair.new_id)
    for name in (b"usr", b"share"):
        node = child_node(pair.repo, share, name)
        assert node is not None and node.dir is not None
        share = node
    assert share.dir is not None and share.dir.tree not in read


def test_diff_stat_counts_as_the_trees_on_disk_say(pair: Pair) -> None:
    old, new = root_node(pair.repo, pair.old_id), root_node(pair.repo, pair.new_id)
    got = diff_stat(pair.repo, old, new)
    assert got == expected_stat(pair.old, pair.new)
    assert got == commit_stat(pair.repo, pair.new_id)  # the parent is the old commit
    assert [line.path for line in got.directories] == [
        b"/",
        b"/etc",
        b"/opt",
        b"/readme.txt",
        b"/usr",
    ]


def test_diff_stat_with_paths_counts_only_below_them(pair: Pair) -> None:
    old, new = root_node(pair.repo, pair.old_id), root_node(pair.repo, pair.new_id)
    etc_only = {p: e for p, e in pair.old.items() if at_or_below(p, b"/etc/ssh")}
    etc_new = {p: e for p, e in pair.new.items() if at_or_below(p, b"/etc/ssh")}
    got = diff_stat(pair.repo, old, new, ["/etc/ssh"])
    assert got == expected_stat(etc_only, etc_new)
    assert got.total.deleted == 4 and got.total.bytes_removed == 300 + len("Port 22\n")


def test_a_root_commit_counts_against_the_empty_tree(pair: Pair) -> None:
    assert commit_stat(pair.repo, pair.old_id) == expected_stat({}, pair.old)
    new = root_node(pair.repo, pair.new_id)
    opt = {p: e for p, e in pair.new.items() if at_or_below(p, b"/opt")}
    assert diff_stat(pair.repo, None, new, ["/opt", "/nothing"]) == expected_stat({}, opt)


def test_no_change_is_all_zero(pair: Pair) -> None:
    node = root_node(pair.repo, pair.new_id)
    assert diff_stat(pair.repo, node, node) == DiffStat((), DirStat(b""))


def test_sizes_read_in_small_batches_add_up_the_same(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(treestat, "_SIZES_AT_ONCE", 2)
    old, new = root_node(pair.repo, pair.old_id), root_node(pair.repo, pair.new_id)
    assert diff_stat(pair.repo, old, new) == expected_stat(pair.old, pair.new)
