"""A deploy SIGKILLed at random moments: the boot entries and the deployment list stay
complete (old or new), the repository stays sound, and the next deploy removes what
the killed one left. Also: a deployment is a root a program can run in."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import sapwood
from tests.helpers import IS_ROOT, sapwood_argv
from tests.sysroot.conftest import commit

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")
# random moments; the default run keeps one beside the four phases (session 11: two)
ROUNDS = 24 if os.environ.get("SAPWOOD_LONG") else 1


def _deploy_argv(sysroot: sapwood.Sysroot) -> list[str]:
    return sapwood_argv("admin", "--sysroot", sysroot.path, "deploy", "debian/main")


def _check_complete(sysroot: sapwood.Sysroot) -> list[sapwood.Deployment]:
    """Every listed deployment and every entry's files are there; fsck is clean."""
    listed = sysroot.deployments()
    assert listed, "the deployment list vanished"
    for deployment in listed:
        root = sysroot.deployment_path(deployment)
        assert (root / "usr/bin/dpkg").is_file() and (root / "etc/passwd").is_file()
    entries = sysroot.boot_entries()
    assert len(entries) == len(listed)
    for text in entries.values():
        fields = dict(line.split(" ", 1) for line in text.splitlines())
        for key in ("linux", "initrd"):
            assert (sysroot.path / fields[key].lstrip("/")).is_file(), fields[key]
        path = fields["options"].split("sapwood=")[1]
        assert (sysroot.path / path.lstrip("/") / "usr").is_dir()
    with sysroot.open_repository() as repo:
        assert sapwood.fsck(repo).problems == []
    return listed


def _kill_when(sysroot: sapwood.Sysroot, ready: Callable[[], bool], delay: float = 0) -> None:
    """Start a deploy and SIGKILL it once ``ready()`` (polled) holds, then ``delay`` on."""
    process = subprocess.Popen(
        _deploy_argv(sysroot), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while process.poll() is None and not ready():
        time.sleep(0.001)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _phases(sysroot: sapwood.Sysroot) -> dict[str, Callable[[], bool]]:
    """Moments of a deploy, seen from outside: (name, predicate), in order."""
    deploy_dir = sysroot.path / "sapwood/deploy/debian/deploy"
    boot = sysroot.path / "boot"
    start_dirs = set(os.listdir(deploy_dir))
    loader = os.readlink(boot / "loader")
    other = boot / ("loader.0" if loader == "loader.1" else "loader.1")

    def new_entry(hidden: bool) -> bool:
        return any(n.startswith(".") == hidden for n in set(os.listdir(deploy_dir)) - start_dirs)

    return {
        "checking out": lambda: new_entry(hidden=True),
        "merging /etc": lambda: new_entry(hidden=False),
        "writing the other loader": other.exists,
        "after the switch": lambda: os.readlink(boot / "loader") != loader,
    }


def test_a_deploy_killed_at_random_points(
    sysroot: sapwood.Sysroot, debian_v1: Path, debian_v2: Path
) -> None:
    commit(sysroot, debian_v1)
    sysroot.deploy("debian/main", kargs=("root=/dev/vda",))
    commit(sysroot, debian_v2)
    started = time.monotonic()
    subprocess.run(_deploy_argv(sysroot), check=True, capture_output=True)
    whole = time.monotonic() - started
    rng = random.Random(12)
    switched = {}
    # one random moment in each slice of a deploy's time, then each phase as it begins
    moments = [
        (f"at {n}", rng.uniform(whole * n / ROUNDS, whole * (n + 1) / ROUNDS))
        for n in range(ROUNDS)
    ]
    moments += [(name, 0.0) for name in _phases(sysroot)]
    for name, delay in moments:
        before = [d.name for d in sysroot.deployments()]
        phase = _phases(sysroot).get(name)
        _kill_when(sysroot, phase or (lambda: True), delay)
        after = [d.name for d in _check_complete(sysroot)]
        assert after == before or after[1:] == before[:1], (name, before, after)  # old or new
        switched[name] = after != before
    assert not switched["checking out"] and switched["after the switch"], switched
    # the next deploy removes every leftover: only listed deployments remain on disk
    sysroot.deploy("debian/main")
    listed = _check_complete(sysroot)
    on_disk = sorted(p.name for p in (sysroot.path / "sapwood/deploy/debian/deploy").iterdir())
    names = sorted([d.name for d in listed] + [f"{d.name}.origin" for d in listed])
    assert on_disk == names
    boot = sysroot.path / "boot"
    assert sorted(p.name for p in boot.iterdir()) == [
        "loader",
        f"{os.readlink(boot / 'loader')}",
        "sapwood",
    ]
    used = {d.boot.dir for d in listed if d.boot}
    assert {p.name for p in (boot / "sapwood").iterdir()} == used


def test_a_program_runs_in_a_deployment(sysroot: sapwood.Sysroot, debian_v1: Path) -> None:
    commit(sysroot, debian_v1)
    root = sysroot.deployment_path(sysroot.deploy("debian/main").deployment)
    inside = subprocess.run(
        ["chroot", str(root), "dpkg-query", "-W"], capture_output=True, text=True, check=True
    )
    outside = subprocess.run(
        ["dpkg-query", f"--admindir={debian_v1}/var/lib/dpkg", "-W"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert inside.stdout == outside.stdout
    assert any(line.startswith("dpkg\t") for line in inside.stdout.splitlines())
