"""The boot test's machine: an ext4 disk image holding a sysroot, the BLS entry a
boot loader would pick, and qemu booting it with the entry's kernel, initramfs and
options (direct kernel boot: qemu plays the boot loader).

KVM is used when /dev/kvm answers (the kernel prints within KVM_PROBE_SECONDS),
else TCG; ../shared/research/boot.md measured 12-16 s per TCG boot here. The
environment's SAPWOOD_BOOT_ACCEL=kvm or tcg skips the probe.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 240.0  # seconds for one boot under TCG on a busy machine
KVM_PROBE_SECONDS = 10.0
CHECK = "SAPWOOD-CHECK "


@dataclass(frozen=True)
class BootEntry:
    """One Boot Loader Specification entry (paths as written: from the root of the
    filesystem holding the entries)."""

    path: Path
    version: str
    linux: str
    initrd: str
    options: str


def parse_entry(path: Path) -> BootEntry:
    """A BLS entry file: "key value" lines, '#' comments, options joined."""
    fields: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        fields.setdefault(key, []).append(value.strip())
    return BootEntry(
        path=path,
        version=fields["version"][0],
        linux=fields["linux"][0],
        initrd=fields["initrd"][0],
        options=" ".join(fields.get("options", [])),
    )


def default_entry(sysroot: Path) -> BootEntry:
    """The entry a BLS boot loader picks first: the highest integer ``version`` among
    boot/loader/entries/*.conf (boot/loader is the symlink the sysroot swaps)."""
    entries = [parse_entry(p) for p in (sysroot / "boot" / "loader" / "entries").glob("*.conf")]
    if not entries:
        raise AssertionError(f"no boot entries in {sysroot}/boot/loader/entries")
    return max(entries, key=lambda e: int(e.version))


def make_disk(image: Path, size: str = "4G") -> None:
    """An empty ext4 filesystem in a sparse file: the machine's only disk."""
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "sysroot", str(image)], check=True)


@contextmanager
def mounted(image: Path) -> Iterator[Path]:
    """The disk image loop-mounted on a temporary directory (unmounted after)."""
    mountpoint = Path(tempfile.mkdtemp(prefix="sapwood-boot-mnt-"))
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
        mountpoint.rmdir()


@dataclass(frozen=True)
class Boot:
    """What one boot printed on its serial console, and how long it took."""

    output: str
    seconds: float
    accel: str

    def checks(self) -> dict[str, str]:
        """The boot check's report: ``SAPWOOD-CHECK key value`` lines as a dict
        (the last of a repeated key; the mount lines keyed by mount point)."""
        found: dict[str, str] = {}
        for line in self.output.splitlines():
            start = line.find(CHECK)
            if start < 0:
                continue
            words = line[start + len(CHECK) :].strip().split(" ", 1)
            key, value = words[0], words[1] if len(words) > 1 else ""
            if key in ("mount", "etc"):
                sub, _, value = value.partition(" ")
                key = f"{key} {sub}"
            found[key] = value
        return found


def copy_boot_files(sysroot: Path, entry: BootEntry, dest: Path) -> tuple[Path, Path]:
    """Copy the entry's kernel and initramfs out of the (mounted) sysroot, so the
    image can be unmounted before qemu opens it; paths resolve as SYSROOT + path."""
    kernel, initrd = dest / "vmlinuz", dest / "initrd.img"
    for source, target in ((entry.linux, kernel), (entry.initrd, initrd)):
        if not source.startswith("/") or ".." in source.split("/"):
            raise AssertionError(f"{entry.path}: {source!r} is not an absolute path")
        shutil.copyfile(sysroot / source.lstrip("/"), target)
    return kernel, initrd


_accel: list[str] = []  # the accelerator that worked, once probed


def kvm_usable() -> bool:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError:
        return False
    return True


def boot(image: Path, kernel: Path, initrd: Path, options: str) -> Boot:
    """Boot the disk image with this kernel, initramfs and command line; returns the
    serial output once qemu exits (the check powers off; a panic reboots, which
    -no-reboot turns into an exit)."""
    if not _accel and os.environ.get("SAPWOOD_BOOT_ACCEL") in ("kvm", "tcg"):
        _accel.append(os.environ["SAPWOOD_BOOT_ACCEL"])  # no probe: as the caller says
    if not _accel and kvm_usable():
        result = _run("kvm", image, kernel, initrd, options, KVM_PROBE_SECONDS)
        if result is not None:
            _accel.append("kvm")
            return result
    if not _accel:
        _accel.append("tcg")
    result = _run(_accel[0], image, kernel, initrd, options, None)
    assert result is not None
    return result


def _command(accel: str, image: Path, kernel: Path, initrd: Path, options: str) -> list[str]:
    return [
        QEMU,
        "-accel",
        accel,
        "-m",
        "1536",
        "-smp",
        "1",
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        options,
        "-drive",
        f"file={image},format=raw,if=virtio",
    ]


def _run(
    accel: str, image: Path, kernel: Path, initrd: Path, options: str, probe: float | None
) -> Boot | None:
    """Run qemu to its exit (or BOOT_TIMEOUT); with ``probe``, give up (None) when
    the kernel printed nothing within that many seconds (KVM that hangs)."""
    started = time.monotonic()
    process = subprocess.Popen(
        _command(accel, image, kernel, initrd, options),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    output = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            elapsed = time.monotonic() - started
            limit = probe if probe is not None and b"Linux version" not in output else None
            if (limit is not None and elapsed > limit) or elapsed > BOOT_TIMEOUT:
                process.kill()
                process.wait()
                if limit is not None:
                    return None
                raise AssertionError(
                    f"qemu ({accel}) did not exit within {BOOT_TIMEOUT:.0f} s; output:\n"
                    + output.decode(errors="replace")
                )
            if not selector.select(timeout=1.0):
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            output += chunk
    process.wait()
    if probe is not None and b"Linux version" not in output:
        return None  # KVM refused to run the guest (qemu exited at once)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))
    return Boot(output=text.replace("\r", ""), seconds=time.monotonic() - started, accel=accel)
