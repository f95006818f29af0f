"""The repository view: refs/, commits/, history/, and refs that move while mounted."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from mountd.repo_view import RepositoryView
from mountd.view import ROOT_INODE
from store import ObjectId, Repository
from tests.helpers import Mounts, commit_dir, commit_files, run


def _commit(repo: Repository, tmp_path: Path, branch: str, content: str) -> ObjectId:
    source = tmp_path / f"src-{branch.replace('/', '_')}"
    return commit_files(
        repo,
        source,
        {"version": content},
        branch,
        subject=f"{branch} {content}",
        metadata={"version": content},
    )


def _names(view: RepositoryView, ino: int) -> list[bytes]:
    return [name for name, *_ in view.entries(ino, 0)]


def _path(view: RepositoryView, *parts: bytes) -> int:
    ino = ROOT_INODE
    for part in parts:
        ino = view.lookup(ino, part).ino
    return ino


def test_layout_of_the_repository_view(user_repo: Repository, tmp_path: Path) -> None:
    first = _commit(user_repo, tmp_path, "os/x86_64/stable", "1")
    second = _commit(user_repo, tmp_path, "os/x86_64/stable", "2")
    other = _commit(user_repo, tmp_path, "main", "m")
    view = RepositoryView(user_repo)
    assert _names(view, ROOT_INODE) == [b"commits", b"history", b"refs"]
    assert _names(view, _path(view, b"refs")) == [b"main", b"os"]
    stable = _path(view, b"refs", b"os", b"x86_64", b"stable")
    assert _names(view, stable) == [b"version"]
    assert view.getxattr(stable, b"user.sapwood.commit") == second.hex().encode()
    assert view.getxattr(stable, b"user.sapwood.parent") == first.hex().encode()
    assert view.getxattr(stable, b"user.sapwood.version") == b"2"
    commits = _path(view, b"commits")
    assert sorted(_names(view, commits)) == sorted(c.hex().encode() for c in (first, second, other))
    by_prefix = view.lookup(commits, first.hex()[:8].encode())
    assert by_prefix.ino == view.lookup(commits, first.hex().encode()).ino
    history = _names(view, _path(view, b"history", b"os", b"x86_64", b"stable"))
    assert [h.split(b"_")[1] for h in history] == [
        second.hex()[:12].encode(),
        first.hex()[:12].encode(),
    ]
    assert stat.S_ISDIR(view.getattr(_path(view, b"refs")).mode) and view.volatile_dir(commits)


def test_a_moved_ref_shows_its_new_tree_while_mounted(
    user_repo: Repository, tmp_path: Path, mount: Mounts
) -> None:
    _commit(user_repo, tmp_path, "main", "old")
    mnt = mount.background(user_repo.path)
    assert (mnt / "refs" / "main" / "version").read_text() == "old"
    assert len(os.listdir(mnt / "history" / "main")) == 1
    (tmp_path / "src-main" / "version").write_text("new")
    result = run(
        "commit",
        "-b",
        "main",
        "--add-metadata-string",
        "version=new",
        tmp_path / "src-main",
        repo=user_repo.path,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while (mnt / "refs" / "main" / "version").read_text() != "new":
        assert time.monotonic() < deadline, "the mount never followed the ref"
        time.sleep(0.2)
    assert len(os.listdir(mnt / "history" / "main")) == 2
    shown = mnt / "commits" / result.stdout.strip()[:10]
    assert (shown / "version").read_text() == "new"
    assert os.getxattr(mnt / "refs" / "main", "user.sapwood.version") == b"new"


def test_history_names_commits_beyond_the_calendar_by_seconds(
    user_repo: Repository, tmp_path: Path
) -> None:
    """Any 64-bit time is a commit time; datetime stops at year 9999."""
    source = tmp_path / "src"
    source.mkdir()
    ids = [
        commit_dir(user_repo, source, "far", timestamp=t) for t in (1_000_000, 253402300800, 2**62)
    ]
    view = RepositoryView(user_repo)
    history = _names(view, _path(view, b"history", b"far"))
    assert history == [
        f"{2**62}s_{ids[2].hex()[:12]}".encode(),
        f"253402300800s_{ids[1].hex()[:12]}".encode(),
        f"1970-01-12T134640Z_{ids[0].hex()[:12]}".encode(),
    ]
    assert _names(view, _path(view, b"history", b"far", history[0])) == []
