"""A real Debian tree for tests and benchmarks: debootstrap minbase, cached.

Built once per machine into /var/cache/sapwood-tests (about 45 s with Debian's
mirror), device nodes, fifos and sockets removed (a commit refuses them, as the
issue asks). Needs root, as debootstrap does. The test processes of a parallel run
(pytest-xdist) may all ask at once on a fresh machine: one builds it, under a lock
on the cache, while the others wait for it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

CACHE = Path(os.environ.get("SAPWOOD_TEST_CACHE", "/var/cache/sapwood-tests"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"


def debian_tree() -> Path:
    """The path of a cached Debian minbase tree, built on first use."""
    tree = CACHE / f"debian-{SUITE}-minbase"
    if (tree / "etc" / "debian_version").is_file():
        return tree
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (tree / "etc" / "debian_version").is_file():  # built while we waited?
            _build(tree)
    return tree


def _build(tree: Path) -> None:
    """debootstrap into a directory of this process's own, then renamed to ``tree``."""
    building = CACHE / f".building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run(
        ["debootstrap", "--variant=minbase", SUITE, str(building), MIRROR],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    subprocess.run(
        [
            "find",
            str(building),
            "-xdev",
            "(",
            "-type",
            "c",
            "-o",
            "-type",
            "b",
            "-o",
            "-type",
            "p",
            "-o",
            "-type",
            "s",
            ")",
            "-delete",
        ],
        check=True,
    )
    os.rename(building, tree)
    time.sleep(1.1)  # let the newest files age past the stat cache's racy margin
