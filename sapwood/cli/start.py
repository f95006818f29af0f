"""The `sapwood` command's entry point (pyproject.toml's [project.scripts]).

It stops Python's cycle collector before anything else is imported: the start-up
(the modules of the command, its parser) allocates objects by the hundred thousand, few
of them garbage, and a cycle search every 700 allocations cost ~3.5 ms of every command
(sapwood.cli.main's run() turns the collector back on once the command is parsed, with
what exists then set aside). Importing this module is all it does besides run():
``sapwood/__init__.py`` imports nothing heavy before it.

It also lets a Ctrl-C during those imports end the process as it ends any command that
has not begun (killed by SIGINT, nothing said): Python's own handler raised
KeyboardInterrupt wherever the import was, a traceback of a command that had not started
(review26 4). run() puts Python's handler back before the command begins, where
"sapwood: interrupted" and status 130 say it. A SIGINT the parent left ignored (`trap ''
INT`, a shell's background job, nohup) stays ignored, as Python keeps it (review27 1).
"""

import gc

gc.disable()

import signal  # noqa: E402 (after the collector is stopped, as every import here)
import sys  # noqa: E402

_DEFERRED = signal.getsignal(signal.SIGINT) is signal.default_int_handler
if _DEFERRED:
    signal.signal(signal.SIGINT, signal.SIG_DFL)

from sapwood.cli.main import run as _run_command  # noqa: E402 (after the collector is stopped)


def run() -> None:
    """The command (sapwood.cli.main.run), with Python's SIGINT handler back if the
    imports ran without it. A Ctrl-C before main() has begun to answer for it (the
    handler just back: review27 4) ends the command as main() would end it."""
    try:
        if _DEFERRED:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        _run_command()
    except KeyboardInterrupt:
        print("sapwood: interrupted", file=sys.stderr)
        sys.exit(130)


__all__ = ["run"]
