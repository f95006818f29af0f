"""Entry point of the `sapwood` command: parsing, opening the repository, errors.

Every failure a user can cause is one line on stderr and a non-zero exit; a
traceback is shown only with --debug.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mountd.cli import (
    checkout_cmd,
    commit_cmd,
    inspect_cmds,
    maint_cmds,
    mount_cmds,
    repo_cmds,
)
from store import SapwoodError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sapwood", description="Content-addressed commits of filesystem trees.")
    parser.add_argument("--repo", type=Path, help="repository path (default: $SAPWOOD_REPO)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for module in (repo_cmds, commit_cmd, inspect_cmds, checkout_cmd, maint_cmds, mount_cmds):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        args = build_parser().parse_args(argv)
        level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
        logging.basicConfig(level=level, format="sapwood: %(message)s")
        result: int = args.func(args)
        return result
    except SapwoodError as exc:
        if debug:
            raise
        print(f"sapwood: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"sapwood: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sapwood: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    run()
