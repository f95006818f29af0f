"""A deployment laid out by hand, in the sysroot layout of /work/plan/sysroot.md,
without ``sapwood admin``: proves the initramfs hook, its boot script and the qemu
harness on their own (tests/sysroot/test_boot.py's hand-laid test).

The tree is copied once into the image (``sapwood/handlaid-base``), each deployment
is a ``cp -al`` of it with its own /etc copy and the test's layer copied over, and
one BLS entry per deployment is written as ``sapwood admin deploy`` writes them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

OS_NAME = "debian"


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True)


def lay_out(sysroot: Path, tree: Path, layer: Path, serial: int, options: str) -> str:
    """Deployment ``handlaid.SERIAL`` of ``tree`` + ``layer`` in the mounted
    ``sysroot``, with entry version SERIAL; returns its ``sapwood=`` path."""
    base = sysroot / "sapwood" / "handlaid-base"
    if not base.exists():
        base.parent.mkdir(parents=True, exist_ok=True)
        _run("cp", "-a", str(tree), str(base))
    (sysroot / "sapwood" / "repo").mkdir(exist_ok=True)
    stateroot = sysroot / "sapwood" / "deploy" / OS_NAME
    if not (stateroot / "var").exists():
        stateroot.mkdir(parents=True)
        _run("cp", "-a", str(base / "var"), str(stateroot / "var"))
    name = f"handlaid.{serial}"
    deployment = stateroot / "deploy" / name
    deployment.parent.mkdir(exist_ok=True)
    _run("cp", "-al", str(base), str(deployment))
    # /etc must be a real copy (writes to hardlinks would change the base's inodes);
    # the layer's files replace, never write through, the linked ones.
    _run("rm", "-rf", str(deployment / "etc"))
    _run("cp", "-a", str(base / "etc"), str(deployment / "etc"))
    _run("cp", "-a", "--remove-destination", f"{layer}/.", str(deployment))
    (deployment / "sysroot").mkdir(exist_ok=True)
    path = f"/sapwood/deploy/{OS_NAME}/deploy/{name}"
    _write_entry(sysroot, base, serial, f"{options} sapwood={path}")
    return path


def _write_entry(sysroot: Path, base: Path, version: int, options: str) -> None:
    kernel = sorted((base / "boot").glob("vmlinuz-*"))[-1]
    release = kernel.name.removeprefix("vmlinuz-")
    boot_dir = sysroot / "boot" / "sapwood" / f"{OS_NAME}-handlaid"
    if not boot_dir.exists():
        boot_dir.mkdir(parents=True)
        os.link(kernel, boot_dir / kernel.name)
        os.link(base / "boot" / f"initrd.img-{release}", boot_dir / f"initramfs-{release}.img")
    entries = sysroot / "boot" / "loader.0" / "entries"
    entries.mkdir(parents=True, exist_ok=True)
    (entries / f"sapwood-{version}.conf").write_text(
        f"title sapwood hand-laid {version}\n"
        f"version {version}\n"
        f"linux /boot/sapwood/{OS_NAME}-handlaid/{kernel.name}\n"
        f"initrd /boot/sapwood/{OS_NAME}-handlaid/initramfs-{release}.img\n"
        f"options {options}\n"
    )
    loader = sysroot / "boot" / "loader"
    if not loader.is_symlink():
        loader.symlink_to("loader.0")
