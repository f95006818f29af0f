"""Copies of files and trees that keep their metadata, reflinked where possible.

/etc and the shared /var are written by the administrator, so a deployment holds
them as copies, never as hardlinks into the repository (an edit in place would change
an object). A copy clones the blocks (FICLONE: btrfs, xfs), else asks the kernel to
copy (copy_file_range: server-side on NFS, reflinks on some filesystems), else reads
and writes; holes of sparse files are kept (SEEK_DATA/SEEK_HOLE). Mode, owner,
timestamps and extended attributes follow the copy; symlinks are copied as symlinks,
never followed; fifos, devices and sockets are skipped (logged), as OSTree's /etc
merge does.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from fs.sysroot.removal import remove_own_tree

log = logging.getLogger(__name__)

FICLONE = 0x40049409
_NOT_HERE = {errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.ENOTTY, errno.EBADF}
_CHUNK = 1 << 20


def copy_data(src: int, dst: int, size: int) -> None:
    """Copy ``size`` bytes of ``src`` into the empty file ``dst``: reflink, kernel, loop.
    Only the data is copied, holes stay holes (a sparse file of 8 GiB is not 8 GiB)."""
    if size == 0:
        return
    try:
        fcntl.ioctl(dst, FICLONE, src)
        return
    except OSError as exc:
        if exc.errno not in _NOT_HERE:
            raise
    for start, end in _data_segments(src, size):
        _copy_range(src, dst, start, end)
    os.ftruncate(dst, min(size, os.fstat(src).st_size))  # a hole at the end


def _data_segments(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The (start, end) ranges of ``fd`` below ``size`` that hold data (SEEK_DATA and
    SEEK_HOLE; the whole file where the filesystem cannot say)."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return  # a hole up to the end
            if exc.errno not in _NOT_HERE:
                raise
            yield offset, size
            return
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        offset = end


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    done = start
    try:
        while done < end:
            n = os.copy_file_range(src, dst, end - done, done, done)
            if n == 0:
                return
            done += n
        return
    except OSError as exc:
        if exc.errno not in _NOT_HERE | {errno.EPERM}:
            raise
    while done < end and (chunk := os.pread(src, min(_CHUNK, end - done), done)):
        os.pwrite(dst, chunk, done)
        done += len(chunk)


def copy_metadata(path: Path, st: os.stat_result, dst: Path) -> None:
    """Owner, mode, xattrs and times of ``path`` (stat ``st``) onto ``dst`` (not followed)."""
    is_link = stat.S_ISLNK(st.st_mode)
    if os.geteuid() == 0:
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not is_link:
        for name in _xattrs(path):
            try:
                value = os.getxattr(path, name, follow_symlinks=False)
                os.setxattr(dst, name, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EPERM, errno.ENODATA):
                    raise
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _xattrs(path: Path) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return []
        raise


def copy_entry(src: Path, dst: Path) -> None:
    """Copy one file, symlink or whole directory ``src`` to the absent path ``dst``.

    A tree of any depth (what a deployment's /etc holds is the administrator's, or a
    service's): the walk keeps its own stack, and a directory's metadata (its mode
    may forbid writing, and writing into it changes its times) is set once its
    entries are copied."""
    # (source, target, None): to copy; (source, target, its stat): a directory whose
    # entries are copied, its metadata to set. Last in, first done.
    stack: list[tuple[Path, Path, os.stat_result | None]] = [(src, dst, None)]
    while stack:
        source, target, done = stack.pop()
        if done is not None:
            copy_metadata(source, done, target)
            continue
        st = os.lstat(source)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(target, 0o700)
            stack.append((source, target, st))
            for name in sorted(os.listdir(source), reverse=True):
                stack.append((source / name, target / name, None))
            continue
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), target)
        elif stat.S_ISREG(st.st_mode):
            _copy_file(source, target, st.st_size)
        else:
            log.info("%s: not a file, symlink or directory; not copied", source)
            continue
        copy_metadata(source, st, target)


def _copy_file(src: Path, dst: Path, size: int) -> None:
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            copy_data(fd_in, fd_out, size)
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def remove_entry(path: Path) -> None:
    """Remove a file, symlink or directory tree (never following a symlink), of any
    depth (see fs/sysroot/removal.py)."""
    remove_own_tree(path)
