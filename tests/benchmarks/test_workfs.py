"""benchmarks/workfs.py: each benchmark's own journaled ext4 on a loop device, made,
used and removed however the run ends; the host filesystem, said so, when it cannot be."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "benchmarks"))
import workfs

BENCHMARKS = Path(workfs.__file__).parent
SMALL = workfs.Footprint(8 << 20, 1_000)
needs_loop = pytest.mark.skipif(
    os.geteuid() != 0 or workfs.why_host("loop") is not None,
    reason="a loop device needs root, mkfs.ext4 and losetup",
)


def _loop_devices_of(place: Path) -> list[str]:
    """The loop devices whose backing file is under ``place`` (deleted or not)."""
    listing = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True)
    return [line.split(":")[0] for line in listing.stdout.splitlines() if str(place) in line]


def _assert_nothing_left(place: Path) -> None:
    assert workfs.mounts_under(place) == []
    assert _loop_devices_of(place) == []
    assert list(place.iterdir()) == []


def _findmnt(path: Path, *columns: str) -> list[str]:
    argv = ["findmnt", "-n", "-o", ",".join(columns), "--mountpoint", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()


@needs_loop
def test_a_fresh_journaled_ext4_is_mounted_for_the_run_and_removed_after(tmp_path: Path) -> None:
    with workfs.work_filesystem(tmp_path, SMALL, "loop") as fs:
        device, fstype = _findmnt(fs.path, "SOURCE", "FSTYPE")
        assert fstype == "ext4"
        assert fs.path.parent.parent == tmp_path
        superblock = subprocess.run(
            ["dumpe2fs", "-h", device], capture_output=True, text=True, check=True
        ).stdout
        assert "has_journal" in superblock
        assert Path(f"/sys/block/{Path(device).name}/loop/dio").read_text().strip() == "1"
        (fs.path / "repo").mkdir()
        (fs.path / "repo" / "object").write_bytes(b"x" * 100_000)
        assert "journal" in fs.kind
    _assert_nothing_left(tmp_path)


@needs_loop
def test_more_inodes_than_mkfs_gives_by_default_are_asked_for(tmp_path: Path) -> None:
    """300,000 small files in 64 MiB: mkfs's ratio (a 1 GiB image: 65,536 inodes) would
    run out of inodes long before blocks."""
    need = workfs.Footprint(64 << 20, 300_000)
    with workfs.work_filesystem(tmp_path, need, "loop") as fs:
        assert os.statvfs(fs.path).f_files >= 300_000


@needs_loop
def test_a_failing_run_leaves_no_loop_device_and_no_mount(tmp_path: Path) -> None:
    """Even with a mount of its own left inside (a FUSE mount a failed step did not
    undo) and a process whose working directory is in it (a server not stopped)."""
    holder = None
    try:
        with (
            pytest.raises(RuntimeError, match="the benchmark failed"),
            workfs.work_filesystem(tmp_path, SMALL, "loop") as fs,
        ):
            inner = fs.path / "mnt"
            inner.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "none", str(inner)], check=True)
            holder = subprocess.Popen(["sleep", "60"], cwd=fs.path)
            raise RuntimeError("the benchmark failed")
        assert workfs.mounts_under(tmp_path) == []
        assert list(tmp_path.iterdir()) == []
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    deadline = time.monotonic() + 10  # the kernel detaches when the last user lets go
    while _loop_devices_of(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    _assert_nothing_left(tmp_path)


SCRIPT = """
import sys, time
from pathlib import Path
sys.path.insert(0, {benchmarks!r})
import workfs
with workfs.work_filesystem(Path({place!r}), workfs.Footprint(8 << 20, 1000), "loop") as fs:
    (fs.path / "file").write_text("x")
    print(fs.path, flush=True)
    time.sleep(60)
"""


@needs_loop
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_cleans_up(tmp_path: Path, signum: int) -> None:
    script = SCRIPT.format(benchmarks=str(BENCHMARKS), place=str(tmp_path))
    run = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    assert run.stdout is not None
    mounted = Path(run.stdout.readline().strip())
    assert workfs.mounts_under(mounted) == [mounted]
    run.send_signal(signum)
    _, errors = run.communicate(timeout=30)
    assert run.returncode != 0
    assert "KeyboardInterrupt" in errors
    _assert_nothing_left(tmp_path)


def test_without_root_the_run_writes_to_the_host_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("workfs.os.geteuid", lambda: 1000)
    with workfs.work_filesystem(tmp_path, SMALL, "loop") as fs:
        assert fs.path.parent == tmp_path
        assert fs.kind.startswith(f"host filesystem of {tmp_path}")
        assert "not root" in fs.kind
        assert workfs.mounts_under(fs.path) == []
        (fs.path / "file").write_text("x")
    assert list(tmp_path.iterdir()) == []


def test_the_host_is_chosen_by_option_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("workfs.os.geteuid", lambda: 0)
    with workfs.work_filesystem(tmp_path, SMALL, "host") as fs:
        assert "--work-fs host" in fs.kind
    monkeypatch.setenv(workfs.ENV, "host")
    with workfs.work_filesystem(tmp_path, SMALL) as fs:
        assert "--work-fs host" in fs.kind
    monkeypatch.setenv(workfs.ENV, "tmpfs")
    with pytest.raises(SystemExit, match="SAPWOOD_BENCH_WORK_FS='tmpfs'"):
        workfs.default_choice()


def test_missing_tools_send_the_run_to_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workfs.os.geteuid", lambda: 0)
    monkeypatch.setattr(workfs, "_which", lambda tool: None if tool == "losetup" else tool)
    assert workfs.why_host("loop") == "losetup not found"


def test_an_image_larger_than_the_free_space_stops_before_making_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("workfs.os.geteuid", lambda: 0)
    monkeypatch.setattr(workfs, "_which", lambda tool: tool)
    huge = workfs.Footprint(1 << 60, 1_000)
    with (
        pytest.raises(SystemExit, match=r"GiB free.*--work-fs host"),
        workfs.work_filesystem(tmp_path, huge, "loop"),
    ):
        pytest.fail("the block ran")
    assert list(tmp_path.iterdir()) == []


def test_the_image_is_sized_from_the_need_and_inodes_asked_for_only_when_short() -> None:
    small = workfs.image_for(workfs.Footprint(1 << 20, 100))
    assert small == workfs.Image(workfs.SLACK_BYTES + (2 << 20), None)
    large = workfs.image_for(workfs.Footprint(8 << 30, 100_000))
    assert large.size >= 10 << 30
    assert large.inodes is None  # 16 KiB a inode: 600,000 and more
    many = workfs.image_for(workfs.Footprint(1 << 30, 1_000_000))
    assert many.inodes is not None
    assert many.inodes >= 1_250_000


def test_the_footprint_counts_blocks_and_each_inode_once(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "big").write_bytes(os.urandom(100_000))
    (tmp_path / "small").write_bytes(b"x")
    os.link(tmp_path / "dir" / "big", tmp_path / "again")
    (tmp_path / "link").symlink_to("small")
    found = workfs.footprint(tmp_path)
    assert found.inodes == 5  # the root, dir, big (twice linked), small, link
    assert 100_001 <= found.bytes < 100_000 + 5 * 8192
