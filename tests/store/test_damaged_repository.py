"""A damaged or read-only repository: clear errors, nothing deleted, reading still works.

Each case is one a hostile review found: a missing or empty index made the repository
look empty (and prune deleted every object), a truncated one killed every command with
SIGBUS, a garbled one gave a traceback, and a read-only repository could not be read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import IndexDamagedError, ObjectId, RepoMode, Repository
from tests.helpers import IS_ROOT, NOBODY, commit_files, run, run_as_user, user_dir


@pytest.fixture
def committed(repo: Repository, tmp_path: Path) -> Iterator[tuple[Path, ObjectId]]:
    files = {f"f{n}": f"file {n}\n" * 100 for n in range(20)}
    commit_id = commit_files(repo, tmp_path / "src", files)
    path = repo.path
    repo.close()
    yield path, commit_id


def _object_files(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "objects").rglob("*") if p.is_file())


def _assert_refused_and_untouched(repo: Path, damaged_index: bytes | None) -> None:
    """Every command fails with one line; prune deletes nothing; the index stays as found."""
    objects = _object_files(repo)
    for args in (["refs"], ["fsck", "--all"], ["prune"], ["log", "main"]):
        proc = run(*args, repo=repo, text=True)
        assert proc.returncode != 0, (args, proc.stdout)
        assert proc.returncode > 0, f"killed by signal {-proc.returncode}"
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sapwood: error: "), proc.stderr
        assert "index" in lines[0]
    assert _object_files(repo) == objects
    data = repo / "index" / "data.mdb"
    if damaged_index is None:
        assert not data.exists(), "opening a repository must never create an index"
    else:
        assert data.read_bytes() == damaged_index


def test_missing_index_is_an_error_not_an_empty_repository(
    committed: tuple[Path, ObjectId],
) -> None:
    repo, _ = committed
    (repo / "index" / "data.mdb").unlink()
    _assert_refused_and_untouched(repo, None)
    with pytest.raises(IndexDamagedError, match="missing"):
        Repository.open(repo)


@pytest.mark.parametrize("size", [0, 4096, "half"])
def test_empty_or_truncated_index_is_an_error_not_sigbus(
    committed: tuple[Path, ObjectId], size: int | str
) -> None:
    repo, _ = committed
    data = repo / "index" / "data.mdb"
    full = data.stat().st_size
    with open(data, "r+b") as index:
        index.truncate(full // 2 if size == "half" else int(size))
    _assert_refused_and_untouched(repo, data.read_bytes())


def test_garbled_index_is_an_error_not_a_traceback(committed: tuple[Path, ObjectId]) -> None:
    repo, _ = committed
    data = repo / "index" / "data.mdb"
    raw = bytearray(data.read_bytes())
    raw[: 2 * 4096] = os.urandom(2 * 4096)  # both meta pages
    data.write_bytes(bytes(raw))
    _assert_refused_and_untouched(repo, bytes(raw))


def test_an_index_without_sapwoods_tables_is_refused(committed: tuple[Path, ObjectId]) -> None:
    repo, _ = committed
    shutil.rmtree(repo / "index")
    import lmdb

    lmdb.open(str(repo / "index"), max_dbs=2).close()  # a valid, empty LMDB environment
    _assert_refused_and_untouched(repo, (repo / "index" / "data.mdb").read_bytes())


@pytest.mark.skipif(not IS_ROOT, reason="needs a read-only bind mount")
def test_a_repository_on_read_only_media_can_be_read(
    committed: tuple[Path, ObjectId], tmp_path: Path
) -> None:
    repo, commit_id = committed
    view = tmp_path / "ro"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(repo), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        assert run("refs", repo=view, text=True).stdout == "main\n"
        assert run("cat", "main", "/f3", repo=view, text=True).stdout == "file 3\n" * 100
        checked = run("fsck", repo=view, text=True)
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout == "checked 1 commit, 2 metadata and 20 file objects\n"
        refused = run("refs", "--create", "other", commit_id.hex(), repo=view, text=True)
        assert refused.returncode != 0 and "read-only" in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    finally:
        subprocess.run(["umount", str(view)], check=True)


@pytest.mark.skipif(not IS_ROOT, reason="runs sapwood as another user")
def test_another_users_repository_can_be_read_not_written(tmp_path: Path) -> None:
    """Root's bare-user repository, read by uid 65534, who may not write it."""
    home = user_dir()
    try:
        os.chown(home, 0, 0)
        os.chmod(home, 0o755)
        repo = home / "repo"
        Repository.init(repo, RepoMode.BARE_USER).close()
        source = home / "src"
        with Repository.open(repo) as opened:
            commit_files(opened, source, {"readme": "for everyone\n"})
        assert run_as_user("--repo", repo, "refs").stdout == "main\n"
        cat = run_as_user("--repo", repo, "cat", "main", "/readme")
        assert cat.returncode == 0 and cat.stdout == "for everyone\n", cat.stderr
        denied = run_as_user("--repo", repo, "commit", "-b", "mine", source)
        assert denied.returncode != 0 and "read-only" in denied.stderr, denied.stderr
        assert len(denied.stderr.strip().splitlines()) == 1
        assert os.stat(repo / "index" / "lock.mdb").st_uid != NOBODY
    finally:
        shutil.rmtree(home)
