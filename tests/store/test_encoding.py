"""The canonical encoding: round trips, one byte string per value, strict decoding."""

from __future__ import annotations

import stat
import struct

import pytest
from hypothesis import given
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

ids = st.binary(min_size=32, max_size=32).map(ObjectId)
names = st.binary(min_size=1, max_size=255).filter(
    lambda n: n not in (b".", b"..") and b"/" not in n and b"\0" not in n
)
xattr_names = st.binary(min_size=1, max_size=40).filter(lambda n: b"\0" not in n)
xattrs = st.dictionaries(xattr_names, st.binary(max_size=64), max_size=4).map(
    lambda d: tuple(sorted(d.items()))
)
u32 = st.integers(0, 2**32 - 1)
perm = st.integers(0, 0o7777)
text = st.text(max_size=200)

regular_headers = st.builds(
    FileHeader,
    uid=u32,
    gid=u32,
    mode=perm.map(lambda m: stat.S_IFREG | m),
    symlink_target=st.just(b""),
    xattrs=xattrs,
)
symlink_headers = st.builds(
    FileHeader,
    uid=u32,
    gid=u32,
    mode=st.just(stat.S_IFLNK | 0o777),
    symlink_target=st.binary(min_size=1, max_size=300).filter(lambda t: b"\0" not in t),
    xattrs=xattrs,
)
dirmetas = st.builds(
    DirMeta, uid=u32, gid=u32, mode=perm.map(lambda m: stat.S_IFDIR | m), xattrs=xattrs
)


@st.composite
def dirtrees(draw: st.DrawFn) -> DirTree:
    file_names = draw(st.sets(names, max_size=6))
    dir_names = draw(st.sets(names, max_size=6)) - file_names
    files = {n: draw(ids) for n in file_names}
    dirs = {n: DirEntry(draw(ids), draw(ids)) for n in dir_names}
    return DirTree.build(files, dirs)


commits = st.builds(
    Commit,
    tree=ids,
    meta=ids,
    parent=st.none() | ids,
    timestamp=st.integers(-(2**40), 2**40),
    subject=text,
    body=text,
    metadata=st.dictionaries(st.text(min_size=1, max_size=20), text, max_size=4).map(
        lambda d: tuple(sorted(d.items()))
    ),
)


@given(regular_headers | symlink_headers)
def test_file_header_round_trip(header: FileHeader) -> None:
    assert FileHeader.decode(header.encode()) == header


@given(regular_headers | symlink_headers, st.integers(0, 2**40), st.binary(max_size=9))
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
    ],
)
def test_file_stat_refuses_what_decode_refuses(bad: bytes) -> None:
    with pytest.raises(FormatError):
        file_stat(bad, 0)
    with pytest.raises(FormatError):
        FileHeader.decode(bad)


@given(regular_headers | symlink_headers)
def test_hand_packed_header_equals_generic_writer(header: FileHeader) -> None:
    w = Writer()
    w.raw(b"F\x01")
    for value in (header.uid, header.gid, header.mode):
        w.u32(value)
    w.blob(header.symlink_target)
    w.pairs(header.xattrs)
    assert header.encode() == w.getvalue()


@given(dirmetas)
def test_dirmeta_round_trip(meta: DirMeta) -> None:
    assert DirMeta.decode(meta.encode()) == meta


@given(dirtrees())
def test_dirtree_round_trip(tree: DirTree) -> None:
    assert DirTree.decode(tree.encode()) == tree


@given(commits)
def test_commit_round_trip(commit: Commit) -> None:
    assert Commit.decode(commit.encode()) == commit


@given(dirtrees(), st.data())
def test_decoders_refuse_trailing_and_truncated_bytes(tree: DirTree, data: st.DataObject) -> None:
    encoded = tree.encode()
    with pytest.raises(FormatError):
        DirTree.decode(encoded + b"\0")
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(FormatError):
        DirTree.decode(encoded[:cut])


@given(st.binary(max_size=200))
def test_random_bytes_decode_canonically_or_raise_format_error(blob: bytes) -> None:
    for decode in (FileHeader.decode, DirMeta.decode, DirTree.decode, Commit.decode):
        try:
            value = decode(blob)
        except FormatError:
            continue
        assert value.encode() == blob  # anything accepted is canonical


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


def test_timestamps_are_not_part_of_a_file_id() -> None:
    header = FileHeader(0, 0, stat.S_IFREG | 0o644)
    assert header.object_id(b"x") == header.object_id(b"x")
    assert header.object_id(b"x") != FileHeader(0, 0, stat.S_IFREG | 0o600).object_id(b"x")


def test_reader_refuses_absurd_list_lengths() -> None:
    with pytest.raises(FormatError):
        Reader(b"\xff\xff\xff\xff", "test").count(8)
