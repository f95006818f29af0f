"""The stat cache: lets an unchanged re-commit skip reading unchanged files.

As git's index does, it remembers, per (device, inode) of a source file, the stat
fields that change whenever content or metadata change (size, mtime, ctime, mode,
uid, gid) together with the identity of the filesystem, the digest of the header
that was committed and the file object's id. A hit needs all of them to match, the
header (recomputed from the current stat, xattrs and commit options) to hash the
same, and the object to be in the repository.

Safe when a file changes under it: an entry is only written when the file's ctime
is older than the start of the commit by more than the clock's granularity, so a
write that lands after the file was read always changes the ctime the cache
compares ("racily clean" files are simply read again next time).

Safe when another filesystem takes the place of the one cached: st_dev names a
device number, which the kernel hands out again (a new tmpfs, a loop device bound
to another image), and inode numbers and sizes of freshly made filesystems repeat.
Two guards:

- the record holds the filesystem's id (statvfs f_fsid). ext4 and btrfs derive it
  from the superblock UUID, so it is the same across remounts and reboots (an
  unchanged re-commit still hits) and differs for another filesystem. Where the
  kernel gives less (xfs: the device number; FUSE, NFS: often 0) the next guard is
  what remains, and it is enough for a filesystem with fine timestamps: the kernel
  sets ctime to the time of every change, so two different files meeting on one
  (device, inode) with the same nanosecond ctime would need a copy of the same
  filesystem (which held the same content at that ctime) or an image builder's
  stamps (see what remains, below).
- ctime is only a witness on a filesystem that keeps sub-second timestamps. Where
  they are a second or coarser (ext2/3 and ext4 with 128-byte inodes, FAT, ISO 9660,
  squashfs) two files made in the same second, or two images that a builder stamped
  with one fixed time, differ in nothing the cache sees, and no margin helps against
  the second image. The kernel does not say a filesystem's granularity, so the scan
  looks for proof (Granularity): a ctime or mtime with a sub-second part on any inode
  of that filesystem (the source's root directory, usually). Until it has seen one, a
  file whose own timestamps are whole seconds is neither vouched for nor cached: it is
  read every time. Once seen, whole-second timestamps are those an image builder
  stamped (as on the machine the benchmarks ran on: all but 756 of the 50,825
  files of /usr/share, but not /usr/share itself): a rewrite on that filesystem
  would give the file a sub-second ctime, so they still witness one.

What remains: two filesystems with one UUID (a reproducible image builder that fixes
the UUID too) whose files were stamped with the same timestamps, with the same
inodes, sizes and modes but other content, bound in turn to one device, each having
shown a sub-second timestamp somewhere (a fully stamped image shows none and is read
every time). Nothing the kernel reports cheaply tells those two apart. Nor does
anything tell a file whose bytes changed while its ctime stayed (review23 9), which the
kernel allows in two ways: a crash after a same-size write in place made durable with
fdatasync (which persists data, not timestamps; a `lazytime` mount defers them up to a
day) keeps the new bytes with the old ctime, and a page of a shared writable mapping
dirtied before the cached commit takes later writes without a fault, so without a new
ctime. The commit then records the file's old object. git's index has the same blind
spot and accepts it; here too the file itself is never touched, only a re-commit of it
misses the change. After such a crash, `sapwood commit --read-all` (CommitRequest's
read_all) reads every file and writes the cache afresh.

The table and its records belong to the store (store/statcache.py defines their
layout; a Repository snapshot looks them up, a transaction writes them): the key
stays (st_dev, st_ino), and the filesystem id is compared from the record, so an old
record (without it) has the wrong size, is ignored and replaced.
"""

from __future__ import annotations

import os

import blake3

RACY_MARGIN_NS = 1_000_000_000
_SECOND_NS = 1_000_000_000


def header_digest(header_bytes: bytes) -> bytes:
    return blake3.blake3(header_bytes).digest()


def sub_second(st: os.stat_result) -> bool:
    """Whether the stat shows a timestamp finer than a second."""
    return st.st_ctime_ns % _SECOND_NS != 0 or st.st_mtime_ns % _SECOND_NS != 0


class Granularity:
    """The filesystems (f_fsid, st_dev) that have shown sub-second timestamps so far."""

    def __init__(self) -> None:
        self._fine: set[tuple[int, int]] = set()

    def observe(self, fsid: int, st: os.stat_result) -> None:
        if sub_second(st):
            self._fine.add((fsid, st.st_dev))

    def can_vouch(self, fsid: int, st: os.stat_result) -> bool:
        """Whether the cache may vouch for (and record) this file."""
        key = (fsid, st.st_dev)
        if key in self._fine:
            return True
        if sub_second(st):
            self._fine.add(key)
            return True
        return False


def cacheable(st: os.stat_result, commit_started_ns: int) -> bool:
    """Only files untouched for a while before the commit began may be cached."""
    newest = max(st.st_mtime_ns, st.st_ctime_ns)
    return newest < commit_started_ns - RACY_MARGIN_NS
