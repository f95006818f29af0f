"""Staging directories: where a transaction writes its objects before it publishes them,
``REPO/tmp/staging-BOOTID-…/``, each locked (flock) by its transaction for as long as it
runs, so that a directory nobody holds is a dead transaction's and can be removed."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from store.durability import boot_id
from store.locking import try_lock_dir, unlock_and_close

log = logging.getLogger(__name__)
_NEW_DIR_GRACE_SECONDS = 600


def new_staging(tmp: Path) -> tuple[Path, int]:
    """Create and lock a staging directory; it is locked before it is named staging-*."""
    unique = os.urandom(6).hex()  # not uuid: it imports platform (~2 ms a command)
    fresh = tmp / f"new-{unique}"
    fresh.mkdir()
    fd = try_lock_dir(fresh)
    assert fd is not None, "a directory nobody else knows of is always free"
    staging = tmp / f"staging-{boot_id()}-{unique}"
    fresh.rename(staging)
    return staging, fd


def remove_abandoned_staging(tmp: Path) -> None:
    """Remove staging directories whose transaction is gone (no process holds them).

    A ``new-*`` directory is unlocked for the moment between its mkdir and its lock
    (then it is renamed staging-*): only one older than that moment can be a crash's.
    """
    old_enough = time.time() - _NEW_DIR_GRACE_SECONDS
    stale_new = [e for e in tmp.glob("new-*") if _mtime(e) < old_enough]
    for entry in [*tmp.glob("staging-*"), *stale_new]:
        fd = try_lock_dir(entry)
        if fd is None:
            continue
        try:
            import shutil  # here: the usual transaction finds nothing to remove

            log.info("removing abandoned staging directory %s", entry.name)
            shutil.rmtree(entry, ignore_errors=True)
        finally:
            unlock_and_close(fd, os.getpid())  # taken just now, by this process


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")
