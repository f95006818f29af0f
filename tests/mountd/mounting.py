"""Helpers for real mounts: a foreground daemon whose pid and log the test can see, the
mount table, and writing the index behind the store's back (a damaged repository)."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from fs.mounts import mounted_at
from store import ObjectType
from tests.helpers import SAPWOOD


def mount_fstype(path: Path) -> str | None:
    """The type of what is mounted at ``path`` (the topmost mount), from the mount table;
    ``path`` itself is not looked at (that would ask the daemon, and make the kernel
    keep the answer)."""
    entry = mounted_at(path)
    return None if entry is None else entry.fstype


def wait_for(predicate: Any, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def force_unmount(mnt: Path) -> None:
    """Whatever is mounted at ``mnt`` goes (the tests' own clean-up, not sapwood's)."""
    while mount_fstype(mnt) is not None:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
        if mount_fstype(mnt) is not None:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
            if mount_fstype(mnt) is not None:
                raise AssertionError(f"cannot unmount {mnt}")


@dataclass
class Daemon:
    """A ``sapwood mount -f`` daemon: its process and what it logged."""

    process: subprocess.Popen[bytes]
    log_path: Path
    mountpoint: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def peak_rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")


@contextmanager
def foreground_mount(repo_path: Path, mnt: Path, *args: str | Path) -> Iterator[Daemon]:
    """``sapwood mount -f ARGS MNT`` until the test is done; killed if it hangs."""
    mnt.mkdir(exist_ok=True)
    log_path = mnt.parent / f"{mnt.name}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [*SAPWOOD, "--repo", str(repo_path), "mount", "-f", *map(str, args), str(mnt)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    daemon = Daemon(process, log_path, mnt)
    try:
        mounted = wait_for(lambda: mount_fstype(mnt) == "fuse.sapwood" or not daemon.alive())
        assert mounted and daemon.alive(), daemon.log()
        yield daemon
    finally:
        if daemon.alive():
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        force_unmount(mnt)


def read_through(path: Path, seconds: float = 10) -> tuple[bool, bytes, float]:
    """(succeeded, bytes read, seconds taken) of ``cat PATH``, given up after ``seconds``."""
    return run_briefly(["cat", str(path)], seconds)


def run_briefly(argv: list[str], seconds: float = 10) -> tuple[bool, bytes, float]:
    """(succeeded, output, seconds taken) of a command, given up after ``seconds``.

    A process waiting on a hung FUSE daemon cannot even be killed, so it is not waited
    for: it ends when the test's clean-up kills the daemon.
    """
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        reader = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL)
        while reader.poll() is None and time.monotonic() - started < seconds:
            time.sleep(0.01)
        taken = time.monotonic() - started
        if reader.returncode is None:
            reader.kill()
        out.seek(0)
        return reader.returncode == 0, out.read(), taken


@contextmanager
def raw_index(repo_path: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A write transaction on the repository's LMDB index, below every check of store.

    No Repository of ``repo_path`` may be open in this process (LMDB allows one
    environment per file and process): close it first.
    """
    env = lmdb.open(str(repo_path / "index"), max_dbs=16, subdir=True, create=False)
    try:
        with env.begin(write=True) as txn:
            names = ("objects", "commits", "refs")
            yield txn, {name: env.open_db(name.encode(), txn=txn, create=False) for name in names}
    finally:
        env.close()


def put_record(repo_path: Path, object_id: bytes, kind: ObjectType, payload: bytes) -> None:
    """Write (or overwrite) an object's index record as raw bytes."""
    with raw_index(repo_path) as (txn, dbs):
        txn.put(object_id, kind.value + payload, db=dbs["objects"])


def delete_record(repo_path: Path, object_id: bytes) -> None:
    with raw_index(repo_path) as (txn, dbs):
        assert txn.delete(object_id, db=dbs["objects"])


def put_ref(repo_path: Path, name: str, target: bytes) -> None:
    """A ref to anything (a dirtree, a file, a missing object), as an old sapwood allowed."""
    with raw_index(repo_path) as (txn, dbs):
        txn.put(name.encode(), target, db=dbs["refs"])
