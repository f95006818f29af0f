"""Hostile tester X10 (attack23.md, session 13) against deployments: kernel directories
shared by checksum, the seeding of the shared /var, kernel arguments, the initramfs
hook's writes into a tree, damaged lists and origins, which deployment is booted, the
clean-up after the switch, and what a deployment's /etc or /tmp may hold (hostile
contents, deep trees, immutable files). A test that passes guards a defence; a defect
is a strict xfail naming its finding in /work/plan/attack23.md.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

import sapwood
from tests.helpers import IS_ROOT, nest_dirs, run, small_tmpfs, spawn
from tests.sysroot.conftest import commit, small_tree, tree_state

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")


def _entry_files(sysroot: sapwood.Sysroot) -> dict[str, bool]:
    """Every kernel and initramfs path the current entries name -> whether it exists."""
    found = {}
    for text in sysroot.boot_entries().values():
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key in ("linux", "initrd"):
                found[value] = (sysroot.path / value.lstrip("/")).is_file()
    return found


def _modules_tree(root: Path, kver: str, kernel: bytes, initramfs: bytes | None) -> Path:
    modules = f"usr/lib/modules/{kver}"
    tree = small_tree(root, {f"{modules}/vmlinuz": "", "usr/etc/motd": "hi\n"}, kernel=False)
    (tree / modules / "vmlinuz").write_bytes(kernel)
    if initramfs is not None:
        (tree / modules / "initramfs.img").write_bytes(initramfs)
    return tree


# attack23 1: boot/sapwood/OS-BOOTCSUM was named by blake3(kernel bytes + initramfs
# bytes) alone (now: names and lengths framed too); a second kernel whose directory
# name is taken reused it without looking at the file names, so its entry named files
# that directory lacks.
@pytest.mark.parametrize(
    ("first", "second"),
    [
        # the same kernel bytes under another KVER: vmlinuz-B is not in A's directory
        (("6.1.0-a", b"KERNEL", None), ("6.1.0-b", b"KERNEL", None)),
        # no initramfs, then an empty one: the same checksum, no initramfs file there
        (("6.1.0-a", b"KERNEL", None), ("6.1.0-a", b"KERNEL", b"")),
        # the bytes split elsewhere: the entry boots A's kernel, another initramfs
        (("6.1.0-a", b"KERNEL", b"INITRD"), ("6.1.0-a", b"KERNELINIT", b"RD")),
    ],
)
def test_every_entry_names_boot_files_that_hold_its_own_kernel(
    sysroot: sapwood.Sysroot,
    tmp_path: Path,
    first: tuple[str, bytes, bytes | None],
    second: tuple[str, bytes, bytes | None],
) -> None:
    commit(sysroot, _modules_tree(tmp_path / "t1", *first))
    sysroot.deploy("debian/main")
    commit(sysroot, _modules_tree(tmp_path / "t2", *second))
    new = sysroot.deploy("debian/main").deployment
    files = _entry_files(sysroot)
    assert files and all(files.values()), files
    assert new.boot is not None
    boot_dir = sysroot.path / "boot/sapwood" / new.boot.dir
    assert (boot_dir / new.boot.linux).read_bytes() == second[1]
    if second[2] is not None:
        assert new.boot.initrd is not None
        assert (boot_dir / new.boot.initrd).read_bytes() == second[2]


def test_kernels_that_differ_get_their_own_directories(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """The ordinary case the fix must keep: other bytes, another directory."""
    commit(sysroot, _modules_tree(tmp_path / "t1", "6.1.0-a", b"KERNEL A", b"I"))
    one = sysroot.deploy("debian/main").deployment
    commit(sysroot, _modules_tree(tmp_path / "t2", "6.1.0-a", b"KERNEL B", b"I"))
    two = sysroot.deploy("debian/main").deployment
    assert one.boot is not None and two.boot is not None and one.boot.dir != two.boot.dir
    files = _entry_files(sysroot)
    assert len(files) == 4 and all(files.values()), files
    assert os.path.samefile(
        sysroot.path / "boot/sapwood" / two.boot.dir / two.boot.linux,
        sysroot.deployment_path(two) / "usr/lib/modules/6.1.0-a/vmlinuz",
    )


# attack23 2: the OS's shared /var is seeded only while it is empty; a deploy that
# fails (or is killed) midway through the seeding leaves it partly copied, and every
# later deploy takes that for a seeded /var.
def test_a_deploy_that_fails_while_seeding_var_leaves_no_half_copied_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAPWOOD_CMDLINE", "quiet")
    big = os.urandom(12 << 20)
    with small_tmpfs(tmp_path / "disk", "40m") as disk:
        sysroot = sapwood.Sysroot.init_fs(disk / "sysroot")
        sysroot.os_init("debian")
        tree = small_tree(tmp_path / "v1", {"usr/etc/a": "a\n", "var/lib/dpkg/status": "P\n"})
        (tree / "var/lib/zz-big").write_bytes(big)
        commit(sysroot, tree)
        filler = disk / "filler"
        room = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler.write_bytes(b"\0" * max(room - (6 << 20), 0))  # room for less than zz-big
        with pytest.raises(sapwood.OutOfSpaceError, match="nothing was deployed"):
            sysroot.deploy("debian/main")
        assert sysroot.deployments() == []
        filler.unlink()  # the administrator makes room and deploys again
        deployment = sysroot.deploy("debian/main").deployment
        shared = sysroot.path / "sapwood/deploy/debian/var"
        deployed = sysroot.deployment_path(deployment) / "var"
        assert (deployed / "lib/zz-big").read_bytes() == big  # the commit's /var, whole
        assert (shared / "lib/dpkg/status").read_text() == "P\n"
        assert (shared / "lib/zz-big").stat().st_size == len(big)


# attack23 3: --karg is checked for spaces and quotes only; the list reader refuses any
# argument that is not printable, so a deploy with such an argument succeeds, and then
# every admin command (status, deploy, rollback, undeploy) fails on the list it wrote.
@pytest.mark.parametrize("karg", ["console=tty\x1b[2J", "quiet\x7f", "x=\x00"])
def test_a_karg_the_list_cannot_hold_is_refused_before_anything_is_written(
    sysroot: sapwood.Sysroot, tmp_path: Path, karg: str
) -> None:
    commit(sysroot, small_tree(tmp_path / "v1", {"usr/etc/motd": "hi\n"}))
    sysroot.deploy("debian/main")
    before = tree_state(sysroot.path)
    with pytest.raises(sapwood.UsageError, match="kernel argument"):
        sysroot.deploy("debian/main", kargs=(karg,))
    assert tree_state(sysroot.path) == before
    assert len(sysroot.deployments()) == 1


def test_an_unprintable_karg_on_the_command_line_leaves_the_sysroot_usable(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """Whatever deploy does with it, status must still read the sysroot afterwards."""
    commit(sysroot, small_tree(tmp_path / "v1", {"usr/etc/motd": "hi\n"}))
    sysroot.deploy("debian/main")
    run("admin", "--sysroot", sysroot.path, "deploy", "debian/main", "--karg", "a=\x1b[2J")
    status = run("admin", "--sysroot", sysroot.path, "status", text=True)
    assert status.returncode == 0, status.stderr
    assert all("\x1b" not in text for text in sysroot.boot_entries().values())


# attack23 4: install-initramfs-hook writes each file through a fixed temporary name in
# the tree, opened O_WRONLY|O_CREAT|O_TRUNC without O_EXCL: a device node the tree holds
# under that name is written to (a block device node of the host's disk: its first
# sectors), a FIFO there blocks the command for ever.
_HOOK_TMP = "usr/share/initramfs-tools/hooks/.sapwood.sapwood-tmp"
_HOOK = "usr/share/initramfs-tools/hooks/sapwood"


def _hook_tree(root: Path) -> Path:
    from tests.sysroot.test_boot_hook import fake_tree

    return fake_tree(root)


def test_a_block_device_node_at_the_hooks_temporary_name_is_not_written_to(
    tmp_path: Path,
) -> None:
    """A loop device stands for the host's disk: its backing file must stay zeros."""
    backing = tmp_path / "disk.img"
    backing.write_bytes(bytes(1 << 20))
    loop = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        tree = _hook_tree(tmp_path / "tree")
        os.mknod(tree / _HOOK_TMP, 0o600 | stat.S_IFBLK, os.stat(loop).st_rdev)
        result = run("admin", "install-initramfs-hook", tree, text=True)
        subprocess.run(["blockdev", "--flushbufs", loop], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
    assert backing.read_bytes()[:4096] == bytes(4096), "the hook went onto the disk"
    hook = os.lstat(tree / _HOOK) if os.path.lexists(tree / _HOOK) else None
    assert result.returncode != 0 or (hook is not None and stat.S_ISREG(hook.st_mode))


def test_a_fifo_at_the_hooks_temporary_name_is_no_hang(tmp_path: Path) -> None:
    tree = _hook_tree(tmp_path / "tree")
    os.mkfifo(tree / _HOOK_TMP)
    try:
        result = run("admin", "install-initramfs-hook", tree, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("install-initramfs-hook blocked on a FIFO of the tree")
    hook = tree / _HOOK
    assert result.returncode != 0 or (hook.is_file() and not hook.is_symlink())


# attack23 7: the origin file is read with Path.read_text(): it follows a symlink and
# blocks on a FIFO (the deployment list and entries are read with read_regular, which
# refuses both), so one damaged origin hangs every admin command or eats the memory.
@pytest.mark.parametrize("damage", ["fifo", "zero", "large"])
def test_an_origin_that_is_no_regular_file_is_one_error_line(
    sysroot: sapwood.Sysroot, tmp_path: Path, damage: str
) -> None:
    commit(sysroot, small_tree(tmp_path / "v1", {"usr/etc/motd": "hi\n"}))
    deployment = sysroot.deploy("debian/main").deployment
    origin = sysroot.path / "sapwood/deploy/debian/deploy" / f"{deployment.name}.origin"
    origin.unlink()
    if damage == "large":  # (d1) a regular file, but no origin file is 64 KiB
        origin.write_text("[origin]\nrefspec=debian/main\n" + "#" * (1 << 17) + "\n")
    else:
        os.mkfifo(origin) if damage == "fifo" else origin.symlink_to("/dev/zero")
    try:
        proc = run(
            "admin",
            "--sysroot",
            sysroot.path,
            "status",
            text=True,
            timeout=20,
            prefix=["prlimit", "--as=1500000000"],  # /dev/zero read whole: fail, not swap
        )
    except subprocess.TimeoutExpired:
        pytest.fail("admin status blocked on the origin file")
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and "origin" in proc.stderr, proc.stderr


# attack23 8: the deployment list's reader catches OSError, ValueError, KeyError,
# IndexError, TypeError and UsageError, but a list whose records are not objects, or
# whose serial is a float too large for an int, raises AttributeError or OverflowError:
# "internal error" instead of the one line a damaged list gets.
_ID = "a" * 64


@pytest.mark.parametrize(
    "damage",
    [
        '["x"]',
        '{"os": "debian"}',
        '[{"os": "debian", "commit": "' + _ID + '", "serial": 0, "kargs": [], "boot": [1]}]',
        '[{"os": "debian", "commit": "' + _ID + '", "serial": 1e400, "kargs": []}]',
        # (d1) taken letter by letter, or as an int, before the shapes were checked
        '[{"os": "debian", "commit": "' + _ID + '", "serial": 0, "kargs": "abc"}]',
        '[{"os": "debian", "commit": "'
        + _ID
        + '", "serial": 0, "kargs": [], "boot": {"dir": "d", "kernel_version": "k",'
        + ' "linux": "l", "initrd": 5}}]',
        '[{"os": "debian", "commit": "' + _ID + '", "serial": true, "kargs": []}]',
        "[" * 100000,
    ],
    ids=[
        "strings",
        "an-object",
        "boot-a-list",
        "serial-infinite",
        "kargs-a-string",
        "initrd-an-int",
        "serial-a-bool",
        "nested-deep",
    ],
)
def test_a_damaged_list_of_another_shape_is_one_error(
    sysroot: sapwood.Sysroot, tmp_path: Path, damage: str
) -> None:
    commit(sysroot, small_tree(tmp_path / "v1", {"usr/etc/motd": "hi\n"}))
    sysroot.deploy("debian/main")
    (sysroot.path / "boot/loader/deployments.json").write_text(damage)
    with pytest.raises(sapwood.SysrootError, match="the deployment list cannot be read"):
        sysroot.deployments()
    proc = run("admin", "--sysroot", sysroot.path, "status", text=True)
    assert proc.returncode != 0 and "internal error" not in proc.stderr, proc.stderr


# attack23 11: the booted deployment is the sapwood= path compared as a string (with
# "//" and "." dropped); the initramfs boots whatever directory the path reaches, a
# symlink of the sysroot included. Booted through such a path, the running deployment
# is not recognised: the next deploys drop it from the list and delete it from disk.
def test_a_deployment_booted_through_a_symlinked_path_is_never_removed(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    commit(sysroot, small_tree(tmp_path / "v1", {"usr/etc/motd": "1\n"}))
    running = sysroot.deploy("debian/main").deployment
    deploy_dir = sysroot.path / "sapwood/deploy/debian/deploy"
    (sysroot.path / "current").symlink_to(deploy_dir.relative_to(sysroot.path) / running.name)
    # the initramfs would boot it: [ -d "${rootmnt}/current" ] holds, no ".." in the path
    assert (sysroot.path / "current/usr").is_dir()
    booted = sapwood.Sysroot(sysroot.path, cmdline="root=/dev/vda sapwood=/current")
    for version in ("2", "3"):
        commit(sysroot, small_tree(tmp_path / f"v{version}", {"usr/etc/motd": version}))
        booted.deploy("debian/main")
    assert (deploy_dir / running.name / "usr").is_dir(), "the running root was deleted"
    assert running.key() in [d.key() for d in booted.deployments()]


# attack23 12: the clean-up after the switch (dropped deployments removed) raises out of
# deploy: a dropped deployment with something mounted in it (a chroot's /proc, a tmpfs)
# makes deploy exit 1 "is on another filesystem (a mount point): not removed" although
# the new deployment is in place and the default.
def test_a_deploy_that_switched_reports_success_whatever_its_clean_up_met(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    commit(sysroot, small_tree(tmp_path / "v1", {"usr/etc/motd": "1\n"}))
    first = sysroot.deploy("debian/main").deployment
    commit(sysroot, small_tree(tmp_path / "v2", {"usr/etc/motd": "2\n"}))
    sysroot.deploy("debian/main")
    mount_point = sysroot.deployment_path(first) / "sysroot"
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount_point)], check=True)
    try:
        commit(sysroot, small_tree(tmp_path / "v3", {"usr/etc/motd": "3\n"}))
        proc = run("admin", "--sysroot", sysroot.path, "deploy", "debian/main", text=True)
        listed = sysroot.deployments()
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)
    with sysroot.open_repository() as repo:
        third_id = repo.ref("debian/main")
    assert third_id is not None
    third = third_id.hex()
    assert listed[0].commit == third  # switched: the new default
    assert proc.returncode == 0, proc.stderr  # so the command must say it deployed


# attack23 15: the list reader checks boot file names with SAFE_NAME on
# ``str(boot.get(k) or "x")``, so an empty dir, linux or kernel_version passes (the "x"
# meant for a missing initrd): a hand-written loader whose entry says "linux /vmlinuz"
# reads as boot dir "", and the next switch writes "linux /boot/sapwood//vmlinuz".
@pytest.mark.parametrize("empty", ["dir", "linux", "kernel_version"])
def test_a_listed_boot_file_with_an_empty_name_is_refused(
    sysroot: sapwood.Sysroot, tmp_path: Path, empty: str
) -> None:
    commit(sysroot, small_tree(tmp_path / "v1", {"usr/etc/motd": "hi\n"}))
    sysroot.deploy("debian/main")
    listing = sysroot.path / "boot/loader/deployments.json"
    records = json.loads(listing.read_text())
    records[0]["boot"][empty] = ""
    listing.write_text(json.dumps(records))
    with pytest.raises(sapwood.SysrootError, match="the deployment list cannot be read"):
        sysroot.deployments()


def test_hostile_local_etc_contents_are_merged_without_following_or_copying_specials(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """What the administrator (or a compromised service) left in /etc: special files
    are left out, symlinks stay symlinks (never read through), odd modes and owners
    are kept, and nothing outside the new deployment changes."""
    secret = tmp_path / "host-secret"
    secret.write_text("root:$6$secret\n")
    secret.chmod(0o600)
    commit(sysroot, small_tree(tmp_path / "v1", {"usr/etc/motd": "1\n", "usr/etc/d/x": "x\n"}))
    first = sysroot.deploy("debian/main").deployment
    etc = sysroot.deployment_path(first) / "etc"
    os.mkfifo(etc / "fifo")
    os.mknod(etc / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (etc / "leak").symlink_to(secret)  # added locally
    (etc / "d/x").unlink()
    (etc / "d/x").symlink_to(secret)  # a default file made a symlink locally
    (etc / "odd").write_text("odd\n")
    os.chown(etc / "odd", 1234, 5678)
    (etc / "odd").chmod(0o4711)
    (etc / "locked").mkdir(mode=0o000)
    before = secret.stat()
    commit(sysroot, small_tree(tmp_path / "v2", {"usr/etc/motd": "2\n", "usr/etc/d/x": "y\n"}))
    second = sysroot.deploy("debian/main").deployment
    new = sysroot.deployment_path(second) / "etc"
    assert not os.path.lexists(new / "fifo") and not os.path.lexists(new / "null")
    assert os.readlink(new / "leak") == str(secret)
    assert os.readlink(new / "d/x") == str(secret)  # the local change wins, as a symlink
    odd = os.lstat(new / "odd")
    assert (odd.st_uid, odd.st_gid, stat.S_IMODE(odd.st_mode)) == (1234, 5678, 0o4711)
    assert stat.S_IMODE(os.lstat(new / "locked").st_mode) == 0
    assert (new / "motd").read_text() == "2\n"  # untouched locally: the new default
    after = secret.stat()
    assert (after.st_mode, after.st_mtime_ns, after.st_nlink) == (
        before.st_mode,
        before.st_mtime_ns,
        before.st_nlink,
    )
    assert secret.read_text() == "root:$6$secret\n"


# attack23 16: the shared /var is seeded "only while it is empty"; a /var on a
# filesystem of its own (mkfs.ext4 makes lost+found) is never empty, so the first
# deploy silently leaves it without the commit's /var (no /var/lib/dpkg on Debian).
def test_a_shared_var_holding_only_lost_and_found_is_seeded(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    shared = sysroot.path / "sapwood/deploy/debian/var"
    (shared / "lost+found").mkdir(mode=0o700)  # what mkfs.ext4 leaves at its root
    commit(sysroot, small_tree(tmp_path / "v1", {"var/lib/dpkg/status": "P\n"}))
    sysroot.deploy("debian/main")
    assert (shared / "lib/dpkg/status").read_text() == "P\n"


def test_a_killed_seed_of_var_is_made_again_or_completed(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """(d1, attack23 2) what a killed deploy leaves: a partial copy is never taken for
    a seeded /var (removed, the seed made again); a whole one is moved into place."""
    shared = sysroot.path / "sapwood/deploy/debian/var"
    (shared / ".sapwood-seeding/lib/dpkg").mkdir(parents=True)
    (shared / ".sapwood-seeding/lib/dpkg/status").write_text("half\n")
    commit(sysroot, small_tree(tmp_path / "v1", {"var/lib/dpkg/status": "P\n"}))
    sysroot.deploy("debian/main")
    assert sorted(os.listdir(shared)) == ["lib"]
    assert (shared / "lib/dpkg/status").read_text() == "P\n"
    (shared / ".sapwood-seeded").mkdir()  # killed between two renames: lib not moved in
    (shared / "lib").rename(shared / ".sapwood-seeded/lib")
    (shared / ".sapwood-seeded/cache").mkdir()
    (shared / "cache").mkdir()
    (shared / "cache/local").write_text("kept\n")
    sysroot.deploy("debian/main")
    assert sorted(os.listdir(shared)) == ["cache", "lib"]
    assert (shared / "lib/dpkg/status").read_text() == "P\n"
    assert (shared / "cache/local").read_text() == "kept\n"


# attack23 17: install-initramfs-hook checks the tree's scripts/local-bottom only when it
# gets to the second file: a refused install has written the hook already ("nothing is
# written then", says its docstring).
def test_a_refused_hook_install_writes_nothing(tmp_path: Path) -> None:
    from tests.sysroot.test_boot_hook import snapshot

    tree = _hook_tree(tmp_path / "tree")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tree / "usr/share/initramfs-tools/scripts").symlink_to(outside)
    before = snapshot(tree)
    result = run("admin", "install-initramfs-hook", tree, text=True)
    assert result.returncode != 0 and "not a directory of the tree" in result.stderr
    assert list(outside.iterdir()) == []
    assert snapshot(tree) == before


# attack23 19: a local /etc subtree nested deeper than MAX_TREE_DEPTH (256), which any
# service able to write a directory of /etc can make, is copied into the new deployment
# (recursively: at 1100 deep a RecursionError); remove_tree refuses to remove a tree that
# deep, so once that deployment is dropped (or a failed deploy's leftover must go) every
# later deploy and cleanup fails "nests directories more than 256 deep: not removed",
# after the local /etc is cleaned too: the OS cannot be updated until an rm -rf by hand.
@pytest.mark.parametrize("depth", [300, 1100])
def test_a_deep_local_etc_never_keeps_later_deploys_from_working(
    sysroot: sapwood.Sysroot, tmp_path: Path, depth: int
) -> None:
    try:
        _deep_local_etc(sysroot, tmp_path, depth)
    finally:  # pytest's own clean-up of tmp_path recurses: rm -rf the deep trees first
        subprocess.run(["rm", "-rf", str(sysroot.path / "sapwood/deploy")], check=True)


def _deep_local_etc(sysroot: sapwood.Sysroot, tmp_path: Path, depth: int) -> None:
    commit(sysroot, small_tree(tmp_path / "v1", {"usr/etc/motd": "1\n", "usr/etc/svc/x": "x\n"}))
    first = sysroot.deploy("debian/main").deployment
    etc = sysroot.deployment_path(first) / "etc"
    nest_dirs(etc / "svc", depth)
    commit(sysroot, small_tree(tmp_path / "v2", {"usr/etc/motd": "2\n", "usr/etc/svc/x": "x\n"}))
    try:
        sysroot.deploy("debian/main")  # may refuse the deep tree: with one clear error
    except sapwood.SapwoodError as error:
        assert "recursion" not in str(error).lower()
    subprocess.run(["rm", "-rf", str(etc / "svc/a")], check=True)  # the local /etc cleaned
    for version in ("3", "4", "5"):
        commit(sysroot, small_tree(tmp_path / f"v{version}", {"usr/etc/motd": version}))
        sysroot.deploy("debian/main")
    sysroot.cleanup()
    assert len(sysroot.deployments()) == 2


# attack23 20: "chattr +i /etc/resolv.conf" (a common way to keep a network manager off
# it) in a deployment's /etc: once that deployment is dropped, its removal fails
# "[Errno 1] Operation not permitted: b'resolv.conf'" (no path), the deploy that dropped
# it exits 1 after its switch, and every later deploy fails at its first step.
def test_an_immutable_local_etc_file_never_keeps_later_deploys_from_working(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    tree = {"usr/etc/resolv.conf": "nameserver 192.0.2.1\n"}
    commit(sysroot, small_tree(tmp_path / "v1", tree))
    first = sysroot.deploy("debian/main").deployment
    resolv = sysroot.deployment_path(first) / "etc/resolv.conf"
    resolv.write_text("nameserver 10.0.0.1\n")
    if subprocess.run(["chattr", "+i", str(resolv)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable flag")
    try:
        for version in ("2", "3", "4"):
            commit(sysroot, small_tree(tmp_path / f"v{version}", {**tree, "usr/etc/v": version}))
            new = sysroot.deploy("debian/main").deployment
            local = sysroot.deployment_path(new) / "etc/resolv.conf"
            assert local.read_text() == "nameserver 10.0.0.1\n"  # the local change carried
        assert len(sysroot.deployments()) == 2
    finally:  # every copy too, should a fix carry the flag over: pytest must remove them
        deploy_dir = str(sysroot.path / "sapwood/deploy")
        subprocess.run(["chattr", "-R", "-i", deploy_dir], capture_output=True)


def test_a_deep_tree_an_unprivileged_user_left_in_tmp_never_blocks_deploys(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """The same wedge without root: booted, a deployment's own tmp/ is /tmp wherever /tmp
    is not a tmpfs (Debian 12's default), world-writable. A user's 300-deep tree there
    stays on disk after the next boot; when that deployment is dropped, every deploy
    fails from then on."""
    try:
        files = {"usr/etc/motd": "1\n", "tmp": "/"}
        commit(sysroot, small_tree(tmp_path / "v1", files))
        first = sysroot.deploy("debian/main").deployment
        tmp = sysroot.deployment_path(first) / "tmp"
        assert tmp.is_dir()
        tmp.chmod(0o1777)
        tmp_fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)  # /tmp as the user reaches it
        pid = os.fork()
        if pid == 0:  # the user's process
            try:
                os.setgid(65534)
                os.setuid(65534)
                nest_dirs(tmp_fd, 300)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        os.close(tmp_fd)
        assert (tmp / "a").stat().st_uid == 65534
        for version in ("2", "3", "4"):
            commit(sysroot, small_tree(tmp_path / f"v{version}", {**files, "usr/etc/v": version}))
            sysroot.deploy("debian/main")
        assert len(sysroot.deployments()) == 2
    finally:
        subprocess.run(["rm", "-rf", str(sysroot.path / "sapwood/deploy")], check=True)


def test_a_rollback_that_switched_reports_success_so_that_nobody_rolls_back_twice(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """What an error after the switch costs: a leftover the clean-up cannot remove (a
    mount inside a dropped deployment) makes ``rollback`` exit 1 although it swapped
    the first two deployments; the administrator's retry swaps them back."""
    for version in ("1", "2"):
        commit(sysroot, small_tree(tmp_path / f"v{version}", {"usr/etc/motd": version}))
        sysroot.deploy("debian/main")
    leftover = sysroot.path / "sapwood/deploy/debian/deploy" / ("f" * 64 + ".0")
    (leftover / "sysroot").mkdir(parents=True)  # as a killed deploy leaves one
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(leftover / "sysroot")], check=True)
    try:
        before = [d.key() for d in sysroot.deployments()]
        proc = run("admin", "--sysroot", sysroot.path, "rollback", text=True)
        after = [d.key() for d in sysroot.deployments()]
    finally:
        subprocess.run(["umount", str(leftover / "sysroot")], check=True)
    assert after == [before[1], before[0]]  # it did roll back
    assert proc.returncode == 0, proc.stderr  # so it must say so
    # (d1) and the leftover is one warning line naming it, removed by the next cleanup
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert f"{leftover.name}/sysroot: a mount point" in proc.stderr, proc.stderr
    sysroot.cleanup()
    assert not os.path.lexists(leftover)


# attack23 21: a deployment's /home (and /root, /srv, /opt, ...) is its own directory:
# what users keep there on the running system stays in that deployment. After an update
# they no longer see it (the new deployment has the commit's empty /home), and the
# update after that drops the old deployment and deletes it from disk. OSTree trees
# link these into /var (home -> var/home, root -> var/roothome); a debootstrap tree,
# which docs/deployments.md deploys as it is, does not. Now (session 16) the dropped
# deployment stays on disk while it holds such files (tests/sysroot/test_users_data.py).
def test_what_users_keep_in_home_survives_two_updates(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    files = {"usr/etc/motd": "1\n", "home": "/", "root/.profile": "# root\n"}
    commit(sysroot, small_tree(tmp_path / "v1", files))
    first = sysroot.deploy("debian/main").deployment
    running = sysroot.deployment_path(first)
    (running / "home/alice").mkdir()
    (running / "home/alice/thesis.tex").write_text("three years of work\n")
    (running / "root/notes").write_text("the admin's notes\n")
    booted = first
    for version in ("2", "3"):  # deploy, reboot into it, deploy the next update
        commit(sysroot, small_tree(tmp_path / f"v{version}", {**files, "usr/etc/v": version}))
        cmdline = f"root=/dev/vda sapwood={booted.boot_path}"
        booted = sapwood.Sysroot(sysroot.path, cmdline=cmdline).deploy("debian/main").deployment
    kept = [p for p in sysroot.path.rglob("thesis.tex") if p.read_text() == "three years of work\n"]
    assert kept, "alice's home was deleted with the deployment it lived in"
    assert [p for p in sysroot.path.rglob("notes") if p.read_text() == "the admin's notes\n"]


# attack23 22: the shared /var is seeded once, by the first deployment; a Debian tree
# keeps its package database there (/var/lib/dpkg/status), so after an update the
# booted system's dpkg still describes the first release's packages: dpkg -l, apt and
# vulnerability scanners report versions that no longer run. A tree laid out for
# deployment (session 16: sapwood admin prepare-tree) keeps it in /usr, var/lib/dpkg a
# relative link that resolves in whichever deployment runs (decisions.md).
def test_the_package_database_the_booted_system_sees_is_its_own_release(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    status = "var/lib/dpkg/status"

    def release(version: str) -> Path:
        tree = small_tree(
            tmp_path / f"v{version}", {status: f"Package: openssl\nVersion: {version}\n"}
        )
        sapwood.prepare_tree(tree)
        return tree

    commit(sysroot, release("1"))
    sysroot.deploy("debian/main")
    commit(sysroot, release("2"))
    new = sysroot.deploy("debian/main").deployment
    root = sysroot.deployment_path(new)
    assert (root / status).read_text().endswith("Version: 2\n")
    # booted, /var is the OS's shared /var (the initramfs binds it over the deployment's):
    # its lib/dpkg is the link, resolved inside the running deployment
    link = os.readlink(sysroot.path / "sapwood/deploy/debian/var/lib/dpkg")
    seen = root / "var/lib" / link / "status"
    assert seen.read_text().endswith("Version: 2\n"), "dpkg would report openssl 1"


# attack23 23: a deploy checks out with require_hardlinks: an object with as many links
# as the filesystem allows (ext4 and btrfs: 65000; reached by a large tree's identical
# files, licenses and the like, times its deployments and farm checkouts) makes the
# deploy fail "cannot hardlink (Too many links) and require_hardlinks forbids copying",
# though a copy of that one file would do. Simulated: link() says EMLINK for one content.
def test_an_object_at_its_link_limit_is_copied_into_the_deployment(
    sysroot: sapwood.Sysroot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {f"usr/share/licenses/p{n}/LICENSE": "MIT\n" for n in range(20)}
    commit(sysroot, small_tree(tmp_path / "v1", {"usr/etc/motd": "1\n", **files}))
    link = os.link

    def link_limited(src: object, dst: object, *args: object, **kwargs: object) -> None:
        source = os.stat(src, dir_fd=kwargs.get("src_dir_fd"))  # type: ignore[arg-type]
        if stat.S_ISREG(source.st_mode) and source.st_size == 4 and source.st_nlink >= 10:
            raise OSError(errno.EMLINK, "Too many links")
        link(src, dst, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "link", link_limited)
    deployment = sysroot.deploy("debian/main").deployment
    tree = sysroot.deployment_path(deployment)
    assert all((tree / name).read_bytes() == b"MIT\n" for name in files)


def test_deploys_at_once_leave_a_list_its_directories_and_refs_agree_on(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """Three deploys started together (the sysroot lock orders them): all succeed, and
    the list, the deployment directories, the origins and the deployment refs agree."""
    for branch, version in (("debian/a", "a"), ("debian/b", "b")):
        commit(sysroot, small_tree(tmp_path / version, {"usr/etc/motd": version}), branch)
    procs = [
        spawn(
            "admin",
            "--sysroot",
            sysroot.path,
            "deploy",
            ref,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ref in ("debian/a", "debian/b", "debian/a")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    listed = sysroot.deployments()
    assert len(listed) == 2  # the last one and the one before it (the merge deployment)
    names = {d.name for d in listed}
    on_disk = set(os.listdir(sysroot.path / "sapwood/deploy/debian/deploy"))
    assert on_disk == names | {f"{name}.origin" for name in names}
    with sysroot.open_repository() as repo:
        refs = {n for n in repo.refs() if n.startswith("sapwood/deploy/")}
    assert refs == {f"sapwood/deploy/debian/{name}" for name in names}
    assert all(path for path in _entry_files(sysroot).values())


def test_a_sysroot_named_by_a_relative_path_stays_itself_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """attack23 14's twin (L2's note): a Sysroot's layout keeps its root absolute, so its
    boot/, deploy/ and lock are not looked for under another directory after a chdir."""
    from fs.sysroot.layout import Layout

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    monkeypatch.chdir(tmp_path / "one")
    layout = Layout(Path("sysroot"))
    monkeypatch.chdir(tmp_path / "two")
    assert layout.root == tmp_path / "one" / "sysroot"
    assert layout.boot == tmp_path / "one" / "sysroot" / "boot"
