"""A pull that succeeded ends its process without the interpreter's finalization
(docs/decisions.md, "The update pull, session 11"): its output flushed, the atexit
handlers run, nothing else torn down; a failed pull, a live thread, or any other
command ends as before."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from sapwood.cli import main as cli_main
from sapwood.cli import output
from tests.helpers import write_tree
from tests.net.repos import add_remote, archive_of, fsck_clean, local_repo, refs
from tests.net.servers import Nginx

# run() from a script that says when the interpreter's finalization starts (threading's
# shutdown hooks run first in Py_FinalizeEx, not by atexit) and when the atexit
# handlers run
_PROBE = """
import atexit, os, sys, threading
threading._register_atexit(lambda: os.write(2, b"finalized\\n"))
atexit.register(lambda: sys.stderr.write("atexit ran\\n"))
sys.argv = ["sapwood", *sys.argv[1:]]
from sapwood.cli.main import run
run()
"""


def _sapwood(local: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROBE, "--repo", str(local), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_pull_ends_at_once_and_anything_else_as_before(
    tmp_path: Path, nginx: Callable[[Path], Nginx]
) -> None:
    served = tmp_path / "served"
    new = archive_of(served / "repo", write_tree(tmp_path / "tree", {"a": "1\n", "d/b": "2\n"}))
    server = nginx(served)
    local = local_repo(tmp_path / "local")
    add_remote(local, f"{server.url}repo/")

    pulled = _sapwood(local, "pull", "origin", "main")
    assert pulled.returncode == 0, pulled.stderr
    # stdout is a pipe (block-buffered): the report's lines are all there
    assert pulled.stdout.splitlines()[0].startswith(f"origin:main: (new) -> {new}")
    assert pulled.stdout.splitlines()[1].startswith("fetched ")
    assert "atexit ran" in pulled.stderr and "finalized" not in pulled.stderr
    assert refs(local)["origin:main"] == new
    fsck_clean(local)

    failed = _sapwood(local, "pull", "origin", "no-such-ref")
    assert failed.returncode != 0
    assert "atexit ran" in failed.stderr and "finalized" in failed.stderr

    listed = _sapwood(local, "refs")
    assert listed.returncode == 0 and "origin:main" in listed.stdout
    assert "finalized" in listed.stderr


def test_a_live_thread_keeps_the_ordinary_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    ended: list[int] = []
    monkeypatch.setattr("sapwood.cli.main.os._exit", ended.append)
    monkeypatch.setattr("sapwood.cli.main.atexit._run_exitfuncs", lambda: None)
    monkeypatch.setattr(output, "_EXIT_AT_ONCE", [False])
    every = threading.enumerate
    earlier = set(every()) - {threading.main_thread()}  # this process's, of earlier tests
    monkeypatch.setattr(threading, "enumerate", lambda: [t for t in every() if t not in earlier])
    cli_main._end_at_once(0)
    assert ended == []  # not asked for
    output.exit_at_once()
    release = threading.Event()
    worker = threading.Thread(target=release.wait)
    worker.start()
    try:
        cli_main._end_at_once(0)
        assert ended == []  # a thread still runs: it may be writing
    finally:
        release.set()
        worker.join()
    cli_main._end_at_once(1)
    assert ended == []  # a failure ends as it always did
    watchdog = threading.Thread(target=release.wait, daemon=True)  # never waited for
    release.clear()
    watchdog.start()
    try:
        cli_main._end_at_once(0)
        assert ended == [0]  # a daemon thread does not keep the early exit away (R16-4)
    finally:
        release.set()
        watchdog.join()
