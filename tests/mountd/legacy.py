"""Large archive objects for the mount's tests: such objects as repositories made
before zstd hold them (SWZ1: one zlib stream), hostile ones of zeros claiming hundreds
of GiB, and a view stand-in whose verifications wait (mountd/preparing.py's tests)."""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
import trio

from mountd.preparing import Preparer
from mountd.sources import Pace, Preparation
from store import ObjectId, RepoMode, Repository, filez, lookup
from store.filez import MAGIC_ZLIB, PREFIX
from store.framed import FramedContent
from store.index_types import ObjectRecord
from tests.helpers import commit_dir, raw_index


def large_archive_file(
    tmp_path: Path, name: str = "large", swz1: bool = False
) -> tuple[Repository, ObjectId, ObjectId, bytes]:
    """An archive repository (tmp_path/repo) whose commit holds /NAME, 3 MiB of random
    bytes (verified in a worker thread on its first read), as an SWZ1 object if
    ``swz1``: the repository, the commit, the file's object and its content."""
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    source = tmp_path / "src"
    source.mkdir()
    content = os.urandom(3 << 20)
    (source / name).write_bytes(content)
    commit_id = commit_dir(repo, source)
    file_id = lookup(repo, commit_id, f"/{name}").file
    assert file_id is not None
    if swz1:
        rewrite_as_swz1(repo, file_id, content)
    return repo, commit_id, file_id, content


def rewrite_as_swz1(repo: Repository, file_id: ObjectId, content: bytes) -> None:
    """Replace an archive object's file by the SWZ1 encoding of the same object: no
    frames, so the mount spools it (mountd/sources.py)."""
    path = repo.content.path(file_id)
    data = path.read_bytes()
    (header_len,) = PREFIX.unpack_from(data)[2:]
    header = data[PREFIX.size : PREFIX.size + header_len]
    path.chmod(0o644)
    path.write_bytes(
        PREFIX.pack(MAGIC_ZLIB, len(content), len(header)) + header + zlib.compress(content, 1)
    )


class WaitingView:
    """A view stand-in: inode ``ino`` is an object of ``sizes[ino]`` bytes, readable once
    its preparation ran; the preparations of ``held`` inodes wait for ``go`` (a hostile
    object of zeros whose verification takes minutes) without a look at their pace
    (the worst case: a chunk that never ends). ``paced`` counts their pace's calls
    (every 10 ms) instead: they wait for their turns as a real verification does."""

    def __init__(self, sizes: dict[int, int], held: set[int], paced: bool = False) -> None:
        self.sizes, self.held, self.paced = sizes, held, paced
        self.go = threading.Event()
        self.ready: set[object] = set()
        self.chunks: dict[int, int] = {}  # chunks "verified" by each inode (paced)

    def preparation(self, ino: int) -> Preparation | None:
        if ino in self.ready:
            return None

        def work(pace: Pace) -> object:
            if ino in self.held and not self.paced:
                self.go.wait(30)
            while ino in self.held and self.paced and not self.go.wait(0.01):
                pace()
                self.chunks[ino] = self.chunks.get(ino, 0) + 1
            return ino

        return Preparation(ObjectId(bytes([ino]) * 32), work, self.ready.add, self.sizes[ino])

    def read(self, ino: int, offset: int, size: int) -> bytes:
        return b"read"


def served_while_held(
    view: WaitingView, held: list[int], then: int, within: float = 2
) -> list[int]:
    """Reads of ``held`` started, then one of ``then``, which must end within ``within``
    seconds while the held ones still verify; the order the reads ended in."""
    preparer = Preparer(view)  # type: ignore[arg-type]
    served: list[int] = []

    async def read(ino: int) -> None:
        assert await preparer.read(ino, 0, 4) == b"read"
        served.append(ino)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for ino in held:
                nursery.start_soon(read, ino)
            await trio.sleep(0.2)  # the held ones asked for a thread
            try:
                with trio.fail_after(within):
                    await read(then)
            finally:
                view.go.set()

    trio.run(main)
    return served


def threads_of(pid: int) -> int:
    """How many threads process ``pid`` has."""
    return len(os.listdir(f"/proc/{pid}/task"))


def quick_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commit a sparse file of zeros quickly: a chunk of zeros is compressed once."""
    real = filez.frames
    cache: dict[bytes, bytes] = {}

    def frames(chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            if len(chunk) != filez.CHUNK or chunk.count(0) != len(chunk):
                yield from real([chunk])
                continue
            if chunk not in cache:
                cache[chunk] = b"".join(real([chunk]))
            yield cache[chunk]

    monkeypatch.setattr(filez, "frames", frames)


def zeros_claiming(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    claims: int,
    name: str = "hostile",
    files: dict[str, bytes] | None = None,
    sparse: dict[str, int] | None = None,
) -> Path:
    """An archive repository (tmp_path/repo) whose /NAME claims ``claims`` bytes of zeros
    (frames of about 20 bytes a MiB: 14 MB and minutes to verify for 256 GiB, then
    refused: its id is not theirs), beside ``files`` (name: content) and ``sparse``
    files of zeros (name: size; committed quickly, no disk)."""
    source = tmp_path / "src"
    source.mkdir()
    (source / name).write_bytes(os.urandom(3 << 20))
    for other, content in (files or {}).items():
        (source / other).write_bytes(content)
    for other, size in (sparse or {}).items():
        with (source / other).open("wb") as zeros:
            zeros.truncate(size)
    quick_frames(monkeypatch)
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    commit_id = commit_dir(repo, source)
    file_id = lookup(repo, commit_id, f"/{name}").file
    assert file_id is not None
    header, _ = repo.read_file_header(file_id)
    path = repo.content.path(file_id)
    repo.close()
    with raw_index(tmp_path / "repo") as (txn, dbs):
        txn.put(file_id, ObjectRecord.for_file(claims, header.encode()).encode(), db=dbs["objects"])
    frame = b"".join(filez.frames([bytes(filez.CHUNK)]))
    path.chmod(0o644)
    with path.open("wb") as out:
        out.write(filez.prefix(claims, header.encode()))
        for _ in range(claims // filez.CHUNK // 1024):
            out.write(frame * 1024)
    return tmp_path / "repo"


def count_verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one at every FramedContent.verify (each whole inflation and
    hash of an SWZ2 object), for as long as the test runs."""
    verified: list[int] = []
    verify = FramedContent.verify

    def counted(self: FramedContent, header: bytes, *pace: Callable[[], None]) -> None:
        verified.append(1)
        verify(self, header, *pace)

    monkeypatch.setattr(FramedContent, "verify", counted)
    return verified
