"""The directories a ``static-delta generate`` writes in (``REPO/deltas/``), and what a
killed one leaves there.

A generate writes its parts into ``.tmp-NAME-LUNIQUE``, renamed NAME once whole; a delta
it replaces is first renamed ``.old-NAME-LUNIQUE``, then removed. Each of these is
locked (flock) by its generate for as long as it runs, as a transaction locks its
staging directory (store/staging.py): a directory nobody holds is a dead generate's and
the next generate or prune removes it at once. Told by the lock, not by a PID: no PID
reused by another process, no PID namespace, no minute to wait (session 14's rule, kept
for the ``.tmp-NAME-PID`` names older sapwoods leave, which hold no lock: one of them
may still be running beside this one). An ``.old-`` one whose NAME is gone (killed
between its two renames) is put back as NAME: it is the published delta, whole. The
directory is made under a ``.new-`` name and locked before it is renamed ``.tmp-``, so
an unlocked ``.tmp-`` is never one being born; a ``.new-`` one goes once it is older
than a crash between mkdir and lock can make it look.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from store.locking import try_lock_dir, unlock_and_close

log = logging.getLogger(__name__)

_LOCKED_NAME = re.compile(r"\.(tmp|old|new)-(.+)-L[0-9a-f]{12}")
_NEW_DIR_GRACE = 600.0  # seconds a .new- directory may stay unlocked (mkdir, then lock)
_LEFTOVER_AGE = 60.0  # seconds untouched before an older sapwood's leftover is removed
_CLOCK_SLACK = 2.0  # seconds: /proc/stat's btime is whole seconds


class WorkDir:
    """A generate's locked directory for delta NAME: ``path`` (.tmp-NAME-LUNIQUE) to
    write in, ``old`` (.old-NAME-LUNIQUE) for the delta it replaces. ``close()``
    lets go of the locks (at the end, published or not)."""

    def __init__(self, root: Path, name: str) -> None:
        self._owner = os.getpid()
        unique = f"L{os.urandom(6).hex()}"  # not uuid: it imports platform
        fresh = root / f".new-{name}-{unique}"
        fresh.mkdir()
        lock = try_lock_dir(fresh)
        assert lock is not None, "a directory nobody else knows of is always free"
        self.path = root / f".tmp-{name}-{unique}"
        try:
            fresh.rename(self.path)
        except BaseException:
            unlock_and_close(lock, self._owner)  # the .new- one goes at the next clean-up
            raise
        self.old = root / f".old-{name}-{unique}"
        self._locks = [lock]

    def hold(self, path: Path) -> None:
        """Lock ``path`` too (a published delta about to become ``old``), if nobody
        else holds it (a generate of the same delta that just published it: it lets go
        when it ends, and the leftover is removable then)."""
        lock = try_lock_dir(path)
        if lock is not None:
            self._locks.append(lock)

    def close(self) -> None:
        while self._locks:
            unlock_and_close(self._locks.pop(), self._owner)


def remove_leftovers(root: Path) -> int:
    """Remove what killed generates left in ``root``: the locked kind's directories that
    nobody holds, an older sapwood's by its PID rule (:func:`_dead_pid_leftover`);
    return how many. A running generate's (this process's or another's) stays."""
    import shutil  # here: see store/deltas.py's imports

    removed = 0
    try:
        entries = [e for e in os.scandir(root) if e.name.startswith((".tmp-", ".old-", ".new-"))]
    except OSError:
        return 0
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        kind = _LOCKED_NAME.fullmatch(entry.name)
        if kind is None:
            if _dead_pid_leftover(path):
                log.info("%s: left by a generate that is gone, removed", path)
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
            continue
        if kind.group(1) == "new" and not _older_than(path, _NEW_DIR_GRACE):
            continue
        lock = try_lock_dir(path)
        if lock is None:
            continue  # a live generate's
        try:
            published = root / kind.group(2)
            if kind.group(1) == "old" and not os.path.lexists(published):
                # killed between its two renames: the delta it replaced is whole and the
                # only one (review21 10)
                log.info("%s: put back as %s (its generate was killed)", path, published.name)
                try:
                    os.rename(path, published)
                except OSError as exc:  # published meanwhile by a live generate: next time
                    log.info("%s: not put back (%s)", path, exc)
                continue
            log.info("%s: left by a generate that is gone, removed", path)
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        finally:
            unlock_and_close(lock, os.getpid())
    return removed


def remove_dead_old(root: Path, name: str) -> bool:
    """Remove the ``.old-NAME-L...`` directories of delta ``name`` that no live generate
    holds (a killed one's: the delta it was replacing); whether there was one."""
    import shutil  # here: see store/deltas.py's imports

    removed = False
    for path in root.glob(f".old-{name}-L*"):
        if not _LOCKED_NAME.fullmatch(path.name) or not path.is_dir():
            continue
        lock = try_lock_dir(path)
        if lock is None:
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed = True
        finally:
            unlock_and_close(lock, os.getpid())
    return removed


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.lstat().st_mtime > seconds
    except OSError:
        return False


def _dead_pid_leftover(path: Path) -> bool:
    """An older sapwood's ``.tmp-NAME-PID`` or ``.old-NAME-PID`` (no lock): dead once
    nothing in it changed for a minute and its process is gone (no process of that PID,
    or one started after the leftover last changed: the PID reused). A process of
    another PID namespace is not seen, hence the minute."""
    tail = path.name.rpartition("-")[2]
    if path.name.startswith(".new-") or not (tail.isascii() and tail.isdigit()):
        return False
    if len(tail) >= 12 or int(tail) == os.getpid():
        return False
    changed = _last_change(path)
    if changed is None or time.time() - changed < _LEFTOVER_AGE:
        return False
    return not _process_alive_since(int(tail), changed)


def _last_change(path: Path) -> float | None:
    """The newest mtime of a directory and of what it holds (a part being written)."""
    try:
        newest = path.lstat().st_mtime
        with os.scandir(path) as inside:
            for item in inside:
                newest = max(newest, item.stat(follow_symlinks=False).st_mtime)
    except OSError:
        return None
    return newest


def _process_alive_since(pid: int, changed: float) -> bool:
    """Whether process ``pid`` exists and may be the one that last changed a leftover at
    ``changed`` (it started before then); True when it cannot be told."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # alive, another user's
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            fields = stat_file.read().rpartition(b")")[2].split()
        with open("/proc/stat", "rb") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith(b"btime "))
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return True
    return started <= changed + _CLOCK_SLACK
