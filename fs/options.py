"""How content is adjusted on its way into a commit (OSTree's commit modifiers).

Applied, in this order, to every entry that comes from a directory or a tar: the
owner uid/gid, canonical permissions, then the per-path stat overrides. ``skip``
names paths left out entirely. Canonical permissions set uid and gid to 0 and keep
only the 0755 permission bits, as OSTree's bare-user canonicalisation does.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field

Xattrs = tuple[tuple[bytes, bytes], ...]
INTERNAL_XATTRS = frozenset({b"user.sapwoodmeta"})  # ours, never part of user content


@dataclass(frozen=True)
class StatOverride:
    """A change to one path's permission bits: set them (``=``) or add to them (``+``)."""

    set_bits: bool  # '=' replaces the permission bits, '+' adds to them
    bits: int

    def apply(self, mode: int) -> int:
        """The ``st_mode`` with this override applied (the file type kept)."""
        if self.set_bits:
            return stat.S_IFMT(mode) | self.bits
        return mode | self.bits


@dataclass
class ContentOptions:
    """How entries are adjusted on their way into a commit (OSTree's commit modifiers).

    ``owner_uid``/``owner_gid`` replace every owner; ``canonical_permissions`` sets
    uid and gid 0 and keeps only the 0755 bits; ``statoverride`` maps absolute paths
    inside the tree to mode changes; ``skip`` names paths left out; ``skip_special``
    skips device nodes, fifos and sockets instead of refusing them.
    """

    owner_uid: int | None = None
    owner_gid: int | None = None
    canonical_permissions: bool = False
    statoverride: dict[bytes, StatOverride] = field(default_factory=dict)
    skip: frozenset[bytes] = frozenset()
    skip_special: bool = False

    def adjust(self, path: bytes, uid: int, gid: int, mode: int) -> tuple[int, int, int]:
        """The (uid, gid, mode) to record for ``path`` (absolute inside the tree)."""
        if self.owner_uid is not None:
            uid = self.owner_uid
        if self.owner_gid is not None:
            gid = self.owner_gid
        if self.canonical_permissions:
            uid, gid = 0, 0
            if not stat.S_ISLNK(mode):
                mode = stat.S_IFMT(mode) | (stat.S_IMODE(mode) & 0o755)
        override = self.statoverride.get(path)
        if override is not None:
            mode = override.apply(mode)
        return uid, gid, mode


def clean_xattrs(xattrs: Xattrs) -> Xattrs:
    return tuple(pair for pair in xattrs if pair[0] not in INTERNAL_XATTRS)
