"""Attack 9: DirTree's hand-written encoding and its names checked together
(names.check_names) against the code they replaced (25f332c^: Writer's encoding, and
check_name a name at a time): the same bytes for every tree the old code accepted, the
same error for every one it refused."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from store.encoding import Writer
from store.errors import FormatError, InvalidNameError
from store.names import check_name
from store.objects import FORMAT_VERSION, DirEntry, DirTree

_ID = st.binary(min_size=32, max_size=32)
_ODD_ID = st.one_of(_ID, _ID, _ID, st.binary(max_size=40))  # now and then a wrong length
# Short names over an alphabet of the bytes that matter, and a few long ones near 255.
_NAME = st.one_of(
    st.binary(max_size=6).map(lambda raw: bytes(b"a./\0\xff"[b % 5] for b in raw)),
    st.sampled_from([b"", b".", b"..", b"...", b"a/b", b"\0", b"x" * 255, b"y" * 256]),
    st.integers(250, 260).map(lambda n: b"z" * n),
    st.binary(min_size=1, max_size=12),
)


def _old_check(files: list[tuple[bytes, bytes]], dirs: list[tuple[bytes, DirEntry]]) -> None:
    """25f332c^'s DirTree.__post_init__."""
    file_names = [n for n, _ in files]
    dir_names = [n for n, _ in dirs]
    for names in (file_names, dir_names):
        if names != sorted(set(names)):
            raise FormatError("dirtree entries not sorted or not unique")
    if set(file_names) & set(dir_names):
        raise FormatError("dirtree names a file and a directory alike")
    for name in (*file_names, *dir_names):
        check_name(name, "a directory tree")


def _old_encode(files: list[tuple[bytes, bytes]], dirs: list[tuple[bytes, DirEntry]]) -> bytes:
    """25f332c^'s DirTree.encode."""
    w = Writer()
    w.raw(b"T")
    w.u8(FORMAT_VERSION)
    w.u32(len(files))
    for name, file_id in files:
        w.blob(name)
        w.object_id(file_id)
    w.u32(len(dirs))
    for name, entry in dirs:
        w.blob(name)
        w.object_id(entry.tree)
        w.object_id(entry.meta)
    return w.getvalue()


def _outcome(action: Callable[[], object]) -> tuple[str, object]:
    try:
        return "ok", action()
    except (FormatError, InvalidNameError) as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=600, deadline=None)
@given(
    st.lists(st.tuples(_NAME, _ODD_ID), max_size=8),
    st.lists(st.tuples(_NAME, _ODD_ID, _ODD_ID), max_size=5),
    st.booleans(),
)
def test_the_same_trees_accepted_and_the_same_bytes(
    raw_files: list[tuple[bytes, bytes]],
    raw_dirs: list[tuple[bytes, bytes, bytes]],
    sort: bool,
) -> None:
    files = [(n, i) for n, i in raw_files]
    dirs = [(n, DirEntry(t, m)) for n, t, m in raw_dirs]  # type: ignore[arg-type]
    if sort:  # most draws sorted and unique, or nearly every one is refused as unsorted
        files = sorted(dict(files).items())
        dirs = sorted(dict(dirs).items())
    old = _outcome(lambda: _old_check(files, dirs))
    new = _outcome(lambda: DirTree(tuple(files), tuple(dirs)))  # type: ignore[arg-type]
    assert old[0] == new[0] and (old[0] == "ok" or old[1] == new[1])
    if new[0] != "ok":
        return
    tree = new[1]
    assert isinstance(tree, DirTree)
    encoded = _outcome(tree.encode)
    old_encoded = _outcome(lambda: _old_encode(files, dirs))
    assert encoded[0] == old_encoded[0]  # wrong id lengths: "id of 32 or 0 bytes" now
    if encoded[0] == "ok":
        assert encoded[1] == old_encoded[1]
        assert isinstance(encoded[1], bytes)
        assert DirTree.decode(encoded[1]) == tree
