"""Holding Ctrl-C back over a span that must not stop half-way.

A transaction renames its staged files into objects/ and then lists them in the index
(one LMDB commit). A KeyboardInterrupt in between left up to a batch of object files
the index does not list (attack11.md 1): nothing corrupt, what a crash leaves and prune
removes, but from a Ctrl-C, every time one lands there. Removing them on the way out is
not safe (a concurrent writer may have just listed the same object, named the same), so
the interrupt waits instead: the span is bounded (renames, the fsync of at most 256
directories, one LMDB commit). A SIGKILL can still land there; the design leaves those
files to prune (docs/decisions.md, "A failed compare-and-swap leaves orphan files").
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Run the block with SIGINT's Python handler held back: a SIGINT that arrives
    meanwhile is handed to that handler (KeyboardInterrupt, by default) once the block
    has ended without an error. Python runs signal handlers only in the main thread,
    so elsewhere this does nothing (no KeyboardInterrupt lands there); nor does it
    where SIGINT is ignored or kills the process (SIG_IGN, SIG_DFL: as a SIGKILL)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):
        yield
        return
    arrived: list[FrameType | None] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        arrived.append(frame)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if arrived:
        previous(signal.SIGINT, arrived[0])
