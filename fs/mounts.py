"""The mount table, read from /proc/self/mountinfo: what is mounted where.

Checkout asks it which directories of DEST are mount points (a whiteout must never
empty another filesystem); the mount daemon and `sapwood umount` ask what is mounted
at a path without looking at the path itself, which may be a mount whose daemon is
dead or hung: a look would fail, or wait for good.
"""

from __future__ import annotations

import operator
import os
import re
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = "/proc/self/mountinfo"
_ESCAPE = re.compile(rb"\\([0-7]{3})")


@dataclass(frozen=True)
class MountEntry:
    """One line of the mount table: where, what type, from what."""

    point: bytes
    fstype: str
    source: str


def _unescape(field: bytes) -> bytes:
    """A mountinfo field: space, tab, newline and backslash are written as \\ooo."""
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), field)


def mount_table() -> list[MountEntry]:
    """Every mount this process sees, in the order they were mounted (none without /proc)."""
    try:
        with open(MOUNTINFO, "rb") as table:
            lines = table.read().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        fields = line.split()
        try:
            rest = operator.indexOf(fields[6:], b"-") + 7  # after the optional fields
            entries.append(
                MountEntry(
                    _unescape(fields[4]),
                    _unescape(fields[rest]).decode(errors="replace"),
                    _unescape(fields[rest + 1]).decode(errors="replace"),
                )
            )
        except (ValueError, IndexError):
            continue  # not a line of the documented format: nothing to say about it
    return entries


def mount_points() -> list[bytes]:
    """Every mount point this process sees."""
    return [entry.point for entry in mount_table()]


def mounted_at(path: Path) -> MountEntry | None:
    """What is mounted at ``path`` (the topmost mount, the one a lookup sees), if anything.

    The table holds resolved paths, so ``path`` is resolved too, but without looking at
    its last component. Only if nothing is mounted there is a symlink followed.
    """
    found = _topmost(_resolved_parent(path))
    if found is None and os.path.islink(path):
        found = _topmost(os.path.realpath(path))
    return found


def _resolved_parent(path: Path) -> str:
    """``path`` with its parent resolved (symlinks, '..'), its last component as given."""
    head, name = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(head), name)


def _topmost(resolved: str) -> MountEntry | None:
    wanted = os.fsencode(resolved)
    found = None
    for entry in mount_table():
        if entry.point == wanted:
            found = entry
    return found
