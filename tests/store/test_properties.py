"""Properties of the decoders, of name checking and of revision parsing, on generated input.

Every decoder either returns a value whose encoding is exactly its input or raises
FormatError, whatever the bytes (random, or a valid encoding flipped, cut, extended or
given a huge length field); the name checks accept exactly the documented rules and
raise nothing but their own error; rev_parse raises nothing but SapwoodError.
Few examples each (the suite stays fast); hypothesis keeps the failures it finds.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import (
    Commit,
    DirMeta,
    DirTree,
    FileHeader,
    FormatError,
    InvalidNameError,
    InvalidRefNameError,
    ObjectId,
    RefNotFoundError,
    RepoMode,
    Repository,
    SapwoodError,
    check_name,
    check_ref_name,
    rev_parse,
    split_path,
)
from store.objects import file_stat
from tests.strategies import commits, dirmetas, dirtrees, file_headers, text

FAST = settings(max_examples=60, deadline=None)

Record = FileHeader | DirMeta | DirTree | Commit
Decoder = Callable[[bytes], Record]
KINDS: dict[str, tuple[st.SearchStrategy[Record], Decoder]] = {
    "file header": (file_headers, FileHeader.decode),
    "dirmeta": (dirmetas, DirMeta.decode),
    "dirtree": (dirtrees(), DirTree.decode),
    "commit": (commits, Commit.decode),
}


# ----- round trips ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_decode_inverts_encode(kind: str) -> None:
    values, decode = KINDS[kind]

    @FAST
    @given(values)
    def check(value: Record) -> None:
        assert decode(value.encode()) == value

    check()


# ----- decoding anything ----------------------------------------------------------------
def _decodes_canonically_or_refuses(decode: Decoder, data: bytes) -> None:
    """The property itself: any other exception than FormatError fails the test."""
    try:
        value = decode(data)
    except FormatError:
        return
    assert value.encode() == data


@st.composite
def mutated(draw: st.DrawFn, values: st.SearchStrategy[Record]) -> bytes:
    """A valid encoding, then one damage: a flipped byte, a cut, bytes added or put in
    its middle, or a u32 overwritten with a huge or slightly wrong length."""
    data = bytearray(draw(values).encode())
    how = draw(st.sampled_from(["flip", "cut", "extend", "insert", "length"]))
    at = draw(st.integers(0, len(data) - 1))
    if how == "flip":
        data[at] ^= draw(st.integers(1, 255))
    elif how == "cut":
        del data[at:]
    elif how == "extend":
        data += draw(st.binary(min_size=1, max_size=8))
    elif how == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=8))
    else:
        at = min(at, max(len(data) - 4, 0))
        (old,) = struct.unpack_from(">I", data.ljust(at + 4, b"\0"), at)
        new = draw(st.sampled_from([2**32 - 1, 2**31, 2**16, old + 1, max(old - 1, 0)]))
        data[at : at + 4] = struct.pack(">I", new)
    return bytes(data)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_decoding_random_bytes_gives_a_canonical_value_or_format_error(kind: str) -> None:
    _, decode = KINDS[kind]
    tag = {"file header": b"F\x01", "dirmeta": b"M\x01", "dirtree": b"T\x01", "commit": b"C\x01"}

    @FAST
    @given(st.binary(max_size=300) | st.binary(max_size=300).map(lambda b: tag[kind] + b))
    def check(data: bytes) -> None:
        _decodes_canonically_or_refuses(decode, data)

    check()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_decoding_damaged_encodings_gives_a_canonical_value_or_format_error(kind: str) -> None:
    values, decode = KINDS[kind]

    @settings(max_examples=150, deadline=None)
    @given(mutated(values))
    def check(data: bytes) -> None:
        _decodes_canonically_or_refuses(decode, data)

    check()


@FAST
@given(st.one_of(mutated(file_headers), st.binary(max_size=100)), st.integers(0, 2**40))
def test_file_stat_agrees_with_decode(data: bytes, size: int) -> None:
    """The mount's in-place parse raises only FormatError, and where the full decode
    accepts a header it reads the same owner and mode."""
    try:
        header = FileHeader.decode(data)
    except FormatError:
        header = None
    try:
        found = file_stat(data, size)
    except FormatError:
        assert header is None
        return
    if header is not None:
        assert (found.uid, found.gid, found.mode) == (header.uid, header.gid, header.mode)


# ----- constructors refuse what the encoding cannot hold ---------------------------------
@FAST
@given(
    st.integers(max_value=-1) | st.integers(min_value=2**32),
    st.sampled_from(["uid", "gid"]),
)
def test_owners_beyond_u32_are_refused_when_made(value: int, which: str) -> None:
    uid, gid = (value, 0) if which == "uid" else (0, value)
    with pytest.raises(FormatError, match=which):
        FileHeader(uid=uid, gid=gid, mode=stat.S_IFREG | 0o644)
    with pytest.raises(FormatError, match=which):
        DirMeta(uid=uid, gid=gid, mode=stat.S_IFDIR | 0o755)


@FAST
@given(st.integers(max_value=-1) | st.integers(min_value=0o200000))
def test_modes_beyond_st_mode_are_refused(mode: int) -> None:
    with pytest.raises(FormatError, match="mode"):
        FileHeader(0, 0, stat.S_IFREG | (mode & ~0o170000))
    with pytest.raises(FormatError, match="mode"):
        DirMeta(0, 0, stat.S_IFDIR | (mode & ~0o170000))


@FAST
@given(st.integers(max_value=-(2**63) - 1) | st.integers(min_value=2**63))
def test_commit_times_beyond_i64_are_refused(timestamp: int) -> None:
    with pytest.raises(FormatError, match="timestamp"):
        Commit(ObjectId(bytes(32)), ObjectId(bytes(32)), None, timestamp)


surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=())
not_utf8 = st.builds(lambda a, s, b: a + s + b, text, surrogates, text)


@FAST
@given(not_utf8, st.sampled_from(["subject", "body", "key", "value"]))
def test_commit_text_that_is_not_utf8_is_refused(bad: str, field: str) -> None:
    subject = bad if field == "subject" else ""
    body = bad if field == "body" else ""
    metadata = {"key": ((bad, "v"),), "value": (("k", bad),)}.get(field, ())
    with pytest.raises(FormatError, match="UTF-8"):
        Commit(ObjectId(bytes(32)), ObjectId(bytes(32)), None, 0, subject, body, metadata)


# ----- names ----------------------------------------------------------------------------
def _valid_name(name: bytes) -> bool:
    """DESIGN.md: not empty, not '.' or '..', no '/' and no NUL, at most 255 bytes."""
    return 0 < len(name) <= 255 and name not in (b".", b"..") and not {0, 0x2F} & set(name)


tricky_bytes = st.lists(
    st.sampled_from([b"a", b".", b"..", b"/", b"\0", b"\n", b"\xff", b"\xc3\xa9", b" "])
    | st.binary(max_size=3),
    max_size=8,
).map(b"".join)
file_names = tricky_bytes | st.binary(min_size=250, max_size=260)


@settings(max_examples=200, deadline=None)
@given(file_names)
def test_check_name_accepts_exactly_the_documented_names(name: bytes) -> None:
    if _valid_name(name):
        assert check_name(name) == name
    else:
        with pytest.raises(InvalidNameError):
            check_name(name)


any_text = st.text(st.characters(exclude_categories=()), max_size=30)
# Text as a command line gives it (undecodable bytes as surrogateescape's surrogates),
# and with other lone surrogates, which no byte string decodes to.
tricky_text = st.text(st.sampled_from(list("a./\n\0 é")) | surrogates, max_size=12)
path_texts = (
    any_text | tricky_text | tricky_bytes.map(lambda b: b.decode("utf-8", "surrogateescape"))
)


@settings(max_examples=200, deadline=None)
@given(path_texts)
def test_split_path_gives_checked_names_or_invalid_name_error(path: str) -> None:
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = None  # a lone surrogate that is no byte of a command line
    expected = None if raw is None else [p for p in raw.split(b"/") if p not in (b"", b".")]
    if expected is None or not all(_valid_name(p) for p in expected):
        with pytest.raises(InvalidNameError):
            split_path(path)
    else:
        assert split_path(path) == expected


_FIRST = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_REST = _FIRST | set(".+-")


def _valid_component(part: str) -> bool:
    return bool(part) and part[0] in _FIRST and set(part) <= _REST


def _valid_ref(name: str) -> bool:
    """docs/decisions.md's rule, written out apart from the regular expression:
    [REMOTE:]COMPONENT(/COMPONENT)*, components of ASCII letters, digits and _ . + -
    starting with a letter, digit or _; no '..'; not ending in '.lock' or '.'; at most
    255 bytes."""
    remote, sep, ref = name.rpartition(":")
    if sep and not _valid_component(remote):
        return False
    return (
        all(_valid_component(part) for part in ref.split("/"))
        and ".." not in name
        and not name.endswith((".lock", "."))
        and len(name.encode("utf-8", "surrogatepass")) <= 255
    )


good_refs = st.sampled_from(["main", "os/x86_64/stable", "origin:os/main", "v1.0", "a_b-c+d"])
ref_texts = (
    st.text(st.sampled_from("ab_Z9.+-/:~^ \n\t\0é"), max_size=16)
    | any_text
    | tricky_text
    | st.text(st.sampled_from("ab/"), min_size=250, max_size=260)
    | st.builds(
        lambda good, end: good + end,
        good_refs,
        st.sampled_from(["", "\n", ".", ".lock", "/", ":", "..", " ", "\ud800", "\udcff"]),
    )
)


@settings(max_examples=300, deadline=None)
@given(ref_texts)
def test_check_ref_name_accepts_exactly_the_documented_names(name: str) -> None:
    if _valid_ref(name):
        assert check_ref_name(name) == name
    else:
        with pytest.raises(InvalidRefNameError):
            check_ref_name(name)


@pytest.mark.parametrize("name", ["main\n", "main\nother", "a:b:c", "x.", "x.lock", "é"])
def test_ref_names_found_by_the_properties(name: str) -> None:
    with pytest.raises(InvalidRefNameError):
        check_ref_name(name)


# ----- revisions ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def history_repo(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Repository, list[ObjectId]]]:
    """Three commits on 'main' (one also on 'dead' and 'beef'), read-only for the tests."""
    repo = Repository.init(tmp_path_factory.mktemp("revs") / "repo", RepoMode.BARE_USER)
    chain: list[ObjectId] = []
    with repo.transaction() as txn:
        meta = txn.write_dirmeta(DirMeta(0, 0, stat.S_IFDIR | 0o755))
        tree = txn.write_dirtree(DirTree())
        for n in range(3):
            parent = chain[-1] if chain else None
            chain.append(txn.write_commit(Commit(tree, meta, parent, n, f"commit {n}")))
        txn.set_ref("main", chain[-1])
        txn.set_ref("dead", chain[0])
        txn.set_ref("beef", chain[1])
    yield repo, chain
    repo.close()


def _rev_texts(chain_hex: list[str]) -> st.SearchStrategy[str]:
    base = st.sampled_from(["main", "dead", "beef", "", "nosuch", *chain_hex]) | st.builds(
        lambda h, n: h[:n], st.sampled_from(chain_hex), st.integers(0, 64)
    )
    suffix = st.sampled_from(["^", "~", "~0", "~1", "~2", "~3", "~007", "~99999999999999999999"])
    composed = st.builds(lambda b, s: b + "".join(s), base, st.lists(suffix, max_size=4))
    return composed | any_text | st.text(st.sampled_from("main~^0123456789abcdef"), max_size=20)


def test_rev_parse_of_any_text_raises_only_sapwood_errors(
    history_repo: tuple[Repository, list[ObjectId]],
) -> None:
    repo, chain = history_repo

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_rev_texts([c.hex() for c in chain]))
    def check(rev: str) -> None:
        try:
            found = rev_parse(repo, rev)
        except SapwoodError:
            return
        assert found in chain

    check()


def test_rev_parse_counts_generations(history_repo: tuple[Repository, list[ObjectId]]) -> None:
    repo, chain = history_repo
    heads = {"main": 2, "dead": 0, "beef": 1}

    @settings(max_examples=100, deadline=None)
    @given(st.sampled_from(sorted(heads)), st.lists(st.sampled_from(["^", "~", "~0", "~2"])))
    def check(ref: str, suffixes: list[str]) -> None:
        back = sum(1 if s in ("^", "~") else int(s[1:]) for s in suffixes)
        rev = ref + "".join(suffixes)
        if back > heads[ref]:
            with pytest.raises(RefNotFoundError):
                rev_parse(repo, rev)
        else:
            assert rev_parse(repo, rev) == chain[heads[ref] - back]

    check()


@pytest.mark.parametrize(
    "rev", ["", "~", "^", "main~99999999999999999999", "main~" + "9" * 5000, "\udcff", "\ud800"]
)
def test_revisions_found_by_the_properties(
    history_repo: tuple[Repository, list[ObjectId]], rev: str
) -> None:
    with pytest.raises(RefNotFoundError):
        rev_parse(history_repo[0], rev)


def test_many_suffixes_parse_in_linear_time(
    history_repo: tuple[Repository, list[ObjectId]],
) -> None:
    import time

    started = time.monotonic()
    with pytest.raises(RefNotFoundError):
        rev_parse(history_repo[0], "main" + "~0" * 50_000 + "~3")
    assert time.monotonic() - started < 2
