"""Entry point of the `sapwood` command: parsing, opening the repository, errors.

Every failure a user can cause is one line on stderr and a non-zero exit; a
traceback is shown only with --debug. A reader that goes away (``| head``) ends the
command as it ends git's and coreutils': killed by SIGPIPE, silently.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from sapwood import SapwoodError, UsageError
from sapwood.cli import (
    admin_cmds,
    archive_cmds,
    checkout_cmd,
    commit_cmd,
    inspect_cmds,
    log_cmd,
    maint_cmds,
    mount_cmds,
    net_cmds,
    repair_cmds,
    repo_cmds,
)
from sapwood.cli.errors import EXIT_INTERNAL, exit_code, message
from sapwood.cli.output import OneLineFormatter, printable


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("sapwood").strip()  # "sapwood: error:" says the rest
        raise UsageError(f"{command}: {message}" if command else message)


def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """--repo, --debug and -v, accepted before the subcommand and after it.

    A subcommand's copy defaults to SUPPRESS, so that not repeating an option there
    keeps what was given before the subcommand.
    """

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--repo", type=Path, default=default(None), help="repository path (default: $SAPWOOD_REPO)"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="show tracebacks and debug logs",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="log what is done"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sapwood", description="Content-addressed commits of filesystem trees.")
    _global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    modules = (
        repo_cmds,
        commit_cmd,
        log_cmd,
        inspect_cmds,
        checkout_cmd,
        maint_cmds,
        repair_cmds,
        admin_cmds,
        net_cmds,
        archive_cmds,
    )
    for module in (*modules, mount_cmds):
        module.register(commands)
    for subparser in commands.choices.values():
        _global_options(subparser, top=False)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("sapwood: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def _error(message: str) -> None:
    """One line on stderr, whatever the message holds (names, typed arguments)."""
    print(f"sapwood: error: {printable(message, keep_tab=False)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        args = build_parser().parse_args(argv)
        debug = args.debug
        _configure_logging(args)
        result: int = args.func(args)
        return result
    except SapwoodError as exc:
        if debug:
            raise
        _error(message(exc))
        return exit_code(exc)
    except OSError as exc:
        if debug or (isinstance(exc, BrokenPipeError) and stdout_closed()):
            raise  # run() ends quietly when the reader of stdout went away
        where = f": {exc.filename}" if exc.filename else ""
        _error(f"{exc.strerror or exc}{where}")
        return 1
    except KeyboardInterrupt:
        print("sapwood: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} (--debug shows the traceback)")
        return EXIT_INTERNAL


def stdout_closed() -> bool:
    """True when stdout is a pipe or socket whose reader has gone (poll says POLLERR)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _die_of_sigpipe() -> None:
    """End as git and coreutils do when their reader goes away: killed by SIGPIPE (a
    shell shows status 141), with nothing on stderr."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    sys.exit(128 + signal.SIGPIPE)  # not reached


def run() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        if not stdout_closed():
            raise  # another pipe (only --debug lets one through): show the traceback
        _die_of_sigpipe()
    sys.exit(code)


if __name__ == "__main__":
    run()
