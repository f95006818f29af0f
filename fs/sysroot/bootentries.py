"""Boot Loader Specification entries and the atomic switch between two sets of them.

The deployments in order become ``boot/loader.M/entries/sapwood-V.conf`` where
V = count - index: the first deployment (the default) has the highest ``version``,
which systemd-boot (since 251) and GRUB's blscfg put first, and file names sort the
same way. ``boot/loader.M`` (M = 1 - N, N the current one) is removed, rewritten
whole and flushed; then a symlink ``loader.tmp -> loader.M`` is renamed over
``boot/loader``: the one atomic step. A crash before it leaves ``loader -> loader.N``
untouched, complete; after it, the new set, complete.

Paths in an entry start with /boot/: they are from the root of the filesystem that
holds the entries, the sysroot's (``boot`` is a directory of it, not a partition).
"""

from __future__ import annotations

import os

from fs.sysroot.durable import fsync_path, write_synced
from fs.sysroot.kargs import OWN_KEY
from fs.sysroot.layout import Layout
from fs.sysroot.removal import remove_own_tree
from fs.sysroot.state import (
    LIST_NAME,
    Deployment,
    current_bootversion,
    read_regular,
    to_record,
    write_json,
)
from store import syncfs


def entry_name(version: int) -> str:
    return f"sapwood-{version}.conf"


def entry_text(deployment: Deployment, version: int) -> str | None:
    """The BLS entry of ``deployment``, or None when it has no kernel."""
    boot = deployment.boot
    if boot is None:
        return None
    options = [*deployment.kargs, f"{OWN_KEY}={deployment.boot_path}"]
    lines = [
        f"title {deployment.title} ({_label(deployment)})",
        f"version {version}",
        f"linux /boot/sapwood/{boot.dir}/{boot.linux}",
    ]
    if boot.initrd:
        lines.append(f"initrd /boot/sapwood/{boot.dir}/{boot.initrd}")
    lines.append(f"options {' '.join(options)}")
    return "\n".join(lines) + "\n"


def write_loader(layout: Layout, deployments: list[Deployment]) -> int:
    """Write the other ``loader.M`` for ``deployments`` and switch ``boot/loader`` to it.
    Returns M."""
    current = current_bootversion(layout)
    new = 1 - current if current is not None else 0
    directory = layout.loader_dir(new)
    remove_own_tree(directory)
    entries = directory / "entries"
    entries.mkdir(parents=True, mode=0o755)
    count = len(deployments)
    for index, deployment in enumerate(deployments):
        text = entry_text(deployment, count - index)
        if text is not None:
            write_synced(entries / entry_name(count - index), text)
    write_json(directory / LIST_NAME, [to_record(d) for d in deployments])
    fsync_path(entries)
    fsync_path(directory)
    syncfs(layout.boot)
    swap_loader(layout, new)
    return new


def swap_loader(layout: Layout, version: int) -> None:
    """Point ``boot/loader`` at ``loader.VERSION`` with one rename, made durable."""
    tmp = layout.boot / "loader.tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(f"loader.{version}", tmp)
    os.rename(tmp, layout.loader)
    fsync_path(layout.boot)


def read_entries(layout: Layout) -> dict[str, str]:
    """The current entries, file name -> text (what a boot loader sees)."""
    entries = layout.loader / "entries"
    if not entries.is_dir():
        return {}
    return {p.name: read_regular(p) for p in sorted(entries.iterdir())}


def _label(deployment: Deployment) -> str:
    return f"{deployment.os_name} {deployment.commit[:12]}.{deployment.serial}"
