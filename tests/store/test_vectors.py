"""Fixed test vectors of docs/format.md: the encoding must never drift."""

from __future__ import annotations

import stat

from store import Commit, DirEntry, DirMeta, DirTree, FileHeader

FILE = FileHeader(0, 0, stat.S_IFREG | 0o644, b"", ((b"user.a", b"1"),))
LINK = FileHeader(1000, 1000, stat.S_IFLNK | 0o777, b"target")
META = DirMeta(0, 0, stat.S_IFDIR | 0o755)


def test_file_vector() -> None:
    assert FILE.encode().hex() == (
        "46010000000000000000000081a4000000000000000100000006757365722e610000000131"
    )
    assert FILE.object_id(b"hello\n").hex() == (
        "8a55af22b1d7601c7ebb9feda3b5d34b62274528fb7a9fe7bd9a5ae21607ed88"
    )


def test_symlink_vector() -> None:
    assert LINK.encode().hex() == "4601000003e8000003e80000a1ff0000000674617267657400000000"
    assert LINK.object_id().hex() == (
        "1aa85f3f194f6f1605e3e772c2c1d72f94a054865b880ae2c7d6411a008e5054"
    )


def test_dirmeta_vector() -> None:
    assert META.encode().hex() == "4d010000000000000000000041ed00000000"
    assert META.object_id().hex() == (
        "a4f89a624d272a70574226b530ad6bd2df2ca455902fb3cd41dfe168c9689358"
    )


def test_dirtree_and_commit_vectors() -> None:
    empty = DirTree()
    assert empty.encode().hex() == "54010000000000000000"
    assert empty.object_id().hex() == (
        "4950839ed2dd02f53a5bb9e78ccc9d10566b7934471167057b48d15a810f99e8"
    )
    tree = DirTree.build(
        {b"hello": FILE.object_id(b"hello\n")},
        {b"sub": DirEntry(empty.object_id(), META.object_id())},
    )
    assert tree.object_id().hex() == (
        "d2f9de25c1f7a2521c9cbcfe1af407b6ea33f8b8567fd52faea2008619f3fd3f"
    )
    commit = Commit(
        tree.object_id(),
        META.object_id(),
        None,
        1700000000,
        "subject",
        "body",
        (("version", "1.0"),),
    )
    assert commit.object_id().hex() == (
        "6f993b17b9300f685fa6952149079883e1a24ddd67b5921e1d60a63498cb013f"
    )
