"""The link-checkout listing of objects/, kept between commits (store/inodes.py).

A farm re-commit lists objects/ (256 directories, an entry an object) to map each
object file's inode to its id. At 47,000 objects that listing is 0.13-0.2 s of CPU
warm and 0.25-0.3 s cold (1,448 directory blocks), a fifth of a warm re-commit of a
/usr/share farm. Yet it changes only when an entry of objects/ or objects/XX is added,
removed or renamed, and each of those sets the directory's ctime, which no user can
set. So the listing, sorted as ObjectListing holds it, is saved in
``index/object-inodes`` with the identity of objects/ and of each objects/XX as an
lstat showed it *before* the listing read it: (st_ino, st_ctime_ns, st_mtime_ns,
st_size, st_nlink), and objects/'s st_dev. A later commit lstats those 257
directories and takes the saved listing only if every one is exactly as saved; if
one differs, objects/ is listed whole again (and saved again). A change made while
the listing ran was made after its lstat, so it too makes the next commit list again.

A clock tick is coarse (ext4 stamps ctime from a clock of a few ms): two changes
within one tick leave one ctime. A listing is saved only if every directory's ctime
is older than _SETTLED_NS before its lstat, so any change made after that lstat falls
in a later tick and shows. (A commit right after objects were added, the usual case
in tests, lists as before and saves nothing.)

The file is trusted as far as the index beside it: it is read only if it is a regular
file (never through a symlink) owned by this process's user and writable by nobody
else, of exactly the size its count gives, with a matching CRC-32 (a torn or damaged
file is ignored, never half-read: the listing names objects by id). Whatever it says,
a farm file taken for an object must still show that object's size and mode as the
index records them (store/inodes.py). It is written to a temporary name and renamed
over the old one, without fsync: a crash leaves the old file, none, or one the CRC
refuses. A listing that cannot be saved (read-only index, no space) is not an error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import struct
import sys
import time
import zlib
from array import array
from collections.abc import Callable

log = logging.getLogger(__name__)
FILE_NAME = "object-inodes"  # in the repository's index/ directory
_MAGIC = b"sapwood-inodes\x00\x01"
_HEAD = struct.Struct("<QQ")  # objects/'s st_dev, the count of objects
_KEY = struct.Struct("<QqqqQ")  # st_ino, st_ctime_ns, st_mtime_ns, st_size, st_nlink
_CRC = struct.Struct("<I")
_DIRS = 257  # objects/ and its 256 objects/XX
_ID = 32
_INODE = 8
_SETTLED_NS = 2 * 10**9  # a directory changed this recently is not saved as listed
_UNTRUSTED_BITS = stat.S_IWGRP | stat.S_IWOTH
_STALE_S = 600  # a save's temporary older than this is a killed save's

Keys = tuple[int, bytes]  # objects/'s st_dev, the 257 directories' keys packed


def objects_device(objects: str) -> int:
    """st_dev of the filesystem holding the object files: objects/'s, followed where it
    is a symlink (moved to a bigger disk); -1, a device no file has, where an objects/XX
    is not a directory on it (a symlink, maybe to another filesystem). Where objects/
    was symlinked elsewhere its lstat gave the repository's device, and a farm file
    there was taken for the object with its inode number on the other filesystem; with
    objects/XX symlinks the saved listing never went stale (attack21 7 and 1)."""
    device = os.stat(objects).st_dev
    for byte in range(256):
        try:
            st = os.lstat(f"{objects}/{byte:02x}")
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_dev != device:
            log.info("%s: object directories elsewhere; farm files are read", objects)
            return -1
    return device


def directory_keys(objects: str) -> tuple[Keys, bool]:
    """The identity of objects/ and of each objects/XX now (a missing one: zeros), and
    whether all of them have settled (none changed within _SETTLED_NS)."""
    now = time.time_ns()
    packed = bytearray()
    device = 0
    settled = True
    for name in [""] + [f"/{byte:02x}" for byte in range(256)]:
        try:
            # objects/ followed (moved to a bigger disk and symlinked): its own key
            st = os.lstat(objects + name) if name else os.stat(objects)
        except OSError:
            packed += _KEY.pack(0, 0, 0, 0, 0)
            continue
        if not name:
            device = st.st_dev
        elif not stat.S_ISDIR(st.st_mode):
            settled = False  # its key is not its directory's (attack21 1): never saved
        packed += _KEY.pack(st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_size, st.st_nlink)
        settled = settled and now - st.st_ctime_ns > _SETTLED_NS
    return (device, bytes(packed)), settled


def load(path: str, keys: Keys) -> tuple[array[int], bytes] | None:
    """The listing saved at ``path`` (its inodes sorted and the ids in that order), if
    it was saved for directories exactly as ``keys`` shows them; else None."""
    start = len(_MAGIC) + _HEAD.size + _DIRS * _KEY.size

    def for_these_keys(head: bytes) -> bool:  # before the rest is read (review16 R16-5)
        return (
            len(head) == start
            and head.startswith(_MAGIC)
            and (_HEAD.unpack_from(head, len(_MAGIC))[0], head[len(_MAGIC) + _HEAD.size :]) == keys
        )

    data = _read_trusted(path, start, for_these_keys)
    if data is None:
        return None
    if len(data) < start + _CRC.size:
        return None
    count = _HEAD.unpack_from(data, len(_MAGIC))[1]
    if len(data) != start + count * (_INODE + _ID) + _CRC.size:
        return None
    if _CRC.unpack_from(data, len(data) - _CRC.size)[0] != zlib.crc32(data[: -_CRC.size]):
        log.info("%s: damaged, ignored", path)
        return None
    # its keys are ``keys``: ``data`` starts with the head for_these_keys took
    inodes: array[int] = array("Q")
    inodes.frombytes(data[start : start + count * _INODE])
    if sys.byteorder != "little":
        inodes.byteswap()
    return inodes, data[start + count * _INODE : -_CRC.size]


def save(path: str, keys: Keys, inodes: array[int], ids: bytes) -> None:
    """Save a listing made after ``keys`` were taken (see the module's docstring)."""
    device, packed = keys
    little = array("Q", inodes)
    if sys.byteorder != "little":
        little.byteswap()
    data = b"".join([_MAGIC, _HEAD.pack(device, len(inodes)), packed, little.tobytes(), bytes(ids)])
    _remove_stale_temporaries(path)
    temporary = f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                out.write(data + _CRC.pack(zlib.crc32(data)))
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as exc:
        log.debug("%s: not saved: %s", path, exc.strerror)
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _remove_stale_temporaries(path: str) -> None:
    """Temporaries of saves killed midway (review16 R16-6: nothing removed them); one
    younger than _STALE_S may be another commit's, saving now."""
    directory, name = os.path.split(path)
    too_old = time.time() - _STALE_S
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if (
                entry.name.startswith(f"{name}.tmp-")
                and entry.stat(follow_symlinks=False).st_mtime < too_old
            ):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _read_trusted(path: str, head_size: int, wanted: Callable[[bytes], bool]) -> bytes | None:
    """The file's bytes if it is one of this user's that nobody else can write and its
    first ``head_size`` bytes are ``wanted`` (the listing of a million objects is ~40
    MB: not read, nor its checksum computed, once its keys show objects/ changed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_uid != os.geteuid()
            or st.st_mode & _UNTRUSTED_BITS
        ):
            log.info("%s: not this user's alone, ignored", path)
            return None
        with os.fdopen(fd, "rb", closefd=False) as source:
            head = source.read(head_size)
            return head + source.read() if wanted(head) else None
    except OSError:
        return None
    finally:
        os.close(fd)
