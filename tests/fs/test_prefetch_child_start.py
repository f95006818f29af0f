"""The prefetch child counts the directories the scan entered while it started
(fs/prefetch_child.py, _told_so_far): cold, the interpreter takes a while to start and
the scan goes on; not counted, the threads' first listings were of directories the scan
had just read, looked warm and stopped the threads in about half the cold re-commits of
a /usr/share farm (session 12, K2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_PROBE = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from fs.prefetch_child import _told_so_far; print(_told_so_far())"
)


def _told(given: bytes, close: bool) -> str:
    """What _told_so_far says in a child whose stdin holds ``given`` before it starts
    (written first: no race with its start), the writing end kept open or closed."""
    read_end, write_end = os.pipe()
    os.write(write_end, given)
    if close:
        os.close(write_end)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, str(ROOT)],
            stdin=read_end,
            capture_output=True,
            timeout=30,
            check=True,
        )
    finally:
        os.close(read_end)
        if not close:
            os.close(write_end)
    return done.stdout.decode().strip()


def test_the_bytes_waiting_are_counted_without_waiting_for_more() -> None:
    assert _told(b"\0" * 73, close=False) == "73"


def test_nothing_waiting_counts_nothing() -> None:
    assert _told(b"", close=False) == "0"


def test_stdin_ended_means_the_parent_is_gone() -> None:
    assert _told(b"\0" * 5, close=True) == "None"
