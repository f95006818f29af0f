"""Property tests of --tree=tar=: random hostile archives, and damaged streams.

The first property compares the importer with a model of the rules it documents
(fs/tarlayer.py): for a random archive the model says "refused" or gives the exact
tree, and the import must agree: either a SapwoodError and no ref, or that tree.
The second damages a good archive at random: a compressed one is then refused or
committed unchanged, never with other bytes.
"""

from __future__ import annotations

import bz2
import gzip
import io
import itertools
import lzma
import random
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fs.commit import CommitRequest, Layer, LayerKind, make_commit
from store import (
    DirMeta,
    FileHeader,
    ObjectId,
    RepoMode,
    Repository,
    SapwoodError,
    check_name,
    root_node,
    walk,
)

Path_ = tuple[bytes, ...]
_T = TypeVar("_T")
_OWN_TYPE = -2  # a mode of 0o644 with the member's own file-type bits, as Go writes
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "plain": lambda data: data,
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
}
_branches = itertools.count()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repository]:
    repository = Repository.init(tmp_path_factory.mktemp("props") / "repo", RepoMode.BARE_USER)
    yield repository
    repository.close()


# ----- random archives ---------------------------------------------------------------

_NOT_UTF8 = b"\xff\xfeodd".decode("utf-8", "surrogateescape")
# Names, modes, owners, xattrs and targets the rules accept, and ones they refuse. An
# archive draws from the acceptable pools alone or from both (a "hostile" archive), so
# that both outcomes are common.
_SAFE_COMPONENTS = ["a", "a", "b", "b", "c", ".", "", "é", _NOT_UTF8, "x" * 255, "new\nline"]
_BAD_COMPONENTS = ["..", "x" * 256]
_BAD_NAMES = ["a/../b", "../a", "/etc/passwd", "/", "/a/"]
_SAFE_MODES = [0o644, 0o755, 0o4755, 0o7777, 0, _OWN_TYPE]
_BAD_MODES = [0o1000644, 0o20644, 0o40755, 0o100644, -1]  # some fit one type only
_SAFE_IDS = [0, 0, 0, 1000, 2**32 - 1]
_BAD_IDS = [2**32, -1, 2**40]
_SAFE_XATTRS: list[tuple[tuple[str, str], ...]] = [
    (),
    (),
    (("user.k", "v"),),
    (("user.a", "1"), ("trusted.b", "2")),
]
_BAD_XATTRS: list[tuple[tuple[str, str], ...]] = [
    (("", "v"),),
    (("user.\0", "v"),),
    (("user." + "n" * 300, "v"),),
]
# Not 4095 bytes: bare-user keeps a symlink's target in one xattr, which ext4 caps near 4 KiB.
_SAFE_TARGETS = ["a", "/etc", "../..", "b/c", _NOT_UTF8, "t" * 2000]
_BAD_TARGETS = ["", "t" * 5000]


def _pool(hostile: bool, safe: list[_T], bad: list[_T]) -> st.SearchStrategy[_T]:
    return st.sampled_from(safe + bad if hostile else safe)


def _names(hostile: bool) -> st.SearchStrategy[str]:
    built = st.builds(
        lambda lead, parts: lead + "/".join(parts),
        st.sampled_from(["", "", "./"]),
        st.lists(_pool(hostile, _SAFE_COMPONENTS, _BAD_COMPONENTS), min_size=1, max_size=3),
    )
    return st.one_of(built, st.sampled_from(_BAD_NAMES)) if hostile else built


@dataclass(frozen=True)
class Spec:
    kind: str  # "file", "dir", "symlink" or "hardlink"
    name: str
    data: bytes = b""
    target: str = ""  # a symlink's target or a hardlink's link name
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    xattrs: tuple[tuple[str, str], ...] = ()


@st.composite
def _specs(draw: st.DrawFn) -> list[Spec]:
    hostile = draw(st.booleans())
    specs: list[Spec] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["file", "file", "dir", "dir", "symlink", "hardlink"]))
        target = ""
        if kind == "hardlink":
            earlier = [s.name for s in specs] or ["nowhere"]
            target = draw(st.sampled_from([*earlier, *earlier, "nowhere", "../x", "/abs"]))
        elif kind == "symlink":
            target = draw(_pool(hostile, _SAFE_TARGETS, _BAD_TARGETS))
        data = draw(st.binary(max_size=40)) if kind == "file" else b""
        specs.append(
            Spec(
                kind,
                draw(_names(hostile)),
                data,
                target,
                draw(_pool(hostile, _SAFE_MODES, _BAD_MODES)),
                draw(_pool(hostile, _SAFE_IDS, _BAD_IDS)),
                draw(_pool(hostile, _SAFE_IDS, _BAD_IDS)),
                draw(_pool(hostile, _SAFE_XATTRS, _BAD_XATTRS)),
            )
        )
    return specs


_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}
_TYPES["hardlink"] = tarfile.LNKTYPE
_TYPE_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}
_TYPE_BITS["hardlink"] = stat.S_IFREG


def _mode(spec: Spec) -> int:
    return _TYPE_BITS[spec.kind] | 0o644 if spec.mode == _OWN_TYPE else spec.mode


def _write(specs: list[Spec]) -> bytes:
    """A PAX archive of ``specs``; modes tarfile will not write are patched in after."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.errors = "surrogateescape"
        for spec in specs:
            info = tarfile.TarInfo(spec.name)
            info.type = _TYPES[spec.kind]
            info.linkname, info.uid, info.gid = spec.target, spec.uid, spec.gid
            info.mode = _mode(spec) & 0o7777
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in spec.xattrs}
            info.size = len(spec.data)
            tar.addfile(info, io.BytesIO(spec.data) if spec.kind == "file" else None)
    data = buffer.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data), errors="surrogateescape") as tar:
        headers = [member.offset_data - 512 for member in tar.getmembers()]
    assert len(headers) == len(specs)
    for spec, header in zip(specs, headers, strict=True):
        mode = _mode(spec)
        if not 0 <= mode <= 0o7777:
            data = _patch_mode(data, header, mode)
    return data


def _patch_mode(data: bytes, header: int, mode: int) -> bytes:
    field = b"\xff" * 8 if mode < 0 else b"%07o\0" % mode
    out = bytearray(data)
    out[header + 100 : header + 108] = field
    out[header + 148 : header + 156] = b" " * 8
    out[header + 148 : header + 155] = b"%06o\0" % sum(out[header : header + 512])
    return bytes(out)


# ----- the model ----------------------------------------------------------------------


class Refused(Exception):
    """The model's verdict: the importer must refuse this archive."""


def _parts(name: str) -> Path_:
    if name.startswith("/"):
        raise Refused
    parts = tuple(p for p in name.encode("utf-8", "surrogateescape").split(b"/") if p)
    parts = tuple(p for p in parts if p != b".")
    if b".." in parts or any(len(p) > 255 for p in parts):
        raise Refused
    return parts


def _owner_mode(spec: Spec) -> tuple[int, int, int]:
    mode, kind = _mode(spec), _TYPE_BITS[spec.kind]
    if mode < 0 or mode & ~0o7777 not in (0, kind):
        raise Refused
    if not (0 <= spec.uid < 2**32 and 0 <= spec.gid < 2**32):
        raise Refused
    return spec.uid, spec.gid, kind | (mode & 0o7777)


def _xattrs(spec: Spec) -> tuple[tuple[bytes, bytes], ...]:
    pairs = tuple(sorted((k.encode(), v.encode()) for k, v in spec.xattrs))
    if any(not k or b"\0" in k or len(k) > 255 for k, _ in pairs):
        raise Refused
    return pairs


@dataclass
class Model:
    files: dict[Path_, tuple[FileHeader, bytes]]
    dirs: dict[Path_, DirMeta]


def _expected(specs: list[Spec]) -> Model:
    """What importing ``specs`` must give (the rules of fs/tarlayer.py), or Refused."""
    default = DirMeta(0, 0, 0o40755)
    model = Model({}, {(): default})
    for spec in specs:
        name = spec.name.rstrip("/") if spec.kind == "dir" else spec.name  # as tarfile reads
        path = _parts(name)
        chain = [path[:i] for i in range(1, len(path) + (spec.kind == "dir"))]
        if any(prefix in model.files for prefix in chain):
            raise Refused  # through a file or symlink, or a directory over one
        if spec.kind == "dir":
            uid, gid, mode = _owner_mode(spec)
            for prefix in chain:
                model.dirs.setdefault(prefix, default)
            model.dirs[path] = DirMeta(uid, gid, mode, _xattrs(spec))
            continue
        if not path or path in model.dirs:
            raise Refused  # the root, or a directory of the archive, as a non-directory
        if spec.kind == "hardlink":
            link = _parts(spec.target)
            if link not in model.files:
                raise Refused
            entry = model.files[link]
        else:
            uid, gid, mode = _owner_mode(spec)
            target = spec.target.encode("utf-8", "surrogateescape")
            if spec.kind == "symlink" and not 0 < len(target) <= 4095:
                raise Refused
            entry = (FileHeader(uid, gid, mode, target, _xattrs(spec)), spec.data)
        for prefix in chain:
            model.dirs.setdefault(prefix, default)
        model.files[path] = entry
    return model


def _actual(repo: Repository, commit_id: ObjectId) -> Model:
    """The committed tree, checking on the way that every name is a valid one."""
    found = Model({}, {})
    for node in walk(repo, root_node(repo, commit_id)):
        path = tuple(node.path.split(b"/")[1:]) if node.path != b"/" else ()
        for name in path:
            check_name(name)  # inside the root: no '', '.', '..', '/', NUL, <= 255 bytes
        if node.dir is not None:
            found.dirs[path] = repo.read_dirmeta(node.dir.meta)
        else:
            assert node.file is not None
            header, _ = repo.read_file_header(node.file)
            found.files[path] = (header, repo.read_file(node.file))
    return found


@SETTINGS
@given(specs=_specs(), compression=st.sampled_from(list(COMPRESS)))
def test_random_archives_are_refused_or_committed_exactly(
    repo: Repository, tmp_path_factory: pytest.TempPathFactory, specs: list[Spec], compression: str
) -> None:
    archive = tmp_path_factory.mktemp("archive") / "random.tar"
    archive.write_bytes(COMPRESS[compression](_write(specs)))
    branch = f"b{next(_branches)}"
    try:
        expected: Model | None = _expected(specs)
    except Refused:
        expected = None
    try:
        commit_id = make_commit(repo, CommitRequest(branch, [Layer(LayerKind.TAR, str(archive))]))
    except SapwoodError as exc:
        event(f"refused: {str(exc).rsplit(': ', 1)[-1][:40]}")
        assert "\n" not in str(exc)
        assert expected is None, f"refused an acceptable archive: {exc}"
        assert branch not in repo.refs()
        return
    event(f"committed {len(specs)} members")
    assert expected is not None, "committed an archive the rules refuse"
    assert _actual(repo, commit_id.commit_id) == expected


# ----- damaged streams ----------------------------------------------------------------


def _good_archive() -> bytes:
    rng = random.Random(9)
    return _write(
        [
            Spec("dir", "d", mode=0o755),
            Spec("file", "d/noise", rng.randbytes(20_000)),
            Spec("file", "d/text", b"line\n" * 5_000),
            Spec("symlink", "s", target="d/text", mode=0o777),
            Spec("hardlink", "h", target="d/noise"),
        ]
    )


_GOOD = _good_archive()
_DAMAGES = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=40), st.just(0)),
)


def _damage(data: bytes, damage: tuple[str, object, int]) -> bytes:
    kind, where, xor = damage
    if kind == "append":
        assert isinstance(where, bytes)
        return data + where
    assert isinstance(where, float)
    at = int(where * len(data))
    if kind == "truncate":
        return data[:at]
    return data[:at] + bytes([data[at] ^ xor]) + data[at + 1 :]


@pytest.fixture(scope="module")
def good_trees(repo: Repository, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ObjectId]:
    """The root tree id of each intact archive's commit."""
    trees = {}
    for kind, compress in COMPRESS.items():
        archive = tmp_path_factory.mktemp("good") / "good.tar"
        archive.write_bytes(compress(_GOOD))
        result = make_commit(
            repo, CommitRequest(f"good-{kind}", [Layer(LayerKind.TAR, str(archive))])
        )
        trees[kind] = repo.read_commit(result.commit_id).tree
    return trees


@SETTINGS
@given(compression=st.sampled_from(list(COMPRESS)), damage=_DAMAGES)
def test_a_damaged_archive_is_refused_or_committed_unchanged(
    repo: Repository,
    good_trees: dict[str, ObjectId],
    tmp_path_factory: pytest.TempPathFactory,
    compression: str,
    damage: tuple[str, object, int],
) -> None:
    """Compressed: any damage is refused, or (a flipped bit nothing reads, NUL padding)
    gives the intact tree. Plain tar has no checksum over content, so a flipped content
    byte is committed; still only SapwoodErrors, and a truncation never commits less."""
    data = _damage(COMPRESS[compression](_GOOD), damage)
    archive = tmp_path_factory.mktemp("damaged") / "damaged.tar"
    archive.write_bytes(data)
    branch = f"d{next(_branches)}"
    try:
        result = make_commit(repo, CommitRequest(branch, [Layer(LayerKind.TAR, str(archive))]))
    except SapwoodError as exc:
        event(f"{damage[0]}: refused")
        assert "\n" not in str(exc)
        assert branch not in repo.refs()
        return
    event(f"{damage[0]}: committed")
    unchanged = repo.read_commit(result.commit_id).tree == good_trees[compression]
    if compression != "plain" or damage[0] != "flip":
        assert unchanged, f"{damage[0]} of a {compression} archive committed other content"
    if damage[0] == "append" and compression != "plain":
        appended = damage[1]
        assert isinstance(appended, bytes)
        assert not appended.strip(b"\0")
