"""path_history: the commits that changed a path, on the shared 24-commit history.

Expectations come from the fixture's filesystem manifests (tests/history_tree.py),
never from sapwood's own trees.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import store.pathlog as pathlog
from store import (
    CorruptObjectError,
    DirTree,
    InvalidNameError,
    ObjectId,
    ObjectMissingError,
    ObjectType,
    Repository,
    UsageError,
    from_hex,
    rev_parse,
)
from store.pathlog import PathLogEntry, normalize_path, path_history
from tests.helpers import commit_files, put_record
from tests.history_tree import CHANGE_KINDS, DEEP_LEAF, DOC, SSHD, TOOL, HistoryTree


@pytest.fixture
def hrepo(history_tree: HistoryTree) -> Iterator[Repository]:
    with Repository.open(history_tree.repo_path) as repository:
        yield repository


def _ids(entries: Iterator[PathLogEntry]) -> list[str]:
    return [entry.commit_id.hex() for entry in entries]


def _head(repo: Repository, history_tree: HistoryTree) -> ObjectId:
    return rev_parse(repo, history_tree.ref)


@pytest.mark.parametrize("kind", CHANGE_KINDS)
def test_each_kind_of_change_lists_exactly_the_commits_of_its_paths(
    hrepo: Repository, history_tree: HistoryTree, kind: str
) -> None:
    step = history_tree.step_or_skip(kind)
    for path in step.paths:
        expected = history_tree.changed(path)
        assert step.commit_id in expected
        assert _ids(path_history(hrepo, _head(hrepo, history_tree), [path])) == expected


def test_the_kinds_tested_are_every_kind_the_history_makes(history_tree: HistoryTree) -> None:
    made = {kind for commit in history_tree.commits for kind in commit.kinds} - {"none"}
    assert made <= set(CHANGE_KINDS) and len(made) >= len(CHANGE_KINDS) - 2  # owner, xattr


def test_directories_change_with_anything_below_them(
    hrepo: Repository, history_tree: HistoryTree
) -> None:
    head = _head(hrepo, history_tree)
    for path in ("/etc", "/etc/ssh", "/usr/lib/deep", DOC, "/var/cache", "/"):
        assert _ids(path_history(hrepo, head, [path])) == history_tree.changed(path), path
    by_index = {c.commit_id: c.index for c in history_tree.commits}
    ssh = [by_index[i] for i in _ids(path_history(hrepo, head, ["/etc/ssh"]))]
    owner = [16] if "owner" in history_tree.commits[16].kinds else []
    xattr = [15] if "xattr" in history_tree.commits[15].kinds else []
    assert sorted(ssh) == sorted([0, 1, 2, 14, 20, 21, 22, *xattr, *owner])


def test_the_root_changes_in_every_commit_but_the_empty_one(
    hrepo: Repository, history_tree: HistoryTree
) -> None:
    found = _ids(path_history(hrepo, _head(hrepo, history_tree), ["/"]))
    empty = {c.commit_id for c in history_tree.commits if c.kinds == ("none",)}
    assert found == [c for c in history_tree.ids_newest_first() if c not in empty]


def test_a_file_history_newest_first_with_the_root_commit_as_its_addition(
    hrepo: Repository, history_tree: HistoryTree
) -> None:
    entries = list(path_history(hrepo, _head(hrepo, history_tree), [TOOL]))
    assert [e.commit.timestamp for e in entries] == sorted(
        (e.commit.timestamp for e in entries), reverse=True
    )
    first = entries[-1]
    assert first.commit_id.hex() == history_tree.commits[0].commit_id
    assert first.commit.parent is None
    (change,) = first.changes
    assert change.path == TOOL.encode() and change.old is None and change.new is not None
    assert change.new.file is not None


def test_changes_carry_both_sides_of_a_type_change_and_a_deletion(
    hrepo: Repository, history_tree: HistoryTree
) -> None:
    head = _head(hrepo, history_tree)
    to_dir = history_tree.by_kind("file-to-dir")
    entry = next(
        e
        for e in path_history(hrepo, head, ["/etc/issue"])
        if e.commit_id.hex() == to_dir.commit_id
    )
    (change,) = entry.changes
    assert change.old is not None and change.old.file is not None
    assert change.new is not None and change.new.dir is not None
    deletion = history_tree.by_kind("delete")
    entry = next(
        e
        for e in path_history(hrepo, head, ["/etc/motd"])
        if e.commit_id.hex() == deletion.commit_id
    )
    assert entry.changes[0].new is None and entry.changes[0].old is not None


def test_several_paths_list_the_union_and_say_which_changed(
    hrepo: Repository, history_tree: HistoryTree
) -> None:
    entries = list(path_history(hrepo, _head(hrepo, history_tree), ["/etc/motd", TOOL]))
    assert _ids(iter(entries)) == history_tree.changed("/etc/motd", TOOL)
    for entry in entries:
        commit = next(c for c in history_tree.commits if c.commit_id == entry.commit_id.hex())
        changed = {p for p in ("/etc/motd", TOOL) if commit.commit_id in history_tree.changed(p)}
        assert {c.path.decode() for c in entry.changes} == changed


def test_history_starts_at_the_given_commit(hrepo: Repository, history_tree: HistoryTree) -> None:
    tenth = history_tree.commits[10]
    found = _ids(path_history(hrepo, from_hex(tenth.commit_id), [SSHD]))
    newer = {c.commit_id for c in history_tree.commits[11:]}
    assert found == [c for c in history_tree.changed(SSHD) if c not in newer]
    assert found  # the addition and the first edit at least


@pytest.mark.parametrize("path", ["/never/existed", "/usr/bin/tool/below-a-file", "/etc/motd/x"])
def test_a_path_that_never_existed_has_no_history(
    hrepo: Repository, history_tree: HistoryTree, path: str
) -> None:
    assert list(path_history(hrepo, _head(hrepo, history_tree), [path])) == []


@pytest.mark.parametrize(
    "given", ["etc/ssh", "/etc/ssh/", "//etc//ssh", "/etc/./ssh", "./etc/ssh/."]
)
def test_paths_are_normalised(hrepo: Repository, history_tree: HistoryTree, given: str) -> None:
    assert normalize_path(given) == b"/etc/ssh"
    found = _ids(path_history(hrepo, _head(hrepo, history_tree), [given]))
    assert found == history_tree.changed("/etc/ssh")


def test_dotdot_and_no_path_are_refused(hrepo: Repository, history_tree: HistoryTree) -> None:
    head = _head(hrepo, history_tree)
    with pytest.raises(InvalidNameError, match=r"'\.\.'"):
        list(path_history(hrepo, head, ["/etc/../usr"]))
    with pytest.raises(UsageError):
        list(path_history(hrepo, head, []))
    assert normalize_path("") == b"/" and normalize_path("/") == b"/"


def test_unchanged_subtrees_are_never_read(
    hrepo: Repository, history_tree: HistoryTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking about /usr/lib/deep/.../leaf.txt reads no directory of /usr/share or /etc
    (ids along the path decide), and each directory of the path at most once per
    distinct dirtree id."""
    outside = set()
    for commit in history_tree.commits:
        node_ids = _dirtree_ids(hrepo, from_hex(commit.commit_id), ["usr", "share"])
        outside |= node_ids
        outside |= _dirtree_ids(hrepo, from_hex(commit.commit_id), ["etc"])
    read: list[ObjectId] = []
    original = pathlog.dirtree_payload

    def counting(repo: Repository, tree_id: ObjectId) -> bytes:
        read.append(tree_id)
        return original(repo, tree_id)

    monkeypatch.setattr(pathlog, "dirtree_payload", counting)
    found = _ids(path_history(hrepo, _head(hrepo, history_tree), [DEEP_LEAF]))
    assert found == history_tree.changed(DEEP_LEAF)
    assert read and not outside & set(read)
    assert len(read) == len(set(read))


def _dirtree_ids(repo: Repository, commit_id: ObjectId, names: list[str]) -> set[ObjectId]:
    """The dirtree ids of the directory at ``names`` and of each directory below it."""
    commit = repo.read_commit(commit_id)
    tree = repo.read_dirtree(commit.tree)
    for name in names:
        entry = dict(tree.dirs)[name.encode()]
        tree_id = entry.tree
        tree = repo.read_dirtree(tree_id)
    found = {tree_id}
    stack = [tree]
    while stack:
        for _, entry in stack.pop().dirs:
            found.add(entry.tree)
            stack.append(repo.read_dirtree(entry.tree))
    return found


@pytest.mark.parametrize(
    "damage", [b"T\x01\x00\x00\x00\x05", b"T\x01\x00\x00\x00\x01\x00\x00\x00\x03etc", b"X"]
)
def test_a_damaged_dirtree_is_a_corrupt_object(
    user_repo: Repository, tmp_path: Path, damage: bytes
) -> None:
    """A truncated or foreign encoding on the path raises CorruptObjectError (naming the
    tree), never IndexError or a wrong answer."""
    first = commit_files(user_repo, tmp_path / "a", {"etc/motd": "1"}, timestamp=1)
    second = commit_files(user_repo, tmp_path / "b", {"etc/motd": "2"}, timestamp=2)
    root = user_repo.read_commit(first).tree
    user_repo.close()
    put_record(user_repo.path, root, ObjectType.DIRTREE, damage)
    with Repository.open(user_repo.path) as reopened, pytest.raises(CorruptObjectError) as caught:
        list(path_history(reopened, second, ["/etc/motd"]))
    assert caught.value.object_id == root


def test_read_payload_is_the_encoding_the_readers_decode(
    user_repo: Repository, tmp_path: Path
) -> None:
    """Repository.read_payload (review6.md 10: pathlog repeated the repository's own
    lookup): the encoding read_dirtree decodes; a missing object, or one of another
    type, refused as the read_* methods refuse it."""
    commit_id = commit_files(user_repo, tmp_path / "a", {"etc/motd": "1"})
    commit = user_repo.read_commit(commit_id)
    payload = user_repo.read_payload(commit.tree, ObjectType.DIRTREE)
    assert DirTree.decode(payload) == user_repo.read_dirtree(commit.tree)
    assert DirTree.decode(payload).object_id() == commit.tree
    assert user_repo.read_payload(commit_id, ObjectType.COMMIT) == commit.encode()
    with pytest.raises(CorruptObjectError, match="is a commit, not a dirtree"):
        user_repo.read_payload(commit_id, ObjectType.DIRTREE)
    with pytest.raises(ObjectMissingError):
        user_repo.read_payload(ObjectId(bytes(32)), ObjectType.DIRTREE)
