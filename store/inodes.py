"""Which content object a source file is, by its inode: commit's link-checkout speedup.

A hardlinked checkout (``checkout -U -H`` in the user modes, ``-H`` as root in bare)
makes every farm file the object's own inode. When that farm is committed again, a
file that still is an object, unchanged, needs no reading: its object's id (and so
its recorded header: owner, full mode with setuid bits, xattrs) is the answer. OSTree
does the same with ``commit --link-checkout-speedup``, which stats every object to
map (device, inode) to a checksum.

Here the map is built lazily, the first time a candidate shows up (a regular file
with more than one link and mtime 0, on the device of ``objects/``), by one scandir
pass over ``objects/XX/`` that takes each object's inode from its directory entry
(``DirEntry.inode()``: the kernel's d_ino, no stat per object). A candidate is
recognised only if all of these hold:

- its inode is the inode of exactly one ``objects/XX/*.file`` entry, and the index
  holds that id as a regular file (not a symlink: bare-user stores symlinks as small
  regular files; not an orphan file the index does not know);
- it is unchanged since it was linked: mtime 0 (as every object file is written; a
  write moves it), the recorded size, and the permission bits the recorded header
  gives an object file in this mode (a chmod changes them); in bare mode the owner
  too. A change that keeps all of those (a write followed by resetting mtime to 0,
  an xattr changed through a bare farm) damaged the object itself: fsck's business,
  as it is for every other file of the farm that shares it;
- where the recorded header says more than the file shows (bare-user: the recorded
  owner, setuid bits and xattrs are in an xattr, the file is the user's), the
  directory holding the link belongs to the committing user and nobody else can
  write to it. Otherwise another user who can reach an object (a farm in a shared
  place, and a filesystem without protected_hardlinks, or an object recorded
  group-writable) could hardlink, say, an old setuid-root binary of the history into
  a tree the committer trusts, and the commit would record it setuid root at a path
  of their choosing; read as usual, it is recorded as the plain file it shows.

Archive objects are compressed, never linked by checkout: nothing is recognised
there (a hardlink of a .filez is read as the compressed bytes it holds).

The listing trusts d_ino to be st_ino, as it is on ext4, xfs, btrfs and tmpfs. Where a
filesystem says otherwise (overlayfs may remap st_ino), one entry of each
``objects/XX/`` is lstat'ed while listing (256 stats, not one per object): a single
mismatch and nothing is recognised, every farm file is read as usual. The listing is
made under the transaction's shared lock, so prune cannot remove an object while it is
used; an object file removed behind the store's back is fsck's to report (its inode,
reused by a new file, would also need more than one link, mtime 0 and the object's
size and bits to be taken for it).
"""

from __future__ import annotations

import logging
import os
import resource
import stat
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import store.inode_cache as inode_cache
from store.content import user_object_mode
from store.ids import ObjectId
from store.index import IndexReader
from store.modes import RepoMode

log = logging.getLogger(__name__)
_HEX_NAME = 62  # hex digits of an object's name after its two-digit directory
_NAME_SIZE = _HEX_NAME + len(".file")
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH
_LISTING_THREADS = 8
_COLD_IN_A_ROW = 2  # directories of objects/ read from the disk one after the other
_ID = 32  # bytes of an object id


# made by call, not by class: see store/objects.py's FileStat
LinkedObject = NamedTuple(  # noqa: UP014 (see above)
    "LinkedObject", [("object_id", ObjectId), ("uid", int), ("gid", int), ("mode", int)]
)
LinkedObject.__doc__ = """A content object that a source file is (the same inode,
unchanged): its id and the owner and full mode its header records."""


class ObjectInodes:
    """The inodes of one repository's file objects, listed once, when first asked."""

    def __init__(self, mode: RepoMode, objects_dir: str, saved: str | None = None) -> None:
        """``saved``: where the listing is kept between commits (store/inode_cache.py);
        None lists objects/ every time."""
        self._mode = mode
        self._objects = objects_dir
        self._saved = saved
        self._device: int | None = None
        self._by_inode: ObjectListing | None = None
        self._euid = os.geteuid()  # the committing user, for _trusted

    def device(self) -> int:
        """st_dev of the object files: no file elsewhere can be one of them; -1 (no
        file's) where they are not all there (store.inode_cache.objects_device)."""
        if self._device is None:
            self._device = inode_cache.objects_device(self._objects)
        return self._device

    def lookup(
        self, reader: IndexReader, st: os.stat_result, parent: os.stat_result
    ) -> LinkedObject | None:
        """The object the file ``st`` (an lstat) is, in the directory ``parent`` (an
        lstat), if it is recognised as the module's docstring says; else None."""
        return self.lookup_many(reader, [st], parent)[0]

    def lookup_many(
        self, reader: IndexReader, stats: Sequence[os.stat_result], parent: os.stat_result
    ) -> list[LinkedObject | None]:
        """:meth:`lookup` of each file of one directory (``parent``), in that order.

        One call a directory, not one a file: a farm's re-commit does little else per
        file (OSTree's own lookup is one hash probe), so the directory's trust is
        decided once and each file costs a bisect, an index read and a comparison."""
        found: list[LinkedObject | None] = [None] * len(stats)
        if self._mode is RepoMode.BARE_USER and not _trusted(parent, self._euid):
            return found  # nothing here is recognised: every file is read as it shows
        device = self.device()
        places = [p for p, st in enumerate(stats) if st.st_dev == device and _candidate(st)]
        if not places:
            return found
        named = self._listing().find([stats[place].st_ino for place in places])
        places = [place for place, object_id in zip(places, named, strict=True) if object_id]
        ids = [object_id for object_id in named if object_id is not None]
        for place, object_id, recorded in zip(places, ids, reader.regular_files(ids), strict=True):
            if recorded is None:
                continue
            uid, gid, mode, size = recorded
            linked = LinkedObject(object_id, uid, gid, mode)
            if _unchanged(self._mode, stats[place], linked, size):
                found[place] = linked
        return found

    def _listing(self) -> ObjectListing:
        if self._by_inode is None:
            self._by_inode = self._saved_listing()
            log.debug("listed the inodes of %d objects", len(self._by_inode))
        return self._by_inode

    def _saved_listing(self) -> ObjectListing:
        """The listing saved by an earlier commit if objects/ has not changed since;
        else objects/ listed, and that listing saved for the next commit (when its
        directories have settled: store/inode_cache.py)."""
        if self._saved is None:
            return _list_objects(self._objects)
        keys, settled = inode_cache.directory_keys(self._objects)  # before any listing
        saved = inode_cache.load(self._saved, keys)
        if saved is not None:
            return ObjectListing(*saved)
        unreadable: list[str] = []
        listing = _list_objects(self._objects, unreadable)
        if settled and len(listing) and not unreadable:  # a directory missed: not saved
            inode_cache.save(self._saved, keys, listing.inodes, listing.ids)
        return listing


def still_linked(
    mode: RepoMode,
    st: os.stat_result,
    parent: os.stat_result,
    recorded: LinkedObject,
    size: int,
    euid: int | None = None,
) -> bool:
    """Whether a file that shares the inode of the object ``recorded`` (of ``size``
    bytes) is still that object as a checkout linked it, and in a place to trust: the
    rule of the module's docstring, for commit (:meth:`ObjectInodes.lookup_many`) and
    for ``diff REV DIR`` alike, so that diff reports what a re-commit would record.

    ``st`` is the file's lstat, ``parent`` that of its directory, ``euid`` the
    committing user (default: this process's)."""
    if not _candidate(st) or not _unchanged(mode, st, recorded, size):
        return False
    return mode is not RepoMode.BARE_USER or _trusted(
        parent, os.geteuid() if euid is None else euid
    )


def _unchanged(mode: RepoMode, st: os.stat_result, recorded: LinkedObject, size: int) -> bool:
    """Whether a candidate (:func:`_candidate`) shows what the object ``recorded`` (of
    ``size`` bytes) shows in ``mode``: its size and bits, and in bare its owner."""
    if st.st_size != size:
        return False
    if mode is RepoMode.BARE:
        return (st.st_mode, st.st_uid, st.st_gid) == (recorded.mode, recorded.uid, recorded.gid)
    return stat.S_IMODE(st.st_mode) == user_object_mode(recorded.mode)


def _candidate(st: os.stat_result) -> bool:
    """What every linked, unchanged object file shows: checked before any listing."""
    return stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and st.st_mtime_ns == 0


def _trusted(parent: os.stat_result, euid: int) -> bool:
    """A directory only the committing user (``euid``) can add entries to."""
    return parent.st_uid == euid and not parent.st_mode & _WRITABLE_BY_OTHERS


class ObjectListing:
    """inode -> id of every object file, packed: the inode numbers sorted in an array and
    the ids in the same order in one bytes string, 40 bytes an object (a dict of inode
    to hex name held 284: 270 MiB at a million objects, beside commit's own memory)."""

    __slots__ = ("_ids", "_inodes")

    def __init__(self, inodes: array[int] | None = None, ids: bytes = b"") -> None:
        self._inodes = inodes if inodes is not None else array("Q")
        self._ids = ids

    def __len__(self) -> int:
        return len(self._inodes)

    @property
    def inodes(self) -> array[int]:
        """The inode numbers, sorted."""
        return self._inodes

    @property
    def ids(self) -> bytes:
        """The ids packed, in the order of :attr:`inodes`."""
        return self._ids

    def find(self, inodes: list[int]) -> list[ObjectId | None]:
        """:meth:`get` of each inode, in that order."""
        listed, ids, last = self._inodes, self._ids, len(self._inodes) - 1
        found: list[ObjectId | None] = []
        for inode in inodes:
            index = bisect_left(listed, inode)
            if (
                index > last
                or listed[index] != inode
                or (index < last and listed[index + 1] == inode)
            ):
                found.append(None)
            else:
                found.append(ObjectId(ids[_ID * index : _ID * index + _ID]))
        return found

    def get(self, inode: int) -> ObjectId | None:
        """The object whose file has this inode; None for none, or for an inode listed
        under two names (trusted for neither)."""
        return self.find([inode])[0]


def _list_objects(objects: str, unreadable: list[str] | None = None) -> ObjectListing:
    """The inodes of every ``objects/XX/*.file``; empty if d_ino cannot be trusted.

    The 256 directories are listed one after the other while they come from memory
    (threads only compete for the interpreter then: 47,000 objects, warm, 0.065 s
    against 0.14 s in 8 threads); from the first one whose listing read the disk on,
    the rest are listed by a few threads: getdents waits on the disk without the GIL,
    so a cold listing overlaps its reads (cold: 0.15-0.3 s against 0.33-0.39 s). Two
    in a row, not one: page cache idle for a minute is paged out on this VM (DAMON),
    and a directory or two of a warm objects/ read back must not hand the warm rest to
    threads that compete for the interpreter (47,000 objects: 0.065 -> 0.13 s).
    ``unreadable`` gets the objects/XX that could not be listed (too many open files, a
    damaged directory): their objects are read as usual, and such a listing must not be
    saved for later commits as if they held none (review16 R16-8)."""
    missed = [] if unreadable is None else unreadable
    prefixes = [f"{b:02x}" for b in range(256)]
    parts: list[tuple[array[int], bytes] | None] = []
    cold_in_a_row = 0
    for place, prefix in enumerate(prefixes):
        before = _blocks_read()
        parts.append(_list_prefix(objects, prefix, missed))
        cold_in_a_row = cold_in_a_row + 1 if _blocks_read() != before else 0
        if cold_in_a_row == _COLD_IN_A_ROW:
            rest = prefixes[place + 1 :]
            with ThreadPoolExecutor(_LISTING_THREADS) as pool:
                parts += pool.map(_list_prefix, [objects] * len(rest), rest, [missed] * len(rest))
            break
    inodes: array[int] = array("Q")
    ids = bytearray()
    for part in parts:
        if part is None:
            log.info("%s: directory entries do not give inodes; farms are read", objects)
            return ObjectListing()
        inodes.extend(part[0])
        ids += part[1]
    order = sorted(range(len(inodes)), key=inodes.__getitem__)
    each = [ids[start : start + _ID] for start in range(0, len(ids), _ID)]
    packed = b"".join([each[index] for index in order])  # one join: a third of the time
    return ObjectListing(array("Q", [inodes[index] for index in order]), packed)


def _blocks_read() -> int:
    """512-byte blocks this thread has read from the disk so far."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_inblock


def _list_prefix(
    objects: str, prefix: str, unreadable: list[str]
) -> tuple[array[int], bytes] | None:
    """The inodes and ids (packed, in the same order) of the file objects in
    ``objects/prefix``; None if one entry's d_ino is not its st_ino (the first is
    checked)."""
    try:
        listing = os.scandir(f"{objects}/{prefix}")
    except FileNotFoundError:
        return array("Q"), b""  # none made yet
    except OSError:
        unreadable.append(prefix)  # list.append: safe from the listing threads
        return array("Q"), b""  # its objects are read as usual
    with listing:
        found = [entry for entry in listing if len(entry.name) == _NAME_SIZE]
    found = [entry for entry in found if entry.name.endswith(".file")]
    if not found:
        return array("Q"), b""
    if not _inode_is_true(found[0]):
        return None
    # One conversion for the whole directory (each name's 62 digits after the prefix),
    # taken only if it gives back the same text: fromhex skips spaces and reads upper
    # case, and neither names an object (whose file the store would never open).
    text = prefix + prefix.join([entry.name[:_HEX_NAME] for entry in found])
    try:
        ids = bytes.fromhex(text)
    except ValueError:
        ids = b""
    if len(ids) != _ID * len(found) or ids.hex() != text:
        found, ids = _hex_named(prefix, found)
    return array("Q", [entry.inode() for entry in found]), ids


def _hex_named(prefix: str, found: list[os.DirEntry[str]]) -> tuple[list[os.DirEntry[str]], bytes]:
    """The entries whose names are an object's id in lower-case hex, and those ids, one
    by one."""
    kept: list[os.DirEntry[str]] = []
    ids = bytearray()
    for entry in found:
        text = prefix + entry.name[:_HEX_NAME]
        try:
            object_id = bytes.fromhex(text)
        except ValueError:
            continue
        if len(object_id) == _ID and object_id.hex() == text:
            kept.append(entry)
            ids += object_id
    return kept, bytes(ids)


def _inode_is_true(entry: os.DirEntry[str]) -> bool:
    """Whether the entry's d_ino is the st_ino an lstat of it gives."""
    try:
        return entry.stat(follow_symlinks=False).st_ino == entry.inode()
    except OSError:
        return False  # gone meanwhile: take no chance
