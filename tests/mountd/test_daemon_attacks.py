"""Hostile archive objects against the mount daemon's session-9 changes (attack16): the
long-verification lane (objects over 256 MiB take one thread at most between them,
mountd/preparing.py LONG; since session 10 none holds it past its DEADLINE), the
bounded table of frame starts (store/framed.py MAX_NOTED), read by several readers at
once through a real mount; refusals remembered (mountd/sources.py)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from mountd.preparing import LONG
from mountd.view import ROOT_INODE, CommitView
from store import CorruptObjectError, FramedContent, ObjectId, Repository, filez
from store.framed import MAX_NOTED
from tests.helpers import Mounts
from tests.mountd.legacy import (
    WaitingView,
    count_verifications,
    large_archive_file,
    rewrite_as_swz1,
    served_while_held,
    threads_of,
    zeros_claiming,
)

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")


def test_one_hostile_huge_object_leaves_a_thread_for_files_under_the_long_bound() -> None:
    """A file of 2 MiB and one of exactly LONG are read while a hostile one verifies."""
    view = WaitingView({1: LONG + 1, 2: LONG, 3: 2 << 20}, held={1})
    assert served_while_held(view, [1], 2)[0] == 2
    view = WaitingView({1: LONG + 1, 2: LONG + 1, 3: 2 << 20}, held={1, 2})
    assert served_while_held(view, [1, 2], 3)[0] == 3


def test_one_hostile_huge_object_does_not_hold_up_every_other_file_over_the_bound() -> None:
    """attack16 2: 81bc57e gave objects over LONG one thread between them: one hostile
    object of zeros claiming 256 GiB (14 MB on disk, minutes to verify, its reader may
    be long gone) held up the first read of every legitimate file over 256 MiB (a VM
    image, a large .so) for as long. Past its DEADLINE (1 s) it gives the lane back,
    even if it never looks at its pace (a chunk that never ends)."""
    view = WaitingView({1: LONG + 1, 2: 300 << 20}, held={1})
    assert served_while_held(view, [1], 2)[0] == 2


def test_an_object_refused_is_refused_at_once_until_its_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile object of zeros took minutes to inflate at every read (twice: the
    kernel's read-ahead, then its retry of the page). Refused once, it is refused at
    once while its file is unchanged (inode, ctime); repaired, it is verified again."""
    repo, commit_id, file_id, content = large_archive_file(tmp_path)
    path = repo.content.path(file_id)
    good = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(good[:-100] + bytes([good[-100] ^ 0xFF]) + good[-99:])
    verified = count_verifications(monkeypatch)
    view = CommitView(repo, commit_id)
    try:
        ino = view.lookup(ROOT_INODE, b"large").ino
        for _ in range(3):
            slow = view.preparation(ino)
            assert slow is not None
            with pytest.raises(CorruptObjectError, match=file_id.hex()):
                slow.run()
        assert len(verified) == 1
        time.sleep(0.05)  # a ctime of its own (the clock's tick)
        path.write_bytes(good)
        slow = view.preparation(ino)
        assert slow is not None
        slow.run()
        assert view.read(ino, 5, 10) == content[5:15] and len(verified) == 2
    finally:
        view.close()


def test_an_swz1_object_refused_is_refused_at_once_until_its_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review13 M3: an SWZ1 object (one zlib stream, spooled whole to TMPDIR) refused
    was spooled again at every read (gigabytes written for a hostile one, each time).
    Refused once, it is refused at once while its file is unchanged; repaired, it is
    spooled (and verified) again."""
    repo, commit_id, file_id, content = large_archive_file(tmp_path, swz1=True)
    rewrite_as_swz1(repo, file_id, os.urandom(len(content)))  # other bytes: refused
    spooled: list[ObjectId] = []
    opened = Repository.open_recorded_file

    def counted(self: Repository, object_id: ObjectId, header: bytes, size: int) -> object:
        spooled.append(object_id)
        return opened(self, object_id, header, size)

    monkeypatch.setattr(Repository, "open_recorded_file", counted)
    view = CommitView(repo, commit_id)
    try:
        ino = view.lookup(ROOT_INODE, b"large").ino
        for _ in range(3):
            slow = view.preparation(ino)
            assert slow is not None
            with pytest.raises(CorruptObjectError, match=file_id.hex()):
                slow.run()
        assert spooled == [file_id]
        time.sleep(0.05)  # a ctime of its own (the clock's tick)
        rewrite_as_swz1(repo, file_id, content)
        slow = view.preparation(ino)
        assert slow is not None
        slow.run()
        assert view.read(ino, 5, 10) == content[5:15] and spooled == [file_id] * 2
    finally:
        view.close()
        repo.close()


# ----- through a real mount ----------------------------------------------------------------


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
    repo = zeros_claiming(
        tmp_path,
        monkeypatch,
        256 << 30,
        files={"small": b"small\n", "middle": os.urandom(3 << 20)},
        sparse={"zeros": 20 << 20},
    )
    daemon = mount.foreground(repo, "main")
    mnt = daemon.mountpoint
    assert (mnt / "small").read_bytes() == b"small\n"
    threads = threads_of(daemon.pid)
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
        while threads_of(daemon.pid) == threads:
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


def test_a_huge_file_is_served_while_a_hostile_object_read_and_abandoned_verifies(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """attack16 2 through a real mount: a hostile object claiming 16 GiB of zeros
    (seconds to verify, then refused) read by many readers each killed at once; a
    legitimate file over LONG (300 MiB, sparse) is then served within seconds, while the
    hostile one still verifies (its refusal not logged yet), and the daemon's threads
    do not pile up. The hostile one read again is refused (EIO), at once the time after."""
    repo = zeros_claiming(
        tmp_path, monkeypatch, 16 << 30, files={"small": b"small\n"}, sparse={"image": 300 << 20}
    )
    daemon = mount.foreground(repo, "main")
    mnt = daemon.mountpoint
    assert (mnt / "small").read_bytes() == b"small\n"
    threads = most = threads_of(daemon.pid)
    for n in range(20):
        reader = subprocess.Popen(
            ["dd", f"if={mnt / 'hostile'}", "of=/dev/null", "bs=128k", f"skip={n % 4 * 8000}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.02)
        reader.kill()
        reader.wait()
        most = max(most, threads_of(daemon.pid))
    started = time.monotonic()
    with (mnt / "image").open("rb") as image:
        first = image.read(1 << 20)
    taken = time.monotonic() - started
    most = max(most, threads_of(daemon.pid))
    still_verifying = "corrupted file object" not in daemon.log()
    print(f"300 MiB file's first MiB in {taken:.2f} s; daemon threads {threads} -> {most}")
    assert first == bytes(1 << 20)
    assert taken < 5, daemon.log()
    assert still_verifying, daemon.log()
    assert most <= threads + 3
    for attempt in range(2):
        started = time.monotonic()
        again = subprocess.run(
            ["cat", str(mnt / "hostile")], capture_output=True, text=True, timeout=300
        )
        taken = time.monotonic() - started
        print(f"read again ({attempt}): {again.stderr.strip()} after {taken:.2f} s")
        assert again.returncode != 0 and "Input/output error" in again.stderr
    assert time.monotonic() - started < 2  # refused at once: not verified again
    assert threads_of(daemon.pid) <= threads + 3
