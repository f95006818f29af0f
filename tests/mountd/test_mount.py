"""Real FUSE mounts: as root, and as a real unprivileged user through fusermount3."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fs.commit import CommitRequest, Layer, make_commit
from mountd.fuse_ops import NO_OPEN_PASSES_INODE
from store import RepoMode, Repository, lookup
from tests.helpers import IS_ROOT, SAPWOOD, as_mode_records, build_rich_tree, read_disk_tree
from tests.mountd.test_view import big_directory_commit
from tests.unprivileged import NOBODY, run_as_user, user_dir

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")


def sapwood(repo: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SAPWOOD, "--repo", str(repo), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _wait(predicate: object, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _force_unmount(mnt: Path) -> None:
    if os.path.ismount(mnt):
        command = ["umount", "-l"] if IS_ROOT else ["fusermount3", "-u", "-z"]
        subprocess.run([*command, str(mnt)], capture_output=True)


def _as_user(*argv: str | Path) -> str:
    """Run a plain command as the unprivileged user (a user's FUSE mount is theirs alone)."""
    result = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(params=["no-open", "with-open"])
def mounted(
    repo: Repository, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, Path, Repository]]:
    """A rich tree mounted in each repository mode, with and without kernel opens."""
    source = tmp_path / "src"
    build_rich_tree(source, setuid=repo.mode is not RepoMode.BARE_USER_ONLY)
    make_commit(repo, CommitRequest("main", [Layer("dir", str(source))]))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    options = ["-o", "with_open"] if request.param == "with-open" else []
    result = sapwood(repo.path, "mount", *options, "main", mnt)
    assert result.returncode == 0, result.stderr
    try:
        yield mnt, source, repo
    finally:
        sapwood(repo.path, "umount", mnt)
        _force_unmount(mnt)


def test_the_patched_pyfuse3_is_installed() -> None:
    """make setup builds pyfuse3 with patches/pyfuse3-no-open.patch (the fast path)."""
    assert NO_OPEN_PASSES_INODE


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


def test_every_write_is_refused(mounted: tuple[Path, Path, Repository]) -> None:
    mnt, _, _ = mounted
    attempts = [
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
def test_signals_unmount_cleanly(user_repo: Repository, tmp_path: Path, signum: int) -> None:
    source = tmp_path / "src"
    build_rich_tree(source)
    make_commit(user_repo, CommitRequest("main", [Layer("dir", str(source))]))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    daemon = subprocess.Popen(
        [*SAPWOOD, "--repo", str(user_repo.path), "mount", "-f", "main", str(mnt)]
    )
    try:
        assert _wait(lambda: os.path.ismount(mnt))
        assert (mnt / "etc" / "passwd").read_text().startswith("root:")
        daemon.send_signal(signum)
        assert daemon.wait(timeout=20) == 0
        assert not os.path.ismount(mnt)
    finally:
        daemon.kill()
        _force_unmount(mnt)


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


def test_the_background_daemon_logs_to_its_log_file(user_repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "src"
    build_rich_tree(source)
    commit_id = make_commit(user_repo, CommitRequest("main", [Layer("dir", str(source))])).commit_id
    dash = lookup(user_repo, commit_id, "/usr/bin/dash").file
    assert dash is not None
    path = user_repo.content.path(dash)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"X")
    mnt, log_file = tmp_path / "mnt", tmp_path / "mount.log"
    mnt.mkdir()
    result = sapwood(user_repo.path, "mount", "-o", f"logfile={log_file}", "main", mnt)
    assert result.returncode == 0, result.stderr
    try:
        with pytest.raises(OSError) as caught:
            (mnt / "usr" / "bin" / "dash").read_bytes()
        assert caught.value.errno == errno.EIO
        assert _wait(lambda: f"object {dash.hex()}: corrupted file object" in log_file.read_text())
        assert log_file.read_text().startswith("sapwood[")
    finally:
        sapwood(user_repo.path, "umount", mnt)
        _force_unmount(mnt)


def test_a_huge_directory_lists_completely(user_repo: Repository, tmp_path: Path) -> None:
    big_directory_commit(user_repo, 100_000)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    assert sapwood(user_repo.path, "mount", "big", mnt).returncode == 0
    try:
        names = os.listdir(mnt)
        assert len(names) == 100_000 and len(set(names)) == 100_000
    finally:
        sapwood(user_repo.path, "umount", mnt)
        _force_unmount(mnt)


def test_bad_mount_requests(user_repo: Repository, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    make_commit(user_repo, CommitRequest("main", [Layer("dir", str(tmp_path / "src"))]))
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
        result = sapwood(user_repo.path, *args)
        assert result.returncode != 0 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not IS_ROOT, reason="sets /dev/fuse to 0666 and switches user: root")
def test_mount_as_a_real_unprivileged_user() -> None:
    os.chmod("/dev/fuse", 0o666)  # as standard distributions have it
    work = user_dir()
    mnt = work / "mnt"
    try:
        source = work / "src"
        (source / "etc").mkdir(parents=True)
        (source / "etc" / "conf").write_text("x=1\n")
        (source / "lib").symlink_to("etc")
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(source)], check=True)
        repo = work / "repo"
        for args in (("init",), ("commit", "-b", "main", source)):
            assert run_as_user("--repo", repo, *args).returncode == 0
        mnt.mkdir()
        os.chown(mnt, NOBODY, NOBODY)
        result = run_as_user("--repo", repo, "mount", "main", mnt)
        assert result.returncode == 0, result.stderr
        assert _as_user("cat", mnt / "etc" / "conf") == "x=1\n"
        assert _as_user("stat", "-c", "%u %a", mnt / "etc" / "conf") == f"{NOBODY} 644\n"
        assert _as_user("readlink", mnt / "lib") == "etc\n"
        assert not os.path.exists(mnt / "etc")  # without allow_other, not even root sees in
        assert run_as_user("umount", mnt).returncode == 0
        assert not os.path.ismount(mnt)
    finally:
        _force_unmount(mnt)
        subprocess.run(["rm", "-rf", str(work)], check=True)
