"""What the scan's prefetcher (fs/prefetch.py) lists, and where, for its tests."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import fs.prefetch
import fs.prefetch_child
import fs.prefetch_threads
from fs.prefetch import Prefetcher
from fs.prefetch_threads import PrefetchThreads

_CHILD_COMMAND = fs.prefetch._child_command  # as imported, before conftest.py's fixture


def prefetcher_listings(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, ...]]:
    """The directories the prefetcher's threads list in this process, as they list
    them (a list that grows)."""
    listed: list[tuple[bytes, ...]] = []
    real = PrefetchThreads._list

    def spy(
        self: PrefetchThreads, path: tuple[bytes, ...], subdirs: list[tuple[bytes, ...]]
    ) -> None:
        listed.append(path)
        real(self, path, subdirs)

    monkeypatch.setattr(PrefetchThreads, "_list", spy)
    return listed


def lists_in_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefetcher lists in threads of this process, as in a program that embeds
    Python (no interpreter to start its child with), where tests can watch and steer
    them."""
    monkeypatch.setattr(fs.prefetch, "_child_command", lambda: None)


def lists_in_a_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefetcher lists in its child process, as in the sapwood command."""
    monkeypatch.setattr(fs.prefetch, "_child_command", _CHILD_COMMAND)


def reads_from_the_disk(monkeypatch: pytest.MonkeyPatch, blocks_read: Callable[[], int]) -> None:
    """``blocks_read`` answers, for the scan and for the threads of this process, how
    many blocks the calling thread has read from the disk (disk reads simulated)."""
    monkeypatch.setattr(fs.prefetch, "blocks_read", blocks_read)
    monkeypatch.setattr(fs.prefetch_threads, "blocks_read", blocks_read)


# The child with a spy: fs/prefetch_child.py's main, run by a script that notes each
# directory its threads list ("listed" and the path, hex) and, once they have all ended,
# the modules it loaded beyond the standard library ("ended" and their names), in the
# file its first argument names.
_SPY = """
import os, sys, threading
sys.path.append(ROOT)
from fs import prefetch_child
from fs.prefetch_threads import PrefetchThreads
out = os.open(sys.argv.pop(1), os.O_WRONLY | os.O_APPEND)
real_list, real_work = PrefetchThreads._list, PrefetchThreads._work
lock, ended = threading.Lock(), []
def spy_list(self, path, subdirs):
    os.write(out, b"listed %s\\n" % b"/".join(path).hex().encode())
    real_list(self, path, subdirs)
def spy_work(self):
    try:
        real_work(self)
    finally:
        with lock:
            ended.append(self)
            if len(ended) == self._count:
                names = (n for n in sys.modules if n.split(".")[0] not in sys.stdlib_module_names)
                os.write(out, b"ended %s\\n" % " ".join(sorted(names)).encode())
PrefetchThreads._list, PrefetchThreads._work = spy_list, spy_work
prefetch_child.main(sys.argv)
"""


def spy_child_command(script: Path, out: str) -> list[str]:
    """The command line of a child that runs fs/prefetch_child.py's main as the real
    one does (``python -I -S``, arguments after these), its listings noted in ``out``
    (a file, or /dev/stdout); ``script`` is written."""
    root = Path(fs.prefetch_child.__file__).resolve().parents[1]
    script.write_text(_SPY.replace("ROOT", repr(str(root))))
    return [sys.executable, "-I", "-S", str(script), out]


def spied(lines: list[bytes]) -> tuple[list[tuple[bytes, ...]], list[str] | None]:
    """What a spied child noted: the directories listed, in order, and the modules
    beyond the standard library it had loaded once its threads ended (None before)."""
    listed: list[tuple[bytes, ...]] = []
    loaded = None
    for line in lines:
        word, _, rest = line.partition(b" ")
        if word == b"listed":
            joined = bytes.fromhex(rest.decode())
            listed.append(tuple(joined.split(b"/")) if joined else ())
        elif word == b"ended":
            loaded = rest.decode().split()
    return listed, loaded


def stopped_once_the_threads_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefetcher.stop waits (30 s at most) for its threads to end by themselves first:
    the scan of a small tree often ends before threads that started behind it have
    listed it all, and stops them: a test of the whole listing failed so about one run
    in four under load (test_scan_prefetch's, and test_prefetch_attacks' threads case)."""
    real_stop = Prefetcher.stop

    def stop(self: Prefetcher) -> None:
        for thread in self._threads._threads if self._threads is not None else []:
            thread.join(30)
            assert not thread.is_alive()
        real_stop(self)

    monkeypatch.setattr(Prefetcher, "stop", stop)
