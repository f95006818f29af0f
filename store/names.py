"""Validation of the names that enter a repository: file names and ref names."""

from __future__ import annotations

import re

from store.errors import InvalidNameError, InvalidRefNameError

MAX_NAME_BYTES = 255
MAX_REF_BYTES = 255

_REF_COMPONENT = r"[A-Za-z0-9_][A-Za-z0-9_.+-]*"
_REF_RE = re.compile(
    rf"^(?:(?P<remote>{_REF_COMPONENT}):)?(?P<ref>{_REF_COMPONENT}(?:/{_REF_COMPONENT})*)$"
)


def check_name(name: bytes, where: str = "") -> bytes:
    """Return ``name`` if it is a valid entry name of a directory, else raise."""
    problem = _name_problem(name)
    if problem:
        place = f" in {where}" if where else ""
        raise InvalidNameError(f"invalid file name {show_path(name)!r}{place}: {problem}")
    return name


def check_names(names: list[bytes], where: str = "") -> None:
    """:func:`check_name` of every name, for a whole directory at once: its rules (those
    of _name_problem, which this must follow) tested over all the names together, and
    a name at a time only when one fails, for the error."""
    if not names:
        return
    joined = b"/".join(names)
    if (
        joined.count(b"/") != len(names) - 1
        or b"\0" in joined
        or max(map(len, names)) > MAX_NAME_BYTES
        or not _DOT_NAMES.isdisjoint(names)
    ):
        for name in names:
            check_name(name, where)


_DOT_NAMES = frozenset({b"", b".", b".."})


def _name_problem(name: bytes) -> str:
    if not name:
        return "empty name"
    if name in (b".", b".."):
        return "'.' and '..' are not names"
    if b"/" in name:
        return "contains '/'"
    if b"\0" in name:
        return "contains NUL"
    if len(name) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    return ""


def check_ref_name(name: str) -> str:
    """Return ``name`` if it may name a ref (``REMOTE:REF`` allowed), else raise.

    Components start with a letter, digit or '_' and hold only letters, digits and
    ``_ . + -``; no '..', no spaces or control characters, no empty component.
    """
    if len(name) > MAX_REF_BYTES:  # every accepted character is one byte
        raise InvalidRefNameError(
            f"invalid ref name {name[:40]!r}...: longer than {MAX_REF_BYTES} bytes"
        )
    if ".." in name or not _REF_RE.fullmatch(name) or name.endswith((".lock", ".")):
        raise InvalidRefNameError(
            f"invalid ref name {name!r}: use letters, digits, '_', '.', '+', '-' "
            "and '/' between components (no '..', spaces or control characters)"
        )
    return name


_REMOTE_RE = re.compile(_REF_COMPONENT)
MAX_REMOTE_BYTES = 100


def check_remote_name(name: str) -> str:
    """Return ``name`` if it may name a remote (one ref-name component: letters, digits,
    ``_ . + -``, starting with a letter, digit or '_'; never ':' or '/'), else raise.

    Pulled refs are named ``REMOTE:REF`` (check_ref_name allows that one ':').
    """
    if (
        len(name) > MAX_REMOTE_BYTES
        or ".." in name
        or name.endswith((".lock", "."))
        or not _REMOTE_RE.fullmatch(name)
    ):
        raise InvalidRefNameError(
            f"invalid remote name {name[:40]!r}: use letters, digits, '_', '.', '+' and '-' "
            f"(at most {MAX_REMOTE_BYTES}, no ':', '/' or '..')"
        )
    return name


def split_path(path: str) -> list[bytes]:
    """Split a path inside a commit ('/usr/bin', 'usr/bin/') into checked names.

    ``path`` is text as Python decodes a command line: undecodable bytes arrive as
    the surrogates of 'surrogateescape' and go back to those bytes; any other lone
    surrogate names no byte string and is refused.
    """
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise InvalidNameError(f"invalid path {path!r}: not a byte string") from None
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    for part in parts:
        check_name(part, path)
    return parts


def show_path(path: bytes) -> str:
    """A path or name for messages: UTF-8, with undecodable bytes escaped."""
    return path.decode("utf-8", "backslashreplace")
