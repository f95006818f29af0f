"""Whether the process that sent a request is still there to take its answer.

The kernel names the process (the thread) behind every FUSE request in its header, the
read-ahead it sends for a reader too (the request is made in the reader's context), and
libfuse gives it to the daemon (pyfuse3 passes it to read() with sapwood's patch:
patches/pyfuse3-no-open.patch, ``read_passes_ctx``). A reader killed while its read-ahead
waits for a verification of minutes (a hostile object) is gone at once, its request
still out: nothing else tells the daemon (no FUSE_INTERRUPT for a background request, no
release without opens). mountd/preparing.py asks here whether anyone still waits for a
verification, and gives it up when no one does.

The header names a thread, and the one who waits for the answer is its process: an
asynchronous read (Linux AIO of an O_DIRECT file, read-ahead) is sent in the name of
the thread that asked, which may end at once (a thread pool's submitter) while another
thread of its process collects the result (attack22 1: it got EINTR, its process alive).
So a request's thread is taken for its thread group when the request arrives
(:meth:`Liveness.reader`), and that process is looked at: gone once it has exited or is
being killed, not when one of its threads (its leader too: pthread_exit leaves a
zombie leader while the others run) has ended. A thread gone already when its request
arrives cannot be told apart from one of a live process: unknown, alive (a killed
reader's requests reach the daemon before it is killed; those the kernel queued past
the mount's background limit, and came after, keep their verification going, in the
overdue ones' turns, as before session 12).

Only a sure answer says gone: the process has exited (no such process, or a zombie),
is exiting (PF_EXITING: its SIGKILL taken, it can stay seconds in do_exit on a busy
machine, neither pending a signal nor a zombie) or is being killed (SIGKILL pending: a
killed reader of a synchronous request waits, uninterruptibly, for the daemon's answer).
Anything unknown is alive: pid 0 (the kernel could not name the reader in the
daemon's pid namespace), a /proc that is not this process's namespace's, a /proc/PID
that cannot be read. A pid reused by another process is taken for the reader (alive):
the safe side, its verification goes on. The pids are in the namespace of whoever
mounted (the kernel's fc->pid_ns): the daemon itself today (libfuse's fusermount3 is
its child); a mount made elsewhere and handed over (a /dev/fd/N mount point, review17
R17-2) must set ``usable`` False, else a live reader could read as another's zombie.
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
    """Answers :meth:`reader` and :meth:`gone` for the pids of requests (on the daemon's
    loop)."""

    def __init__(self) -> None:
        self.usable = _own_proc()

    def reader(self, pid: int) -> int:
        """The process (thread group id) of thread ``pid``, which sent a request now
        arriving; 0 (unknown: never gone) if that thread has ended already. A leader
        (most readers: one thread) costs a pidfd_open, another thread a read of its
        /proc status (7 and 30-40 us of CPU)."""
        if pid <= 0 or not self.usable:
            return pid
        try:
            os.close(os.pidfd_open(pid, 0))
        except ProcessLookupError:
            return 0  # ended already: whose it was, no one can say
        except OSError:
            return _thread_group(pid)  # not a leader (EINVAL), or no fd left
        return pid  # a thread-group leader: the process itself

    def gone(self, pid: int) -> bool:
        """True only if process ``pid`` (a thread group) has exited or is being killed."""
        if pid <= 0 or not self.usable:
            return False
        try:
            state, flags, pending = _task(f"/proc/{pid}/stat")
        except FileNotFoundError:
            return _no_such_process(pid)  # or one /proc hides from us (hidepid)
        except OSError:
            return False
        if pending & _SIGKILL:  # given to every thread of a group killed or exiting
            return True
        if state in (b"Z", b"X", b"x") or flags & _PF_EXITING:
            return not _other_threads_alive(pid)  # a leader that ended alone
        return False


def _task(path: str) -> tuple[bytes, int, int]:
    """A task's state, flags and pending signals, from its /proc stat file (an OSError
    if it cannot be read, ValueError included as one)."""
    with open(path, "rb") as stat:
        line = stat.read()
    fields = line[line.rfind(b")") + 2 :].split()
    try:
        return fields[0], int(fields[_FLAGS]), int(fields[_PENDING])
    except (IndexError, ValueError) as exc:
        raise OSError(f"{path}: unreadable") from exc


def _other_threads_alive(pid: int) -> bool:
    """Whether a thread of process ``pid`` other than its leader runs on (neither ended
    nor ending). Asked only of a leader that has ended: its group may live on."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # unknown: alive
    for tid in tids:
        if tid == str(pid):
            continue
        try:
            state, flags, pending = _task(f"/proc/{pid}/task/{tid}/stat")
        except FileNotFoundError:
            continue  # ended since the listing
        except OSError:
            return True
        if state not in (b"Z", b"X", b"x") and not flags & _PF_EXITING and not pending & _SIGKILL:
            return True
    return False


def _thread_group(pid: int) -> int:
    """The Tgid of thread ``pid`` (its /proc status); 0 if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            text = status.read()
    except OSError:
        return 0
    at = text.find(b"\nTgid:")
    if at < 0:
        return 0
    try:
        return int(text[at + 6 : text.find(b"\n", at + 1)])
    except ValueError:
        return 0


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
