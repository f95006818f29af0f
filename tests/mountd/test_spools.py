"""SWZ1 spools share one account of TMPDIR's room (mountd/spools.py; attack18 2): what
the spools under way were promised and have not written yet counts against the next."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from mountd.spools import Spooler
from store import CorruptObjectError, ObjectId, ObjectReadError
from tests.mountd.legacy import large_archive_file, rewrite_as_swz1

MIB = 1 << 20


class _Statvfs:
    """os.statvfs's answer for a filesystem of ``free`` bytes free (of plenty)."""

    def __init__(self, free: int) -> None:
        self.f_frsize = 4096
        self.f_bavail = free // 4096
        self.f_blocks = 1 << 30


def _cannot_allocate(fd: int, offset: int, length: int) -> None:
    """posix_fallocate on a filesystem that cannot allocate ahead (where a spool has
    only this daemon's account; where it can, its room is taken at once: tests in
    tests/mountd/test_session11_attacks.py)."""
    raise OSError(95, "Operation not supported")


def test_a_spool_under_way_counts_what_it_has_not_written_against_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 3 MiB object spooling, paused after its first MiB: 2 MiB promised; a second
    spool of it, with 5 MiB free and 1 MiB kept free, is refused (3 + 2 + 1 > 5),
    checked alone it fitted (3 + 1); once the first ended, it is spooled."""
    repo, _, file_id, content = large_archive_file(tmp_path, swz1=True)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("mountd.spools.SPOOL_RESERVE", MIB)
    statvfs = os.statvfs

    def room(path: Any) -> Any:
        return _Statvfs(5 * MIB) if str(path).startswith(str(tmp_path)) else statvfs(path)

    monkeypatch.setattr(os, "statvfs", room)
    monkeypatch.setattr(os, "posix_fallocate", _cannot_allocate)  # the account alone
    header, _ = repo.read_file_header(file_id)
    spooler = Spooler(repo)
    paused, go = threading.Event(), threading.Event()
    fds: list[int] = []

    def pace() -> None:
        paused.set()
        go.wait(10)

    first = threading.Thread(
        target=lambda: fds.append(spooler.spool(file_id, header.encode(), len(content), pace))
    )
    first.start()
    try:
        assert paused.wait(10)
        assert spooler.promised == 2 * MIB
        with pytest.raises(ObjectReadError, match=f"{2 * MIB} promised to spools under way"):
            spooler.spool(file_id, header.encode(), len(content), lambda: None)
    finally:
        go.set()
        first.join(10)
    assert spooler.promised == 0 and len(fds) == 1
    fds.append(spooler.spool(file_id, header.encode(), len(content), lambda: None))
    try:
        assert [os.pread(fd, 10, 5) for fd in fds] == [content[5:15]] * 2
    finally:
        for fd in fds:
            os.close(fd)
        spooler.close()
        repo.close()


def test_a_spool_that_fails_gives_its_promise_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused at its end (other bytes than its id's), a spool promises nothing more."""
    repo, _, file_id, content = large_archive_file(tmp_path, swz1=True)
    rewrite_as_swz1(repo, file_id, os.urandom(len(content)))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    header, _ = repo.read_file_header(file_id)
    spooler = Spooler(repo)
    try:
        with pytest.raises(CorruptObjectError, match=file_id.hex()):
            spooler.spool(file_id, header.encode(), len(content), lambda: None)
        assert spooler.promised == 0
    finally:
        spooler.close()
        repo.close()


def test_a_spool_whose_allocation_fails_as_the_room_goes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """posix_fallocate fails because another writer took the room between the look and
    the allocation (review16 R16-3): the spool is refused as one that does not fit,
    not inflated to 0 bytes free as on a filesystem that cannot allocate ahead; where
    the room is still there after the failure, that is what it is: the account alone."""
    repo, _, file_id, content = large_archive_file(tmp_path, swz1=True)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("mountd.spools.SPOOL_RESERVE", MIB)
    statvfs = os.statvfs
    free = [64 * MIB]

    def room(path: Any) -> Any:
        return _Statvfs(free[0]) if str(path).startswith(str(tmp_path)) else statvfs(path)

    def taken_meanwhile(fd: int, offset: int, length: int) -> None:
        free[0] = MIB // 2  # another writer filled the disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "statvfs", room)
    monkeypatch.setattr(os, "posix_fallocate", taken_meanwhile)
    header, _ = repo.read_file_header(file_id)
    spooler = Spooler(repo)
    try:
        with pytest.raises(ObjectReadError, match="do not fit"):
            spooler.spool(file_id, header.encode(), len(content), lambda: None)
        assert spooler.promised == 0
        free[0] = 64 * MIB
        monkeypatch.setattr(os, "posix_fallocate", _cannot_allocate)
        fd = spooler.spool(file_id, header.encode(), len(content), lambda: None)
        try:
            assert os.pread(fd, 10, 5) == content[5:15]
        finally:
            os.close(fd)
    finally:
        spooler.close()


def test_kept_spools_are_not_dropped_for_an_object_they_could_not_make_room_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two spools of 4 MiB kept, 16 MiB free, 1 MiB kept free: an object claiming 64
    MiB could not be spooled even with both dropped, so neither is (review16 R16-2: each
    read of a hostile object claiming more than TMPDIR holds emptied every reader's
    spools); one of 18 MiB could, so the oldest goes first, then no more than needed."""
    from mountd.sources import ObjectSources

    repo, _, _, _ = large_archive_file(tmp_path, swz1=True)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("mountd.spools.SPOOL_RESERVE", MIB)
    sources = ObjectSources(repo)
    kept = sources._spools
    statvfs = os.statvfs

    def room(path: Any) -> Any:  # 24 MiB free but what the kept spools take
        if str(path).startswith(str(tmp_path)):
            return _Statvfs(24 * MIB - kept.weight)
        return statvfs(path)

    monkeypatch.setattr(os, "statvfs", room)
    for n in range(2):
        kept.add(ObjectId(bytes([n]) * 32), os.open(os.devnull, os.O_RDONLY), 4 * MIB)
    try:
        sources._room_for_a_spool(ObjectId(bytes([9]) * 32), 64 * MIB)
        assert len(kept) == 2
        sources._room_for_a_spool(ObjectId(bytes([9]) * 32), 18 * MIB)
        # 18 + 1 <= 16 + 4: the oldest only
        assert len(kept) == 1 and kept.get(ObjectId(bytes([1]) * 32)) is not None
    finally:
        sources.close()


def test_kept_spools_are_not_dropped_for_an_object_whose_spool_is_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 3 MiB object spooling (its room allocated), two spools of 4 MiB kept, 1 MiB
    free, 1 MiB kept free. Each request of the object being spooled asks for room for
    it: its own spool's room is counted as room (it ends kept, or given up and gone),
    so no kept spool is dropped (each such request dropped one); for another object of
    3 MiB, the oldest kept spool is."""
    from mountd.sources import ObjectSources

    repo, _, file_id, content = large_archive_file(tmp_path, swz1=True)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("mountd.spools.SPOOL_RESERVE", MIB)
    sources = ObjectSources(repo)
    kept = sources._spools
    statvfs = os.statvfs
    paused, go = threading.Event(), threading.Event()

    def room(path: Any) -> Any:  # 12 MiB free but the kept spools and the one under way
        if str(path).startswith(str(tmp_path)):
            return _Statvfs(12 * MIB - kept.weight - (len(content) if paused.is_set() else 0))
        return statvfs(path)

    def pace() -> None:
        if sources.spooler.promised == 0:  # allocated: its room taken
            paused.set()
            go.wait(10)

    monkeypatch.setattr(os, "statvfs", room)
    monkeypatch.setattr(os, "posix_fallocate", lambda fd, offset, length: None)
    for n in range(2):
        kept.add(ObjectId(bytes([n]) * 32), os.open(os.devnull, os.O_RDONLY), 4 * MIB)
    header, _ = repo.read_file_header(file_id)
    fds: list[int] = []
    spooling = threading.Thread(
        target=lambda: fds.append(
            sources.spooler.spool(file_id, header.encode(), len(content), pace)
        )
    )
    spooling.start()
    try:
        assert paused.wait(10) and len(content) == 3 * MIB
        for _ in range(3):
            sources._room_for_a_spool(file_id, len(content))
        assert len(kept) == 2, "dropped for the object being spooled"
        sources._room_for_a_spool(ObjectId(bytes([9]) * 32), len(content))
        assert len(kept) == 1 and kept.get(ObjectId(bytes([1]) * 32)) is not None
    finally:
        go.set()
        spooling.join(10)
        for fd in fds:
            os.close(fd)
        sources.close()
        repo.close()
