"""Hostile archive objects against the mount daemon's session-9 changes (attack16): the
long-verification lane (objects over 256 MiB take one thread at most between them,
mountd/preparing.py LONG), the bounded table of frame starts (store/framed.py
MAX_NOTED), read by several readers at once through a real mount."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import trio

from mountd.preparing import LONG, Preparer
from mountd.sources import Preparation
from store import FramedContent, ObjectId, RepoMode, Repository, filez, lookup
from store.framed import MAX_NOTED
from store.index_types import ObjectRecord
from tests.helpers import Mounts, commit_dir, raw_index

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")


class _View:
    """A view stand-in: inode ``ino`` is an object of ``sizes[ino]`` bytes, readable once
    its preparation ran; the preparations of ``held`` inodes wait for ``go`` (a hostile
    object of zeros whose verification takes minutes)."""

    def __init__(self, sizes: dict[int, int], held: set[int]) -> None:
        self.sizes, self.held = sizes, held
        self.go = threading.Event()
        self.ready: set[object] = set()

    def preparation(self, ino: int) -> Preparation | None:
        if ino in self.ready:
            return None

        def work() -> object:
            if ino in self.held:
                self.go.wait(30)
            return ino

        return Preparation(ObjectId(bytes([ino]) * 32), work, self.ready.add, self.sizes[ino])

    def read(self, ino: int, offset: int, size: int) -> bytes:
        return b"read"


def _served_while_held(view: _View, held: list[int], then: int) -> list[int]:
    """Reads of ``held`` started, then one of ``then``, which must end within 2 s
    while the held ones still verify; the order the reads ended in."""
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
                with trio.fail_after(2):
                    await read(then)
            finally:
                view.go.set()

    trio.run(main)
    return served


def test_one_hostile_huge_object_leaves_a_thread_for_files_under_the_long_bound() -> None:
    """A file of 2 MiB and one of exactly LONG are read while a hostile one verifies."""
    view = _View({1: LONG + 1, 2: LONG, 3: 2 << 20}, held={1})
    assert _served_while_held(view, [1], 2)[0] == 2
    view = _View({1: LONG + 1, 2: LONG + 1, 3: 2 << 20}, held={1, 2})
    assert _served_while_held(view, [1, 2], 3)[0] == 3


@pytest.mark.xfail(strict=True, reason="attack16 2")
def test_one_hostile_huge_object_does_not_hold_up_every_other_file_over_the_bound() -> None:
    """81bc57e gave objects over LONG one thread between them: one hostile object of
    zeros claiming 256 GiB (14 MB on disk, minutes to verify, its reader may be long
    gone) now holds up the first read of every legitimate file over 256 MiB (a VM
    image, a large .so) for as long, where before 81bc57e the second thread served
    it (it then took two hostile objects). The first read of a 300 MiB file here
    waits for the hostile one to end."""
    view = _View({1: LONG + 1, 2: 300 << 20}, held={1})
    assert _served_while_held(view, [1], 2)[0] == 2


# ----- through a real mount ----------------------------------------------------------------


def _quick_frames(monkeypatch: pytest.MonkeyPatch) -> None:
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


def _hostile_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claims: int) -> Path:
    """An archive repository whose /hostile claims ``claims`` bytes of zeros (frames of
    about 20 bytes a MiB: minutes to verify for 256 GiB, then refused), with /small,
    /middle (3 MiB of random bytes) and /zeros (20 MiB, sparse) beside it."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "hostile").write_bytes(os.urandom(3 << 20))
    (source / "small").write_bytes(b"small\n")
    (source / "middle").write_bytes(os.urandom(3 << 20))
    with (source / "zeros").open("wb") as zeros:
        zeros.truncate(20 << 20)
    _quick_frames(monkeypatch)
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    commit_id = commit_dir(repo, source)
    file_id = lookup(repo, commit_id, "/hostile").file
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


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_readers_of_a_hostile_object_leave_the_rest_readable_memory_flat_and_end_on_unmount(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six readers of a hostile object claiming 256 GiB of zeros (minutes to verify)
    at once: one verification; the other files' first reads are served meanwhile
    (/middle through a verification of its own, /zeros too); the daemon's memory does
    not grow with the bytes inflated (the frame table is bounded: MAX_NOTED); the
    readers killed, the unmount ends the daemon at once."""
    daemon = mount.foreground(_hostile_repo(tmp_path, monkeypatch, 256 << 30), "main")
    mnt = daemon.mountpoint
    assert (mnt / "small").read_bytes() == b"small\n"
    threads = len(os.listdir(f"/proc/{daemon.pid}/task"))
    readers = [
        subprocess.Popen(
            ["dd", f"if={mnt / 'hostile'}", "of=/dev/null", "bs=1M", f"skip={n * 1000}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for n in range(6)
    ]
    try:
        deadline = time.monotonic() + 30
        while len(os.listdir(f"/proc/{daemon.pid}/task")) == threads:
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.01)
        rss_start = _rss_kib(daemon.pid)
        started = time.monotonic()
        assert (mnt / "middle").stat().st_size == 3 << 20
        assert len((mnt / "middle").read_bytes()) == 3 << 20
        assert (mnt / "zeros").read_bytes() == bytes(20 << 20)
        taken = time.monotonic() - started
        assert taken < 10, "the other files waited for the hostile one"
        time.sleep(3)  # gigabytes more inflated
        rss_after = _rss_kib(daemon.pid)
        assert all(reader.poll() is None for reader in readers), "verified in seconds?"
        print(f"other files in {taken:.2f} s; daemon RSS {rss_start} -> {rss_after} KiB")
        assert rss_after - rss_start < 16 << 10  # the 20 MiB of zeros held, at most
        for reader in readers:  # killed while the kernel waits for the daemon's reply
            reader.kill()
            reader.wait(timeout=5)
        unmounted = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        assert unmounted.returncode == 0, unmounted.stderr
        daemon.process.wait(timeout=10)
    finally:
        for reader in readers:
            reader.kill()
            reader.wait()


def test_the_frame_table_of_a_huge_object_stays_within_its_bound(tmp_path: Path) -> None:
    """A located object of more frames than MAX_NOTED keeps MAX_NOTED starts at most, and
    reads every frame right, the first, the last, and those between noted ones."""
    frame = b"".join(filez.frames([bytes(filez.CHUNK)]))
    last = b"".join(filez.frames([b"end" * 10]))
    frames = 3 * MAX_NOTED + 1
    size = (frames - 1) * filez.CHUNK + 30
    path = tmp_path / "object"
    with path.open("wb") as out:
        for _ in range(frames - 1):
            out.write(frame)
        out.write(last)
    fd = os.open(path, os.O_RDONLY)
    framed = FramedContent(fd, ObjectId(bytes(32)), size, 0)
    try:
        framed.locate()
        assert framed.located_bytes <= 8 * MAX_NOTED
        for index in (0, 1, 2, 3, 4, 5, 6, 7, frames - 3, frames - 2):
            assert framed.chunk(index) == bytes(filez.CHUNK)
        assert framed.chunk(frames - 1) == b"end" * 10
        assert framed.read(size - 31, 100) == b"\0" + b"end" * 10
    finally:
        framed.close()


@pytest.mark.parametrize("noted", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("frames", [1, 2, 9, 16, 17, 40])
def test_every_frame_reads_right_whatever_the_stride(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, noted: int, frames: int
) -> None:
    """MAX_NOTED made tiny: frames of distinct content, each read alone (through the
    starts kept and the lengths walked from them), and a read across every frame."""
    monkeypatch.setattr("store.framed.MAX_NOTED", noted)
    chunks = [bytes([n]) * filez.CHUNK for n in range(frames - 1)] + [b"tail %d" % frames]
    path = tmp_path / "object"
    path.write_bytes(b"".join(filez.frames(chunks)))
    size = sum(map(len, chunks))
    fd = os.open(path, os.O_RDONLY)
    framed = FramedContent(fd, ObjectId(bytes(32)), size, 0)
    try:
        framed.locate()
        assert framed.located_bytes <= 8 * max(noted, 1)
        for index in reversed(range(frames)):
            assert framed.chunk(index) == chunks[index]
        assert framed.read(0, size) == b"".join(chunks)
    finally:
        framed.close()
