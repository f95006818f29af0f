"""How content is adjusted on its way into a commit (OSTree's commit modifiers).

Applied, in this order, to every entry that comes from a directory or a tar:
--owner-uid/--owner-gid, --canonical-permissions, then --statoverride lines.
--skip-list names paths left out entirely.

statoverride file: one ``+MODE PATH`` (OR these bits in) or ``=MODE PATH`` (set the
permission bits) per line, MODE decimal as in OSTree (``+2048 /usr/bin/x`` adds
setuid) or with a 0o prefix (``=0o644 /etc/x``). Paths are absolute inside the tree.
--canonical-permissions sets uid and gid to 0 and keeps only the 0755 permission
bits, as OSTree's bare-user canonicalisation does.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path

from store import UsageError

Xattrs = tuple[tuple[bytes, bytes], ...]
INTERNAL_XATTRS = frozenset({b"user.sapwoodmeta"})  # ours, never part of user content


@dataclass(frozen=True)
class StatOverride:
    set_bits: bool  # '=' replaces the permission bits, '+' adds to them
    bits: int

    def apply(self, mode: int) -> int:
        if self.set_bits:
            return stat.S_IFMT(mode) | self.bits
        return mode | self.bits


@dataclass
class ContentOptions:
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


def _tree_path(text: str, source: Path, lineno: int) -> bytes:
    if not text.startswith("/"):
        raise UsageError(f"{source}:{lineno}: path {text!r} must be absolute inside the tree")
    return b"/" + text.strip("/").encode("utf-8", "surrogateescape")


def parse_statoverride(source: Path) -> dict[bytes, StatOverride]:
    overrides: dict[bytes, StatOverride] = {}
    for lineno, line in enumerate(_read_lines(source), 1):
        op_mode, _, path = line.partition(" ")
        if op_mode[:1] not in ("+", "=") or not path:
            raise UsageError(f"{source}:{lineno}: expected '+MODE PATH' or '=MODE PATH'")
        try:
            bits = int(op_mode[1:], 0)
        except ValueError:
            raise UsageError(f"{source}:{lineno}: bad mode {op_mode[1:]!r}") from None
        if bits < 0 or bits > 0o7777:
            raise UsageError(f"{source}:{lineno}: mode {bits:o} out of range")
        overrides[_tree_path(path, source, lineno)] = StatOverride(op_mode[0] == "=", bits)
    return overrides


def parse_skip_list(source: Path) -> frozenset[bytes]:
    return frozenset(_tree_path(line, source, n) for n, line in enumerate(_read_lines(source), 1))


def _read_lines(source: Path) -> list[str]:
    try:
        text = source.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
