"""Retention, pins, rollback, set-default, undeploy and cleanup, on small trees and on
the command line (whose state is read back from the sysroot by each process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sapwood
from tests.helpers import IS_ROOT, cli
from tests.sysroot.conftest import commit, small_tree

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")


def _versions(sysroot: sapwood.Sysroot, tmp_path: Path, count: int) -> list[str]:
    """Commit ``count`` small trees in a row to debian/main; their ids in order."""
    ids = []
    for n in range(count):
        tree = small_tree(tmp_path / f"t{n}", {"usr/etc/version": f"{n}\n"})
        ids.append(commit(sysroot, tree))
    return ids


def _admin(sysroot: sapwood.Sysroot, *args: str) -> str:
    result = cli("admin", "--sysroot", sysroot.path, *args)
    assert result.code == 0, result.err
    return result.out


def _listed(sysroot: sapwood.Sysroot) -> list[str]:
    return [d.commit for d in sysroot.deployments()]


def _dirs(sysroot: sapwood.Sysroot) -> list[str]:
    found = (sysroot.path / "sapwood/deploy/debian/deploy").iterdir()
    return sorted(p.name.split(".")[0] for p in found if p.is_dir())


def test_retention_pin_rollback_set_default_undeploy_cleanup(
    sysroot: sapwood.Sysroot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c, d = _versions(sysroot, tmp_path, 4)
    _admin(sysroot, "deploy", a, "--karg", "root=/dev/vda")
    _admin(sysroot, "pin", "0")
    _admin(sysroot, "deploy", b)
    _admin(sysroot, "deploy", c)
    # new first, the merge one (the previous default) kept, the pinned kept
    assert _listed(sysroot) == [c, b, a]
    _admin(sysroot, "deploy", d)
    assert _listed(sysroot) == [d, c, a]  # b was neither merge, booted nor pinned
    assert _dirs(sysroot) == sorted([d, c, a])
    status = json.loads(_admin(sysroot, "status", "--json"))
    assert [s["pinned"] for s in status] == [False, False, True]
    assert "(rollback)" in _admin(sysroot, "status").splitlines()[4]

    # cleanup prunes b (no deployment, not a ref's head) and keeps the pinned a
    _admin(sysroot, "cleanup")
    with sysroot.open_repository() as repo:
        assert not repo.has_object(sapwood.from_hex(b))
        assert repo.has_object(sapwood.from_hex(a))
        assert sapwood.fsck(repo).problems == []

    # rollback: the previous one becomes the default (its entry the highest version)
    _admin(sysroot, "rollback")
    assert _listed(sysroot) == [c, d, a]
    entries = sysroot.boot_entries()
    assert f"/{c}.0" in entries["sapwood-3.conf"] and f"/{d}.0" in entries["sapwood-2.conf"]
    _admin(sysroot, "set-default", "2")
    assert _listed(sysroot) == [a, c, d]
    assert f"/{a}.0" in sysroot.boot_entries()["sapwood-3.conf"]

    # the booted deployment is kept by a deploy and cannot be undeployed
    monkeypatch.setenv("SAPWOOD_CMDLINE", f"ro sapwood=/sapwood/deploy/debian/deploy/{d}.0")
    assert "* 2 debian" in _admin(sysroot, "status")
    refused = cli("admin", "--sysroot", sysroot.path, "undeploy", "2")
    assert refused.code != 0 and "booted" in refused.err and len(refused.err.splitlines()) == 1
    _admin(sysroot, "pin", "--unpin", "0")
    _admin(sysroot, "undeploy", "1")
    assert _listed(sysroot) == [a, d]
    assert _dirs(sysroot) == sorted([a, d])
    # a deploy from a booted d merges from d and keeps it
    _admin(sysroot, "deploy", c)
    assert _listed(sysroot) == [c, d]
    with sysroot.open_repository() as repo:
        names = sorted(n for n in repo.refs() if n.startswith("sapwood/deploy/"))
    assert names == sorted(f"sapwood/deploy/debian/{x}.0" for x in (c, d))


def test_a_deployment_keeps_its_kernel_arguments_through_rollback(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    a, b = _versions(sysroot, tmp_path, 2)
    sysroot.deploy(a, kargs=("root=/dev/vda", "console=ttyS0"))
    sysroot.deploy(b, kargs=("console=tty1",), append_kargs=("console=ttyS1",))
    assert sysroot.deployments()[0].kargs == ["root=/dev/vda", "console=tty1", "console=ttyS1"]
    sysroot.rollback()
    first = sysroot.deployments()[0]
    assert first.commit == a and first.kargs == ["root=/dev/vda", "console=ttyS0"]
    assert "console=ttyS0 sapwood=" in sysroot.boot_entries()["sapwood-2.conf"]


def test_other_oses_are_kept(sysroot: sapwood.Sysroot, tmp_path: Path) -> None:
    a, b, c = _versions(sysroot, tmp_path, 3)
    _admin(sysroot, "os-init", "fedora")
    sysroot.deploy(a, os_name="fedora")
    sysroot.deploy(b, os_name="debian")
    sysroot.deploy(c, os_name="debian")
    sysroot.deploy(c, os_name="debian")
    listed = [(x.os_name, x.commit, x.serial) for x in sysroot.deployments()]
    assert listed == [("debian", c, 1), ("debian", c, 0), ("fedora", a, 0)]
    assert (sysroot.path / "sapwood/deploy/fedora/var/lib/state").read_text() == "state\n"


def test_the_list_is_read_back_from_the_entries_alone(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    a, b = _versions(sysroot, tmp_path, 2)
    sysroot.deploy(a, kargs=("root=/dev/vda", "console=ttyS0"))
    sysroot.deploy(b, append_kargs=("quiet",))
    _admin(sysroot, "pin", "1")
    written = sysroot.deployments()
    entries = sysroot.boot_entries()
    (sysroot.path / "boot/loader/deployments.json").unlink()
    assert sysroot.deployments() == written
    sysroot.set_default(1)  # rewrites the list and the entries from what was read
    assert [d.commit for d in sysroot.deployments()] == [a, b]
    assert _unversioned(sysroot.boot_entries()) == _unversioned(entries)


def _unversioned(entries: dict[str, str]) -> set[str]:
    return {
        "".join(line for line in text.splitlines(True) if not line.startswith("version "))
        for text in entries.values()
    }
