"""Static deltas: what they hold, the superblock's encoding, garbage refused."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from store import (
    CorruptObjectError,
    FormatError,
    ObjectMissingError,
    ObjectType,
    RepoMode,
    Repository,
    UsageError,
)
from store.deltas import (
    DeltaEntry,
    Superblock,
    decode_superblock,
    delta_objects,
    encode_superblock,
    generate_delta,
    iter_delta_objects,
)
from store.filez import decode_filez, decode_metadata
from store.ids import ObjectId
from store.summary import read_summary, update_summary
from store.trees import root_node, walk
from tests.helpers import commit_files

A, B = ObjectId(bytes([1]) * 32), ObjectId(bytes([2]) * 32)


def _two_commits(tmp_path: Path, mode: RepoMode) -> tuple[Repository, ObjectId, ObjectId]:
    repo = Repository.init(tmp_path / "repo", mode)
    files = {f"f{n}": os.urandom(3000) for n in range(20)}
    v1 = commit_files(repo, tmp_path / "v1", files)
    files.update({"f0": b"changed", "new/g": os.urandom(5000)})
    v2 = commit_files(repo, tmp_path / "v2", files)
    return repo, v1, v2


def _read(delta: Path) -> tuple[Superblock, list[tuple[ObjectId, ObjectType, bytes]]]:
    superblock = decode_superblock((delta / "superblock").read_bytes())
    objects = list(iter_delta_objects(superblock, lambda i: (delta / str(i)).read_bytes()))
    return superblock, objects


def _verify(objects: list[tuple[ObjectId, ObjectType, bytes]]) -> None:
    for object_id, kind, payload in objects:
        if kind is ObjectType.FILE:
            decode_filez(payload, object_id)
        else:
            decode_metadata(kind, object_id, payload)


@pytest.mark.parametrize("mode", [RepoMode.ARCHIVE, RepoMode.BARE_USER])
def test_a_full_delta_holds_every_object_of_the_commit(tmp_path: Path, mode: RepoMode) -> None:
    repo, _, v2 = _two_commits(tmp_path, mode)
    path = generate_delta(repo, None, v2, part_size=16 << 10)
    assert path == repo.path / "deltas" / v2.hex()
    superblock, objects = _read(path)
    assert superblock.from_id is None and superblock.to_id == v2 and superblock.parts > 2
    assert all(len((path / str(i)).read_bytes()) <= 16 << 10 for i in range(superblock.parts))
    _verify(objects)
    ids = {oid for oid, _, _ in objects}
    commit = repo.read_commit(v2)
    assert {v2, commit.tree, commit.meta} <= ids
    files = {node.file for node in walk(repo, root_node(repo, v2)) if node.file is not None}
    assert files <= ids
    assert objects[0][:2] == (v2, ObjectType.COMMIT)  # metadata first


def test_a_delta_from_holds_only_what_from_lacks(tmp_path: Path) -> None:
    repo, v1, v2 = _two_commits(tmp_path, RepoMode.ARCHIVE)
    path = generate_delta(repo, v1, v2)
    assert path.name == f"{v1.hex()}-{v2.hex()}"
    _, objects = _read(path)
    _verify(objects)
    old_files = {node.file for node in walk(repo, root_node(repo, v1)) if node.file is not None}
    files = {oid for oid, kind, _ in objects if kind is ObjectType.FILE}
    assert len(files) == 2 and not files & old_files  # f0's new content and new/g
    assert v1 not in {oid for oid, _, _ in objects}


def test_the_summary_offers_generated_deltas(tmp_path: Path) -> None:
    repo, v1, v2 = _two_commits(tmp_path, RepoMode.ARCHIVE)
    generate_delta(repo, None, v2)
    generate_delta(repo, v1, v2)
    generate_delta(repo, v1, v2)  # again: replaced whole, listed once
    update_summary(repo)
    summary = read_summary(repo.path)
    assert summary is not None and set(summary.deltas) == {(None, v2), (v1, v2)}
    assert not [p for p in (repo.path / "deltas").iterdir() if p.name.startswith(".")]


def test_bad_requests_write_nothing(tmp_path: Path) -> None:
    repo, v1, _ = _two_commits(tmp_path, RepoMode.ARCHIVE)
    with pytest.raises(UsageError):
        generate_delta(repo, v1, v1)
    with pytest.raises(ObjectMissingError):
        generate_delta(repo, None, ObjectId(bytes(32)))
    assert not list((repo.path / "deltas").glob("*"))


def test_a_damaged_object_is_never_published(tmp_path: Path) -> None:
    repo, _, v2 = _two_commits(tmp_path, RepoMode.ARCHIVE)
    file_id = next(n.file for n in walk(repo, root_node(repo, v2)) if n.file is not None)
    path = Path(repo.object_path(file_id))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptObjectError):
        generate_delta(repo, None, v2)
    assert not list((repo.path / "deltas").glob("*"))


def _sample() -> Superblock:
    entries = (
        DeltaEntry(A, ObjectType.COMMIT, 0, 0, 10),
        DeltaEntry(B, ObjectType.FILE, 0, 10, 5),
        DeltaEntry(ObjectId(bytes([3]) * 32), ObjectType.FILE, 1, 0, 7),
    )
    return Superblock(A, B, (15, 7), entries)


def test_superblocks_round_trip() -> None:
    data = encode_superblock(_sample())
    assert decode_superblock(data) == _sample()
    assert decode_superblock(encode_superblock(Superblock(None, A, (), ()))).parts == 0


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: b"",
        lambda d: d[:-1],
        lambda d: d + b"\0",
        lambda d: b"X" + d[1:],
        lambda d: os.urandom(len(d)),
    ],
)
def test_garbage_superblocks_are_refused(mangle: Callable[[bytes], bytes]) -> None:
    with pytest.raises(FormatError):
        decode_superblock(mangle(encode_superblock(_sample())))


@pytest.mark.parametrize(
    "entries, sizes",
    [
        ([(A, 0, 0, 10), (B, 0, 12, 3)], (15,)),  # a gap
        ([(A, 0, 0, 10), (B, 0, 5, 10)], (15,)),  # an overlap
        ([(A, 0, 0, 10), (B, 0, 10, 10)], (15,)),  # past the end of the part
        ([(A, 0, 0, 10), (A, 1, 0, 5)], (10, 5)),  # an object twice
        ([(A, 0, 0, 10)], (10, 5)),  # a part nothing fills
        ([(A, 1, 0, 10)], (10, 10)),  # a part skipped
        ([(A, 0, 0, 1 << 62)], (10,)),  # an oversized claim
    ],
)
def test_superblocks_that_do_not_tile_their_parts_are_refused(
    entries: list[tuple[ObjectId, int, int, int]], sizes: tuple[int, ...]
) -> None:
    listed = tuple(DeltaEntry(oid, ObjectType.FILE, p, o, n) for oid, p, o, n in entries)
    valid = encode_superblock(Superblock(None, A, (5,), (DeltaEntry(B, ObjectType.FILE, 0, 0, 5),)))
    with pytest.raises(FormatError):
        encode_superblock(Superblock(None, A, sizes, listed))
    forged = bytearray(valid[:39])  # tag, version, has_from, to
    forged += len(sizes).to_bytes(4, "big") + b"".join(s.to_bytes(8, "big") for s in sizes)
    forged += len(listed).to_bytes(4, "big")
    for e in listed:
        forged += e.object_id + b"f" + e.part.to_bytes(4, "big")
        forged += e.offset.to_bytes(8, "big") + e.length.to_bytes(8, "big")
    with pytest.raises(FormatError):
        decode_superblock(bytes(forged))


def test_a_part_of_the_wrong_size_is_refused() -> None:
    superblock = _sample()
    with pytest.raises(CorruptObjectError, match="part 0"):
        list(iter_delta_objects(superblock, lambda i: bytes(14)))
    objects = list(iter_delta_objects(superblock, lambda i: bytes(superblock.part_sizes[i])))
    assert [len(p) for _, _, p in objects] == [10, 5, 7]


def test_parts_given_as_files_yield_the_same_objects_and_are_closed(tmp_path: Path) -> None:
    """F5 of the security review: pull hands parts over as spool files, not bytes."""
    superblock = _sample()
    data = {i: os.urandom(size) for i, size in enumerate(superblock.part_sizes)}
    opened: list[io.BufferedRandom] = []

    def as_file(index: int) -> io.BufferedRandom:
        path = tmp_path / str(index)
        path.write_bytes(data[index])
        opened.append(open(path, "rb+"))  # noqa: SIM115
        return opened[-1]

    from_files = list(iter_delta_objects(superblock, as_file))
    assert from_files == list(iter_delta_objects(superblock, data.__getitem__))
    assert opened and all(part.closed for part in opened)
    with pytest.raises(CorruptObjectError, match="part 0"):
        list(iter_delta_objects(superblock, lambda i: io.BytesIO(bytes(14))))


def test_delta_objects_orders_metadata_before_files(tmp_path: Path) -> None:
    repo, _, v2 = _two_commits(tmp_path, RepoMode.BARE_USER)
    kinds = [kind for _, kind in delta_objects(repo, None, v2)]
    assert kinds[0] is ObjectType.COMMIT
    first_file = kinds.index(ObjectType.FILE)
    assert ObjectType.FILE not in kinds[:first_file] and set(kinds[first_file:]) == {
        ObjectType.FILE
    }


@pytest.mark.parametrize("mode", [RepoMode.ARCHIVE, RepoMode.BARE_USER])
def test_an_object_larger_than_a_part_has_a_part_of_its_own(tmp_path: Path, mode: RepoMode) -> None:
    repo = Repository.init(tmp_path / "repo", mode)
    big = os.urandom(3 << 20)  # three zstd chunks, incompressible
    commit_id = commit_files(repo, tmp_path / "src", {"big": big, "small": "s"})
    path = generate_delta(repo, None, commit_id, part_size=64 << 10)
    superblock, objects = _read(path)
    _verify(objects)
    (big_entry,) = [e for e in superblock.entries if e.length > 64 << 10]
    assert sum(e.part == big_entry.part for e in superblock.entries) == 1
    assert superblock.part_sizes[big_entry.part] == big_entry.length


def test_a_delta_to_a_pruned_commit_is_no_longer_offered(tmp_path: Path) -> None:
    from store.prune import prune

    repo, v1, v2 = _two_commits(tmp_path, RepoMode.ARCHIVE)
    generate_delta(repo, None, v1)
    generate_delta(repo, v1, v2)
    assert set(update_summary(repo).deltas) == {(None, v1), (v1, v2)}
    prune(repo, refs_only=True, depth=0)
    assert not repo.has_object(v1)
    assert update_summary(repo).deltas == {}
