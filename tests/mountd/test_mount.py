"""Real FUSE mounts: as root, and as a real unprivileged user through fusermount3."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import pytest

from mountd.fuse_ops import MAX_BACKGROUND, NO_OPEN_PASSES_INODE
from store import RepoMode, Repository, lookup
from tests.helpers import (
    IS_ROOT,
    NOBODY,
    Mounts,
    as_mode_records,
    as_user,
    big_directory_commit,
    build_rich_tree,
    commit_dir,
    commit_files,
    force_unmount,
    give_to_user,
    mount_fstype,
    read_disk_tree,
    run,
    run_as_user,
    user_dir,
    wait_for,
    write_tree,
)

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")


@pytest.fixture(params=["no-open", "with-open"])
def mounted(
    repo: Repository, tmp_path: Path, mount: Mounts, request: pytest.FixtureRequest
) -> tuple[Path, Path, Repository]:
    """A rich tree mounted in each repository mode, with and without kernel opens."""
    source = tmp_path / "src"
    build_rich_tree(source, setuid=repo.mode is not RepoMode.BARE_USER_ONLY)
    commit_dir(repo, source)
    options = ["-o", "with_open"] if request.param == "with-open" else []
    return mount.background(repo.path, *options, "main"), source, repo


def test_the_patched_pyfuse3_is_installed() -> None:
    """make setup builds pyfuse3 with patches/pyfuse3-no-open.patch (the fast path)."""
    assert NO_OPEN_PASSES_INODE
    # the patch adds the constant to the .pyx, not to pyfuse3's __init__.pyi stub
    assert pyfuse3.SETS_MAX_BACKGROUND  # type: ignore[attr-defined]


@pytest.mark.skipif(not IS_ROOT, reason="reads /sys/fs/fuse/connections (root's)")
def test_the_mount_asks_the_kernel_for_many_background_requests(
    tmp_path: Path, mount: Mounts
) -> None:
    """attack18 1: the kernel's limit of background requests (read-ahead), 12 by
    default, is MAX_BACKGROUND for a sapwood mount (congestion at three quarters)."""
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    commit_files(repo, tmp_path / "src", {"a": b"a\n"})
    repo.close()
    mnt = mount.background(tmp_path / "repo", "main")
    assert _background_limits(mnt, tmp_path) == (MAX_BACKGROUND, MAX_BACKGROUND * 3 // 4)


def _background_limits(mnt: Path, work: Path) -> tuple[int, int]:
    """The kernel's max_background and congestion_threshold of the FUSE mount on ``mnt``
    (its connection named by its device's minor in /proc/self/mountinfo: root cannot
    stat a mount made by another user), read through a fusectl mounted in ``work``."""
    found = [
        line.split()[2]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4] == str(mnt)
    ]
    assert len(found) == 1, found
    control = work / "fusectl"  # the fuse connections' control files, mounted here
    control.mkdir()
    subprocess.run(["mount", "-t", "fusectl", "fusectl", str(control)], check=True)
    try:
        connection = control / found[0].split(":")[1]
        background = int((connection / "max_background").read_text())
        congestion = int((connection / "congestion_threshold").read_text())
    finally:
        subprocess.run(["umount", str(control)], check=True)
        control.rmdir()
    return background, congestion


def test_walk_of_the_mount_equals_the_source(mounted: tuple[Path, Path, Repository]) -> None:
    mnt, source, repo = mounted
    seen = read_disk_tree(mnt)
    expected = as_mode_records(read_disk_tree(source), repo.mode)
    root_expected, root_seen = expected.pop("/"), seen.pop("/")
    assert seen == expected
    assert (root_seen.kind, root_seen.mode) == (root_expected.kind, root_expected.mode)
    commit_time = repo.read_commit(repo.refs()["main"]).timestamp
    assert os.lstat(mnt / "etc" / "passwd").st_mtime == commit_time
    assert os.statvfs(mnt).f_namemax == 255


@pytest.mark.long(keep="*-bare-user")
def test_every_write_is_refused(mounted: tuple[Path, Path, Repository]) -> None:
    mnt, _, _ = mounted
    attempts: list[Callable[[], object]] = [
        lambda: os.open(mnt / "etc" / "passwd", os.O_WRONLY),
        lambda: os.open(mnt / "new-file", os.O_WRONLY | os.O_CREAT),
        lambda: os.mkdir(mnt / "new-dir"),
        lambda: os.unlink(mnt / "etc" / "passwd"),
        lambda: os.rename(mnt / "dup-a", mnt / "dup-c"),
        lambda: os.chmod(mnt / "dup-a", 0o777),
        lambda: os.setxattr(mnt / "dup-a", "user.x", b"1"),
        lambda: os.symlink("x", mnt / "new-link"),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as caught:
            attempt()
        assert caught.value.errno == errno.EROFS


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_unmount_cleanly(
    user_repo: Repository, tmp_path: Path, mount: Mounts, signum: int
) -> None:
    source, mnt = tmp_path / "src", tmp_path / "mnt"
    build_rich_tree(source)
    commit_dir(user_repo, source)
    daemon = mount.foreground(user_repo.path, "main").process
    assert (mnt / "etc" / "passwd").read_text().startswith("root:")
    daemon.send_signal(signum)
    assert daemon.wait(timeout=20) == 0
    assert not os.path.ismount(mnt)


def test_corrupt_object_reads_as_eio(mounted: tuple[Path, Path, Repository]) -> None:
    mnt, _, repo = mounted
    dash = lookup(repo, repo.refs()["main"], "/usr/bin/dash").file
    assert dash is not None
    path = repo.content.path(dash)
    path.chmod(0o644)
    data = path.read_bytes()
    middle = len(data) // 2
    path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    with pytest.raises(OSError) as caught:
        (mnt / "usr" / "bin" / "dash").read_bytes()
    assert caught.value.errno == errno.EIO
    path.unlink()  # as a prune of a mounted commit would: the daemon lives on
    with pytest.raises(OSError):
        (mnt / "usr" / "bin" / "dash").read_bytes()
    assert (mnt / "etc" / "passwd").read_text().startswith("root:")


def test_the_background_daemon_logs_to_its_log_file(
    user_repo: Repository, tmp_path: Path, mount: Mounts
) -> None:
    source = tmp_path / "src"
    build_rich_tree(source)
    commit_id = commit_dir(user_repo, source)
    dash = lookup(user_repo, commit_id, "/usr/bin/dash").file
    assert dash is not None
    path = user_repo.content.path(dash)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"X")
    log_file = tmp_path / "mount.log"
    mnt = mount.background(user_repo.path, "-o", f"logfile={log_file}", "main")
    with pytest.raises(OSError) as caught:
        (mnt / "usr" / "bin" / "dash").read_bytes()
    assert caught.value.errno == errno.EIO
    assert wait_for(lambda: f"object {dash.hex()}: corrupted file object" in log_file.read_text())
    assert log_file.read_text().startswith("sapwood[")


def test_a_huge_directory_lists_completely(user_repo: Repository, mount: Mounts) -> None:
    big_directory_commit(user_repo, 100_000)
    names = os.listdir(mount.background(user_repo.path, "big"))
    assert len(names) == 100_000 and len(set(names)) == 100_000


def test_bad_mount_requests(user_repo: Repository, tmp_path: Path) -> None:
    commit_files(user_repo, tmp_path / "src", {})
    mnt = tmp_path / "mnt"  # beside the repository: a mount above it is refused too
    mnt.mkdir()
    for args, message in (
        (("mount", "nosuch", mnt), "no such ref"),
        (("mount", "main", tmp_path / "absent"), "not a directory"),
        (("umount", mnt), "not a mount point"),
        (("mount", "-o", "logfile=", "main", mnt), "logfile= takes one path"),
        (("mount", "-o", f"logfile={tmp_path}/absent/log", "main", mnt), "cannot log"),
        (("mount", "main", tmp_path), "would hide the repository"),
    ):
        result = run(*args, repo=user_repo.path, text=True)
        assert result.returncode != 0 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not IS_ROOT, reason="sets /dev/fuse to 0666 and switches user: root")
def test_mount_as_a_real_unprivileged_user() -> None:
    os.chmod("/dev/fuse", 0o666)  # as standard distributions have it
    work = user_dir()
    mnt = work / "mnt"
    try:
        source = write_tree(work / "src", {"etc/conf": "x=1\n", "lib": "->etc"})
        give_to_user(source)
        repo = work / "repo"
        for args in (("init",), ("commit", "-b", "main", source)):
            assert run_as_user("--repo", repo, *args).returncode == 0
        mnt.mkdir()
        os.chown(mnt, NOBODY, NOBODY)
        result = run_as_user("--repo", repo, "mount", "main", mnt)
        assert result.returncode == 0, result.stderr
        assert as_user("cat", mnt / "etc" / "conf") == "x=1\n"
        assert as_user("stat", "-c", "%u %a", mnt / "etc" / "conf") == f"{NOBODY} 644\n"
        assert as_user("readlink", mnt / "lib") == "etc\n"
        assert not os.path.exists(mnt / "etc")  # without allow_other, not even root sees in
        caps = Path("/sys/module/fuse/parameters")  # the kernel's for a user (attack18 1)
        requests = int((caps / "max_user_bgreq").read_text())
        congestion = int((caps / "max_user_congthresh").read_text())
        assert _background_limits(mnt, work) == (
            min(MAX_BACKGROUND, requests),
            min(MAX_BACKGROUND * 3 // 4, congestion),
        )
        assert run_as_user("umount", mnt).returncode == 0
        assert not os.path.ismount(mnt)
    finally:
        force_unmount(mnt)
        assert mount_fstype(mnt) is None
        subprocess.run(["rm", "-rf", str(work)], check=True)
