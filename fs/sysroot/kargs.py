"""Kernel arguments, edited as OSTree edits them.

A new deployment starts from the merge deployment's arguments (none for the first);
``replace`` K=V drops every value of K and puts V in the place of the first;
``append`` K=V adds one more value. ``sapwood=`` is never among them: the boot
entry adds it, naming the deployment.
"""

from __future__ import annotations

from collections.abc import Sequence

from store import UsageError

OWN_KEY = "sapwood"


def key_of(arg: str) -> str:
    return arg.split("=", 1)[0]


def is_karg(arg: str) -> bool:
    """``arg`` can be one word of a BLS entry's options line, and of the list that
    reads it back: not empty, printable (no escape, DEL or NUL), no space, no '"'."""
    return (
        bool(arg) and key_of(arg) != "" and arg.isprintable() and " " not in arg and '"' not in arg
    )


def check_karg(arg: str) -> str:
    if not is_karg(arg):
        raise UsageError(
            f"kernel argument {arg!r}: give KEY or KEY=VALUE of printable characters "
            "without spaces or quotes"
        )
    if key_of(arg) == OWN_KEY:
        raise UsageError("kernel argument sapwood=: set by the deployment itself")
    return arg


def edit_kargs(base: Sequence[str], replace: Sequence[str], append: Sequence[str]) -> list[str]:
    """``base`` with every key of ``replace`` replaced, then ``append`` added."""
    result = list(base)
    for arg in replace:
        check_karg(arg)
        key = key_of(arg)
        places = [i for i, old in enumerate(result) if key_of(old) == key]
        if places:
            result[places[0]] = arg
            result = [old for i, old in enumerate(result) if i not in places[1:]]
        else:
            result.append(arg)
    for arg in append:
        result.append(check_karg(arg))
    return result
