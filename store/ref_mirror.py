"""Archive mode's plain-file copy of the refs, REPO/refs/heads/ and refs/remotes/, which
HTTP clients read (pull); the index holds the refs themselves."""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path

from store.errors import InvalidRefNameError
from store.ids import ObjectId
from store.names import check_ref_name


def write_ref_mirror(refs_dir: Path, refs: dict[str, ObjectId]) -> None:
    """Rewrite heads/ and remotes/ below ``refs_dir`` to hold ``refs`` and nothing else
    (Repository.write_ref_mirror)."""
    wanted = {
        _mirror_path(name): cid.hex() + "\n"
        for name, cid in refs.items()
        if _is_ref_name(name)  # a forged name ("../..") must not lead out of refs/
    }
    refs_fd = os.open(refs_dir, _DIR_FLAGS)
    try:
        for relpath, content in wanted.items():
            _write_mirror_file(refs_fd, relpath, content)
    finally:
        os.close(refs_fd)
    for existing in refs_dir.rglob("*"):
        if existing.is_file() and existing.relative_to(refs_dir).as_posix() not in wanted:
            existing.unlink()


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_mirror_file(refs_fd: int, relpath: str, content: str) -> None:
    """Write ``relpath`` below refs/ (atomically: a new file renamed into place) without
    following a symlink or opening a FIFO that another user of the repository put
    there: either would have this write land outside the repository, or wait forever."""
    *directories, name = relpath.split("/")
    fd = os.dup(refs_fd)
    try:
        for directory in directories:
            with suppress(FileExistsError):
                os.mkdir(directory, 0o777, dir_fd=fd)
            below = os.open(directory, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = below
        tmp = f".{name}.tmp"
        with suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=fd)  # a stale one, or whatever was put there
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        out = os.open(tmp, flags, 0o666, dir_fd=fd)
        try:
            os.write(out, content.encode())
        finally:
            os.close(out)
        os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)


def _is_ref_name(name: str) -> bool:
    try:
        check_ref_name(name)
    except InvalidRefNameError:
        return False
    return True


def _mirror_path(name: str) -> str:
    """``os/main`` -> heads/os/main; ``origin:os/main`` -> remotes/origin/os/main."""
    remote, sep, ref = name.partition(":")
    return f"remotes/{remote}/{ref}" if sep else f"heads/{name}"
