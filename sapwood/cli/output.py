"""Formatting for people and for --json.

Whatever a repository holds reaches a terminal only through quote_path (names,
paths, refs, symlink targets: GNU ls's shell-escape quoting) or printable (free
text: subjects, bodies, metadata, messages), so a name or a commit message can
neither forge a line of output nor send escape sequences to the terminal. --json
output is exact instead (JSON escapes what needs it).
"""

from __future__ import annotations

import itertools
import logging
import re
import stat
import sys
from typing import Any

from sapwood import I64_MAX, I64_MIN, UsageError, show_path

_C_ESCAPES = {"\a": "a", "\b": "b", "\t": "t", "\n": "n", "\v": "v", "\f": "f", "\r": "r"}
# Characters a shell gives a meaning to, which GNU ls quotes a name for (shell-escape).
_SHELL_SPECIAL = frozenset(" !\"$&'()*;<=>?[\\^`|")
_SECONDS = re.compile(r"-?[0-9]+")
# What fromisoformat may read: Python's takes any one character between the date and
# the time ('2026-11-01x12:00', '2026-11-01-12:00', even a newline); a 'T' or a space only.
_ISO_SHAPE = re.compile(r"[0-9W-]+(?:[T ][0-9:.,+Z -]*)?", re.ASCII | re.IGNORECASE)


_EXIT_AT_ONCE = [False]  # set by exit_at_once(), read by sapwood.cli.main's run()


def exit_at_once() -> None:
    """Let the process end as soon as this command returns 0, without the interpreter's
    finalization (tearing down ~300 modules and their objects: 5-10 ms of an update
    pull of ~0.15 s). For a command that has closed what it opened (its repository, its
    files, its threads joined) by the time it returns: sapwood.cli.main's run() still
    runs the atexit handlers (logging's flush, weakref finalizers such as a
    TemporaryDirectory's removal) and flushes stdout and stderr, and ends normally if
    the command failed or a thread is still alive. Here, not in sapwood.cli.main, which
    ``python -m sapwood.cli.main`` runs as ``__main__``, a module of another name."""
    _EXIT_AT_ONCE[0] = True


def exits_at_once() -> bool:
    """Whether the command asked for exit_at_once()."""
    return _EXIT_AT_ONCE[0]


def emit_json(value: Any) -> None:
    import json  # here, as datetime below: every command imports this module (~2 ms)

    json.dump(value, sys.stdout, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")


def mode_string(mode: int) -> str:
    """OSTree's ls form: type letter then five octal digits (d00755, -00644, l00777)."""
    kind = "d" if stat.S_ISDIR(mode) else "l" if stat.S_ISLNK(mode) else "-"
    return f"{kind}{stat.S_IMODE(mode):05o}"


def show_bytes(raw: bytes) -> str:
    """A path for --json: UTF-8, undecodable bytes as backslash escapes."""
    return show_path(raw)


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 problem', '2 problems' (``many`` for irregular plurals)."""
    return f"{count} {word if count == 1 else many or word + 's'}"


# ----- names and text on a terminal ------------------------------------------------------
def _is_plain(char: str) -> bool:
    """Shown as itself: printable (which excludes controls, format characters such as
    bidi overrides, line separators, and the surrogates of undecodable bytes)."""
    return char.isprintable()


def _escape_bytes(char: str) -> str:
    """``\\n``-style for C escapes, else each byte in octal (as GNU ls writes them)."""
    if char in _C_ESCAPES:
        return "\\" + _C_ESCAPES[char]
    try:
        raw = char.encode("utf-8", "surrogateescape")  # an undecodable byte: that byte
    except UnicodeEncodeError:
        raw = char.encode("utf-8", "surrogatepass")  # another lone surrogate
    return "".join(f"\\{byte:03o}" for byte in raw)


def _needs_quotes(text: str) -> bool:
    return not text or text[0] in "#~" or any(c in _SHELL_SPECIAL or not _is_plain(c) for c in text)


def quote_path(raw: bytes | str) -> str:
    """A name or path as GNU ls shows it (--quoting-style=shell-escape): unchanged
    when it is plain, else single-quoted, with unprintable characters as $'\\n' or
    $'\\033' between the quoted runs: 'a'$'\\n''b'. Pasted into a shell, the result
    is the name; it is always one line and never holds a raw control character.
    """
    text = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
    if not _needs_quotes(text):
        return text
    parts = [] if text else ["''"]
    for plain, run in itertools.groupby(text, key=_is_plain):
        chunk = "".join(run)
        if plain:
            parts.append("'" + chunk.replace("'", "'\\''") + "'")
        else:
            parts.append("$'" + "".join(_escape_bytes(c) for c in chunk) + "'")
    return "".join(parts)


def printable(text: str, keep_tab: bool = True) -> str:
    """One line of free text (a subject, a body line, metadata, an error message) made
    safe for a terminal: tabs and printable UTF-8 as they are, every other character
    (newlines included) as a visible escape, ``\\n`` or ``\\033``."""
    if text.isprintable():
        return text
    return "".join(
        c if _is_plain(c) or (keep_tab and c == "\t") else _escape_bytes(c) for c in text
    )


def text_lines(text: str) -> list[str]:
    """The lines of a commit message, each made printable."""
    return [printable(line) for line in text.splitlines()]


class OneLineFormatter(logging.Formatter):
    """Log lines name paths and refs from repositories and source trees: each message
    is kept to one printable line (a traceback under --debug stays as it is)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record), keep_tab=False)


# ----- time ------------------------------------------------------------------------------
def format_time(timestamp: int) -> str:
    """UTC date and time; a timestamp beyond the calendar's years 1-9999 (a commit may
    hold any 64-bit time) is shown as seconds."""
    import datetime

    try:
        moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{timestamp} seconds since the epoch"
    return moment.strftime("%Y-%m-%d %H:%M:%S +0000")


def parse_time(text: str) -> int:
    """Seconds since the epoch, from an integer, an ISO 8601 date (UTC if no zone) or
    any date ``REV@{DATE}`` takes (``@SECONDS``, ``2 weeks ago``, ``yesterday``)."""
    if _SECONDS.fullmatch(text):
        _refuse_compact_date(text)
        # Bounded before int(), which refuses more than 4300 digits with a ValueError.
        seconds = int(text) if len(text) <= 20 else I64_MAX + 1
        if not I64_MIN <= seconds <= I64_MAX:
            raise UsageError(f"not a time: {text[:30]}: out of range (64-bit seconds)")
        return seconds
    import datetime

    try:
        if not _ISO_SHAPE.fullmatch(text):
            raise ValueError(text)  # not for fromisoformat: parse_date's forms, or refused
        moment = datetime.datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
        # floor: 23:59:59.5 of 1969 is -1, not 0
        return (moment - epoch) // datetime.timedelta(seconds=1)
    except (ValueError, OverflowError, OSError):
        pass
    from sapwood import InvalidDateError, parse_date  # here: the store, not every command's

    try:
        return parse_date(text)
    except InvalidDateError as exc:
        reason = str(exc).removeprefix("not a date: ")
        if not reason.endswith(_FORMS_LISTED):  # a form it knows, out of range: say so
            raise UsageError(f"not a time: {reason}") from None
        shown = repr(text) if len(text) <= 64 else f"{text[:20]!r}..."
        raise UsageError(
            f"not a time: {shown} (use seconds, ISO 8601, @SECONDS, 'N days ago', yesterday or now)"
        ) from None


def _refuse_compact_date(text: str) -> None:
    """UsageError for eight digits that are also a date, YYYYMMDD: sapwood has read a
    number as seconds, git reads 20261101 as 2026-11-01; neither is taken silently
    (docs/decisions.md, "Command line")."""
    if len(text) != 8 or not text.isdigit():
        return
    import datetime

    try:
        datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return  # only seconds: 12345678 is no date
    raise UsageError(
        f"not a time: {text} reads as seconds or, as git reads it, as the date YYYYMMDD: "
        f"write @{text} for seconds since the epoch or {text[:4]}-{text[4:6]}-{text[6:]} "
        "for the date"
    )


_FORMS_LISTED = "yesterday or now"  # how parse_date's refusal of an unknown form ends
