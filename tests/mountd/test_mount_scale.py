"""A mount of a million files: the daemon's memory stays bounded while it is walked."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

from store import Commit, DirEntry, DirMeta, DirTree, FileHeader, ObjectId, Repository
from tests.mountd.test_mount import _force_unmount, sapwood

RSS_LIMIT_KIB = 100 * 1024  # issue 4: under 100 MiB while a million files are walked


def million_file_commit(repo: Repository, dirs: int = 1000, files: int = 1000) -> ObjectId:
    """``dirs`` directories of ``files`` entries; 1,000 distinct objects shared by all."""
    with repo.transaction() as txn:
        meta = txn.write_dirmeta(DirMeta(0, 0, stat.S_IFDIR | 0o755))
        objects = [
            txn.write_file(FileHeader(0, 0, stat.S_IFREG | 0o644), f"{n}\n".encode())
            for n in range(1000)
        ]
        subdirs = {}
        for d in range(dirs):
            names = {f"file-{d}-{n:05d}".encode(): objects[(d + n) % 1000] for n in range(files)}
            subdirs[f"dir{d:04d}".encode()] = DirEntry(
                txn.write_dirtree(DirTree.build(names, {})), meta
            )
        tree_id = txn.write_dirtree(DirTree.build({}, subdirs))
        commit_id = txn.write_commit(Commit(tree_id, meta, None, 0))
        txn.set_ref("million", commit_id)
    return commit_id


def _daemon_pid(mnt: Path) -> int:
    found = subprocess.run(
        ["pgrep", "-f", f"mount million {mnt}$"], capture_output=True, text=True, check=True
    )
    return int(found.stdout.split()[0])


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_walking_a_million_files_stays_under_100_mib(user_repo: Repository, tmp_path: Path) -> None:
    million_file_commit(user_repo)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    started = time.monotonic()
    result = sapwood(user_repo.path, "mount", "million", mnt)
    assert result.returncode == 0, result.stderr
    mount_seconds = time.monotonic() - started
    try:
        pid = _daemon_pid(mnt)
        walk = subprocess.run(
            ["find", str(mnt), "-printf", "%s %m %U\n"], capture_output=True, check=True
        )
        assert walk.stdout.count(b"\n") == 1_000_000 + 1000 + 1
        peak = _peak_rss_kib(pid)
        print(f"mount {mount_seconds:.2f} s, daemon peak RSS {peak / 1024:.1f} MiB")
        assert peak < RSS_LIMIT_KIB
        assert os.stat(mnt / "dir0999" / "file-999-00999").st_size == len(b"998\n")
    finally:
        sapwood(user_repo.path, "umount", mnt)
        _force_unmount(mnt)
