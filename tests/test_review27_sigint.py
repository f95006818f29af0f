"""review27 1: a `sapwood` started with SIGINT ignored (`trap '' INT` in a script, a
non-interactive shell's background job, a supervisor) must keep ignoring it, as Python
itself does (it installs its KeyboardInterrupt handler only over SIG_DFL). Since 60b5bde
sapwood/cli/start.py sets SIG_DFL whatever it found and run() installs Python's handler:
a Ctrl-C meant for the parent kills the command during its imports, or "interrupts" it
(status 130) after. The signal is sent by the process itself at a fixed point (a
sitecustomize hook), through the console script users run. Fixed in fa0cd6a (start.py
defers the handler only where Python's was there); failed with 60b5bde."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers import CONSOLE_SCRIPT, console_pull_with_hook

# at the import named by R27_AT made from sapwood.cli.main, the process sends itself SIGINT
HOOK = """
import builtins, os, signal
_real = builtins.__import__
_at = os.environ.get("R27_AT")
def _import(name, globals=None, locals=None, fromlist=(), level=0):
    if (
        _at
        and globals is not None
        and globals.get("__name__") == "sapwood.cli.main"
        and (name == _at or (_at == "first" and name not in ("__future__", "signal")))
    ):
        builtins.__import__ = _real
        open(os.environ["R27_SENT"], "w").write(name)
        os.kill(os.getpid(), signal.SIGINT)
    return _real(name, globals, locals, fromlist, level)
builtins.__import__ = _import
"""


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(tmp_path: Path, at: str) -> subprocess.CompletedProcess[str]:
    env = {"R27_SENT": str(tmp_path / "sent"), "R27_AT": at}
    # the parent ignores SIGINT, as `trap "" INT` makes it
    return console_pull_with_hook(tmp_path, HOOK, env, preexec_fn=_ignore_sigint)


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="no console script beside the interpreter")
@pytest.mark.parametrize(
    "at",
    [
        "first",  # sapwood.cli.main's first import: start.py's SIG_DFL window
        "sapwood.cli.output",  # main()'s _configure_logging, after run()
    ],
)
def test_an_ignored_sigint_stays_ignored(tmp_path: Path, at: str) -> None:
    quiet = _run(tmp_path, "")  # the same command, no signal sent
    assert not (tmp_path / "sent").exists()
    assert quiet.returncode not in (130, -signal.SIGINT), quiet.stderr
    result = _run(tmp_path, at)
    assert (tmp_path / "sent").exists(), "the hook never sent the signal"
    assert (result.returncode, result.stderr) == (quiet.returncode, quiet.stderr)


# the moment Python's handler is put back (whoever puts it back, wherever), the process
# sends itself SIGINT: the first instant a Ctrl-C is KeyboardInterrupt again
HANDLER_BACK = """
import os, signal
_real = signal.signal
def _signal(signum, handler):
    previous = _real(signum, handler)
    if signum == signal.SIGINT and handler is signal.default_int_handler:
        signal.signal = _real
        open(os.environ["R27_SENT"], "w").write("sent")
        os.kill(os.getpid(), signal.SIGINT)
    return previous
signal.signal = _signal
"""


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="no console script beside the interpreter")
def test_a_ctrl_c_as_the_handler_goes_back_prints_no_traceback(tmp_path: Path) -> None:
    """start.run puts Python's handler back, then main.run opens closed standard
    streams, stops the collector, patches argparse and enters main() before its try: a
    Ctrl-C there was a KeyboardInterrupt traceback (review26 4's symptom, a window of
    microseconds): failed on fa0cd6a, passes since b98d383."""
    sent = tmp_path / "sent"
    result = console_pull_with_hook(tmp_path, HANDLER_BACK, {"R27_SENT": str(sent)})
    assert sent.exists(), "Python's SIGINT handler was never put back"
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) <= 1, result.stderr
    assert result.returncode in (130, -signal.SIGINT), (result.returncode, result.stderr)
