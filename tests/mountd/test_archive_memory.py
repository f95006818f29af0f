"""A mount of an archive repository keeps its memory bounded by bytes (issue 9).

Large archive objects used to be decompressed into memory and 256 of them kept: six
files took a daemon to 533 MB. Then a large object was decompressed once into an
unlinked temporary file, verified on the way, and read from there; now (review8 2) it
is verified once and read a 1 MiB frame at a time (store/framed.py), the frames kept
within the memory budget.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from store import RepoMode, Repository, lookup
from store.filez import MAGIC_ZSTD, frames
from tests.helpers import Mounts, commit_dir, read_through

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
MIB = 1 << 20
SIZES_MIB = {"f50": 50, "f64": 64, "f80": 80, "f100": 100, "corrupt": 60, "forged": 60}
PEAK_RSS_LIMIT_KIB = 150 * 1024


def _mostly_zeros(path: Path, size: int) -> None:
    """``size`` bytes, distinct from any other file: 64 random bytes a MiB, then zeros
    (compresses well, so the test spends its time on the mount, not on zstd)."""
    with path.open("wb") as out:
        for _ in range(size // MIB):
            out.write(os.urandom(64) + bytes(MIB - 64))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _damage(path: Path, forge: bool) -> None:
    """Flip a byte of the compressed stream, or (``forge``) replace the stream with a
    valid one of other content of the same size: only the hash can tell."""
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    if not forge:
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    magic, size = struct.unpack_from(">4sQ", data)
    assert magic == MAGIC_ZSTD  # the frames below are what this format holds
    (header_len,) = struct.unpack_from(">I", data, 12)
    start = 16 + header_len
    forged = b"".join(frames([b"\x01" * MIB] * (size // MIB)))
    path.write_bytes(bytes(data[:start]) + forged)


def test_reading_large_archive_files_keeps_the_daemon_small(tmp_path: Path, mount: Mounts) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name, size in SIZES_MIB.items():
        _mostly_zeros(source / name, size * MIB)
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    commit_id = commit_dir(repo, source)
    for name in ("corrupt", "forged"):
        file_id = lookup(repo, commit_id, f"/{name}").file
        assert file_id is not None
        _damage(repo.content.path(file_id), forge=name == "forged")
    repo.close()
    daemon = mount.foreground(repo.path, "main")
    before = daemon.peak_rss_kib()
    for name in ("f50", "f64", "f80", "f100"):
        ok, _, _ = read_through(daemon.mountpoint / name, seconds=60)
        assert ok, daemon.log()
    for name in ("f100", "f50"):  # again, from what the daemon kept
        assert _sha256(daemon.mountpoint / name) == _sha256(source / name)
    for name in ("corrupt", "forged"):
        ok, data, _ = read_through(daemon.mountpoint / name, seconds=60)
        assert not ok and data == b"", name  # never a byte that is not the object's
    peak = daemon.peak_rss_kib()
    print(f"daemon peak RSS: {before / 1024:.1f} MiB mounted, {peak / 1024:.1f} MiB after")
    assert peak < PEAK_RSS_LIMIT_KIB
    assert daemon.alive()


def test_small_archive_files_are_held_within_the_mount_budget(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon holds decompressed small objects within half its memory budget
    (SAPWOOD_MOUNT_INDEX_MIB, shared with the index pages: mountd/mapped.py). Before,
    it held 32 MiB of them whatever the budget: reading these 30 MiB of files that do
    not compress grew it by about 30 MiB; with a budget of 4 MiB it grows by a few."""
    source = tmp_path / "src"
    source.mkdir()
    for n in range(300):
        (source / f"r{n:03d}").write_bytes(os.urandom(100 << 10))
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    commit_dir(repo, source)
    repo.close()
    monkeypatch.setenv("SAPWOOD_MOUNT_INDEX_MIB", "4")
    daemon = mount.foreground(repo.path, "main")
    before = _rss_anon_kib(daemon.pid)
    for n in range(300):
        name = f"r{n:03d}"
        assert (daemon.mountpoint / name).read_bytes() == (source / name).read_bytes()
    grown = (_rss_anon_kib(daemon.pid) - before) / 1024
    print(f"daemon anonymous memory: +{grown:.1f} MiB after reading 30 MiB of small files")
    assert grown < 12  # half the budget, and the listings and inodes shown
    assert daemon.alive()


def _rss_anon_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon")
