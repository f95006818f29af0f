"""The HTTP pull's batches and a Ctrl-C that lands inside a lock's handling (review11 6,
found for pull-local): a KeyboardInterrupt raised in a ``with`` of a
threading.Condition just after its lock was taken leaves the lock held. In
Batches.submit three such ``with``s run in the main thread: the queue bound's
semaphore (``_slots.acquire``), the pool's idle semaphore (``pool.submit``) and the
future's condition (``add_done_callback``). The SIGINT is sent at exactly that point
of the third submit, in a real ``sapwood pull`` run in a child process: a hang is a
timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import write_tree
from tests.net.repos import archive_of, local_repo, refs, sapwood_ok
from tests.net.servers import Nginx

ROOT = Path(__file__).resolve().parents[2]

_CHILD = """
import os, signal, sys, threading, time
from store.pull import batches as batches_module
from sapwood.cli.main import main

# which Condition entered in submit (from the third on) the SIGINT lands in, its lock
# taken: 1 the slots', 2 the pool's idle semaphore's, 3 the future's (0: none, the
# SIGINT comes before submit takes any lock)
where = int(sys.argv[2])
state = {"submits": 0, "inside": None, "armed": True}
real_enter = threading.Condition.__enter__
main_thread = threading.get_ident()  # not current_thread(): it registers unstarted threads

def targeted(condition, batches):
    if where == 1:
        return condition is batches._slots._cond
    if where == 2:
        return condition is batches._pool._idle_semaphore._cond
    return sys._getframe(2).f_code.co_name == "add_done_callback"

def enter(self):
    taken = real_enter(self)
    batches = state["inside"]
    if batches is not None and threading.get_ident() == main_thread:
        if state["armed"] and state["submits"] >= 3 and targeted(self, batches):
            state["armed"] = False
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass  # Python's handler runs here, with the lock taken
    return taken

real_submit = batches_module.Batches.submit

def submit(self, *args, **kwargs):
    state["submits"] += 1
    state["inside"] = self
    try:
        if where == 0 and state["submits"] == 3:  # before any lock: the control case
            state["armed"] = False
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
        return real_submit(self, *args, **kwargs)
    finally:
        state["inside"] = None

real_run = batches_module.Batches._run

def run(self, *args, **kwargs):
    deadline = time.monotonic() + 5  # the work submitted before still runs at the SIGINT
    while state["armed"] and time.monotonic() < deadline:
        time.sleep(0.01)
    return real_run(self, *args, **kwargs)

threading.Condition.__enter__ = enter
batches_module.Batches.submit = submit
batches_module.Batches._run = run
code = main(["--repo", sys.argv[1], "pull", "origin", "main"])
print("fired" if not state["armed"] else "not fired", flush=True)
sys.exit(code)
"""


@pytest.mark.parametrize(
    "where",
    [
        0,
        1,
        2,
        3,
    ],
    ids=["outside-locks", "slots", "pool-submit", "done-callback"],
)
def test_an_interrupt_inside_a_lock_of_the_batches_submit_does_not_hang(
    tmp_path: Path, nginx: Callable[[Path], Nginx], where: int
) -> None:
    source = write_tree(tmp_path / "tree", {f"f{n:03d}": f"file {n}\n" * 50 for n in range(300)})
    archive_of(tmp_path / "archive", source)
    server = nginx(tmp_path / "archive")
    local = local_repo(tmp_path / "local")
    sapwood_ok(local, "remote", "add", "origin", server.url)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(local), str(where)],
            capture_output=True,
            text=True,
            timeout=10,  # the control case ends in about a second
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},  # one batch: none closes before the SIGINT
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the pull hung after a Ctrl-C inside a lock of Batches.submit")
    assert done.stdout == "fired\n", done.stderr[-2000:]
    assert done.returncode == 130, done.stderr[-2000:]
    assert "origin:main" not in refs(local)
    sapwood_ok(local, "fsck")
