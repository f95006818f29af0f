"""The update pull's fixed costs (docs/decisions.md, "The update pull, session 10"): a
small level of the tree walk is fetched by the walking thread itself, not handed to
the metadata pool's threads, and a delta's parts come through the pipelined lane (a
pull applying a delta never loads the per-object path: urllib3, http.client, email)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from store import ObjectId, ObjectType, Repository
from store.pull import pull as store_pull
from store.pull.job import _Job
from store.pull.walk import OWN_LANE_AT_MOST
from tests.helpers import write_tree
from tests.net.repos import (
    add_remote,
    archive_of,
    fsck_clean,
    local_repo,
    publish,
    pull,
    refs,
    sapwood_ok,
)
from tests.net.servers import Nginx
from tests.net.test_pull_fixed_costs import _imported


def _versions(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    """An archive's place, v1's files, and v2's: a few new files three levels down."""
    v1 = {"a": "one\n", "d/e/f/old": "old\n", "d/x": "x\n", "g/h": "h\n"}
    v2 = v1 | {f"d/e/f/new{n}": f"new {n}\n" for n in range(6)} | {"d/x": "x2\n"}
    return tmp_path / "served" / "repo", v1, v2


def test_small_levels_are_walked_by_the_walking_thread_itself(
    tmp_path: Path, nginx: Callable[[Path], Nginx], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first pull's level of ten dirtrees goes through the metadata pool; the
    update's levels (one dirtree each) are fetched by the walking thread, which hands
    nothing over; and both pull every object (fsck, the refs)."""
    archive, v1, v2 = _versions(tmp_path)
    wide = v1 | {f"w{n}/file": f"{n}\n" for n in range(OWN_LANE_AT_MOST + 2)}
    archive_of(archive, write_tree(tmp_path / "v1", wide))
    server = nginx(tmp_path / "served")
    local = local_repo(tmp_path / "local")
    add_remote(local, f"{server.url}repo/")
    spread: list[int] = []
    real = _Job._get_spread

    def recorded(job: _Job, ids: list[ObjectId], kind: ObjectType) -> Iterator[bytes]:
        spread.append(len(ids))
        return real(job, ids, kind)

    monkeypatch.setattr(_Job, "_get_spread", recorded)
    with Repository.open(local) as repo:
        store_pull(repo, "origin")
        assert spread == [2 + OWN_LANE_AT_MOST + 2]  # the root's dirs: d, g and the w's
        spread.clear()
        new = archive_of(archive, write_tree(tmp_path / "v2", v2 | wide))
        report = store_pull(repo, "origin")
        assert spread == []
        assert report.refs["origin:main"][1].hex() == new
        assert report.metadata_fetched == 4  # the root, d, d/e, d/e/f
    fsck_clean(local)


def test_a_pull_applying_a_delta_never_loads_the_per_object_path(
    tmp_path: Path, nginx: Callable[[Path], Nginx]
) -> None:
    archive, v1, v2 = _versions(tmp_path)
    old = archive_of(archive, write_tree(tmp_path / "v1", v1))
    server = nginx(tmp_path / "served")
    local = local_repo(tmp_path / "local")
    add_remote(local, f"{server.url}repo/")
    assert pull(local, "origin").returncode == 0
    new = archive_of(archive, write_tree(tmp_path / "v2", v2))
    sapwood_ok(archive, "static-delta", "generate", "--from", old, "--to", new)
    publish(archive)
    server.clear_log()
    result = pull(local, "origin", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    assert refs(local)["origin:main"] == new
    parts = [r for r in server.requests() if r.path == f"/repo/deltas/{old}-{new}/0"]
    assert len(parts) == 1 and parts[0].status == 200
    imported = _imported(result.stderr)
    assert "store.deltas" in imported  # the delta was applied
    assert not {"store.pull.per_object", "urllib3", "http.client"} & imported
    fsck_clean(local)
