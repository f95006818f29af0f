"""Regression tests of the security review of pull (/work/plan/attack-pull.md): each
attack that was confirmed and fixed, reproduced here so that it stays fixed."""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import CorruptObjectError, IndexDamagedError, RepoMode, Repository
from store.pull import pull_local
from tests.helpers import IS_ROOT, NOBODY, cli, commit_dir, write_tree


@pytest.mark.skipif(not IS_ROOT, reason="root pulling from another user's repository")
def test_root_pull_local_never_adopts_another_users_object_files(tmp_path: Path) -> None:
    """F3: a hardlinked object stays the other user's inode, which they could rewrite
    afterwards under root's repository and every checkout of it; it must be copied."""
    tree = write_tree(tmp_path / "tree", {"bin/tool": "#!/bin/sh\necho genuine\n"})
    with Repository.init(tmp_path / "user-repo", RepoMode.BARE_USER) as src:
        head = commit_dir(src, tree, "os")
    for path in (tmp_path / "user-repo").rglob("*"):  # as the user's own repository is
        os.lchown(path, NOBODY, NOBODY)
    with Repository.init(tmp_path / "root-repo", RepoMode.BARE_USER) as dest:
        pull_local(dest, tmp_path / "user-repo", ["os"])
        assert dest.ref("os") == head
    objects = list((tmp_path / "root-repo").glob("objects/*/*.file"))
    assert objects
    for path in objects:
        assert path.stat().st_uid == 0, f"{path} is owned by uid {path.stat().st_uid}"
        assert path.stat().st_nlink == 1


def test_a_pull_of_many_refs_is_not_quadratic(tmp_path: Path) -> None:
    """F6: a summary offering 100 000 refs made `pull REMOTE` spin for hours in the
    ref checks of its last transaction (each new ref compared with every other)."""
    tree = write_tree(tmp_path / "tree", {"a": "a\n"})
    with Repository.init(tmp_path / "repo", RepoMode.BARE_USER) as repo:
        head = commit_dir(repo, tree, "main")
        start = time.monotonic()
        with repo.transaction() as txn:
            for number in range(30_000):
                txn.set_ref(f"origin:r/{number:05d}", head, expected=None)
        assert time.monotonic() - start < 20  # 2 s here; about 100 s when quadratic
        assert len(repo.refs()) == 30_001


class _BadRedirect(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/sup2/"):  # '²'.isdigit() is True; int('²') fails
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n")
            return
        self.send_response(302)
        self.send_header("Location", "http://[::1/x")  # an IPv6 host never closed
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def bad_redirect() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BadRedirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_a_redirect_to_an_invalid_url_is_one_line_not_an_internal_error(
    tmp_path: Path, bad_redirect: str
) -> None:
    """F7: a Location urllib cannot parse ended pull as an internal error (exit 70)."""
    local = tmp_path / "local"
    assert cli("--repo", local, "init").code == 0
    assert cli("--repo", local, "remote", "add", "origin", bad_redirect).code == 0
    result = cli("--repo", local, "pull", "origin")
    assert result.code == 4, result.err
    assert result.err.count("\n") == 1 and "invalid URL" in result.err


def test_remote_add_of_an_unparsable_url_is_a_usage_error(tmp_path: Path) -> None:
    """F7: `remote add o http://[::1/` ended as an internal error (exit 70)."""
    assert cli("--repo", tmp_path / "r", "init").code == 0
    result = cli("--repo", tmp_path / "r", "remote", "add", "o", "http://[::1/")
    assert result.code == 2, result.err
    assert "not a URL" in result.err


def test_summary_update_never_writes_through_a_planted_symlink(tmp_path: Path) -> None:
    """F9: `summary -u` wrote its temporary file at a predictable name with open("wb"):
    a symlink planted there by whoever may write into the repository's directory made
    it overwrite (and chmod 0644) a file outside the repository."""
    from store.signing import generate_keypair
    from store.summary import update_summary

    tree = write_tree(tmp_path / "tree", {"a": "a\n"})
    victim = tmp_path / "victim"
    victim.write_bytes(b"secret\n")
    victim.chmod(0o600)
    with Repository.init(tmp_path / "archive", RepoMode.ARCHIVE) as repo:
        commit_dir(repo, tree, "main")
        for name in ("summary", "summary.sig"):
            (repo.path / f".{name}.tmp-{os.getpid()}").symlink_to(victim)
        update_summary(repo, [generate_keypair()])
    assert victim.read_bytes() == b"secret\n"
    assert victim.stat().st_mode & 0o777 == 0o600
    for name in ("summary", "summary.sig"):
        path = tmp_path / "archive" / name
        assert not path.is_symlink() and path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("name", ["lock.mdb", "data.mdb"])
def test_an_index_file_that_is_a_symlink_is_never_opened(tmp_path: Path, name: str) -> None:
    """F10: LMDB opens index/lock.mdb read-write (and truncates and rewrites it) through a
    symlink: root's pull-local from a user's repository whose lock.mdb pointed at a root
    file (/etc/passwd) overwrote that file."""
    tree = write_tree(tmp_path / "tree", {"a": "a\n"})
    with Repository.init(tmp_path / "src", RepoMode.BARE_USER) as src:
        commit_dir(src, tree, "main")
    victim = tmp_path / "victim"
    if name == "data.mdb":  # a real index elsewhere, so that only the symlink is at stake
        os.rename(tmp_path / "src" / "index" / name, victim)
    else:
        victim.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
        (tmp_path / "src" / "index" / name).unlink()
    before = victim.read_bytes()
    (tmp_path / "src" / "index" / name).symlink_to(victim)
    with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
        with pytest.raises(IndexDamagedError, match="symlink"):
            pull_local(dest, tmp_path / "src")
        assert dest.refs() == {}
    assert victim.read_bytes() == before


def test_a_content_length_of_unicode_digits_is_not_an_internal_error(
    tmp_path: Path, bad_redirect: str
) -> None:
    """F12: `Content-Length: \\xb2` passed str.isdigit() and then failed int(): exit 70."""
    local = tmp_path / "local"
    assert cli("--repo", local, "init").code == 0
    assert cli("--repo", local, "remote", "add", "origin", bad_redirect + "sup2/").code == 0
    result = cli("--repo", local, "pull", "origin")
    assert result.code != 70 and result.code != 0, result.err
    assert result.err.count("\n") == 1 and "internal error" not in result.err


def test_a_tree_naming_an_object_of_another_kind_is_refused(tmp_path: Path) -> None:
    """F13: a dirtree naming, as a file, an object the repository holds as a dirtree (or
    the other way round) was committed, and pull moved a ref to it: fsck then failed
    and checkout found the file "missing"."""
    from store import DirTree

    tree = write_tree(tmp_path / "tree", {"etc/a": "a\n"})
    with Repository.init(tmp_path / "repo", RepoMode.BARE_USER) as repo:
        head = commit_dir(repo, tree, "main")
        commit = repo.read_commit(head)
        root = repo.read_dirtree(commit.tree)
        etc = dict(root.dirs)[b"etc"]
        confused = DirTree(((b"evil", etc.tree),), root.dirs)  # a dirtree named as a file
        with pytest.raises(CorruptObjectError, match="dirtree"), repo.transaction() as txn:
            txn.write_dirtree(confused)
        sub = DirTree.build({}, {b"d": type(etc)(etc.meta, etc.meta)})  # a dirmeta as a tree
        with pytest.raises(CorruptObjectError), repo.transaction() as txn:
            txn.write_dirtree(sub)
        assert sapwood_fsck_clean(repo)


def sapwood_fsck_clean(repo: Repository) -> bool:
    import sapwood

    return bool(sapwood.fsck(repo, all_objects=True).clean)


def test_a_delta_part_longer_than_its_superblock_says_is_never_read_whole(
    tmp_path: Path,
) -> None:
    """F5: delta parts were read whole into memory, up to max_object_size (1 GiB) each,
    two or three at a time, before their size was compared with the superblock's: a
    server sent 400 MiB parts and the client's RSS went to 2.4 GB. A part is now
    spooled to the repository's tmp/ and refused as soon as it exceeds its size."""
    from store import NetworkError
    from store.deltas import decode_superblock, generate_delta
    from store.pull import Remote, add_remote, pull
    from store.summary import update_summary
    from tests.store.pull_server import serve
    from tests.store.test_pull_http import FAST

    tree = write_tree(tmp_path / "tree", {f"f{n}": os.urandom(300_000) for n in range(8)})
    with Repository.init(tmp_path / "archive", RepoMode.ARCHIVE) as archive:
        head = commit_dir(archive, tree, "main")
        delta = generate_delta(archive, None, head, part_size=1 << 20)
        update_summary(archive)
    declared = decode_superblock((delta / "superblock").read_bytes()).part_sizes[0]
    part = delta / "0"
    part.chmod(0o644)
    with open(part, "ab") as grow:  # served whole, with its Content-Length
        grow.truncate(64 << 20)
    with (
        serve(tmp_path / "archive") as served,
        Repository.init(tmp_path / "local", RepoMode.BARE_USER) as local,
    ):
        add_remote(local.path, Remote("origin", served.url))
        with pytest.raises(NetworkError, match=f"more than the {declared} allowed"):
            pull(local, "origin", settings=FAST)
        assert local.refs() == {}
        assert list((tmp_path / "local" / "tmp").iterdir()) == []
