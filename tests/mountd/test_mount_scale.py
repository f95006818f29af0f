"""A mount of a million files: the daemon's memory stays bounded while it is walked."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from store import Repository
from tests.helpers import Mounts, many_directories_commit

RSS_LIMIT_KIB = 100 * 1024  # issue 4: under 100 MiB while a million files are walked


def _daemon_pid(mnt: Path) -> int:
    found = subprocess.run(
        ["pgrep", "-f", f"mount many {mnt}$"], capture_output=True, text=True, check=True
    )
    return int(found.stdout.split()[0])


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_walking_a_million_files_stays_under_100_mib(user_repo: Repository, mount: Mounts) -> None:
    many_directories_commit(user_repo, 1000, 1000, distinct=1000)  # a million files
    started = time.monotonic()
    mnt = mount.background(user_repo.path, "many")
    mount_seconds = time.monotonic() - started
    pid = _daemon_pid(mnt)
    walk = subprocess.run(
        ["find", str(mnt), "-printf", "%s %m %U\n"], capture_output=True, check=True
    )
    assert walk.stdout.count(b"\n") == 1_000_000 + 1000 + 1
    peak = _peak_rss_kib(pid)
    print(f"mount {mount_seconds:.2f} s, daemon peak RSS {peak / 1024:.1f} MiB")
    assert peak < RSS_LIMIT_KIB
    assert (mnt / "d0999" / "f00998").read_bytes() == b"998\n"  # (999000 + 998) % 1000
