"""The canonical encoding: one byte string per value, strict decoding.

Properties over generated values and bytes (round trips, decoding anything, the
constructors' ranges) are in test_properties.py; these are the fixed cases and the
checks of hand-written fast paths against the generic code.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store import (
    Commit,
    DirEntry,
    DirMeta,
    DirTree,
    FileHeader,
    FormatError,
    InvalidNameError,
    ObjectId,
)
from store.encoding import Reader, Writer
from store.objects import file_stat
from tests.helpers import cli
from tests.strategies import dirtrees, file_headers

SOME = settings(max_examples=50, deadline=None)


@SOME
@given(file_headers, st.integers(0, 2**40), st.binary(max_size=9))
def test_file_stat_reads_what_decode_reads(header: FileHeader, size: int, prefix: bytes) -> None:
    """The mount's in-place parse of a header agrees with the full decode."""
    found = file_stat(prefix + header.encode(), size, offset=len(prefix))
    shown = len(header.symlink_target) if header.is_symlink else size
    assert found == (header.uid, header.gid, header.mode, shown, header.encode())


@pytest.mark.parametrize(
    "bad",
    [
        b"F\x02" + bytes(20),  # another format version
        b"F\x01" + bytes(12),  # too short
        b"F\x01" + struct.pack(">IIII", 0, 0, stat.S_IFREG | 0o644, 3) + b"abc" + bytes(4),
        b"F\x01" + struct.pack(">IIII", 0, 0, stat.S_IFLNK | 0o777, 9) + b"abc" + bytes(4),
        b"F\x01" + struct.pack(">IIII", 0, 0, stat.S_IFCHR | 0o644, 0) + bytes(4),
        b"F\x01" + struct.pack(">IIII", 0, 0, 0o1100644, 0) + bytes(4),  # bits above st_mode
    ],
)
def test_file_stat_refuses_what_decode_refuses(bad: bytes) -> None:
    with pytest.raises(FormatError):
        file_stat(bad, 0)
    with pytest.raises(FormatError):
        FileHeader.decode(bad)


@SOME
@given(file_headers)
def test_hand_packed_header_equals_generic_writer(header: FileHeader) -> None:
    w = Writer()
    w.raw(b"F\x01")
    for value in (header.uid, header.gid, header.mode):
        w.u32(value)
    w.blob(header.symlink_target)
    w.pairs(header.xattrs)
    assert header.encode() == w.getvalue()


@SOME
@given(dirtrees(), st.data())
def test_decoders_refuse_trailing_and_truncated_bytes(tree: DirTree, data: st.DataObject) -> None:
    encoded = tree.encode()
    with pytest.raises(FormatError):
        DirTree.decode(encoded + b"\0")
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(FormatError):
        DirTree.decode(encoded[:cut])


def test_unsorted_dirtree_is_not_canonical() -> None:
    one, two = ObjectId(b"\1" * 32), ObjectId(b"\2" * 32)
    good = DirTree.build({b"a": one, b"b": two}, {})
    w = Writer()
    w.raw(b"T\x01")
    w.u32(2)
    for name, value in ((b"b", two), (b"a", one)):
        w.blob(name)
        w.object_id(value)
    w.u32(0)
    assert w.getvalue() != good.encode()
    with pytest.raises(FormatError):
        DirTree.decode(w.getvalue())


@pytest.mark.parametrize("bad", [b"", b".", b"..", b"a/b", b"a\0b", b"x" * 256])
def test_dirtree_refuses_bad_names(bad: bytes) -> None:
    with pytest.raises(InvalidNameError):
        DirTree.build({bad: ObjectId(b"\1" * 32)}, {})
    w = Writer()
    w.raw(b"T\x01")
    w.u32(1)
    w.blob(bad)
    w.object_id(b"\1" * 32)
    w.u32(0)
    with pytest.raises(FormatError):
        DirTree.decode(w.getvalue())


def test_a_name_cannot_be_file_and_directory() -> None:
    with pytest.raises(FormatError):
        DirTree.build(
            {b"a": ObjectId(b"\1" * 32)},
            {b"a": DirEntry(ObjectId(b"\2" * 32), ObjectId(b"\3" * 32))},
        )


@pytest.mark.parametrize("mode", [stat.S_IFCHR | 0o644, stat.S_IFIFO | 0o644, stat.S_IFDIR | 0o755])
def test_file_headers_refuse_other_types(mode: int) -> None:
    with pytest.raises(FormatError):
        FileHeader(0, 0, mode)


ZERO = ObjectId(bytes(32))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FileHeader(2**32, 0, stat.S_IFREG | 0o644), "uid 4294967296 is out of range"),
        (lambda: FileHeader(0, -1, stat.S_IFREG | 0o644), "gid -1 is out of range"),
        (lambda: DirMeta(0, 2**40, stat.S_IFDIR | 0o755), "gid 1099511627776 is out of range"),
        (lambda: DirMeta(0, 0, 0o1040755), "bits beyond the file type"),
        (lambda: Commit(ZERO, ZERO, None, 2**63), "timestamp"),
        (lambda: Commit(ZERO, ObjectId(bytes(31)), None, 0), "31 bytes"),
        (lambda: Commit(ZERO, ZERO, None, 0, "\udcff"), "subject is not valid UTF-8"),
        (lambda: Commit(ZERO, ZERO, None, 0, metadata=(("k", "\ud800"),)), "value of 'k'"),
    ],
)
def test_values_the_encoding_cannot_hold_are_refused_when_made(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(FormatError, match=message):
        make()


def test_timestamps_are_not_part_of_a_file_id(tmp_path: Path) -> None:
    """Through real commits: files that differ only in mtime share one object, and a
    tree whose times alone changed commits to the same ids (the mode still counts).
    The second commit goes to a fresh repository, so no id can come from the first
    one's objects or stat cache."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name, mtime in (("old", 1), ("new", 1_700_000_000), ("sub/other", 86_400)):
        (src / name).write_bytes(b"same content")
        os.utime(src / name, (mtime, mtime))
    (src / "private").write_bytes(b"same content")
    (src / "private").chmod(0o600)

    def commit(repo: Path) -> dict[str, str]:
        if not repo.exists():
            assert cli("--repo", repo, "init").code == 0
        assert cli("--repo", repo, "commit", "-b", "main", src).code == 0
        listing = json.loads(cli("--repo", repo, "ls", "-R", "--json", "main").out)
        return {entry["path"]: entry["id"] for entry in listing}

    first = commit(tmp_path / "repo")
    assert len(first) == 6 and all(len(object_id) == 64 for object_id in first.values())
    assert first["/old"] == first["/new"] == first["/sub/other"] != first["/private"]
    for path in (src / "old", src / "new", src / "sub" / "other", src / "sub", src):
        os.utime(path, (5, 5))
    assert commit(tmp_path / "fresh") == first  # every file's and directory's id
    assert commit(tmp_path / "repo") == first
    (src / "sub").chmod(0o700)  # what does count: the mode (recorded in the parent's tree)
    changed = commit(tmp_path / "repo")
    assert changed == {**first, "/": changed["/"]} and changed["/"] != first["/"]
    trees = [
        json.loads(cli("--repo", tmp_path / name, "log", "--json", "main").out)
        for name in ("repo", "fresh")
    ]
    assert len(trees[0]) == 3 and len(trees[1]) == 1
    # the root trees: the same before the chmod, in both repositories; another after it
    assert trees[0][2]["tree"] == trees[0][1]["tree"] == trees[1][0]["tree"]
    assert trees[0][0]["tree"] != trees[0][1]["tree"]


def test_reader_refuses_absurd_list_lengths() -> None:
    with pytest.raises(FormatError):
        Reader(b"\xff\xff\xff\xff", "test").count(8)


@pytest.mark.parametrize(
    ("field", "value"),
    [("u8", 256), ("u8", -1), ("u32", 2**32), ("u32", -1), ("i64", 2**63)],
)
def test_writer_refuses_values_beyond_their_field(field: str, value: int) -> None:
    with pytest.raises(FormatError, match="does not fit"):
        getattr(Writer(), field)(value)
