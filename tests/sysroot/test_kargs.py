"""Kernel argument edits, as OSTree makes them."""

from __future__ import annotations

import pytest

from fs.sysroot.kargs import edit_kargs
from store import UsageError


def test_replace_takes_the_place_of_every_value() -> None:
    base = ["root=/dev/vda", "console=tty0", "rw", "console=ttyS0"]
    assert edit_kargs(base, ["console=ttyS1"], []) == ["root=/dev/vda", "console=ttyS1", "rw"]


def test_replace_of_a_new_key_appends_and_append_adds_a_value() -> None:
    assert edit_kargs(["rw"], ["quiet"], ["console=a", "console=b"]) == [
        "rw",
        "quiet",
        "console=a",
        "console=b",
    ]


def test_a_flag_is_replaced_by_a_value_of_its_key() -> None:
    assert edit_kargs(["ro", "init"], ["init=/sbin/x"], []) == ["ro", "init=/sbin/x"]


@pytest.mark.parametrize("bad", ["", "a b", 'x="y z"', "=v", "sapwood=/x", "sapwood"])
def test_bad_arguments_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        edit_kargs([], [bad], [])
    with pytest.raises(UsageError):
        edit_kargs([], [], [bad])
