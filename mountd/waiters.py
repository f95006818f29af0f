"""Whether the process that sent a request is still there to take its answer.

The kernel names the process (the thread) behind every FUSE request in its header, the
read-ahead it sends for a reader too (the request is made in the reader's context), and
libfuse gives it to the daemon (pyfuse3 passes it to read() with sapwood's patch:
patches/pyfuse3-no-open.patch, ``read_passes_ctx``). A reader killed while its read-ahead
waits for a verification of minutes (a hostile object) is gone at once, its request
still out: nothing else tells the daemon (no FUSE_INTERRUPT for a background request, no
release without opens). mountd/preparing.py asks here whether anyone still waits for a
verification, and gives it up when no one does.

Only a sure answer says gone: the process has exited (no such process, or a zombie),
is exiting (PF_EXITING: its SIGKILL taken, it can stay seconds in do_exit on a busy
machine, neither pending a signal nor a zombie) or is being killed (SIGKILL pending: a
killed reader of a synchronous request waits, uninterruptibly, for the daemon's answer).
Anything unknown is alive: pid 0 (the kernel could not name the reader in the
daemon's pid namespace), a /proc that is not this process's namespace's, a /proc/PID
that cannot be read. A pid reused by another process is taken for the reader (alive):
the safe side, its verification goes on.
"""

from __future__ import annotations

import os
import signal

_SIGKILL = 1 << (signal.SIGKILL - 1)  # in the pending signals of /proc/PID/stat
_PENDING = 28  # their field, counted from the state (the 3rd of /proc/PID/stat: 31st)
_FLAGS = 6  # the task's flags (the 9th field)
_PF_EXITING = 0x4  # in them: in do_exit, never to return to user space
_PIDFD_THREAD = os.O_EXCL  # pidfd_open of a thread's id (Linux 6.9): its value


def _own_proc() -> bool:
    """Whether /proc shows this process's pid namespace (the one the kernel names a
    request's process in: the daemon mounted the file system)."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


class Liveness:
    """Answers :meth:`gone` for the pids of requests (on the daemon's loop)."""

    def __init__(self) -> None:
        self.usable = _own_proc()

    def gone(self, pid: int) -> bool:
        """True only if process (or thread) ``pid`` has exited or is being killed."""
        if pid <= 0 or not self.usable:
            return False
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                line = stat.read()
        except FileNotFoundError:
            return _no_such_process(pid)  # or one /proc hides from us (hidepid)
        except OSError:
            return False
        fields = line[line.rfind(b")") + 2 :].split()
        try:
            state, flags, pending = fields[0], int(fields[_FLAGS]), int(fields[_PENDING])
        except (IndexError, ValueError):
            return False
        return state in (b"Z", b"X", b"x") or bool(flags & _PF_EXITING or pending & _SIGKILL)


def _no_such_process(pid: int) -> bool:
    """Asked of the kernel, not of /proc (which may hide other users' processes)."""
    for flags in (_PIDFD_THREAD, 0):
        try:
            fd = os.pidfd_open(pid, flags)
        except ProcessLookupError:
            return True
        except OSError:
            # a kernel before 6.9 refuses PIDFD_THREAD whatever the pid (R17-12: every
            # reaped reader looked alive there): asked again without it; refused again,
            # pid is a live thread's that is not its process's: unknown
            continue
        os.close(fd)
        return False
    return False
