"""Repository modes and the admission rules each one imposes on content.

How each mode lays content objects on disk lives in store/content.py; this module
only names the modes and decides what a mode accepts (bare-user-only refuses
setuid and world-writable entries, and keeps no ownership or xattrs).
"""

from __future__ import annotations

import enum
import os
import stat

from store.errors import ModePolicyError, PermissionDeniedError
from store.objects import DirMeta, FileHeader

_UNSAFE_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH


class RepoMode(enum.Enum):
    """How objects are kept on disk, as OSTree's modes: BARE (real owners and modes;
    needs root), BARE_USER (owned by the user, the real metadata in an xattr),
    BARE_USER_ONLY (no xattrs; refuses setuid and world-writable files) and ARCHIVE
    (compressed, servable over plain HTTP)."""

    BARE = "bare"
    BARE_USER = "bare-user"
    BARE_USER_ONLY = "bare-user-only"
    ARCHIVE = "archive"

    @classmethod
    def parse(cls, text: str) -> RepoMode:
        """The mode named ``text`` (as in a config), or ModePolicyError."""
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ModePolicyError(f"unknown repository mode {text!r} (use {names})") from None

    def require_privileges(self) -> None:
        """bare writes real ownership, which only root can do."""
        if self is RepoMode.BARE and os.geteuid() != 0:
            raise PermissionDeniedError(
                "a bare repository records real ownership and needs root; "
                "use mode bare-user as an unprivileged user"
            )

    def admit_file(self, header: FileHeader, where: str) -> FileHeader:
        """The header as this mode stores it, or ModePolicyError for what it refuses."""
        if self is not RepoMode.BARE_USER_ONLY:
            return header
        if not header.is_symlink:
            _refuse_unsafe(header.mode, where)
        return FileHeader(0, 0, header.mode, header.symlink_target)

    def admit_dir(self, meta: DirMeta, where: str) -> DirMeta:
        """The dirmeta as this mode stores it, or ModePolicyError for what it refuses."""
        if self is not RepoMode.BARE_USER_ONLY:
            return meta
        _refuse_unsafe(meta.mode, where)
        return DirMeta(0, 0, meta.mode)


def _refuse_unsafe(mode: int, where: str) -> None:
    if mode & _UNSAFE_BITS:
        raise ModePolicyError(
            f"{where}: mode {stat.S_IMODE(mode):04o} is setuid, setgid or world-writable, "
            "which a bare-user-only repository refuses (commit with canonical permissions)",
            path=where,
            file_mode=mode,
        )
