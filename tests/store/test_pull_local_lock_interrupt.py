"""pull-local and a Ctrl-C that lands inside the thread pool's lock handling (review11 6).

A KeyboardInterrupt raised in a ``with`` of a threading.Condition just after its lock
was taken leaves the lock held: submit's (the pool's idle semaphore) did, and the
workers, then the pool's shutdown, then the process hung after "interrupted". Here the
SIGINT is sent at exactly that point, in a child process (a hang is a timeout)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from store import RepoMode, Repository
from tests.helpers import commit_dir, write_tree

ROOT = Path(__file__).resolve().parents[2]

_CHILD = """
import os, signal, sys, threading
from concurrent.futures import thread as pool_module
from pathlib import Path
from store import Repository
from store.pull import pull_local

in_submit = [False]
submits = [0]
armed = [True]
real_enter = threading.Condition.__enter__

def enter(self):
    taken = real_enter(self)
    if armed[0] and in_submit[0] and submits[0] == 3:  # workers are running by then
        armed[0] = False
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass  # Python's handler runs here, with the lock taken
    return taken

real_submit = pool_module.ThreadPoolExecutor.submit

def submit(self, *args, **kwargs):
    in_submit[0] = True
    submits[0] += 1
    try:
        return real_submit(self, *args, **kwargs)
    finally:
        in_submit[0] = False

threading.Condition.__enter__ = enter
pool_module.ThreadPoolExecutor.submit = submit
with Repository.open(Path(sys.argv[2])) as repo:
    try:
        pull_local(repo, Path(sys.argv[1]))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


def test_an_interrupt_inside_the_pools_lock_handling_does_not_hang(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "tree", {f"f{n}": f"{n}\n" for n in range(40)})
    with Repository.init(tmp_path / "src", RepoMode.BARE_USER) as src:
        commit_dir(src, source, "main")
    Repository.init(tmp_path / "dest", RepoMode.BARE_USER).close()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "src"), str(tmp_path / "dest")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert (done.returncode, done.stdout) == (0, "interrupted\n"), done.stderr[-2000:]
    with Repository.open(tmp_path / "dest") as dest:
        assert dest.ref("main") is None  # interrupted: nothing half-pulled shows
