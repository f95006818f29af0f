"""Bad input to sapwood admin: one clear line, a non-zero exit, nothing changed.

Each case runs the command as a real process and compares everything under the
sysroot (boot entries, deployments, origins, the repository's files) before and after.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

import sapwood
from tests.helpers import IS_ROOT, run, small_tmpfs
from tests.sysroot.conftest import commit, small_tree, tree_state

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")


def _refused(sysroot: Path, *args: str, words: str, env: dict[str, str] | None = None) -> None:
    before = tree_state(sysroot)
    proc = run("admin", "--sysroot", sysroot, *args, text=True, env=env)
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sapwood: error: "), proc.stderr
    assert words in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert tree_state(sysroot) == before


@pytest.fixture
def deployed(sysroot: sapwood.Sysroot, tmp_path: Path) -> sapwood.Sysroot:
    """A sysroot with one deployment of a small tree."""
    tree = small_tree(
        tmp_path / "v1", {"usr/etc/foo": "foo\n", "usr/etc/bar/x": "x\n", "usr/etc/keep": "k\n"}
    )
    commit(sysroot, tree)
    sysroot.deploy("debian/main", kargs=("root=/dev/vda",))
    return sysroot


def test_a_rev_without_a_kernel_deploys_with_a_warning(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    commit(sysroot, small_tree(tmp_path / "t", {"usr/etc/a": "a\n"}, kernel=False))
    proc = run("admin", "--sysroot", sysroot.path, "deploy", "debian/main", text=True)
    assert proc.returncode == 0, proc.stderr
    (warning,) = proc.stderr.splitlines()
    assert "has no kernel" in warning and "without a boot entry" in warning
    assert sysroot.boot_entries() == {}
    (listed,) = sysroot.deployments()
    assert listed.boot is None
    status = run("admin", "--sysroot", sysroot.path, "status", text=True, check=True)
    assert "no kernel" in status.stdout


def test_an_unknown_os(deployed: sapwood.Sysroot) -> None:
    _refused(deployed.path, "deploy", "debian/main", "--os", "nope", words="no OS 'nope'")
    _refused(deployed.path, "deploy", "debian/main", "--os", "../x", words="invalid OS name")


def test_an_unknown_rev(deployed: sapwood.Sysroot) -> None:
    _refused(deployed.path, "deploy", "no/such/ref", words="no/such/ref")


def test_a_bad_kernel_argument(deployed: sapwood.Sysroot) -> None:
    _refused(deployed.path, "deploy", "debian/main", "--karg", "sapwood=/x", words="sapwood=")
    _refused(deployed.path, "deploy", "debian/main", "--karg-append", "a b", words="'a b'")


def test_a_sysroot_never_initialised(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (("status",), ("deploy", "main"), ("os-init", "debian"), ("cleanup",)):
        _refused(empty, *args, words="not a sapwood sysroot")
    assert list(empty.iterdir()) == []


def test_undeploying_the_booted_deployment(deployed: sapwood.Sysroot) -> None:
    (booted,) = deployed.deployments()
    env = {**os.environ, "SAPWOOD_CMDLINE": f"root=/dev/vda sapwood={booted.boot_path}"}
    _refused(deployed.path, "undeploy", "0", words="booted", env=env)
    booted_view = sapwood.Sysroot(deployed.path, cmdline=env["SAPWOOD_CMDLINE"])
    with pytest.raises(sapwood.BootedDeploymentError) as refused:
        booted_view.undeploy(0)
    assert refused.value.index == 0


def test_an_index_out_of_range(deployed: sapwood.Sysroot) -> None:
    for args in (("undeploy", "1"), ("pin", "3"), ("set-default", "-1"), ("rollback",)):
        _refused(deployed.path, *args, words="deployment")
    _refused(deployed.path, "undeploy", "one", words="invalid int value")


def test_a_tree_with_both_etc_and_usr_etc(deployed: sapwood.Sysroot, tmp_path: Path) -> None:
    tree = small_tree(tmp_path / "both", {"etc/a": "a\n", "usr/etc/a": "a\n"})
    commit(deployed, tree)
    _refused(deployed.path, "deploy", "debian/main", words="both /etc and /usr/etc")


@pytest.mark.parametrize(
    ("edit", "new_files", "path"),
    [
        # a locally modified file where the new default is a directory
        ("modify foo", {"usr/etc/foo/inside": "i\n"}, "/etc/foo"),
        # a locally added file inside a directory that the new default makes a file
        ("add bar/y", {"usr/etc/bar": "now a file\n"}, "/etc/bar"),
        # a locally added directory where the new default adds a file
        ("add dir new", {"usr/etc/new": "file\n"}, "/etc/new"),
    ],
)
def test_a_type_conflict(
    deployed: sapwood.Sysroot, tmp_path: Path, edit: str, new_files: dict[str, str], path: str
) -> None:
    etc = deployed.deployment_path(deployed.deployments()[0]) / "etc"
    if edit == "modify foo":
        (etc / "foo").write_text("mine\n")
    elif edit == "add bar/y":
        (etc / "bar/y").write_text("mine\n")
    else:
        (etc / "new").mkdir()
    files = {"usr/etc/keep": "k\n", "usr/etc/bar/x": "x\n", "usr/etc/foo": "foo\n"} | new_files
    if "usr/etc/foo/inside" in files or "usr/etc/bar" in files:
        del files["usr/etc/foo" if "usr/etc/foo/inside" in files else "usr/etc/bar/x"]
    commit(deployed, small_tree(tmp_path / "v2", files))
    _refused(deployed.path, "deploy", "debian/main", words=path)


def test_a_full_disk_midway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills while /etc is copied: the deploy fails, leaving what was there."""
    monkeypatch.setenv("SAPWOOD_CMDLINE", "quiet")
    with small_tmpfs(tmp_path / "disk", "24m") as disk:
        sysroot = sapwood.Sysroot.init_fs(disk / "sysroot")
        sysroot.os_init("debian")
        commit(sysroot, small_tree(tmp_path / "v1", {"usr/etc/a": "a\n"}))
        sysroot.deploy("debian/main")
        big = small_tree(tmp_path / "v2", {"usr/etc/a": "a\n"})
        (big / "usr/etc/big").write_bytes(os.urandom(14 << 20))  # copied: twice its size
        commit(sysroot, big)
        _refused(sysroot.path, "deploy", "debian/main", words="no space left")
        listed = json.loads(
            run("admin", "--sysroot", sysroot.path, "status", "--json", text=True).stdout
        )
        assert len(listed) == 1


def test_a_full_disk_while_writing_the_entries(
    deployed: sapwood.Sysroot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills in the other loader.N: the old entries stay, the new deployment goes."""
    from fs.sysroot import deploy as deploy_module

    def full(layout: object, listed: object) -> int:
        (deployed.path / "boot/loader.1/entries").mkdir(parents=True)
        raise OSError(errno.ENOSPC, "No space left on device")

    commit(deployed, small_tree(tmp_path / "v2", {"usr/etc/foo": "v2\n"}))
    before = tree_state(deployed.path / "sapwood/deploy")
    monkeypatch.setattr(deploy_module, "write_loader", full)
    with pytest.raises(sapwood.OutOfSpaceError, match="nothing was deployed"):
        deployed.deploy("debian/main")
    assert tree_state(deployed.path / "sapwood/deploy") == before
    with deployed.open_repository() as repo:
        assert len([n for n in repo.refs() if n.startswith("sapwood/deploy/")]) == 1
    monkeypatch.undo()
    monkeypatch.setenv("SAPWOOD_CMDLINE", "quiet")
    assert len(deployed.deploy("debian/main").deployments) == 2
    assert not (deployed.path / "boot/loader.0").exists()


@pytest.mark.parametrize(
    "damage",
    [
        "not json",
        '[{"os": "../../etc", "commit": "' + "a" * 64 + '", "serial": 0, "kargs": []}]',
        '[{"os": "debian", "commit": "../x", "serial": 0, "kargs": []}]',
    ],
)
def test_a_damaged_deployment_list(deployed: sapwood.Sysroot, damage: str) -> None:
    (deployed.path / "boot/loader/deployments.json").write_text(damage)
    _refused(deployed.path, "status", words="the deployment list cannot be read")
