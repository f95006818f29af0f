"""Real mounts of damaged and hostile repositories (issue 9).

Whatever an object file or an index record holds, the daemon answers: EIO for what is
damaged, every other file as before, one log line per damaged object, and no hang, no
crash, no wrong bytes.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from store import (
    Commit,
    DirEntry,
    DirTree,
    FileHeader,
    ObjectId,
    ObjectType,
    RepoMode,
    Repository,
    lookup,
)
from tests.helpers import (
    Mounts,
    commit_dir,
    commit_files,
    delete_record,
    mount_fstype,
    put_record,
    put_ref,
    raw_index,
    read_through,
    run,
    run_briefly,
)

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
FAST = 5.0  # seconds: an error is an answer, not a timeout
_U32 = struct.Struct(">I")


def _errno_of(action: Callable[[], object]) -> int:
    try:
        action()
    except OSError as exc:
        return exc.errno or 0
    return 0


def _file_id(repo: Repository, commit_id: ObjectId, path: str) -> ObjectId:
    found = lookup(repo, commit_id, path).file
    assert found is not None
    return found


def test_a_fifo_symlink_or_directory_in_place_of_an_object_is_eio_for_that_file(
    repo: Repository, tmp_path: Path, mount: Mounts
) -> None:
    """The daemon opens objects without following links or blocking: a FIFO once hung
    every request of the mount, and a symlink must never lead to another file's bytes."""
    secret = b"the secret of another user\n"
    files = {
        "fifo": b"f" * 100,
        "good": b"good\n",
        "link-to-secret": b"x" * len(secret),  # same size: only refusing the link helps
        "link-to-fifo": b"y" * 100,
        "directory": b"d" * 100,
    }
    commit_id = commit_files(repo, tmp_path / "src", files)
    ids = {name: _file_id(repo, commit_id, f"/{name}") for name in files}
    (tmp_path / "secret").write_bytes(secret)
    os.mkfifo(tmp_path / "outside-fifo")
    for name, make in (
        ("fifo", lambda p: os.mkfifo(p)),
        ("link-to-secret", lambda p: p.symlink_to(tmp_path / "secret")),
        ("link-to-fifo", lambda p: p.symlink_to(tmp_path / "outside-fifo")),
        ("directory", lambda p: p.mkdir()),
    ):
        path = repo.content.path(ids[name])
        path.unlink()
        make(path)
    repo.close()
    daemon = mount.foreground(repo.path, "main")
    for _ in range(3):  # again and again: still an error, still fast, logged once
        for name in ("fifo", "link-to-secret", "link-to-fifo", "directory"):
            ok, data, seconds = read_through(daemon.mountpoint / name)
            assert not ok and data == b"" and seconds < FAST, (name, seconds)
            assert secret not in data
    ok, data, _ = read_through(daemon.mountpoint / "good")
    assert ok and data == b"good\n"
    assert daemon.alive()
    log = daemon.log()
    for name in ("fifo", "link-to-secret", "link-to-fifo", "directory"):
        assert log.count(ids[name].hex()) == 1, log


def _garbage_root(repo: Repository, commit_id: ObjectId, which: str) -> ObjectId:
    commit = repo.read_commit(commit_id)
    target = commit.tree if which.startswith("dirtree") else commit.meta
    repo.close()
    if which.endswith("missing"):
        delete_record(repo.path, target)
    else:
        kind = ObjectType.DIRTREE if which.startswith("dirtree") else ObjectType.DIRMETA
        put_record(repo.path, target, kind, b"\xff garbage \x00" * 3)
    return target


@pytest.mark.parametrize("which", ["dirtree-garbage", "dirmeta-garbage", "dirtree-missing"])
def test_a_commit_with_a_corrupt_root_fails_to_mount_at_once(
    user_repo: Repository, tmp_path: Path, which: str
) -> None:
    """One clear error within seconds, nothing mounted (it used to wait 30 s, log
    thousands of lines and leave a dead mount behind)."""
    commit_id = commit_files(user_repo, tmp_path / "src", {"a": b"a\n"})
    target = _garbage_root(user_repo, commit_id, which)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    started = time.monotonic()
    result = run("mount", "main", mnt, repo=user_repo.path, text=True)
    seconds = time.monotonic() - started
    print(f"{which}: the mount failed in {seconds:.2f} s: {result.stderr.strip()}")
    assert result.returncode != 0 and seconds < FAST
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and target.hex() in lines[0], result.stderr
    assert mount_fstype(mnt) is None and os.listdir(mnt) == []


def _raw_tree(files: list[tuple[bytes, bytes]], dirs: list[tuple[bytes, bytes, bytes]]) -> bytes:
    """A dirtree encoding with whatever names: the store's constructors refuse these."""
    parts = [b"T\x01", _U32.pack(len(files))]
    parts += [_U32.pack(len(name)) + name + file_id for name, file_id in files]
    parts.append(_U32.pack(len(dirs)))
    parts += [_U32.pack(len(name)) + name + tree + meta for name, tree, meta in dirs]
    return b"".join(parts)


def _fake_id(label: str) -> ObjectId:
    return ObjectId(label.encode().ljust(32, b"."))


def _hostile_commit(repo: Repository, tmp_path: Path) -> bytes:
    """Ref ``hostile``: a good commit's root with damaged and hostile entries added.

    Returns the long symlink target. Everything added is written into the index as
    raw records, as a damaged disk or a hostile repository would have it.
    """
    source = tmp_path / "src"
    (source / "ok").mkdir(parents=True)
    (source / "ok" / "inside").write_bytes(b"inside\n")
    (source / "a").write_bytes(b"a\n")
    (source / "c").write_bytes(b"c\n")
    target = b"t" * 4095  # PATH_MAX - 1: the longest a kernel takes
    os.symlink(os.fsdecode(target), source / "longlink")
    base = repo.read_commit(commit_dir(repo, source))
    root = repo.read_dirtree(base.tree)
    a_id = dict(root.files)[b"a"]
    ok = dict(root.dirs)[b"ok"]
    repo.close()
    header = FileHeader(0, 0, stat.S_IFREG | 0o644).encode()
    records = {
        _fake_id("bad-file"): (ObjectType.FILE, struct.pack(">Q", 3) + b"\xffnot a header"),
        _fake_id("huge"): (ObjectType.FILE, struct.pack(">Q", 2**64 - 1) + header),
        _fake_id("dup"): (ObjectType.DIRTREE, _raw_tree([(b"x", a_id), (b"x", a_id)], [])),
        _fake_id("dots"): (ObjectType.DIRTREE, _raw_tree([(b"..", a_id)], [])),
        _fake_id("slash"): (ObjectType.DIRTREE, _raw_tree([(b"etc/passwd", a_id)], [])),
        _fake_id("bad-meta"): (ObjectType.DIRMETA, b"\x00garbage"),
    }
    files = {
        **dict(root.files),
        b"b": _fake_id("bad-file"),
        b"huge": _fake_id("huge"),
    }
    dirs = {
        **dict(root.dirs),
        b"dup": DirEntry(_fake_id("dup"), ok.meta),
        b"dots": DirEntry(_fake_id("dots"), ok.meta),
        b"slash": DirEntry(_fake_id("slash"), ok.meta),
        b"bad-meta": DirEntry(ok.tree, _fake_id("bad-meta")),
    }
    tree = DirTree.build(files, dirs).encode()
    commit = Commit(_fake_id("root"), base.meta, None, 0, "hostile").encode()
    records[_fake_id("root")] = (ObjectType.DIRTREE, tree)
    records[_fake_id("commit")] = (ObjectType.COMMIT, commit)
    with raw_index(repo.path) as (txn, dbs):
        for object_id, (kind, payload) in records.items():
            txn.put(object_id, kind.value + payload, db=dbs["objects"])
        txn.put(_fake_id("commit"), struct.pack(">q", 0), db=dbs["commits"])
        txn.put(b"hostile", _fake_id("commit"), db=dbs["refs"])
    return target


def test_damaged_and_hostile_entries_are_eio_for_themselves_only(
    tmp_path: Path, mount: Mounts
) -> None:
    """A garbage file record, a size no stat can hold, dirtrees naming an entry twice or
    naming '..' or 'etc/passwd', a garbage dirmeta: each is EIO for that entry, the rest
    of its directory lists and reads, and the daemon lives on.

    bare-user-only: its symlinks are symlinks, and a 4095-byte target does not fit in
    the xattr that bare-user keeps it in on ext4.
    """
    repo = Repository.init(tmp_path / "repo", RepoMode.BARE_USER_ONLY)
    target = _hostile_commit(repo, tmp_path)
    daemon = mount.foreground(repo.path, "hostile")
    mnt = daemon.mountpoint
    expected = {"a", "b", "c", "huge", "longlink", "ok", "dup", "dots", "slash", "bad-meta"}
    assert set(os.listdir(mnt)) == expected
    assert (mnt / "a").read_bytes() == b"a\n" and (mnt / "c").read_bytes() == b"c\n"
    assert os.readlink(mnt / "longlink") == os.fsdecode(target)
    assert (mnt / "ok" / "inside").read_bytes() == b"inside\n"
    for name in ("b", "huge", "bad-meta"):
        for _ in range(3):
            assert _errno_of(partial(os.stat, mnt / name)) == errno.EIO, name
    assert _errno_of(lambda: (mnt / "b").read_bytes()) == errno.EIO
    for name in ("dup", "dots", "slash"):
        assert _errno_of(partial(os.listdir, mnt / name)) == errno.EIO, name
    assert _errno_of(lambda: os.stat(mnt / "etc")) == errno.ENOENT
    assert [line for line in daemon.log().splitlines() if "Traceback" in line] == []
    assert len(daemon.log().splitlines()) <= 10, daemon.log()
    assert daemon.alive() and (mnt / "a").read_bytes() == b"a\n"


def _commit_record(tree: bytes, meta: bytes, parent: bytes | None, subject: str) -> bytes:
    return Commit(
        ObjectId(tree), ObjectId(meta), ObjectId(parent) if parent else None, 0, subject
    ).encode()


def test_the_repository_view_skips_refs_to_what_is_not_a_commit(
    user_repo: Repository, tmp_path: Path, mount: Mounts
) -> None:
    """Refs to a dirtree, a file or a missing object (older repositories allowed them)
    and a history that loops: refs/ and history/ still show every good ref."""
    commit_id = commit_files(user_repo, tmp_path / "src", {"a": b"a\n"})
    commit = user_repo.read_commit(commit_id)
    file_id = _file_id(user_repo, commit_id, "/a")
    user_repo.close()
    put_ref(user_repo.path, "bad/dirtree", commit.tree)
    put_ref(user_repo.path, "file", file_id)
    put_ref(user_repo.path, "missing", _fake_id("missing"))
    for name in ("empty//component", "/leading", "up/../main"):  # one empty name fails a listing
        put_ref(user_repo.path, name, commit_id)
    with raw_index(user_repo.path) as (txn, dbs):  # two commits, each the other's parent
        first, second = _fake_id("loop-1"), _fake_id("loop-2")
        for this, parent in ((first, second), (second, first)):
            record = _commit_record(commit.tree, commit.meta, parent, "loop")
            txn.put(this, ObjectType.COMMIT.value + record, db=dbs["objects"])
            txn.put(this, struct.pack(">q", 0), db=dbs["commits"])
        txn.put(b"loop", first, db=dbs["refs"])
    daemon = mount.foreground(user_repo.path)
    mnt = daemon.mountpoint
    assert sorted(os.listdir(mnt / "refs")) == ["loop", "main"]
    assert sorted(os.listdir(mnt / "history")) == ["loop", "main"]
    assert (mnt / "refs" / "main" / "a").read_bytes() == b"a\n"
    assert len(os.listdir(mnt / "history" / "main")) == 1
    # The daemon used to follow the loop forever (and its memory grew with it).
    ok, listing, _ = run_briefly(["ls", str(mnt / "history" / "loop")], FAST)
    assert ok and len(listing.splitlines()) == 2
    assert commit_id.hex() in os.listdir(mnt / "commits")
    for _ in range(3):
        os.listdir(mnt / "refs")
    log = daemon.log()
    for name in ("bad/dirtree", "file", "missing"):
        assert sum(f"ref {name}" in line for line in log.splitlines()) == 1, log
    assert daemon.alive()


def test_a_failure_after_mounting_unmounts(user_repo: Repository, tmp_path: Path) -> None:
    """Whatever ends the daemon once mounted, it unmounts: no dead mount is left."""
    commit_files(user_repo, tmp_path / "src", {"a": b"a\n"})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from mountd.daemon import serve\n"
        "from store import Repository\n"
        "def fail(): raise RuntimeError('failed after mounting')\n"
        f"with Repository.open(Path({str(user_repo.path)!r})) as repo:\n"
        f"    serve(repo, repo.refs()['main'], Path({str(mnt)!r}), [], on_mounted=fail)\n"
    )
    user_repo.close()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0 and "failed after mounting" in result.stderr
    assert mount_fstype(mnt) is None
