"""Deploying the Debian tree: the layout, the /etc merge rules, boot entries, the swap."""

from __future__ import annotations

import configparser
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

import sapwood
from tests.helpers import IS_ROOT, cli, sapwood_argv
from tests.sysroot.conftest import KVER, commit, small_tree

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")
KARGS = ("root=/dev/vda", "rw", "console=ttyS0")
SELINUX_LABEL = b"system_u:object_r:etc_t:s0"  # stored as it is without an SELinux policy


def _entry(text: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in text.splitlines())


def test_first_deploy_layout(sysroot: sapwood.Sysroot, debian_v1: Path) -> None:
    commit_id = commit(sysroot, debian_v1)
    result = sysroot.deploy("debian/main", kargs=KARGS)
    new = result.deployment
    assert (new.commit, new.serial, new.os_name) == (commit_id, 0, "debian")
    # the Debian tree as debootstrap makes it: /root holds files (laid out by prepare-tree,
    # it would not: tests/sysroot/test_prepare_tree.py)
    [warning] = result.warnings
    assert "keeps files in /root" in warning and "sapwood admin prepare-tree" in warning
    root = sysroot.path
    dest = root / f"sapwood/deploy/debian/deploy/{commit_id}.0"
    assert sysroot.deployment_path(new) == dest
    # a hardlink farm of the repository; /usr/etc holds the tree's /etc, /etc a copy
    assert os.stat(dest / "usr/bin/dash").st_nlink >= 2
    assert (dest / "usr/etc/passwd").read_bytes() == (debian_v1 / "etc/passwd").read_bytes()
    assert (dest / "etc/passwd").read_bytes() == (debian_v1 / "etc/passwd").read_bytes()
    assert os.stat(dest / "etc/passwd").st_nlink == 1
    assert os.stat(dest / "etc/passwd").st_ino != os.stat(dest / "usr/etc/passwd").st_ino
    assert (dest / "etc/os-release").is_symlink()
    assert (dest / "sysroot").is_dir()
    # the origin beside it
    origin = configparser.ConfigParser()
    origin.read(root / f"sapwood/deploy/debian/deploy/{commit_id}.0.origin")
    assert origin["origin"]["refspec"] == "debian/main"
    # /var of the OS seeded from the commit, as copies
    shared = root / "sapwood/deploy/debian/var"
    assert (shared / "lib/dpkg/status").read_bytes() == (
        debian_v1 / "var/lib/dpkg/status"
    ).read_bytes()
    assert os.stat(shared / "lib/dpkg/status").st_nlink == 1
    # the kernel, one BLS entry, the loader symlink
    assert os.readlink(root / "boot/loader") == "loader.0"
    entries = sysroot.boot_entries()
    assert list(entries) == ["sapwood-1.conf"]
    entry = _entry(entries["sapwood-1.conf"])
    assert entry["version"] == "1"
    assert entry["title"].startswith("Debian GNU/Linux 12 (bookworm)")
    assert entry["options"] == f"root=/dev/vda rw console=ttyS0 sapwood={new.boot_path}"
    assert new.boot_path == f"/sapwood/deploy/debian/deploy/{commit_id}.0"
    kernel = root / entry["linux"].lstrip("/")
    assert kernel.read_bytes() == b"kernel v1\n"
    assert kernel.parent.name.startswith("debian-") and len(kernel.parent.name) == 7 + 64
    assert (root / entry["initrd"].lstrip("/")).read_bytes() == b"initramfs v1\n"
    assert kernel.name == f"vmlinuz-{KVER}"
    # status, as the command line shows it
    out = cli("admin", "--sysroot", root, "status", "--json")
    assert out.code == 0, out.err
    (listed,) = json.loads(out.out)
    assert listed["commit"] == commit_id and listed["default"] and not listed["booted"]
    assert listed["kargs"] == list(KARGS) and listed["kernel"] == KVER


def _edit_etc(etc: Path) -> None:
    """The administrator's edits of the running deployment's /etc."""
    (etc / "motd").write_text("my motd\n")  # modified; v2 changes its default too
    (etc / "login.defs").write_text("127.0.0.1 mine\n")  # modified; v2 leaves its default
    os.setxattr(etc / "login.defs", "user.sapwood-test", b"kept")
    os.setxattr(etc / "login.defs", "security.selinux", SELINUX_LABEL)
    os.chown(etc / "login.defs", 1234, 1235)
    (etc / "added.conf").write_text("added\n")  # added
    (etc / "added.d").mkdir()
    (etc / "added.d/one.conf").write_text("one\n")
    (etc / "issue").unlink()  # deleted; v2 changes its default: stays deleted
    (etc / "issue.net").unlink()  # deleted; unchanged default
    (etc / "my-link").symlink_to("/nonexistent/target")  # a symlink, never followed
    (etc / "host.conf").chmod(0o600)  # a changed mode, same content
    (etc / "apt").chmod(0o750)  # a directory's mode; its files keep their defaults


def test_update_merges_etc_by_ostree_rules(
    sysroot: sapwood.Sysroot, debian_v1: Path, debian_v2: Path
) -> None:
    v1 = commit(sysroot, debian_v1)
    first = sysroot.deploy("debian/main", kargs=KARGS).deployment
    etc1 = sysroot.deployment_path(first) / "etc"
    _edit_etc(etc1)
    diff = cli("admin", "--sysroot", sysroot.path, "config-diff")
    assert diff.code == 0, diff.err
    shown = set(diff.out.splitlines())
    for line in ("M    motd", "M    login.defs", "A    added.conf", "A    added.d", "D    issue"):
        assert line in shown
    assert {"A    my-link", "M    host.conf", "M    apt"} <= shown
    assert not any(line.endswith("passwd") for line in shown)

    v2 = commit(sysroot, debian_v2)
    result = sysroot.deploy("debian/main", append_kargs=("quiet",))
    new = result.deployment
    assert new.commit == v2 and new.commit != v1
    etc = sysroot.deployment_path(new) / "etc"
    # unchanged locally -> the new default
    assert (etc / "debian_version").read_text() == "12.99\n"
    assert (etc / "new-in-v2.conf").read_text() == "new default\n"
    assert (etc / "newdir/inside.conf").read_text() == "inside\n"
    # modified locally -> local wins (even over a new default), with owner and xattrs
    assert (etc / "motd").read_text() == "my motd\n"
    assert (etc / "login.defs").read_text() == "127.0.0.1 mine\n"
    st = os.stat(etc / "login.defs")
    assert (st.st_uid, st.st_gid) == (1234, 1235)
    assert os.getxattr(etc / "login.defs", "user.sapwood-test") == b"kept"
    assert os.getxattr(etc / "login.defs", "security.selinux") == SELINUX_LABEL
    # added locally -> kept, directories whole
    assert (etc / "added.conf").read_text() == "added\n"
    assert (etc / "added.d/one.conf").read_text() == "one\n"
    # deleted locally -> stays deleted, even where the default changed
    assert not (etc / "issue").exists() and not (etc / "issue.net").exists()
    # symlinks stay symlinks; modes kept
    assert os.readlink(etc / "my-link") == "/nonexistent/target"
    assert stat.S_IMODE(os.stat(etc / "host.conf").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(etc / "apt").st_mode) == 0o750
    assert (etc / "apt/apt.conf.d").is_dir()
    # the new deployment's defaults are untouched, /etc holds copies
    assert (sysroot.deployment_path(new) / "usr/etc/motd").read_text() == "motd of v2\n"
    assert os.stat(etc / "motd").st_nlink == 1
    # the old deployment stays as it was
    assert (etc1 / "motd").read_text() == "my motd\n"
    assert (etc1 / "debian_version").read_text() != "12.99\n"

    # kernel arguments inherited, one appended; two entries, the new one first
    assert new.kargs == [*KARGS, "quiet"]
    assert os.readlink(sysroot.path / "boot/loader") == "loader.1"
    assert not (sysroot.path / "boot/loader.0").exists()  # the old set, once replaced
    entries = {name: _entry(text) for name, text in sysroot.boot_entries().items()}
    assert sorted(entries) == ["sapwood-1.conf", "sapwood-2.conf"]
    assert entries["sapwood-2.conf"]["options"].endswith(f"sapwood={new.boot_path}")
    assert entries["sapwood-1.conf"]["options"].endswith(f"sapwood={first.boot_path}")
    assert entries["sapwood-1.conf"]["options"].split()[:3] == list(KARGS)
    assert "quiet" in entries["sapwood-2.conf"]["options"].split()
    # two kernels (different bytes), one directory each
    assert entries["sapwood-1.conf"]["linux"] != entries["sapwood-2.conf"]["linux"]
    assert len(list((sysroot.path / "boot/sapwood").iterdir())) == 2
    assert [d.commit for d in sysroot.deployments()] == [v2, v1]
    # --karg replaces every value of its key
    third = sysroot.deploy("debian/main", kargs=("console=tty0",)).deployment
    assert third.serial == 1  # the same commit again: the next serial
    assert third.kargs == ["root=/dev/vda", "rw", "console=tty0", "quiet"]
    assert [d.name for d in sysroot.deployments()] == [third.name, new.name]


def test_shared_var_is_seeded_once(sysroot: sapwood.Sysroot, debian_v1: Path) -> None:
    commit(sysroot, debian_v1)
    sysroot.deploy("debian/main")
    shared = sysroot.path / "sapwood/deploy/debian/var"
    (shared / "lib/dpkg/status").write_text("local state\n")
    (shared / "log/mine.log").write_text("log\n")
    sysroot.deploy("debian/main")
    assert (shared / "lib/dpkg/status").read_text() == "local state\n"
    assert (shared / "log/mine.log").read_text() == "log\n"


def _as_booted(sysroot: sapwood.Sysroot, booted: sapwood.Deployment, *args: str) -> str:
    """``sapwood admin --sysroot DEPLOYMENT ARGS`` in a mount namespace laid out as the
    initramfs leaves a booted machine: the sysroot bound at the deployment's sysroot/,
    its boot/ over the deployment's, ``sapwood=`` naming it on the command line."""
    root = sysroot.deployment_path(booted)
    binds = 'mount --bind "$1" "$2/sysroot" && mount --bind "$1/boot" "$2/boot" && shift 2'
    argv = ["unshare", "-m", "sh", "-c", f'{binds} && exec "$@"', "sh", sysroot.path, root]
    argv += sapwood_argv("admin", "--sysroot", root, *args)
    env = {**os.environ, "SAPWOOD_CMDLINE": f"root=/dev/vda sapwood={booted.boot_path}"}
    done = subprocess.run(list(map(str, argv)), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_booted_deployment_reaches_its_sysroot(sysroot: sapwood.Sysroot, tmp_path: Path) -> None:
    """Booted, / is the deployment: its ``sapwood -> sysroot/sapwood`` lets ``sapwood
    admin`` with --sysroot / see the repository, the deployments and the entries, and
    deploy from there (OSTree's ``ostree -> sysroot/ostree``)."""
    first = commit(sysroot, small_tree(tmp_path / "v1", {"usr/etc/a": "1\n"}))
    booted = sysroot.deploy("debian/main", kargs=("root=/dev/vda",)).deployment
    assert os.readlink(sysroot.deployment_path(booted) / "sapwood") == "sysroot/sapwood"
    (listed,) = json.loads(_as_booted(sysroot, booted, "status", "--json"))
    assert (listed["commit"], listed["booted"]) == (first, True)
    second = commit(sysroot, small_tree(tmp_path / "v2", {"usr/etc/a": "2\n"}))
    _as_booted(sysroot, booted, "deploy", "debian/main")
    assert [d.commit for d in sysroot.deployments()] == [second, first]


def test_a_tree_without_var_or_boot_gets_the_mount_points(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """The initramfs binds the shared /var and the sysroot's /boot over the deployment's
    own and moves the physical root to sysroot/: a tree lacking them still boots."""
    tree = small_tree(tmp_path / "t", {f"usr/lib/modules/{KVER}/vmlinuz": "k\n"}, kernel=False)
    for name in ("var/lib/state", "var/lib", "var"):
        path = tree / name
        path.unlink() if path.is_file() else path.rmdir()
    commit(sysroot, tree)
    root = sysroot.deployment_path(sysroot.deploy("debian/main").deployment)
    assert [(root / name).is_dir() for name in ("var", "boot", "sysroot")] == [True] * 3
    assert os.readlink(root / "sapwood") == "sysroot/sapwood"
    assert list((sysroot.path / "sapwood/deploy/debian/var").iterdir()) == []
