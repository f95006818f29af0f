"""The summary: canonical encoding, garbage refused, written atomically, signed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from store import FormatError, RepoMode, Repository
from store.ids import ObjectId
from store.signing import generate_keypair, verify_signed
from store.summary import (
    Summary,
    decode_summary,
    encode_summary,
    read_summary,
    update_summary,
)
from tests.helpers import commit_files

A, B, C = (ObjectId(bytes([n]) * 32) for n in (1, 2, 3))


def _sample() -> Summary:
    return Summary(
        {"os/main": (A, 1700000000), "app": (B, -5)},
        {(None, A): bytes(32), (B, A): bytes([9]) * 32},
    )


def test_summary_round_trips_canonically() -> None:
    data = encode_summary(_sample())
    assert data[:2] == b"S\x01"
    assert decode_summary(data) == _sample()
    reordered = Summary(dict(reversed(list(_sample().refs.items()))), _sample().deltas)
    assert encode_summary(reordered) == data  # one encoding whatever the dict order


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: b"",
        lambda d: d[:-1],
        lambda d: d + b"\0",
        lambda d: b"X" + d[1:],
        lambda d: d[:1] + b"\x02" + d[2:],
        lambda d: d[:2] + b"\xff\xff\xff\xff" + d[6:],
        lambda d: os.urandom(200),
    ],
)
def test_garbage_summaries_are_refused(mangle: Callable[[bytes], bytes]) -> None:
    with pytest.raises(FormatError):
        decode_summary(mangle(encode_summary(_sample())))


@pytest.mark.parametrize("name", ["../etc", "a b", "origin:main", "", "a/"])
def test_bad_ref_names_are_refused_both_ways(name: str) -> None:
    with pytest.raises(FormatError):
        encode_summary(Summary({name: (A, 0)}))
    good = encode_summary(Summary({"x" * len(name.encode()) or "x": (A, 0)}))
    if name:
        forged = good.replace(b"x" * len(name.encode()), name.encode())
        with pytest.raises(FormatError):
            decode_summary(forged)


def test_unsorted_entries_are_not_canonical() -> None:
    data = bytearray(encode_summary(Summary({"a": (A, 0), "b": (B, 0)})))
    at_a, at_b = data.index(b"\x00\x00\x00\x01a"), data.index(b"\x00\x00\x00\x01b")
    data[at_a + 4], data[at_b + 4] = ord("b"), ord("a")
    with pytest.raises(FormatError):
        decode_summary(bytes(data))


def test_update_summary_lists_refs_and_signs(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    first = commit_files(repo, tmp_path / "a", {"f": "1"}, "os/main", timestamp=1234)
    repo.create_ref("origin:x", first)  # pulled refs are not published
    summary = update_summary(repo)
    assert summary.refs == {"os/main": (first, 1234)}
    assert read_summary(repo.path) == summary
    assert not (repo.path / "summary.sig").exists()
    key = generate_keypair()
    update_summary(repo, [key])
    data = (repo.path / "summary").read_bytes()
    signature = (repo.path / "summary.sig").read_bytes()
    assert verify_signed(data, signature, [key.public_text]) == key.public_text
    update_summary(repo)  # unsigned again: a stale signature is removed
    assert not (repo.path / "summary.sig").exists()
    assert not list(repo.path.glob(".summary*"))  # no temporary file left


def test_read_summary_refuses_a_garbage_file(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    assert read_summary(repo.path) is None
    (repo.path / "summary").write_bytes(b"<html>not found</html>")
    with pytest.raises(FormatError):
        read_summary(repo.path)
