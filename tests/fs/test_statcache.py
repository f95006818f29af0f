"""The stat cache against real filesystems (issue 9): it must never serve the content
of another file, and must still make an unchanged re-commit read nothing.

Another filesystem at the same place is made with two ext4 images bound in turn to
the same loop device: same st_dev, and a fresh ext4 gives its first file inode 12.
debugfs then stamps both files with the same mtime and ctime, as two images built
by one script with fixed timestamps would have. (Two tmpfs mounted in turn cannot
show the problem: a new tmpfs's files get a ctime of "now", later than anything
the old one's cache entries vouched for.)
"""

from __future__ import annotations

import os
import struct
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fs.commit import CommitRequest, CommitResult, Layer, LayerKind, make_commit
from fs.statcache import Granularity, cacheable
from store import Repository, StatCacheRecord
from tests.helpers import IS_ROOT, cat_bytes

STAMP_S = 1_700_000_000  # 2023-11-14, long before any commit: cacheable
STAMP_NS = 123_456_789


def make_image(
    path: Path,
    content: bytes,
    fs_uuid: str,
    inode_size: int,
    nanoseconds: int,
    root_nanoseconds: int = 0,
) -> None:
    """An ext4 image holding /file = ``content``, with mtime = ctime = STAMP_S.nanoseconds
    (and the root directory's mtime at STAMP_S.root_nanoseconds)."""
    subprocess.run(["truncate", "-s", "8M", str(path)], check=True)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-I", str(inode_size), "-U", fs_uuid, str(path)],
        check=True,
        capture_output=True,
    )
    source = path.with_suffix(".content")
    source.write_bytes(content)
    commands = [f"write {source} file"]
    for field in ("mtime", "ctime"):
        commands.append(f"sif file {field} @{STAMP_S}")
        if inode_size > 128:  # the nanoseconds live in the large inode's extra fields
            commands.append(f"sif file {field}_extra {nanoseconds << 2}")
    commands.append(f"sif <2> mtime @{STAMP_S}")  # the root directory
    if inode_size > 128:
        commands.append(f"sif <2> mtime_extra {root_nanoseconds << 2}")
    script = path.with_suffix(".debugfs")
    script.write_text("\n".join(commands) + "\n")
    subprocess.run(["debugfs", "-w", "-f", str(script), str(path)], check=True, capture_output=True)


@contextmanager
def mounted(image: Path, mnt: Path, device: str | None = None) -> Iterator[str]:
    """``image`` mounted read-only at ``mnt`` through a loop device (``device`` if given)."""
    if device is None:
        found = subprocess.run(
            ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
        )
        device = found.stdout.strip()
    else:
        subprocess.run(["losetup", device, str(image)], check=True)
    try:
        subprocess.run(["mount", "-o", "ro", device, str(mnt)], check=True)
        try:
            yield device
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["losetup", "-d", device], check=True)


def commit(repo: Repository, source: Path) -> CommitResult:
    return make_commit(repo, CommitRequest("main", [Layer(LayerKind.DIR, str(source))]))


def identity(mnt: Path) -> tuple[int, ...]:
    """What the stat cache saw of /file before it knew of filesystems."""
    st = os.lstat(mnt / "file")
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


needs_root = pytest.mark.skipif(not IS_ROOT, reason="mounts loop devices")


@needs_root
def test_another_filesystem_on_the_same_device_is_read_again(
    user_repo: Repository, tmp_path: Path
) -> None:
    one, two, mnt = tmp_path / "one.img", tmp_path / "two.img", tmp_path / "mnt"
    mnt.mkdir()
    make_image(one, b"first filesystem", str(uuid.uuid4()), 256, STAMP_NS)
    make_image(two, b"other filesystem", str(uuid.uuid4()), 256, STAMP_NS)
    with mounted(one, mnt) as device:
        seen, fsid = identity(mnt), os.statvfs(mnt).f_fsid
        first = commit(user_repo, mnt)
    with mounted(two, mnt, device):
        assert identity(mnt) == seen  # the same (device, inode), size and timestamps
        assert os.statvfs(mnt).f_fsid != fsid  # but another filesystem
        second = commit(user_repo, mnt)
    assert cat_bytes(user_repo.path, second.commit_id.hex(), "/file") == b"other filesystem"
    assert (first.stats.files_read, second.stats.files_read, second.stats.cache_hits) == (1, 1, 0)


@needs_root
def test_coarse_timestamps_are_never_vouched_for(user_repo: Repository, tmp_path: Path) -> None:
    """Two builds of one image: fixed UUID, 128-byte inodes (whole-second timestamps)."""
    one, two, mnt = tmp_path / "one.img", tmp_path / "two.img", tmp_path / "mnt"
    mnt.mkdir()
    fixed = str(uuid.uuid4())
    make_image(one, b"build number one", fixed, 128, 0)
    make_image(two, b"build number two", fixed, 128, 0)
    with mounted(one, mnt) as device:
        seen, fsid = identity(mnt), os.statvfs(mnt).f_fsid
        first = commit(user_repo, mnt)
        again = commit(user_repo, mnt)
    with mounted(two, mnt, device):
        assert identity(mnt) == seen
        assert os.statvfs(mnt).f_fsid == fsid  # nothing but the content differs
        second = commit(user_repo, mnt)
    assert cat_bytes(user_repo.path, second.commit_id.hex(), "/file") == b"build number two"
    assert (first.stats.files_read, again.stats.files_read, again.stats.cache_hits) == (1, 1, 0)


@needs_root
def test_an_unchanged_recommit_after_a_remount_hits_the_cache(
    user_repo: Repository, tmp_path: Path
) -> None:
    image, mnt = tmp_path / "disk.img", tmp_path / "mnt"
    mnt.mkdir()
    make_image(image, b"unchanged", str(uuid.uuid4()), 256, STAMP_NS)
    with mounted(image, mnt) as device:
        first = commit(user_repo, mnt)
    with mounted(image, mnt, device):
        second = commit(user_repo, mnt)
    assert first.stats.files_read == 1
    assert (second.stats.files_read, second.stats.cache_hits) == (0, 1)
    assert second.commit_id != first.commit_id
    assert (
        user_repo.read_commit(second.commit_id).tree == user_repo.read_commit(first.commit_id).tree
    )


@needs_root
def test_whole_second_stamps_on_a_fine_filesystem_stay_cached(
    user_repo: Repository, tmp_path: Path
) -> None:
    """An image builder's stamps, on a filesystem that shows sub-second timestamps."""
    image, mnt = tmp_path / "disk.img", tmp_path / "mnt"
    mnt.mkdir()
    make_image(image, b"stamped", str(uuid.uuid4()), 256, 0, root_nanoseconds=STAMP_NS)
    with mounted(image, mnt):
        assert os.lstat(mnt / "file").st_ctime_ns == STAMP_S * 10**9
        first = commit(user_repo, mnt)
        second = commit(user_repo, mnt)
    assert (first.stats.files_read, second.stats.files_read, second.stats.cache_hits) == (1, 0, 1)


# ----- the record ----------------------------------------------------------------------
def _stat(ctime_ns: int) -> os.stat_result:
    """A regular file's stat with this ctime (mtime and atime: STAMP_S)."""
    seconds = (STAMP_S, STAMP_S, ctime_ns // 10**9)
    floats = (float(STAMP_S), float(STAMP_S), ctime_ns / 1e9)
    nanoseconds = (STAMP_S * 10**9, STAMP_S * 10**9, ctime_ns)
    return os.stat_result((0o100644, 12, 7, 1, 0, 0, 4, *seconds, *floats, *nanoseconds))


def test_the_file_id_is_the_last_32_bytes_and_old_records_are_ignored() -> None:
    st = _stat(STAMP_S * 10**9 + STAMP_NS)
    raw = StatCacheRecord.of(99, st, b"h" * 32, b"f" * 32).encode()
    assert raw[-32:] == b"f" * 32  # store/prune.py reads it there
    record = StatCacheRecord.decode(raw)
    assert record is not None and record.matches(99, st, b"h" * 32)
    assert not record.matches(98, st, b"h" * 32)
    old_layout = struct.pack(">QqqIII32s32s", 4, 0, 0, 0o100644, 0, 0, b"h" * 32, b"f" * 32)
    assert StatCacheRecord.decode(old_layout) is None


def test_a_filesystem_is_fine_once_it_shows_a_sub_second_timestamp() -> None:
    whole, fine = _stat(STAMP_S * 10**9), _stat(STAMP_S * 10**9 + 1)
    granularity = Granularity()
    assert not granularity.can_vouch(1, whole)
    assert granularity.can_vouch(1, fine)  # proof by the file itself
    assert granularity.can_vouch(1, whole)  # then stamped files are vouched for too
    assert not granularity.can_vouch(2, whole)  # another filesystem, same device
    assert cacheable(whole, (STAMP_S + 5) * 10**9)
    assert not cacheable(fine, STAMP_S * 10**9 + 2)
