"""Formatting for people and for --json, and progress on a terminal."""

from __future__ import annotations

import datetime
import json
import stat
import sys
from typing import Any


def emit_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")


def mode_string(mode: int) -> str:
    """OSTree's ls form: type letter then five octal digits (d00755, -00644, l00777)."""
    kind = "d" if stat.S_ISDIR(mode) else "l" if stat.S_ISLNK(mode) else "-"
    return f"{kind}{stat.S_IMODE(mode):05o}"


def show_bytes(raw: bytes) -> str:
    from store import show_path

    return show_path(raw)


def format_time(timestamp: int) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S +0000")


def parse_time(text: str) -> int:
    """Seconds since the epoch, from an integer or an ISO 8601 date (UTC if no zone)."""
    if text.lstrip("-").isdigit():
        return int(text)
    from store import UsageError

    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"not a time: {text!r} (use seconds or ISO 8601)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp())


class Progress:
    """A one-line counter on stderr, shown only when stderr is a terminal."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._active = sys.stderr.isatty()
        self._shown = False

    def __call__(self, count: int) -> None:
        if self._active:
            sys.stderr.write(f"\r{self._label}: {count} files")
            sys.stderr.flush()
            self._shown = True

    def close(self) -> None:
        if self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
