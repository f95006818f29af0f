"""Whether the booted /etc changed after the pending deployment was made.

The /etc merge runs at deploy time: what the administrator changes in the booted /etc
afterwards (a password, a user, an SSH key) is not in the pending deployment, which
boots at the next reboot (docs/deployments.md). ``status`` says so. Change times
(ctime), not mtimes: a tool may set an mtime back (``cp -p``, ``tar``), never a ctime.
The pending deployment's root directory is never written after its deploy (it is not
running), so its ctime is when it was made.
"""

from __future__ import annotations

import os
from pathlib import Path

# entries of /etc looked at before giving up (a Debian /etc has ~1,000; status runs on
# every `admin status`, and /etc may hold what any package or administrator put there)
MAX_ENTRIES = 50_000


def etc_changed_after(etc: Path, made: Path, limit: int | None = None) -> str | None:
    """The first path under ``etc`` (relative to it, "." for itself) changed after
    ``made`` was last changed; None if none was, or either cannot be read, or none was
    among the first ``limit`` (default MAX_ENTRIES) entries looked at."""
    budget = MAX_ENTRIES if limit is None else limit
    try:
        since = os.lstat(made).st_ctime_ns
        if os.lstat(etc).st_ctime_ns > since:
            return "."
    except OSError:
        return None
    return _first_newer(etc, since, budget)


def _first_newer(etc: Path, since: int, budget: int) -> str | None:
    """Depth first, entries in the order the directory gives them, none read past the
    budget (os.walk lists each directory whole first: a bound on what is looked at did
    not bound what was read, review21 9)."""
    pending = [etc]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    budget -= 1
                    if budget < 0:
                        return None
                    try:
                        changed = entry.stat(follow_symlinks=False).st_ctime_ns
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        continue
                    if changed > since:
                        return str(Path(entry.path).relative_to(etc))
                    if is_dir:
                        pending.append(Path(entry.path))
        except OSError:
            continue
    return None
