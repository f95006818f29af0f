"""Durable writes of the sysroot's small files.

The boot entries, the deployment list, the origins and the kernel directories are
relied on by the switch of ``boot/loader`` (or by the next boot) right after they are
written, so each is fsynced, and so are the directories that name them.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_synced(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (created or truncated) and fsync it."""
    with open(path, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory (making the names in it durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
