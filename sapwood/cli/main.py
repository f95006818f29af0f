"""Entry point of the `sapwood` command: parsing, opening the repository, errors.

Every failure a user can cause is one line on stderr and a non-zero exit; a
traceback is shown only with --debug. A reader that goes away (``| head``) ends the
command as it ends git's and coreutils': killed by SIGPIPE, silently.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, cast

from sapwood import SapwoodError, UsageError

# Every subcommand, in the order `sapwood --help` lists them: (name, the module of
# sapwood.cli whose register(commands) adds it, its help line). Only the module of the
# command being run is imported (each loads much of the library); `sapwood --help` and
# the unknown-command error need none. To add a command: a line here, with the help its
# module's register() gives it (tests/test_startup.py compares the two).
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("init", "repo_cmds", "create a repository"),
    ("refs", "repo_cmds", "list, create or delete refs"),
    ("rev-parse", "repo_cmds", "print the full commit id of a REV"),
    ("config", "config_cmds", "read or change the repository's settings"),
    ("commit", "commit_cmd", "commit a tree to a branch; prints the commit id"),
    (
        "log",
        "log_cmd",
        "a commit and its ancestors (with -- PATH...: those that changed the paths)",
    ),
    ("show", "inspect_cmds", "one commit"),
    ("ls", "inspect_cmds", "list a path of a commit"),
    ("cat", "inspect_cmds", "write a file of a commit to stdout"),
    ("diff", "inspect_cmds", "A/M/D lines between two commits, or a commit and a directory"),
    ("checkout", "checkout_cmd", "check a commit out into a new directory"),
    ("fsck", "maint_cmds", "re-hash objects and check the repository"),
    ("prune", "maint_cmds", "delete objects no root needs"),
    (
        "rebuild-index",
        "repair_cmds",
        "archive repositories: rebuild a missing or damaged index from the object files",
    ),
    ("admin", "admin_cmds", "deploy commits into a sysroot and manage its boot entries"),
    ("remote", "net_cmds", "add, list or delete remotes"),
    ("pull", "net_cmds", "fetch refs of a remote as REMOTE:REF"),
    ("pull-local", "net_cmds", "copy refs from a repository on this machine"),
    (
        "summary",
        "archive_cmds",
        "show the summary (refs and deltas a server offers); -u regenerates it",
    ),
    (
        "keygen",
        "archive_cmds",
        "make an ed25519 key pair: the secret key to a file, the public on stdout",
    ),
    ("sign", "archive_cmds", "add detached ed25519 signatures to a commit"),
    ("static-delta", "archive_cmds", "generate and list static deltas"),
    ("mount", "mount_cmds", "mount a commit read-only (FUSE)"),
    ("umount", "mount_cmds", "unmount a sapwood mount"),
)


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, its width found as shutil.get_terminal_size finds it
    but without importing shutil: argparse makes a formatter for every add_argument (to
    check its metavar) and, given no width, imports shutil, which loads bz2 and lzma:
    ~6 M instructions, ~2.5 ms, of every command."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _terminal_columns() - 2  # as argparse does
        super().__init__(prog, indent_increment, max_help_position, width)


def _terminal_columns() -> int:
    """$COLUMNS, else the width of the terminal on stdout, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):  # no stdout, a closed one, no terminal
            columns = 0
    return columns if columns > 0 else 80


class _Parser(argparse.ArgumentParser):
    def __init__(self, **options: Any) -> None:
        options.setdefault("formatter_class", _Formatter)
        super().__init__(**options)

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("sapwood").strip()  # "sapwood: error:" says the rest
        raise UsageError(f"{command}: {message}" if command else message)


class _Stub:
    """A command whose module is not loaded: its name and help line (in the subparsers'
    table) are enough to list it and to refuse an unknown command. Chosen, it parses
    nothing (argparse asks a chosen subparser only that), and _parse loads its module
    and parses again. Cheaper than a real parser, which every command built for each
    of the others (argparse's set-up, and gettext looking for a catalogue each time)."""

    def parse_known_args(
        self, args: Sequence[str], namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        return namespace or argparse.Namespace(), list(args)


def _subparser(*, stub: bool = False, **options: Any) -> _Parser | _Stub:
    """The subparsers' parser class: a _Parser, or a _Stub for ``stub=True``."""
    return _Stub() if stub else _Parser(**options)


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


def build_parser(load: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The parser of `sapwood`, its subcommands defined by the modules named in ``load``
    (every module when None); any other command is a stub that has only its help line,
    enough to list it, to choose it, and to refuse an unknown one."""
    parser = _Parser(prog="sapwood", description="Content-addressed commits of filesystem trees.")
    _global_options(parser, top=True)
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=cast("type[_Parser]", _subparser)
    )
    commands.required = True
    for module in dict.fromkeys(module for _, module, _ in COMMANDS):  # in order, once
        if load is None or module in load:
            importlib.import_module(f"sapwood.cli.{module}").register(commands)
            continue
        for name, _, help_line in (c for c in COMMANDS if c[1] == module):
            commands.add_parser(name, help=help_line, stub=True)
    for subparser in commands.choices.values():
        if isinstance(subparser, argparse.ArgumentParser):
            _global_options(subparser, top=False)
    return parser


_MODULE_OF = {name: module for name, module, _ in COMMANDS}


def _likely_command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` most likely runs: its first word that names one, the value
    of --repo skipped. A guess (an abbreviated --rep, say, can fool it), which _parse
    checks against the command argparse finds."""
    words = iter(argv)
    for word in words:
        if word == "--repo":
            next(words, None)
        elif word in _MODULE_OF:
            return word
    return None


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """``argv`` parsed by a parser that defines only the subcommand it runs, built once
    (twice when the guess of the command was wrong). argparse itself finds that
    command, with every other command a stub: so the global options, --help, a
    missing or an unknown command behave exactly as with the whole parser."""
    words = sys.argv[1:] if argv is None else argv
    guess = _likely_command(words)
    parser = build_parser(load={_MODULE_OF[guess]} if guess else ())
    args, extras = parser.parse_known_args(words)
    if guess is None or _MODULE_OF[args.command] != _MODULE_OF[guess]:
        # a stub ran: parse again with its module (what the stub took proves nothing)
        return build_parser(load={_MODULE_OF[args.command]}).parse_args(words)
    if extras:  # as parse_args says it
        parser.error(f"unrecognized arguments: {' '.join(extras)}")  # argparse's words
    return args


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    handler = logging.StreamHandler()
    from sapwood.cli.output import OneLineFormatter  # here: --help never needs it

    handler.setFormatter(OneLineFormatter("sapwood: %(message)s"))
    global _SAID_INTERRUPTED
    _SAID_INTERRUPTED = False  # this command's (tests call main() in one process)
    handler.addFilter(_said_interrupted)
    logging.basicConfig(level=level, handlers=[handler])


def _said_interrupted(record: logging.LogRecord) -> bool:
    """Notes a warning that told of the interrupt already (a Ctrl-C held back to the end
    of a commit point: "interrupted after the commit point: what was committed is
    kept"), so that main() adds no second line (attack17 6). Filters nothing out."""
    global _SAID_INTERRUPTED
    if record.levelno >= logging.WARNING and record.getMessage().startswith("interrupted"):
        _SAID_INTERRUPTED = True
    return True


def _error(message: str) -> None:
    """One line on stderr, whatever the message holds (names, typed arguments)."""
    from sapwood.cli.output import printable

    print(f"sapwood: error: {printable(message, keep_tab=False)}", file=sys.stderr)


def _bounded(text: str) -> str:
    """``text`` cut as every error line is (a path of 4,000 characters in an OSError's
    line, attack11.md 7); sapwood.cli.errors imported on failure only."""
    from sapwood.cli.errors import bounded

    return bounded(text)


EXIT_INTERNAL = 70  # sapwood.cli.errors.EXIT_INTERNAL, which main imports only on failure


def _report(exc: SapwoodError) -> int:
    """Say what went wrong; its exit code. sapwood.cli.errors is imported here, on
    failure only: its tables name error classes of fs.checkout, fs.commit, ..., whose
    modules a successful command may never need (~40 ms of every start)."""
    from sapwood.cli import errors

    _error(errors.message(exc))
    return errors.exit_code(exc)


def main(argv: Sequence[str] | None = None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        args = _parse(argv)
        _started()
        debug = args.debug
        _configure_logging(args)
        result: int = args.func(args)
        return result
    except SapwoodError as exc:
        if debug:
            raise
        return _report(exc)
    except OSError as exc:
        if debug or (isinstance(exc, BrokenPipeError) and stdout_closed()):
            raise  # run() ends quietly when the reader of stdout went away
        where = f": {exc.filename}" if exc.filename else ""
        _error(_bounded(f"{exc.strerror or exc}{where}"))
        return 1
    except KeyboardInterrupt:
        if _ENDS_PROCESS:
            # the command is over: a further Ctrl-C has nothing left to stop but the
            # interpreter's shutdown, which it interrupted ("Exception ignored ...
            # KeyboardInterrupt", or death by SIGINT instead of 130: attack11.md 6). It
            # ends the process at once, with the same status (ignoring it would leave
            # no way out of a shutdown that waits for a stuck thread)
            signal.signal(signal.SIGINT, _exit_interrupted)
        if not _SAID_INTERRUPTED:
            print("sapwood: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        _error(
            _bounded(f"internal error: {type(exc).__name__}: {exc}")
            + " (--debug shows the traceback)"
        )
        return EXIT_INTERNAL


def _started() -> None:
    """Collect cycles again once the command is known, if run() stopped it for the
    start-up (tests call main() in a process of their own, where nothing changes)."""
    if _ENDS_PROCESS and not gc.isenabled():  # a caller's own gc.disable() is left alone
        gc.freeze()  # the modules and the parser: never garbage, never searched again
        gc.enable()


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


def _exit_interrupted(signum: int, frame: object) -> None:
    os._exit(130)


_ENDS_PROCESS = False  # set by run(): main() then ends the process (tests call main())
_SAID_INTERRUPTED = False  # a warning said the command was interrupted (_said_interrupted)


def _end_at_once(code: int) -> None:
    """End the process now if the command asked for it (sapwood.cli.output's
    exit_at_once) and succeeded, and no thread of its own is left running that the
    ordinary exit would wait for: a daemon thread (the per-object fetcher's watchdog)
    is not waited for by either (review16 R16-4: it kept every pull that had used the
    per-object path from the early exit)."""
    output = sys.modules.get("sapwood.cli.output")  # loaded by every command that runs
    if code != 0 or output is None or _threads_to_wait_for():
        return
    if not cast("Any", output).exits_at_once():
        return
    atexit._run_exitfuncs()  # what sys.exit would run first: logging.shutdown, finalizers
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _open_closed_standard_streams() -> None:
    """Descriptors 0-2 closed at the start (`sapwood ... >&-`, a daemon's or a cron
    line's child) get /dev/null, as git's sanitize_stdfds gives them: Python had made
    sys.stdout or sys.stderr None (a traceback once the work was done, an internal error
    before it began: attack21 4), and the first files opened took those numbers (an
    object being written, the index), into which anything writing to fd 2 would write."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd itself
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdin is None:
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own, for its life)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115


def _threads_to_wait_for() -> bool:
    main = threading.main_thread()
    return any(t is not main and not t.daemon for t in threading.enumerate())


def _untranslated_argparse() -> None:
    """argparse's own words ("usage:", its errors) as they are written, without asking
    gettext for each: a search of the "messages" domain's catalogue, in every language
    of $LANGUAGE, $LC_ALL, $LC_MESSAGES and $LANG, ~8 stats and a locale import for
    the first, ~3 ms of every command's parser. Python ships no catalogue for them (the
    domain is the application's default one, which sapwood does not use: its own
    messages are English), so the answer is always the word asked. Only for the
    process the command ends (run()): tests call main() in a process of their own."""
    setattr(argparse, "_", str)  # noqa: B010 (a module's private name: mypy knows none)
    setattr(argparse, "ngettext", _plural)  # noqa: B010


def _plural(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


def run() -> None:
    global _ENDS_PROCESS
    _ENDS_PROCESS = True
    _open_closed_standard_streams()
    # The start-up (importing the command's modules, parsing) allocates objects by the
    # hundred thousand, few of them garbage: without a cycle search every 700 of them
    # (main's _started() turns it back on, with them set aside).
    gc.disable()
    _untranslated_argparse()
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        if not stdout_closed():
            raise  # another pipe (only --debug lets one through): show the traceback
        _die_of_sigpipe()
    # The interpreter's exit searches every object for cycles, again and again while it
    # clears the modules: 15-60 ms a command (a farm re-commit of 6,000 files, issue 11),
    # 5-12 ms with what exists now set aside. Only here, at the process's end: tests
    # call main() in one long process.
    _end_at_once(code)
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
