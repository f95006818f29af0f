"""What a deploy copied into a deployment's users' directories, recorded so that its
drop need not read the copies again (review22 7(b)).

Deploy copies a commit's real /home, /root, /srv, /opt and /mnt (users_data.COPIED_DIRS);
a dropped deployment is removed only when each regular file there is its commit's,
which for a copy meant reading it and its object byte for byte (a 200 MB /opt: about
0.5 s of CPU per drop). Once the copies are made, deploy records each one's identity,
(st_dev, st_ino, st_ctime_ns, size) by its path below the deployment, in
``deploy/OS/deploy/ID.SERIAL.copies`` beside the origin: the sysroot's own state,
root's, never inside the deployment's tree where a user of the booted system could
write it. At the drop a copy whose identity is still its record's is the commit's
unread: a write, chmod, chown, utime, xattr change, link or rename changes ctime, and
nobody sets ctime back (a file deleted and made anew, even on the same inode, has a
later one). Anything else is compared byte for byte as before; a record that is
missing, too long, not parsable or of another directory (its own device and inode are
recorded too) is no record, so a record never keeps a users' file from being counted.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from fs.sysroot.state import read_regular
from fs.sysroot.users_data import COPIED_DIRS, MAX_DEPTH

log = logging.getLogger(__name__)

SUFFIX = ".copies"
# bound of the read: ~100 bytes a file, so about half a million copies; a longer
# record is no record (the copies are read, as without one)
LIMIT = 64 << 20
_VERSION = 1

# (st_dev, st_ino, st_ctime_ns, st_size) of a copy, by its path below the deployment
Identity = tuple[int, int, int, int]


def record_path(deployment: Path) -> Path:
    """The record of the deployment directory ``deployment`` (ID.SERIAL.copies)."""
    return deployment.with_name(deployment.name + SUFFIX)


def write_record(deployment: Path) -> None:
    """Record the regular files of the deployment's copied users' directories (called
    once they are in place), replacing by rename any record of that name; removes it
    when there is nothing to record. Written 0600, fsynced before the rename."""
    files = _identities(deployment)
    path = record_path(deployment)
    if not files:
        path.unlink(missing_ok=True)
        return
    st = os.lstat(deployment)
    text = json.dumps(
        {"version": _VERSION, "deployment": [st.st_dev, st.st_ino], "files": files},
        separators=(",", ":"),
    )
    tmp = path.with_name(f".{path.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, path)
    except BaseException:  # a full disk: nothing half-written left beside the origins
        tmp.unlink(missing_ok=True)
        raise


def _identities(deployment: Path) -> dict[str, Identity]:
    """The regular files below the real (not symlinked) COPIED_DIRS, by path as
    users_data names them ("opt/app/f": components joined by "/", names decoded as
    os.fsdecode does), never following a symlink nor leaving the filesystem."""
    found: dict[str, Identity] = {}
    try:
        device = os.lstat(deployment).st_dev
    except OSError:
        return found
    for top in COPIED_DIRS:
        pending = [(top, 0)]
        while pending:
            relative, depth = pending.pop()
            try:
                entries = list(os.scandir(deployment / relative))
            except OSError:  # absent, a symlink into var/ (a prepared tree), a file
                continue
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                path = f"{relative}/{entry.name}"
                if stat.S_ISDIR(st.st_mode) and st.st_dev == device and depth < MAX_DEPTH:
                    pending.append((path, depth + 1))
                elif stat.S_ISREG(st.st_mode):
                    found[path] = (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size)
    return found


def read_record(deployment: Path) -> Mapping[str, Identity]:
    """The identities recorded for the deployment directory ``deployment``; empty
    (every copy is read) for no record, one longer than LIMIT, one that does not
    parse or that was written for another directory than the one there now."""
    path = record_path(deployment)
    try:
        data = json.loads(read_regular(path, limit=LIMIT))
        here = os.lstat(deployment)
        return _checked(data, (here.st_dev, here.st_ino))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError too
        log.info("%s: not used (%s): the copies are compared byte for byte", path, exc)
        return {}


def _checked(data: object, directory: tuple[int, int]) -> dict[str, Identity]:
    """The record's files; ValueError for anything but what write_record writes for
    the directory of device and inode ``directory``."""
    if not isinstance(data, dict) or data.get("version") != _VERSION:
        raise ValueError("not a record of this version")
    if not _ints(data.get("deployment"), 2) or tuple(data["deployment"]) != directory:
        raise ValueError("written for another directory")
    files = data.get("files")
    if not isinstance(files, dict):
        raise ValueError("no files")
    found: dict[str, Identity] = {}
    for name, identity in files.items():
        if not _ints(identity, 4):
            raise ValueError(f"bad identity of {name!r:.80}")
        found[name] = (identity[0], identity[1], identity[2], identity[3])
    return found


def _ints(value: object, count: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == count
        and all(type(v) is int and v >= 0 for v in value)  # not a bool, not a float
    )
