"""The walk compares each new tree with the held one at its path (store/pull/walk.py,
_pair_with_held, session 15): an update looks up in the index only the entries the tree
its ref held does not name under the same name; with partial commits (fsck --delete)
it looks up everything, and a pull heals what fsck removed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from store import ObjectId, Repository
from store.pull import pull as store_pull
from store.snapshot import Snapshot
from tests.helpers import cli, write_tree
from tests.net.repos import add_remote, archive_of, fsck_clean, local_repo, sapwood_ok
from tests.net.servers import Nginx

WIDE = 200  # files of the directory an update changes one file of


def _versions() -> tuple[dict[str, str], dict[str, str]]:
    v1 = {f"big/f{n:03}": f"file {n}\n" for n in range(WIDE)} | {"d/e/old": "old\n"}
    v2 = v1 | {"big/f007": "changed\n", "big/new": "new\n", "d/e/new": "new too\n"}
    return v1, v2


def _counted(monkeypatch: pytest.MonkeyPatch) -> list[ObjectId]:
    """Every id the walk asks the index about."""
    asked: list[ObjectId] = []
    real = Snapshot.has_object

    def has_object(snap: Snapshot, object_id: ObjectId) -> bool:
        asked.append(object_id)
        return real(snap, object_id)

    monkeypatch.setattr(Snapshot, "has_object", has_object)
    return asked


def _file_id(repo: Repository, directory: str, name: bytes) -> ObjectId:
    commit = repo.ref("origin:main")
    assert commit is not None
    root = repo.read_dirtree(repo.read_commit(commit).tree)
    tree = repo.read_dirtree(dict(root.dirs)[directory.encode()].tree)
    return dict(tree.files)[name]


def _served(tmp_path: Path, nginx: Callable[[Path], Nginx], files: dict[str, str]) -> Path:
    archive_of(tmp_path / "served" / "repo", write_tree(tmp_path / "v1", files))
    server = nginx(tmp_path / "served")
    local = local_repo(tmp_path / "local")
    add_remote(local, f"{server.url}repo/")
    return local


def test_an_update_looks_up_only_what_the_held_tree_does_not_name(
    tmp_path: Path, nginx: Callable[[Path], Nginx], monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = _versions()
    local = _served(tmp_path, nginx, v1)
    with Repository.open(local) as repo:
        store_pull(repo, "origin")
        asked = _counted(monkeypatch)
        archive_of(tmp_path / "served" / "repo", write_tree(tmp_path / "v2", v2))
        report = store_pull(repo, "origin")
    assert report.content_fetched == 3
    assert len(asked) < 20, len(asked)  # the root, big, d, d/e, their new entries: not 200
    fsck_clean(local)
    assert sapwood_ok(local, "cat", "origin:main", "big/f007") == "changed\n"
    assert sapwood_ok(local, "cat", "origin:main", "big/f008") == "file 8\n"


def test_after_fsck_deletes_a_held_object_an_update_looks_everything_up_and_heals(
    tmp_path: Path, nginx: Callable[[Path], Nginx], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object of the held commit that the update still names (big/f100) is damaged
    and removed by fsck --delete (the commit is marked partial): the held tree no longer
    stands for what it names, so the walk looks every entry up, fetches big/f100 again,
    and the repository is whole."""
    v1, v2 = _versions()
    local = _served(tmp_path, nginx, v1)
    with Repository.open(local) as repo:
        store_pull(repo, "origin")
        damaged = Path(repo.object_path(_file_id(repo, "big", b"f100")))
    damaged.chmod(0o644)
    damaged.write_bytes(b"rotten")
    assert cli("--repo", local, "fsck", "--delete").code != 0
    asked = _counted(monkeypatch)
    archive_of(tmp_path / "served" / "repo", write_tree(tmp_path / "v2", v2))
    with Repository.open(local) as repo:
        report = store_pull(repo, "origin")
    assert report.content_fetched == 4  # the three new files and big/f100
    assert len(asked) > WIDE
    fsck_clean(local)
    assert sapwood_ok(local, "cat", "origin:main", "big/f100") == "file 100\n"
