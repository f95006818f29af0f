"""Pull of a real tree from an archive repository that Debian's nginx serves.

The tree is part of the cached Debian tree (tests/debian.py: /etc, /usr/sbin and
/usr/share/doc, about 15 MB in 900 entries); with SAPWOOD_LONG=1, all of it. Each test
counts the requests in nginx's access log: an update fetches only what changed, a delta
replaces the objects it holds, a pull SIGKILLed midway resumes without fetching again
what it stored.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from store import ObjectId, ObjectType, Repository
from store.content import object_relpath
from store.deltas import decode_superblock
from tests.debian import debian_tree
from tests.helpers import (
    IS_ROOT,
    NOBODY,
    Mounts,
    read_disk_tree,
    run_as_user,
    sapwood_argv,
    user_dir,
    write_tree,
)
from tests.net.conftest import HTTP_ENV
from tests.net.repos import (
    PULL_TIMEOUT,
    add_remote,
    archive_of,
    fsck_clean,
    keygen,
    local_repo,
    publish,
    pull,
    refs,
    sapwood_ok,
)
from tests.net.servers import Nginx

LONG = bool(os.environ.get("SAPWOOD_LONG"))
PARTS = ("etc", "usr/sbin", "usr/share/doc")
OBJECT = re.compile(r"^/objects/([0-9a-f]{2})/([0-9a-f]{62})\.(filez|dirtree|dirmeta|commit)$")

pytestmark = [
    pytest.mark.debian,
    pytest.mark.skipif(not IS_ROOT, reason="the Debian tree is built and read as root"),
]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tree to publish: the Debian tree (SAPWOOD_LONG) or three parts of it."""
    tree = debian_tree()
    if LONG:
        return tree
    root = tmp_path_factory.mktemp("source") / "tree"
    for part in PARTS:
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(tree / part), str(root / part)], check=True, timeout=120)
    return root


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, source: Path) -> tuple[Path, str]:
    """An archive repository with ``source`` as the commit of ``main``, summary updated
    (the tests copy it before they change it)."""
    archive = tmp_path_factory.mktemp("published") / "archive"
    return archive, archive_of(archive, source, subject="v1")


@pytest.fixture
def archive(tmp_path: Path, published: tuple[Path, str]) -> Path:
    """A copy of the published repository, for a test to change."""
    copy = tmp_path / "archive"
    subprocess.run(["cp", "-a", str(published[0]), str(copy)], check=True, timeout=120)
    return copy


def object_paths(archive: Path) -> set[str]:
    """The URL paths of every object file of an archive repository."""
    return {
        "/" + p.relative_to(archive).as_posix()
        for p in (archive / "objects").glob("*/*")
        if OBJECT.match("/" + p.relative_to(archive).as_posix())
    }


def fetched_objects(server: Nginx) -> list[str]:
    """Object paths served with 200, in order (a path twice means fetched twice)."""
    return [r.path for r in server.requests() if r.status == 200 and OBJECT.match(r.path)]


def object_id(path: str) -> ObjectId:
    match = OBJECT.match(path)
    assert match
    return ObjectId(bytes.fromhex(match[1] + match[2]))


def listing(repo: Path, rev: str) -> list[dict[str, object]]:
    """``ls -R --json REV``: every path with its type, mode, owner, size, target, xattrs
    (the contents are the commit id's and fsck's to vouch for)."""
    entries: list[dict[str, object]] = json.loads(sapwood_ok(repo, "ls", "-R", "--json", rev))
    return entries


def pulled(local: Path, server: Nginx, ref: str = "main") -> str:
    add_remote(local, server.url)
    result = pull(local, "origin", ref)
    assert result.returncode == 0, result.stderr
    return refs(local)[f"origin:{ref}"]


# ----- first pulls into each mode -------------------------------------------------------------
def test_pull_into_bare_user_as_root(
    tmp_path: Path,
    source: Path,
    published: tuple[Path, str],
    nginx: Callable[[Path], Nginx],
    mount: Mounts,
) -> None:
    archive, commit = published
    server = nginx(archive)
    local = local_repo(tmp_path / "local", "bare-user")
    assert pulled(local, server) == commit
    fsck_clean(local)
    assert listing(local, "origin:main") == listing(archive, "main")
    sapwood_ok(local, "checkout", "origin:main", tmp_path / "co")
    assert read_disk_tree(tmp_path / "co") == read_disk_tree(source)
    mnt = mount.foreground(local, "origin:main").mountpoint
    assert read_disk_tree(mnt) == read_disk_tree(source)
    fetched = fetched_objects(server)
    assert len(fetched) == len(set(fetched)), "an object was fetched twice"
    assert set(fetched) == object_paths(archive)
    connections = Counter(r.connection for r in server.requests())
    assert 1 < len(connections) <= 16, "several requests in flight, on kept-alive connections"
    assert max(connections.values()) > 20, connections


def test_pull_into_bare_user_as_an_unprivileged_user(
    source: Path, published: tuple[Path, str], nginx: Callable[[Path], Nginx]
) -> None:
    archive, commit = published
    server = nginx(archive)
    home = user_dir()
    try:
        local = home / "local"
        for args in (
            ("init", "--mode", "bare-user"),
            ("remote", "add", "origin", server.url),
            ("pull", "origin", "main"),
            ("fsck", "--all"),
        ):
            result = run_as_user("--repo", local, *args)
            assert result.returncode == 0, (args, result.stderr)
        assert refs(local)["origin:main"] == commit
        assert listing(local, "origin:main") == listing(archive, "main")
        result = run_as_user("--repo", local, "checkout", "-U", "origin:main", home / "co")
        assert result.returncode == 0, result.stderr
        ours = {path: (e.kind, e.data) for path, e in read_disk_tree(home / "co").items()}
        theirs = {path: (e.kind, e.data) for path, e in read_disk_tree(source).items()}
        assert ours == theirs
        assert {p.lstat().st_uid for p in local.rglob("*")} == {NOBODY}, "a file left root's"
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_pull_into_bare_as_root(
    tmp_path: Path,
    source: Path,
    published: tuple[Path, str],
    nginx: Callable[[Path], Nginx],
    mount: Mounts,
) -> None:
    archive, commit = published
    server = nginx(archive)
    local = local_repo(tmp_path / "local", "bare")
    assert pulled(local, server) == commit
    fsck_clean(local)
    sapwood_ok(local, "checkout", "origin:main", tmp_path / "co")
    assert read_disk_tree(tmp_path / "co") == read_disk_tree(source)
    mnt = mount.foreground(local, "origin:main").mountpoint
    assert read_disk_tree(mnt) == read_disk_tree(source)


# ----- updates --------------------------------------------------------------------------------
def second_version(tmp_path: Path, source: Path) -> Path:
    """v2: v1 with a directory removed, one added and one file changed (a copy of v1:
    hardlinks where nothing changes, so that it costs little)."""
    v2 = tmp_path / "v2"
    linked = subprocess.run(["cp", "-al", str(source), str(v2)], timeout=120, check=False)
    if linked.returncode != 0:  # another filesystem: a plain copy
        shutil.rmtree(v2, ignore_errors=True)
        subprocess.run(["cp", "-a", str(source), str(v2)], check=True, timeout=600)
    docs = sorted((v2 / "usr/share/doc").iterdir())
    shutil.rmtree(docs[0])
    write_tree(v2 / "usr/share/doc/sapwood-new", {"README": "new in v2\n", "copyright": "v2\n"})
    motd = v2 / "etc/motd"
    motd.unlink()  # a hardlink to v1's file: replace it, do not write through it
    motd.write_text("changed in v2\n")
    return v2


def commit_v2(tmp_path: Path, source: Path, archive: Path) -> tuple[str, set[str]]:
    """Commit v2 to ``main`` of ``archive``; its id and the object files it added."""
    before = object_paths(archive)
    commit = archive_of(archive, second_version(tmp_path, source), subject="v2")
    return commit, object_paths(archive) - before


def test_an_update_fetches_only_what_changed(
    tmp_path: Path, source: Path, archive: Path, nginx: Callable[[Path], Nginx]
) -> None:
    server = nginx(archive)
    local = local_repo(tmp_path / "local")
    v1 = pulled(local, server)
    v2, added = commit_v2(tmp_path, source, archive)
    assert added and v2 != v1
    server.clear_log()
    result = pull(local, "origin", "main")
    assert result.returncode == 0, result.stderr
    assert refs(local)["origin:main"] == v2
    fetched = fetched_objects(server)
    assert sorted(fetched) == sorted(added), "exactly the objects v2 added, each once"
    others = {r.path for r in server.requests() if not OBJECT.match(r.path)}
    commitmeta = f"/objects/{v2[:2]}/{v2[2:]}.commitmeta"
    assert "/summary" in others
    assert others <= {"/summary", "/summary.sig", "/config", commitmeta}, others
    fsck_clean(local)


def held_by_delta(archive: Path, name: str) -> set[str]:
    """The URL paths of the objects a delta holds (read from its superblock)."""
    superblock = decode_superblock((archive / "deltas" / name / "superblock").read_bytes())
    return {
        f"/objects/{object_relpath(e.object_id, e.kind, e.kind is ObjectType.FILE)}"
        for e in superblock.entries
    }


def test_a_delta_is_used_when_offered(
    tmp_path: Path, source: Path, archive: Path, nginx: Callable[[Path], Nginx]
) -> None:
    server = nginx(archive)
    local = local_repo(tmp_path / "local")
    v1 = pulled(local, server)
    v2, added = commit_v2(tmp_path, source, archive)
    sapwood_ok(archive, "static-delta", "generate", "--from", v1, "--to", v2)
    publish(archive)
    server.clear_log()
    result = pull(local, "origin", "main")
    assert result.returncode == 0, result.stderr
    assert refs(local)["origin:main"] == v2
    paths = [r.path for r in server.requests() if r.status == 200]
    assert f"/deltas/{v1}-{v2}/superblock" in paths
    assert any(re.fullmatch(rf"/deltas/{v1}-{v2}/\d+", p) for p in paths), paths
    assert added <= held_by_delta(archive, f"{v1}-{v2}")
    only_the_commit = {f"/objects/{v2[:2]}/{v2[2:]}.commit"}  # fetched first, to verify it
    assert set(fetched_objects(server)) <= only_the_commit, "objects fetched beside the delta"
    fsck_clean(local)
    assert listing(local, "origin:main") == listing(archive, "main")


def test_a_delta_from_nothing_is_used_by_a_first_pull(
    tmp_path: Path, archive: Path, published: tuple[Path, str], nginx: Callable[[Path], Nginx]
) -> None:
    commit = published[1]
    sapwood_ok(archive, "static-delta", "generate", "--to", commit)
    publish(archive)
    server = nginx(archive)
    local = local_repo(tmp_path / "local")
    assert pulled(local, server) == commit
    paths = [r.path for r in server.requests() if r.status == 200]
    assert f"/deltas/{commit}/superblock" in paths
    assert object_paths(archive) <= held_by_delta(archive, commit)
    only_the_commit = {f"/objects/{commit[:2]}/{commit[2:]}.commit"}
    assert set(fetched_objects(server)) <= only_the_commit, "objects fetched beside the delta"
    fsck_clean(local)
    assert listing(local, "origin:main") == listing(archive, "main")


# ----- interrupted ----------------------------------------------------------------------------
def kill_after(server: Nginx, local: Path, objects: int) -> subprocess.CompletedProcess[bytes]:
    """Start a pull and SIGKILL it once nginx has served ``objects`` objects."""
    env = dict(os.environ) | HTTP_ENV | {"SAPWOOD_PULL_BATCH": "20"}  # kept in small batches
    process = subprocess.Popen(
        sapwood_argv("pull", "origin", "main", repo=local),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.monotonic() + PULL_TIMEOUT
    while process.poll() is None and time.monotonic() < deadline:
        if len(fetched_objects(server)) >= objects:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    out, err = process.communicate(timeout=PULL_TIMEOUT)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


KILL_AT = [0.1, 0.33, 0.66, 0.9] if LONG else [0.66]  # of the objects served


@pytest.mark.parametrize("fraction", KILL_AT)
def test_a_pull_killed_midway_resumes_without_fetching_again(
    tmp_path: Path, published: tuple[Path, str], nginx: Callable[[Path], Nginx], fraction: float
) -> None:
    archive, commit = published
    server = nginx(archive)
    local = local_repo(tmp_path / "local")
    add_remote(local, server.url)
    total = len(object_paths(archive))
    killed = kill_after(server, local, int(total * fraction))
    assert killed.returncode == -signal.SIGKILL, f"the pull ended by itself: {killed.stderr!r}"
    assert "origin:main" not in refs(local)
    fsck_clean(local)
    first = set(fetched_objects(server))
    with Repository.open(local) as repo:
        stored = {path for path in first if repo.has_object(object_id(path))}
    assert stored, "nothing fetched before the kill was kept"
    server.clear_log()
    result = pull(local, "origin", "main")
    assert result.returncode == 0, result.stderr
    assert refs(local)["origin:main"] == commit
    again = set(fetched_objects(server))
    assert not again & stored, f"{len(again & stored)} stored objects fetched again"
    fsck_clean(local)
    assert listing(local, "origin:main") == listing(archive, "main")


# ----- signatures -----------------------------------------------------------------------------
def test_signatures_are_enforced(
    tmp_path: Path, archive: Path, published: tuple[Path, str], nginx: Callable[[Path], Nginx]
) -> None:
    commit = published[1]
    public, keys_file = keygen(tmp_path, "release")
    stranger, _ = keygen(tmp_path, "stranger")
    sapwood_ok(archive, "sign", "--keys-file", keys_file, "main")
    publish(archive, keys_file)
    server = nginx(archive)

    trusting = local_repo(tmp_path / "trusting")
    add_remote(trusting, server.url, "origin", "--sign-verify", "--trusted-key", public)
    result = pull(trusting, "origin", "main")
    assert result.returncode == 0, result.stderr
    assert refs(trusting)["origin:main"] == commit
    shown = sapwood_ok(trusting, "show", "origin:main")
    assert public in shown

    wary = local_repo(tmp_path / "wary")
    add_remote(wary, server.url, "origin", "--sign-verify", "--trusted-key", stranger)
    result = pull(wary, "origin", "main")
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "origin:main" not in refs(wary)
    fsck_clean(wary)
