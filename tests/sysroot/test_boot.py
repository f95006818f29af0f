"""Deployments booted in a virtual machine (`make test-boot`, SAPWOOD_BOOT=1, root).

A Debian tree with a kernel and initramfs-tools (tests/sysroot/boot_tree.py, cached)
gets sapwood's initramfs hook from ``sapwood admin install-initramfs-hook``, its
initramfs rebuilt in a chroot, and a check program (tests/sysroot/boot_check.sh) as
/usr/local/sbin/sapwood-boot-check. The commit is deployed into a sysroot on an
ext4 disk image with ``init=`` that program, and qemu boots the kernel, initramfs
and options of the BLS entry a boot loader would pick; the program reports on the
serial console what the test asserts (/ is the deployment, /usr read-only, /etc
merged, /var shared) and powers off. Then v2 (after an /etc edit), then a rollback
to v1. Serial logs and timings go to SAPWOOD_BOOT_LOG (default build/boot-test).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import IS_ROOT, ROOT, run
from tests.sysroot.boot_handlaid import lay_out
from tests.sysroot.boot_tree import boot_tree, initramfs_listing, update_initramfs
from tests.sysroot.boot_vm import (
    Boot,
    boot,
    copy_boot_files,
    default_entry,
    make_disk,
    mounted,
)

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("SAPWOOD_BOOT") != "1",
        reason="boots Debian in qemu for minutes: make test-boot (SAPWOOD_BOOT=1)",
    ),
    pytest.mark.skipif(not IS_ROOT, reason="debootstrap, chroot and loop mounts need root"),
]

OS_NAME = "debian"
CHECK_PROGRAM = "/usr/local/sbin/sapwood-boot-check"
KARGS = ("root=/dev/vda", "rw", "console=ttyS0", "panic=-1", f"init={CHECK_PROGRAM}")
LOG_DIR = Path(os.environ.get("SAPWOOD_BOOT_LOG", ROOT / "build" / "boot-test"))


class Timings:
    """Wall seconds of each step, printed as they come and written to the log dir."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.monotonic()
        self.steps: list[tuple[str, float]] = []

    def step(self, label: str, since: float) -> None:
        seconds = time.monotonic() - since
        self.steps.append((label, seconds))
        print(f"[boot test] {label}: {seconds:.1f} s", flush=True)

    def write(self) -> None:
        total = time.monotonic() - self.started
        lines = [f"{label}: {seconds:.1f} s" for label, seconds in self.steps]
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        (LOG_DIR / f"{self.name}-timings.txt").write_text(
            "\n".join([*lines, f"total: {total:.1f} s\n"])
        )
        print(f"[boot test] {self.name} total: {total:.1f} s", flush=True)


@pytest.fixture(scope="module")
def kernel_tree() -> Path:
    """The cached bootable tree with sapwood's hook installed by the command under
    test and an initramfs built by update-initramfs in a chroot."""
    started = time.monotonic()
    tree = boot_tree()
    print(f"[boot test] debootstrap tree (cached): {time.monotonic() - started:.1f} s")
    started = time.monotonic()
    result = run("admin", "install-initramfs-hook", tree, text=True, check=True)
    assert "hooks/sapwood" in result.stdout
    rebuilt = update_initramfs(tree)
    print(f"[boot test] update-initramfs (rebuilt={rebuilt}): {time.monotonic() - started:.1f} s")
    listing = initramfs_listing(tree).splitlines()
    assert "scripts/local-bottom/sapwood" in listing
    assert "usr/lib/sapwood/mount" in listing
    return tree


def write_layer(root: Path, version: str, test_conf: str, unchanged_conf: str) -> Path:
    """The test's files over the tree: the check program, the version marker and
    two /etc defaults (one the test edits locally, one it never touches)."""
    shutil.rmtree(root, ignore_errors=True)
    program = root / CHECK_PROGRAM.lstrip("/")
    program.parent.mkdir(parents=True)
    shutil.copyfile(Path(__file__).with_name("boot_check.sh"), program)
    program.chmod(0o755)
    marker = root / "usr/share/sapwood-test/version"
    marker.parent.mkdir(parents=True)
    marker.write_text(f"{version}\n")
    (root / "etc").mkdir()
    (root / "etc/sapwood-test.conf").write_text(f"{test_conf}\n")
    (root / "etc/sapwood-unchanged.conf").write_text(f"{unchanged_conf}\n")
    return root


def boot_default(image: Path, work: Path, name: str, timings: Timings) -> tuple[Boot, str]:
    """Boot what a boot loader would pick: the highest-version entry. Returns the
    boot and the entry's ``sapwood=`` path; the serial log goes to LOG_DIR."""
    with mounted(image) as sysroot:
        entry = default_entry(sysroot)
        kernel, initrd = copy_boot_files(sysroot, entry, work)
    deployment = next(o for o in entry.options.split() if o.startswith("sapwood="))
    result = boot(image, kernel, initrd, entry.options)
    record(result, name, timings)
    for line in result.output.splitlines():
        if "SAPWOOD-CHECK" in line:
            print(f"    {line}")
    return result, deployment.removeprefix("sapwood=")


def assert_booted(result: Boot, deployment: str, version: str) -> dict[str, str]:
    """The facts every boot must report: this deployment is /, /usr is read-only,
    /etc and /var are writable, the check ran to its end."""
    checks = result.checks()
    assert "done" in checks, result.output[-3000:]
    assert checks["version"] == version
    assert checks["cmdline"] == deployment
    assert checks["booted"] == deployment  # written by the initramfs script
    assert checks["root-is-deployment"] == "yes"
    assert checks["sysroot"] == "yes"
    assert checks["usr-write"] == "failed"
    assert checks["mount /usr"].split()[1].startswith("ro,")
    assert checks["root-write"] == "succeeded"
    assert checks["etc-write"] == "succeeded"
    assert checks["var-write"] == "succeeded"
    return checks


def e2fsck_clean(image: Path) -> None:
    proc = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(os.environ.get("SAPWOOD_BOOT_WORK", "/var/tmp")) / f"sapwood-boot-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def admin(sysroot: Path, *args: str) -> str:
    return run("admin", "--sysroot", sysroot, *args, text=True, check=True, timeout=900).stdout


def test_deploy_update_rollback_boot(kernel_tree: Path, work: Path) -> None:
    """The issue's boot test: deploy v1, boot it; edit /etc, deploy v2, boot it;
    roll back, boot v1 again. Each from the entry a BLS boot loader picks."""
    timings = Timings("deploy")
    image = work / "disk.img"
    layer1 = write_layer(work / "layer-v1", "v1", "default-v1", "unchanged-v1")
    layer2 = write_layer(work / "layer-v2", "v2", "default-v2", "unchanged-v2")
    started = time.monotonic()
    make_disk(image)
    with mounted(image) as sysroot:
        run("admin", "init-fs", sysroot, text=True, check=True)
        admin(sysroot, "os-init", OS_NAME)
        timings.step("disk image + init-fs + os-init", started)
        started = time.monotonic()
        commit(sysroot, kernel_tree, layer1, "v1")
        timings.step("commit v1 (the whole tree)", started)
        started = time.monotonic()
        admin(sysroot, "deploy", f"{OS_NAME}/stable", "--os", OS_NAME, *karg_options())
        timings.step("deploy v1", started)
    first, v1_path = boot_default(image, work, "v1", timings)
    checks = assert_booted(first, v1_path, "v1")
    assert checks["etc sapwood-test.conf"] == "default-v1"
    assert checks["var-seen"] == "none"

    started = time.monotonic()
    with mounted(image) as sysroot:
        # The administrator's edit in v1's /etc: kept by the merge over v2's new default.
        (sysroot / v1_path.lstrip("/") / "etc/sapwood-test.conf").write_text("local-edit\n")
        commit(sysroot, kernel_tree, layer2, "v2")
        admin(sysroot, "deploy", f"{OS_NAME}/stable", "--os", OS_NAME)
    timings.step("edit /etc, commit v2, deploy v2", started)
    second, v2_path = boot_default(image, work, "v2", timings)
    assert v2_path != v1_path
    checks = assert_booted(second, v2_path, "v2")
    assert checks["etc sapwood-test.conf"] == "local-edit"  # modified locally: local wins
    assert checks["etc sapwood-unchanged.conf"] == "unchanged-v2"  # untouched: new default
    assert checks["var-seen"] == "v1"  # v1's boot wrote it: /var is shared

    started = time.monotonic()
    with mounted(image) as sysroot:
        admin(sysroot, "rollback")
    timings.step("rollback", started)
    third, back_path = boot_default(image, work, "rollback", timings)
    assert back_path == v1_path
    checks = assert_booted(third, v1_path, "v1")
    assert checks["etc sapwood-test.conf"] == "local-edit"
    assert checks["var-seen"] == "v1 v2"
    e2fsck_clean(image)
    timings.write()


def karg_options() -> list[str]:
    return [option for karg in KARGS for option in ("--karg", karg)]


def commit(sysroot: Path, tree: Path, layer: Path, subject: str) -> None:
    """The tree with the test's layer over it, committed into the sysroot's repository."""
    run(
        "commit",
        "-b",
        f"{OS_NAME}/stable",
        "-s",
        subject,
        "--tree",
        f"dir={tree}",
        "--tree",
        f"dir={layer}",
        repo=sysroot / "sapwood" / "repo",
        text=True,
        check=True,
        timeout=900,
    )


def test_handlaid_deployment_boots(kernel_tree: Path, work: Path) -> None:
    """The initramfs on its own, without ``sapwood admin``: a deployment laid out by
    hand (cp -al) boots as the root, and a second one sees the first's /var."""
    timings = Timings("handlaid")
    image = work / "disk.img"
    options = " ".join(KARGS)
    started = time.monotonic()
    make_disk(image)
    with mounted(image) as sysroot:
        layer = write_layer(work / "layer-v1", "v1", "default-v1", "unchanged-v1")
        lay_out(sysroot, kernel_tree, layer, 0, options)
    timings.step("hand-laid deployment v1", started)
    first, v1_path = boot_default(image, work, "handlaid-v1", timings)
    assert_booted(first, v1_path, "v1")
    assert first.checks()["var-seen"] == "none"
    with mounted(image) as sysroot:
        layer = write_layer(work / "layer-v2", "v2", "default-v2", "unchanged-v2")
        lay_out(sysroot, kernel_tree, layer, 1, options)
    second, v2_path = boot_default(image, work, "handlaid-v2", timings)
    checks = assert_booted(second, v2_path, "v2")
    assert checks["etc sapwood-test.conf"] == "default-v2"
    assert checks["var-seen"] == "v1"
    timings.write()


def test_without_sapwood_the_initramfs_boots_an_ordinary_root(
    kernel_tree: Path, work: Path
) -> None:
    """The same initramfs boots the tree itself as root when the command line has no
    sapwood= (the script does nothing), and panics, naming the path, when sapwood=
    names no deployment (panic=-1 reboots; -no-reboot ends qemu)."""
    timings = Timings("plain")
    image = work / "plain.img"
    started = time.monotonic()
    subprocess.run(["truncate", "-s", "2G", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(kernel_tree), str(image)], check=True)
    layer = write_layer(work / "layer", "plain", "default-plain", "unchanged-plain")
    with mounted(image) as root:
        subprocess.run(["cp", "-a", f"{layer}/.", str(root)], check=True)
    timings.step("plain root image (mkfs.ext4 -d)", started)
    kernel = sorted((kernel_tree / "boot").glob("vmlinuz-*"))[-1]
    initrd = kernel.with_name(kernel.name.replace("vmlinuz-", "initrd.img-"))

    plain = boot(image, kernel, initrd, " ".join(KARGS))
    record(plain, "plain", timings)
    checks = plain.checks()
    assert "done" in checks, plain.output[-3000:]
    assert (checks["version"], checks["cmdline"], checks["booted"]) == ("plain", "", "")
    assert checks["root-is-deployment"] == "no"
    assert checks["usr-write"] == "succeeded"  # no read-only /usr bind
    assert "mount /usr" not in checks
    assert "mount /sysroot" not in checks

    missing = "/sapwood/deploy/debian/deploy/missing.0"
    refused = boot(image, kernel, initrd, f"{' '.join(KARGS)} sapwood={missing}")
    record(refused, "missing-deployment", timings)
    assert f"sapwood: no deployment at {missing} on the root device" in refused.output
    assert "SAPWOOD-CHECK" not in refused.output
    timings.write()


def record(result: Boot, name: str, timings: Timings) -> None:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    (LOG_DIR / f"{name}.serial.txt").write_text(result.output)
    timings.steps.append((f"boot {name} ({result.accel})", result.seconds))
    print(f"[boot test] boot {name} ({result.accel}): {result.seconds:.1f} s", flush=True)
