"""Hostile tester X10 (attack23.md, session 13) against the library facade
(``import sapwood``): its documented API used as a program might. A test that passes
guards a defence; a defect is a strict xfail naming its finding in
/work/plan/attack23.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import sapwood
from tests.helpers import cli, write_tree


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[Path]:
    """Run the test from ``tmp_path/a`` and come back to the starting directory."""
    start = os.getcwd()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    os.chdir(tmp_path / "a")
    try:
        yield tmp_path
    finally:
        os.chdir(start)


# attack23 14: a Repository opened by a relative path keeps it relative: the index is
# open already (an fd), but objects are read and written by path, so after the
# program changes its directory a commit writes its objects into whatever "repo" is
# there (another repository), and records them in its own index, where they are
# missing.
def test_a_repository_opened_by_a_relative_path_stays_itself_after_a_chdir(
    elsewhere: Path,
) -> None:
    other = elsewhere / "b" / "repo"
    assert cli("--repo", other, "init").code == 0
    source = write_tree(elsewhere / "src", {"f": "data\n"})
    with sapwood.Repository.init("repo", sapwood.RepoMode.BARE_USER) as repo:
        os.chdir(elsewhere / "b")  # the program moves on; "repo" here is another one
        result = sapwood.commit(repo, "main", source, subject="after a chdir")
        assert sapwood.fsck(repo, all_objects=True).clean
        node = sapwood.lookup(repo, result.commit_id, "/f")
        assert node.file is not None and repo.read_file(node.file) == b"data\n"
    assert list((other / "objects").rglob("*.file")) == []  # nothing written into the other
    assert cli("--repo", elsewhere / "a" / "repo", "cat", "main", "/f").out == "data\n"


def test_a_repository_opened_by_an_absolute_path_is_unaffected_by_a_chdir(
    elsewhere: Path,
) -> None:
    """The same program with an absolute path: what the fix must make of a relative one."""
    source = write_tree(elsewhere / "src", {"f": "data\n"})
    with sapwood.Repository.init(elsewhere / "a" / "repo", sapwood.RepoMode.BARE_USER) as repo:
        os.chdir(elsewhere / "b")
        result = sapwood.commit(repo, "main", source, subject="after a chdir")
        assert sapwood.fsck(repo, all_objects=True).clean
        node = sapwood.lookup(repo, result.commit_id, "/f")
        assert node.file is not None and repo.read_file(node.file) == b"data\n"


# attack23 18: pull and pull_local take ``refs: Sequence[str]``, which a str is: the
# natural ``sapwood.pull_local(repo, source, "main")`` type-checks under mypy --strict
# and asks for the refs "m", "a", "i", "n" (and pulls a one-letter ref by accident).
def test_a_single_ref_given_as_a_string_is_that_ref(tmp_path: Path) -> None:
    source = tmp_path / "source"
    assert cli("--repo", source, "init").code == 0
    tree = write_tree(tmp_path / "tree", {"f": "data\n"})
    assert cli("--repo", source, "commit", "-b", "main", tree).code == 0
    with sapwood.Repository.init(tmp_path / "dest", sapwood.RepoMode.BARE_USER) as dest:
        try:
            sapwood.pull_local(dest, source, "main")
        except sapwood.UsageError:
            return  # refused as a usage error: also a fix
        assert dest.refs().keys() == {"main"}


def test_a_single_path_given_as_a_string_is_that_path(tmp_path: Path) -> None:
    """Worse than pull's: no error, another answer. path_history(repo, head, "/absent")
    iterates "/", "a", "b", ...: "/" changes in every commit, so every commit is listed."""
    tree = write_tree(tmp_path / "tree", {"f": "1\n"})
    with sapwood.Repository.init(tmp_path / "repo", sapwood.RepoMode.BARE_USER) as repo:
        sapwood.commit(repo, "main", tree, subject="one")
        (tree / "f").write_text("2\n")
        head = sapwood.commit(repo, "main", tree, subject="two").commit_id
        assert list(sapwood.path_history(repo, head, ["/absent"])) == []
        try:
            found = list(sapwood.path_history(repo, head, "/absent"))
        except sapwood.UsageError:
            return  # refused: also a fix
        assert found == []
