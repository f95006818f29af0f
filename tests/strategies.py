"""Hypothesis strategies for the store's values, shared by the property tests."""

from __future__ import annotations

import stat

from hypothesis import strategies as st

from store import Commit, DirEntry, DirMeta, DirTree, FileHeader, ObjectId

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
text = st.text(max_size=100)  # any Unicode but lone surrogates, which are not UTF-8

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
    mode=perm.map(lambda m: stat.S_IFLNK | m),
    symlink_target=st.binary(min_size=1, max_size=300).filter(lambda t: b"\0" not in t),
    xattrs=xattrs,
)
file_headers = regular_headers | symlink_headers
dirmetas = st.builds(
    DirMeta, uid=u32, gid=u32, mode=perm.map(lambda m: stat.S_IFDIR | m), xattrs=xattrs
)


@st.composite
def dirtrees(draw: st.DrawFn) -> DirTree:
    file_names = draw(st.sets(names, max_size=5))
    dir_names = draw(st.sets(names, max_size=5)) - file_names
    files = {n: draw(ids) for n in file_names}
    dirs = {n: DirEntry(draw(ids), draw(ids)) for n in dir_names}
    return DirTree.build(files, dirs)


commits = st.builds(
    Commit,
    tree=ids,
    meta=ids,
    parent=st.none() | ids,
    timestamp=st.integers(-(2**63), 2**63 - 1),
    subject=text,
    body=text,
    metadata=st.dictionaries(st.text(max_size=20), text, max_size=4).map(
        lambda d: tuple(sorted(d.items()))
    ),
)
