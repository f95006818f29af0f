"""diff of a commit against a directory: content is always re-hashed, nothing followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fs.checkout import CheckoutOptions, checkout
from fs.treediff import diff_dir
from store import ObjectId, Repository, lookup, root_node
from tests.helpers import cli, commit_files

CHUNK = 1 << 20  # fs.copy.CHUNK


def _commit(repo: Repository, tmp_path: Path, files: dict[str, bytes]) -> ObjectId:
    return commit_files(repo, tmp_path / "src", {**files, "link": "->etc/passwd"})


def _diff(repo: Repository, commit_id: ObjectId, directory: Path) -> list[tuple[str, bytes]]:
    return [change[:2] for change in diff_dir(repo, root_node(repo, commit_id), directory)]


@pytest.fixture
def farm(user_repo: Repository, tmp_path: Path) -> tuple[ObjectId, Path]:
    """A hardlinked checkout: its files are the repository's objects."""
    files = {"etc/passwd": b"root:x:0:0\n", "big": os.urandom(2 * CHUNK + 3)}
    commit_id = _commit(user_repo, tmp_path, files)
    dest = tmp_path / "farm"
    stats = checkout(user_repo, commit_id, dest, CheckoutOptions(user_mode=True))
    assert stats.hardlinks == 2
    return commit_id, dest


def test_an_object_changed_through_a_farm_is_modified(
    user_repo: Repository, farm: tuple[ObjectId, Path]
) -> None:
    commit_id, dest = farm
    assert _diff(user_repo, commit_id, dest) == []
    victim = dest / "etc" / "passwd"
    node = lookup(user_repo, commit_id, "/etc/passwd")
    assert node.file is not None
    assert os.path.samefile(victim, user_repo.content.path(node.file))  # the object itself
    victim.chmod(0o644)  # a careless admin edits the farm, and so the object
    victim.write_bytes(b"root::0:0:\n")  # the same size: only the content tells
    assert _diff(user_repo, commit_id, dest) == [("M", b"/etc/passwd")]
    shown = cli("--repo", user_repo.path, "diff", "main", dest)
    assert shown.code == 0 and shown.out == "M    /etc/passwd\n"


def test_a_change_in_the_last_byte_of_a_large_file_is_found(
    user_repo: Repository, farm: tuple[ObjectId, Path]
) -> None:
    commit_id, dest = farm
    big = dest / "big"
    big.chmod(0o644)
    with open(big, "r+b") as stream:
        stream.seek(-1, os.SEEK_END)
        last = stream.read(1)
        stream.seek(-1, os.SEEK_END)
        stream.write(bytes([last[0] ^ 1]))
    assert _diff(user_repo, commit_id, dest) == [("M", b"/big")]


def test_other_types_in_place_of_files_are_modified_and_never_opened(
    user_repo: Repository, tmp_path: Path
) -> None:
    commit_id = _commit(user_repo, tmp_path, {"etc/passwd": b"x\n", "fifo": b"f", "sym": b"s"})
    dest = tmp_path / "copy"
    checkout(user_repo, commit_id, dest, CheckoutOptions(user_mode=True, copy=True))
    (dest / "fifo").unlink()
    os.mkfifo(dest / "fifo")  # opening it to read would block forever
    (dest / "sym").unlink()
    (dest / "sym").symlink_to(dest / "etc" / "passwd")  # same content behind the link
    (dest / "link").unlink()
    (dest / "link").write_bytes(b"etc/passwd")  # a file holding the symlink's target
    assert _diff(user_repo, commit_id, dest) == [
        ("M", b"/fifo"),
        ("M", b"/link"),
        ("M", b"/sym"),
    ]
    assert stat.S_ISFIFO(os.lstat(dest / "fifo").st_mode)
