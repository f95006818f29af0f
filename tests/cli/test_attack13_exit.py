"""attack11.md 6 and 7: the CLI's own last lines. A Ctrl-C that ended a command is
reported once, and a further one during the interpreter's shutdown changes nothing
(exit 130, no 'Exception ignored'); an OSError's line is cut as every error line is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sapwood.cli.errors import LINE_LIMIT
from tests.helpers import cli

ROOT = Path(__file__).resolve().parents[2]

# a command interrupted by Ctrl-C, then a second Ctrl-C as the interpreter shuts down
_TWICE = """
import atexit, os, signal, sys, time
import sapwood.cli.main as m
def interrupted(args):
    raise KeyboardInterrupt
parse = m._parse
def parsed(argv):
    args = parse(argv)
    args.func = interrupted
    return args
m._parse = parsed
def again():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.1)
atexit.register(again)
sys.argv = ["sapwood", "--repo", "/nonexistent", "refs"]
m.run()
"""


def test_a_second_ctrl_c_during_shutdown_changes_nothing() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", _TWICE], capture_output=True, text=True, env=env, timeout=60
    )
    assert (done.returncode, done.stderr) == (130, "sapwood: interrupted\n")


def test_an_os_error_s_line_is_cut(tmp_path: Path) -> None:
    tree, repo = tmp_path / "tree", tmp_path / "repo"
    tree.mkdir()
    (tree / "f").write_text("x\n")
    assert cli("--repo", repo, "init").code == 0
    assert cli("--repo", repo, "commit", "-b", "main", tree).code == 0
    deep = tmp_path.joinpath(*["d" * 200] * 25)
    done = cli("--repo", repo, "checkout", "main", deep)
    assert done.code == 1 and done.err.count("\n") == 1
    assert "File name too long" in done.err
    assert "[... " in done.err and len(done.err) < LINE_LIMIT + 100


# interrupted while a thread that never ends keeps the interpreter's shutdown waiting
_STUCK = _TWICE.replace(
    "atexit.register(again)",
    "import threading\nthreading.Thread(target=threading.Event().wait).start()",
)


def test_a_second_ctrl_c_ends_a_shutdown_that_waits_for_a_thread() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        [sys.executable, "-c", _STUCK], stderr=subprocess.PIPE, text=True, env=env
    )
    assert child.stderr is not None
    assert child.stderr.readline() == "sapwood: interrupted\n"
    time.sleep(0.2)  # in the shutdown, waiting for the thread
    child.send_signal(signal.SIGINT)
    try:
        assert child.wait(timeout=20) == 130
    finally:
        child.kill()
    assert child.stderr.read() == ""
