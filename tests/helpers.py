"""Helpers shared by the tests: building source trees and reading trees back."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from sapwood.cli.main import main
from store import RepoMode, Repository, read_xattrs
from store.index import Access

IS_ROOT = os.geteuid() == 0
SAPWOOD = [sys.executable, "-m", "sapwood.cli.main"]
# security.capability of ping: cap_net_raw=ep (VFS_CAP_REVISION_2).
PING_CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")


@dataclass(frozen=True)
class Entry:
    kind: str  # "d", "-", "l"
    mode: int  # permission bits
    uid: int
    gid: int
    data: bytes  # file content or symlink target; b"" for directories
    xattrs: tuple[tuple[bytes, bytes], ...]


Tree = dict[str, Entry]


def build_rich_tree(root: Path, setuid: bool = True) -> None:
    """A source tree with every kind of entry a commit must keep exactly."""
    root.mkdir()
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc" / "shadow").chmod(0o640)
    (root / "empty-dir").mkdir()
    (root / "empty-file").write_bytes(b"")
    (root / "usr" / "bin").mkdir(parents=True)
    ping = root / "usr" / "bin" / "ping"
    ping.write_bytes(b"\x7fELF ping binary" * 100)
    ping.chmod(0o755)
    (root / "usr" / "bin" / "big").write_bytes(os.urandom(5 << 20))  # above SMALL_FILE
    (root / "usr" / "bin" / "sh").symlink_to("dash")
    (root / "usr" / "bin" / "dash").write_bytes(b"dash" * 1000)
    (root / "usr" / "bin" / "dash").chmod(0o755)
    (root / "lib").symlink_to("usr/lib")
    (root / "dangling").symlink_to("/nonexistent/target")
    (root / "dup-a").write_text("same content\n")
    (root / "dup-b").write_text("same content\n")
    (root / "private").mkdir(mode=0o700)
    (root / "private").chmod(0o700)
    (root / "unicode-é").write_text("non-ascii name\n")
    os.setxattr(root / "etc" / "passwd", "user.comment", b"hello")
    os.setxattr(root / "empty-dir", "user.dir-note", b"\x00\x01binary")
    if IS_ROOT:
        os.setxattr(ping, "security.capability", PING_CAPABILITY)
        os.chown(root / "etc" / "shadow", 0, 42)
        os.chown(root / "private", 1234, 5678)
        os.lchown(root / "dangling", 1234, 5678)
        if setuid:
            su = root / "usr" / "bin" / "su"
            su.write_bytes(b"su binary")
            os.chown(su, 0, 0)
            su.chmod(0o4755)


def read_disk_tree(root: Path) -> Tree:
    """Everything a commit should record of a directory tree, keyed by '/path'."""
    paths = [root, *sorted(root.rglob("*"))]
    tree: Tree = {}
    for path in paths:
        st = os.lstat(path)
        key = "/" + path.relative_to(root).as_posix() if path != root else "/"
        if stat.S_ISDIR(st.st_mode):
            data, kind = b"", "d"
        elif stat.S_ISLNK(st.st_mode):
            data, kind = os.fsencode(os.readlink(path)), "l"
        else:
            data, kind = path.read_bytes(), "-"
        xattrs = tuple(p for p in read_xattrs(path) if p[0] != b"user.sapwoodmeta")
        tree[key] = Entry(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, data, xattrs)
    return tree


def as_mode_records(tree: Tree, mode: RepoMode) -> Tree:
    """What a repository of ``mode`` records of a source tree (bare-user-only keeps no owners)."""
    if mode is not RepoMode.BARE_USER_ONLY:
        return tree
    return {path: Entry(e.kind, e.mode, 0, 0, e.data, ()) for path, e in tree.items()}


@dataclass
class Result:
    code: int
    out: str
    err: str
    raw: bytes


def cli(*args: str | os.PathLike[str]) -> Result:
    """Run sapwood in this process (fast); use run() for real processes."""
    raw, err = io.BytesIO(), io.StringIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    out.flush()
    data = raw.getvalue()
    return Result(code, data.decode("utf-8", "surrogateescape"), err.getvalue(), data)


def run(
    *args: str | os.PathLike[str], prefix: list[str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run sapwood as a separate process, as a user would."""
    return subprocess.run(
        [*(prefix or []), *SAPWOOD, *map(str, args)], capture_output=True, timeout=600, check=False
    )


def read_commit_tree(repo_path: Path, rev: str) -> Tree:
    """Read a commit back through the CLI: ls -R --json, then cat of every file."""
    listing = cli("--repo", repo_path, "ls", "-R", "--json", rev)
    assert listing.code == 0, listing.err
    tree: Tree = {}
    for item in json.loads(listing.out):
        kind, mode = item["mode"][0], int(item["mode"][1:], 8)
        if kind == "-":
            data = cat_bytes(repo_path, rev, item["path"])
        else:
            data = item.get("target", "").encode("utf-8", "surrogateescape")
        xattrs = tuple(sorted((k.encode(), bytes.fromhex(v)) for k, v in item["xattrs"].items()))
        tree[item["path"]] = Entry(kind, mode, item["uid"], item["gid"], data, xattrs)
    return tree


def cat_bytes(repo_path: Path, rev: str, path: str) -> bytes:
    result = cli("--repo", repo_path, "cat", rev, path)
    assert result.code == 0, result.err
    return result.raw


@contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (root only), unmounted afterwards."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def force_ref(repo: Repository, name: str, target: bytes) -> None:
    """Point a ref anywhere, bypassing every check: the state a damaged index or an
    older sapwood could leave (a ref to a missing object, to a dirtree, ...)."""
    from store.index import _SharedEnv

    shared = _SharedEnv.acquire(repo.path / "index", Access.READ_WRITE)
    try:
        with shared.env.begin(write=True) as txn:
            txn.put(name.encode(), target, db=shared.dbs["refs"])
    finally:
        shared.release()
