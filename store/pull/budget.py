"""The connections a pull holds open at once: at most ``settings.connections``.

SAPWOOD_HTTP_CONNECTIONS is the user's knob for what a server, a proxy or a CDN allows
one client (nginx ``limit_conn``; OSTree's default is 8). A pull fetches from more
threads than that (the content pool, the metadata pool, the main thread), each by two
ways (the pipelined lane, the per-object path), and each kept its own connections
alive: 13 were open at once for 8, 3 for 1 (review12.md, finding 1).

So a thread fetches only while it holds a :class:`Slot` of the pull's :class:`Budget`
(``connections`` of them): the slot carries at most one connection, of either way; a
slot given back with its connection still open leaves that connection idle in the
budget, kept alive for the next thread that takes a slot (a connection of the other
way is closed and replaced, never held beside it). A thread that finds every slot
taken waits for one. A thread that holds a slot already (the per-object rest of a
pipelined call) uses the same one.

The budget also halts (:meth:`Budget.halt`: a Ctrl-C, or an error the pull raises
already): every socket in use is shut down (which ends a recv blocked in another
thread, and a connect in progress), idle ones are closed, and every later fetch, or a
socket being opened, raises :class:`Halted` (store.errors' PullHaltedError).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from store.errors import PullHaltedError

Halted = PullHaltedError  # the name store/pull's modules and tests use


class Kept(Protocol):
    """A connection of either way (the lane's, urllib3's) as the budget sees it."""

    @property
    def is_connected(self) -> bool: ...

    def close(self) -> None: ...


class Slot:
    """One of a pull's connections: the one it carries (``conn``, None until a way
    makes one) and the socket in use (``sock``, shut down by a halt)."""

    __slots__ = ("_budget", "conn", "sock")

    def __init__(self, budget: Budget, conn: Kept | None) -> None:
        self._budget = budget
        self.conn = conn
        self.sock: socket.socket | None = None

    def watch(self, sock: socket.socket) -> None:
        """``sock`` is what this slot uses now (a socket about to connect, a TLS one
        wrapped around it): a halt shuts it down. Halted (``sock`` closed) if the pull
        halted already."""
        self._budget._watch(self, sock)

    def swap(self, conn: Kept | None) -> None:
        """Carry ``conn`` instead (the one carried before, if another, is closed)."""
        old, self.conn = self.conn, conn
        if old is not None and old is not conn:
            old.close()
        if conn is None:
            self.sock = None


class Budget:
    """At most ``limit`` connections open at once; thread-safe."""

    def __init__(self, limit: int) -> None:
        self._free = limit  # slots nobody holds and no idle connection holds
        self._idle: list[Kept] = []  # kept alive, each holding a slot's place
        self._busy: set[Slot] = set()
        self._cond = threading.Condition()
        self._local = threading.local()  # .slot: the one this thread holds
        self.halted = threading.Event()

    @contextlib.contextmanager
    def slot(self) -> Iterator[Slot]:
        """This thread's slot while the block runs: the one it holds already, else one
        taken (waiting for it if every slot is taken), given back at the end."""
        held: Slot | None = getattr(self._local, "slot", None)
        if held is not None and held in self._busy:  # (not one a generator closed
            yield held  # on another thread gave back)
            return
        slot = self._take()
        self._local.slot = slot
        try:
            yield slot
        finally:
            if getattr(self._local, "slot", None) is slot:
                self._local.slot = None
            self._give(slot)

    def halt(self) -> None:
        with self._cond:
            self.halted.set()
            socks = [slot.sock for slot in self._busy if slot.sock is not None]
            idle, self._idle = self._idle, []
            self._free += len(idle)
            self._cond.notify_all()
        for sock in socks:
            shut_down(sock)
        for conn in idle:
            conn.close()

    def close(self) -> None:
        """Close the idle connections (the pull is over)."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._free += len(idle)
        for conn in idle:
            conn.close()

    def _take(self) -> Slot:
        with self._cond:
            while True:
                if self.halted.is_set():
                    raise Halted
                if self._idle:
                    slot = Slot(self, self._idle.pop())  # the last given back: warmest
                    break
                if self._free > 0:
                    self._free -= 1
                    slot = Slot(self, None)
                    break
                self._cond.wait()
            self._busy.add(slot)
            return slot

    def _give(self, slot: Slot) -> None:
        conn = slot.conn
        keep = conn is not None and not self.halted.is_set() and conn.is_connected
        if conn is not None and not keep:
            conn.close()
        with self._cond:
            self._busy.discard(slot)
            slot.sock = None
            if keep and conn is not None:
                self._idle.append(conn)
            else:
                self._free += 1
            self._cond.notify()

    def _watch(self, slot: Slot, sock: socket.socket) -> None:
        with self._cond:
            if not self.halted.is_set():
                slot.sock = sock
                return
        sock.close()
        raise Halted


def open_socket(
    host: str, port: int, timeout: float | None, watch: Callable[[socket.socket], None]
) -> socket.socket:
    """A TCP connection to ``host``:``port`` as socket.create_connection makes it (the
    socket left with ``timeout``), but each socket handed to ``watch`` before it
    connects, so that a halt can end a connect in progress (a shutdown aborts it at once
    on Linux; it waited out the connect timeout: attack14.md), and again once its
    connect has started (:func:`_connect`)."""
    error: OSError | None = None
    # an ASCII name as bytes: getaddrinfo encodes a str with the "idna" codec, whose
    # import (stringprep, unicodedata) cost every pull ~5 M instructions
    name = host.encode("ascii") if host.isascii() else host
    for family, kind, proto, _, address in socket.getaddrinfo(name, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            watch(sock)
            _connect(sock, address, timeout, watch)
            sock.settimeout(timeout)
            return sock
        except OSError as exc:
            error = exc
            sock.close()
        except BaseException:
            sock.close()
            raise
    raise error if error is not None else OSError(f"no address for {host}")


def _connect(
    sock: socket.socket,
    address: tuple[object, ...],
    timeout: float | None,
    watch: Callable[[socket.socket], None],
) -> None:
    """Connect without blocking, then wait for it. A halt that shut ``sock`` down
    before its connect started did not abort it (Linux only marks an unconnected
    socket shut: a later connect then seems to succeed at once, a quirk nothing should
    rest on), so ``sock`` is watched again once the SYN is on its way (Halted, if the
    pull halted meanwhile) and after the wait; a halt after that second watch aborts
    the connect, which ends the wait (review13 L1)."""
    sock.setblocking(False)
    try:
        sock.connect(address)
    except (BlockingIOError, InterruptedError):  # under way: waited for below
        started = True
    else:
        started = False  # connected at once
    watch(sock)
    if not started:
        return
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    due = None if timeout is None else time.monotonic() + timeout
    while not poller.poll(None if due is None else max(due - time.monotonic(), 0) * 1000):
        if due is not None and time.monotonic() >= due:
            raise TimeoutError("timed out")
    watch(sock)
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, os.strerror(code))


def shut_down(sock: socket.socket) -> None:
    """End every read blocked on ``sock`` (the plain socket's shutdown, under TLS too)."""
    with contextlib.suppress(OSError):  # closed already
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
