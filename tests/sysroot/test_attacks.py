"""Hostile trees and damaged sysroots: a deploy never writes, reads or links outside
the deployment through the tree's symlinks, and nothing the tree or a damaged list
holds becomes a line of a BLS entry (reproductions: /work/plan/attack-sysroot.md)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import sapwood
from fs.sysroot import copying, kernels
from fs.sysroot import deploy as deploy_module
from fs.sysroot.kernels import find_kernel
from tests.helpers import IS_ROOT, run, spawn
from tests.sysroot.conftest import KVER, commit, tree_state

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")


def _tree(root: Path, files: dict[str, str], kernel: bool = True) -> Path:
    """A small tree; ``files`` maps paths to contents ('->T': a symlink, '/': a dir)."""
    if kernel:
        files = {f"boot/vmlinuz-{KVER}": "k\n", f"boot/initrd.img-{KVER}": "i\n", **files}
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "/":
            path.mkdir()
        elif content.startswith("->"):
            path.symlink_to(content[2:])
        else:
            path.write_text(content)
    return root


@pytest.mark.parametrize("etc", [True, False])
def test_a_symlinked_usr_cannot_carry_etc_out_of_the_deployment(
    sysroot: sapwood.Sysroot, tmp_path: Path, etc: bool
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    files = {"etc/planted": "x\n"} if etc else {}
    commit(sysroot, _tree(tmp_path / "t", {**files, "usr": f"->{outside}"}))
    before = tree_state(sysroot.path)
    with pytest.raises(sapwood.TreeLayoutError, match="/usr is not a directory"):
        sysroot.deploy("debian/main")
    assert list(outside.iterdir()) == []
    assert tree_state(sysroot.path) == before


def test_a_local_directory_mode_is_not_applied_through_a_new_default_symlink(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o755)
    commit(sysroot, _tree(tmp_path / "v1", {"usr/etc/private/key": "k\n"}))
    first = sysroot.deploy("debian/main").deployment
    (sysroot.deployment_path(first) / "etc/private").chmod(0o700)  # the administrator's
    commit(sysroot, _tree(tmp_path / "v2", {"usr/etc/private": f"->{outside}"}))
    second = sysroot.deploy("debian/main").deployment
    assert outside.stat().st_mode & 0o7777 == 0o755
    assert os.readlink(sysroot.deployment_path(second) / "etc/private") == str(outside)


@pytest.mark.parametrize(
    "kver", ["6.1\noptions init=sh", "6.1 rd.break", "6.1\x1b[2J", "-6.1", ".hidden"]
)
def test_a_kernel_version_that_is_no_plain_name_is_refused(
    sysroot: sapwood.Sysroot, tmp_path: Path, kver: str
) -> None:
    modules = f"usr/lib/modules/{kver}"
    files = {f"{modules}/vmlinuz": "k\n", f"{modules}/initramfs.img": "i\n"}
    commit(sysroot, _tree(tmp_path / "t", files, kernel=False))
    before = tree_state(sysroot.path)
    with pytest.raises(sapwood.TreeLayoutError, match="not a plain file name"):
        sysroot.deploy("debian/main")
    assert tree_state(sysroot.path) == before
    assert sysroot.deployments() == []


def test_a_boot_kernel_version_with_a_newline_is_refused_on_the_command_line(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    version = "6.1\noptions init=sh"
    files = {f"boot/vmlinuz-{version}": "k\n", f"boot/initrd.img-{version}": "i\n"}
    commit(sysroot, _tree(tmp_path / "t", files, kernel=False))
    proc = run("admin", "--sysroot", sysroot.path, "deploy", "debian/main", text=True)
    assert proc.returncode != 0
    (line,) = proc.stderr.splitlines()
    assert line.startswith("sapwood: error: ") and "not a plain file name" in line
    status = run("admin", "--sysroot", sysroot.path, "status", text=True, check=True)
    assert "no deployments" in status.stdout


def test_an_initramfs_symlinked_out_of_the_tree_is_neither_read_nor_linked(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret\n")
    modules = f"usr/lib/modules/{KVER}"
    files = {f"{modules}/vmlinuz": "k\n", f"{modules}/initramfs.img": f"->{secret}"}
    commit(sysroot, _tree(tmp_path / "t", files, kernel=False))
    deployment = sysroot.deploy("debian/main").deployment
    assert deployment.boot is not None and deployment.boot.initrd is None
    boot_dir = sysroot.path / "boot/sapwood" / deployment.boot.dir
    assert [p.name for p in boot_dir.iterdir()] == [f"vmlinuz-{KVER}"]
    assert "initrd" not in "".join(sysroot.boot_entries().values())


@pytest.mark.parametrize(
    "files",
    [
        {"usr": "->HOST"},  # usr -> the running system's usr
        {"usr/lib": "->HOST/lib"},
        {f"usr/lib/modules/{KVER}": f"->HOST/lib/modules/{KVER}"},
        {f"usr/lib/modules/{KVER}/vmlinuz": f"->HOST/lib/modules/{KVER}/vmlinuz"},
        {"boot": "->HOST/boot"},
    ],
)
def test_kernels_are_not_found_through_symlinks_of_the_tree(
    tmp_path: Path, files: dict[str, str]
) -> None:
    host = tmp_path / "host"
    _tree(host, {f"lib/modules/{KVER}/vmlinuz": "k\n", f"boot/vmlinuz-{KVER}": "k\n"}, False)
    tree = tmp_path / "tree"
    _tree(tree, {k: v.replace("HOST", str(host)) for k, v in files.items()}, kernel=False)
    assert find_kernel(tree) is None


def test_a_kernel_in_the_tree_is_still_found(tmp_path: Path) -> None:
    modules = f"usr/lib/modules/{KVER}"
    tree = _tree(tmp_path / "t", {f"{modules}/vmlinuz": "k\n", f"{modules}/initramfs.img": "i"})
    kernel = find_kernel(tree)
    assert kernel is not None and kernel.version == KVER
    assert kernel.initramfs == tree / modules / "initramfs.img"


def test_os_release_is_not_read_through_a_symlink_and_its_title_is_printable(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    host = _tree(tmp_path / "host", {"os-release": 'PRETTY_NAME="Host OS"\n'}, kernel=False)
    files = {
        "usr/lib": f"->{host}",
        "usr/etc/os-release": 'PRETTY_NAME="Evil\x1b]0;x\x07 OS"\n',
    }
    commit(sysroot, _tree(tmp_path / "t", files))
    deployment = sysroot.deploy("debian/main").deployment
    assert deployment.title == "Evil]0;x OS"
    (entry,) = sysroot.boot_entries().values()
    assert entry.splitlines()[0].startswith("title Evil]0;x OS (")


def _deployed(sysroot: sapwood.Sysroot, tmp_path: Path) -> sapwood.Deployment:
    commit(sysroot, _tree(tmp_path / "t", {"usr/etc/a": "a\n"}))
    return sysroot.deploy("debian/main", kargs=("root=/dev/vda",)).deployment


def _list_file(sysroot: sapwood.Sysroot) -> Path:
    return (sysroot.path / "boot/loader").resolve() / "deployments.json"


def _refused(sysroot: sapwood.Sysroot, words: str) -> None:
    proc = run("admin", "--sysroot", sysroot.path, "status", text=True, timeout=60)
    assert proc.returncode != 0
    (line,) = proc.stderr.splitlines()
    assert line.startswith("sapwood: error: ") and words in line, line
    assert "internal error" not in line


def test_a_listed_karg_with_a_newline_is_refused_not_written_into_an_entry(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    _deployed(sysroot, tmp_path)
    records = json.loads(_list_file(sysroot).read_text())
    records[0]["kargs"].append("quiet\noptions init=/bin/sh")
    _list_file(sysroot).write_text(json.dumps(records))
    _refused(sysroot, "the deployment list cannot be read")
    with pytest.raises(sapwood.SysrootError):
        sysroot.rollback()


def test_a_listed_title_with_a_newline_does_not_become_a_line(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    _deployed(sysroot, tmp_path)
    sysroot.deploy("debian/main")
    records = json.loads(_list_file(sysroot).read_text())
    records[1]["title"] = "Debian\nlinux /boot/evil"
    _list_file(sysroot).write_text(json.dumps(records))
    sysroot.rollback()
    for entry in sysroot.boot_entries().values():
        assert not any(line.startswith("linux /boot/evil") for line in entry.splitlines())
        assert len(entry.splitlines()) == 5


@pytest.mark.parametrize(
    "text",
    [b"[origin]\nrefspec=x\n[sapwood-transient]\npinned=maybe\n", b"[origin\n", b"\xff\xfe"],
)
def test_a_damaged_origin_file_is_one_error_line(
    sysroot: sapwood.Sysroot, tmp_path: Path, text: bytes
) -> None:
    deployment = _deployed(sysroot, tmp_path)
    origin = sysroot.deployment_path(deployment).with_name(f"{deployment.name}.origin")
    origin.write_bytes(text)
    _refused(sysroot, "the origin file cannot be read")


@pytest.mark.parametrize("damage", ["symlink", "missing"])
def test_a_merge_deployment_etc_that_is_no_directory_is_refused(
    sysroot: sapwood.Sysroot, tmp_path: Path, damage: str
) -> None:
    deployment = _deployed(sysroot, tmp_path)
    etc = sysroot.deployment_path(deployment) / "etc"
    for path in sorted(etc.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() or path.is_symlink() else path.rmdir()
    etc.rmdir()
    host = _tree(tmp_path / "host", {"passwd": "host's\n"}, kernel=False)
    if damage == "symlink":
        etc.symlink_to(host)
    before = tree_state(sysroot.path)
    for call in (sysroot.config_diff, lambda: sysroot.deploy("debian/main")):
        with pytest.raises(sapwood.SysrootError, match="/etc is missing or not a directory"):
            call()
    assert tree_state(sysroot.path) == before


def test_the_booted_deployment_is_the_last_sapwood_argument(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """The initramfs boots the last sapwood= (one added at the boot loader's prompt):
    a deploy must keep that one, never remove the running root."""
    first = _deployed(sysroot, tmp_path)
    second = sysroot.deploy("debian/main").deployment
    running = sapwood.Sysroot(
        sysroot.path, cmdline=f"root=/dev/vda sapwood={second.boot_path} sapwood={first.boot_path}"
    )
    assert running.booted() == first
    running.deploy("debian/main")
    assert sysroot.deployment_path(first).is_dir()
    assert first.key() in {d.key() for d in sysroot.deployments()}


def test_the_booted_deployment_is_found_however_its_path_is_spelled(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """The initramfs boots "//sapwood/./deploy/.../" as the plain path: a deploy must
    know it is running, not drop it as an old deployment."""
    first = _deployed(sysroot, tmp_path)
    second = sysroot.deploy("debian/main").deployment
    sysroot.rollback()  # first is the default again; second runs, spelled oddly
    spelled = "/" + second.boot_path.replace("/deploy/", "/./deploy//") + "/"
    running = sapwood.Sysroot(sysroot.path, cmdline=f"root=/dev/vda sapwood={spelled}")
    assert running.booted() == second
    running.deploy("debian/main")
    assert second.key() in {d.key() for d in sysroot.deployments()}
    assert sysroot.deployment_path(second).is_dir()
    assert first.key() not in {d.key() for d in sysroot.deployments()}  # neither booted nor merge


def _refuse(*args: object) -> int:
    raise OSError(errno.EOPNOTSUPP, "not here")


@pytest.mark.parametrize("refused", [(), ("copy_file_range",)])
def test_a_sparse_file_of_etc_stays_sparse_in_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: tuple[str, ...]
) -> None:
    """A sparse file in /etc (truncate -s 8G) was copied dense into each new deployment:
    a few deploys filled the disk. Holes stay holes, whichever way the data is copied."""
    monkeypatch.setattr("fs.sysroot.copying.fcntl.ioctl", _refuse)  # as on ext4: no reflink
    if refused:
        monkeypatch.setattr("fs.sysroot.copying.os.copy_file_range", _refuse)
    size = 64 << 20
    with open(tmp_path / "src", "wb") as out:
        out.truncate(size)
        for offset in (0, 40 << 20):
            out.seek(offset)
            out.write(b"data" * 1024)
    copying.copy_entry(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst").read_bytes() == (tmp_path / "src").read_bytes()
    assert os.stat(tmp_path / "dst").st_blocks * 512 < 1 << 20


@pytest.mark.parametrize("list_file", [True, False])
def test_a_fifo_in_the_loader_is_one_error_line_not_a_hang(
    sysroot: sapwood.Sysroot, tmp_path: Path, list_file: bool
) -> None:
    _deployed(sysroot, tmp_path)
    loader = _list_file(sysroot).parent
    if list_file:
        _list_file(sysroot).unlink()
        os.mkfifo(_list_file(sysroot))
    else:  # a loader without a list is read from its entries
        _list_file(sysroot).unlink()
        (entry,) = (loader / "entries").iterdir()
        entry.unlink()
        os.mkfifo(entry)
    _refused(sysroot, "the deployment list cannot be read")


def test_a_prune_during_a_deploy_cannot_take_the_commit_being_deployed(
    sysroot: sapwood.Sysroot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timer's `prune --refs-only --depth 0` takes no sysroot lock: while a deploy
    checks out the old head of a branch that just moved on, it deleted that commit (the
    deploy then failed at its ref)."""
    old = commit(sysroot, _tree(tmp_path / "v1", {"usr/etc/a": "a\n"}))
    v2 = _tree(tmp_path / "v2", {"usr/etc/a": "b\n"})
    real = kernels.install_kernel  # what deploy calls, from the module that defines it

    pruning: list[subprocess.Popen[bytes]] = []

    def racing(*args: Any, **kwargs: Any) -> Any:
        commit(sysroot, v2)
        argv = ("prune", "--refs-only", "--depth", "0")
        pruning.append(spawn(*argv, repo=sysroot.repo_path))
        time.sleep(1)  # it runs, or waits for the deploy
        return real(*args, **kwargs)

    monkeypatch.setattr(deploy_module, "install_kernel", racing)
    deployed = sysroot.deploy("debian/main").deployment
    assert pruning[0].wait(timeout=120) == 0
    assert deployed.commit == old
    proc = run("fsck", repo=sysroot.repo_path, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
