"""fsck finds every kind of damage, in every mode; --delete then repair makes it clean."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from store import ObjectId, RepoMode, Repository, fsck, lookup
from store.ids import ObjectType
from tests.helpers import build_rich_tree, cli, commit_dir, put_ref


def _commit_tree(repo: Repository, tmp_path: Path) -> tuple[ObjectId, Path]:
    source = tmp_path / "src"
    build_rich_tree(source, setuid=repo.mode is not RepoMode.BARE_USER_ONLY)
    return commit_dir(repo, source), source


def _object_of(repo: Repository, commit_id: ObjectId, path: str) -> tuple[ObjectId, Path]:
    node = lookup(repo, commit_id, path)
    assert node.file is not None
    return node.file, repo.content.path(node.file)


def _rewrite(path: Path, edit: Callable[[bytes], bytes]) -> None:
    """Change an object file's bytes in place, keeping its inode and mode."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    os.chmod(path, mode | 0o200)
    data = path.read_bytes()
    with open(path, "r+b") as out:
        out.truncate(0)
        out.write(edit(data))
    os.chmod(path, mode)


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def test_clean_repository_is_clean(repo: Repository, tmp_path: Path) -> None:
    _commit_tree(repo, tmp_path)
    report = fsck(repo)
    assert report.clean and report.commits == 1 and report.file_objects > 5
    assert fsck(repo, all_objects=True).clean


@pytest.mark.parametrize(
    "damage", ["flipped-byte", "truncated", "deleted", "appended", "edited-through-hardlink"]
)
def test_damaged_file_object_is_found(repo: Repository, tmp_path: Path, damage: str) -> None:
    commit_id, _ = _commit_tree(repo, tmp_path)
    object_id, path = _object_of(repo, commit_id, "/usr/bin/dash")
    if damage == "flipped-byte":
        _rewrite(path, _flip)
    elif damage == "truncated":
        _rewrite(path, lambda d: d[: len(d) // 2])
    elif damage == "appended":
        _rewrite(path, lambda d: d + b"tail")
    elif damage == "deleted":
        path.unlink()
    else:  # a hardlinked checkout shares the inode: writing it writes the object
        link = tmp_path / "checkout-dash"
        os.link(path, link)
        _rewrite(link, _flip)
    report = fsck(repo)
    assert not report.clean
    assert [p.object_id for p in report.problems] == [object_id]
    assert report.problems[0].needed_by == (commit_id,)
    result = cli("--repo", repo.path, "fsck")
    assert result.code != 0
    assert object_id.hex() in result.out and commit_id.hex()[:12] in result.out
    assert "fsck found 1 problem" in result.err and "problems" not in result.err


def test_changed_mode_of_an_object_is_found(repo: Repository, tmp_path: Path) -> None:
    commit_id, _ = _commit_tree(repo, tmp_path)
    object_id, path = _object_of(repo, commit_id, "/usr/bin/dash")
    os.chmod(path, 0o777)
    problems = fsck(repo).problems
    if repo.mode is RepoMode.ARCHIVE:  # archive objects are plain files; the mode is not data
        assert problems == []
    else:
        assert [p.object_id for p in problems] == [object_id]


def test_corrupt_metadata_in_the_index_is_found(repo: Repository, tmp_path: Path) -> None:
    commit_id, _ = _commit_tree(repo, tmp_path)
    directory = lookup(repo, commit_id, "/etc").dir
    assert directory is not None
    tree_id = directory.tree
    env = repo.index._env  # corruption injected below the API on purpose
    with env.begin(write=True) as txn:
        db = repo.index._dbs["objects"]
        value = bytes(txn.get(tree_id, db=db))
        txn.put(tree_id, value[:-1] + bytes([value[-1] ^ 1]), db=db)
    report = fsck(repo)
    assert [p.object_id for p in report.problems] == [tree_id]
    assert "do not hash to its id" in report.problems[0].message


def test_delete_marks_partial_and_recommit_repairs(repo: Repository, tmp_path: Path) -> None:
    commit_id, source = _commit_tree(repo, tmp_path)
    object_id, path = _object_of(repo, commit_id, "/etc/passwd")
    _rewrite(path, _flip)
    assert cli("--repo", repo.path, "fsck", "--delete").code != 0
    assert not repo.has_object(object_id) and not path.exists()
    again = fsck(repo)
    assert not again.clean and again.partial == [commit_id]
    commit_dir(repo, source, "repair", subject="repair")  # the same tree brings the object back
    repaired = fsck(repo)
    assert repaired.clean and repaired.completed == [commit_id]
    result = cli("--repo", repo.path, "fsck")
    assert result.code == 0 and result.err == ""


def test_a_partial_commit_is_not_built_on(user_repo: Repository, tmp_path: Path) -> None:
    """--tree=ref= would reuse a partial commit's trees without the deleted files."""
    commit_id, _ = _commit_tree(user_repo, tmp_path)
    _, path = _object_of(user_repo, commit_id, "/etc/passwd")
    _rewrite(path, _flip)
    assert cli("--repo", user_repo.path, "fsck", "--delete").code != 0
    assert user_repo.is_partial(commit_id)
    objects = sorted(p.name for p in (user_repo.path / "objects").rglob("*"))
    result = cli("--repo", user_repo.path, "commit", "-b", "built-on", "--tree=ref=main")
    assert result.code != 0 and "is partial" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert "built-on" not in user_repo.refs()
    assert sorted(p.name for p in (user_repo.path / "objects").rglob("*")) == objects


def test_missing_ref_target_is_found(user_repo: Repository, tmp_path: Path) -> None:
    ghost = ObjectId(b"\x42" * 32)
    put_ref(user_repo.path, "ghost", ghost)
    report = fsck(user_repo)
    assert [p.object_id for p in report.problems] == [ghost]


def test_fsck_all_counts_unlisted_files(user_repo: Repository, tmp_path: Path) -> None:
    _commit_tree(user_repo, tmp_path)
    (user_repo.path / "objects" / "ab" / ("cd" * 31 + ".file")).write_bytes(b"leftover")
    report = fsck(user_repo, all_objects=True)
    assert report.clean and report.orphan_files == 1


def test_parallel_check_of_many_files(user_repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "many"
    source.mkdir()
    for n in range(5000):  # above the in-process threshold: worker processes check them
        (source / f"f{n}").write_text(f"file {n}\n")
    commit_id = commit_dir(user_repo, source)
    object_id, path = _object_of(user_repo, commit_id, "/f4321")
    _rewrite(path, _flip)
    report = fsck(user_repo)
    assert report.file_objects == 5000
    assert [p.object_id for p in report.problems] == [object_id]


def test_archive_metadata_files_are_checked(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    commit_id, _ = _commit_tree(repo, tmp_path)
    hexid = commit_id.hex()
    (repo.path / "objects" / hexid[:2] / f"{hexid[2:]}.{ObjectType.COMMIT.suffix}").write_bytes(b"")
    assert [p.object_id for p in fsck(repo).problems] == [commit_id]
