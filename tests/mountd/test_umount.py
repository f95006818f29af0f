"""``sapwood umount``: sapwood mounts only, live or dead (issue 9)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from store import Repository
from tests.helpers import (
    IS_ROOT,
    NOBODY,
    Mounts,
    commit_files,
    force_unmount,
    give_to_user,
    mount_fstype,
    run,
    run_as_user,
    run_briefly,
    sapwood_argv,
    user_dir,
    wait_for,
    write_tree,
)

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("used", [True, False], ids=["used", "never-looked-at"])
def test_umount_of_a_mount_whose_daemon_was_killed(
    user_repo: Repository, tmp_path: Path, mount: Mounts, used: bool
) -> None:
    """SIGKILL leaves a dead mount ("Transport endpoint is not connected"): the mount
    table still lists it, the mount point cannot be looked at (not even to ask whether
    it is a mount point, unless the kernel kept its attributes), and umount removes it."""
    commit_files(user_repo, tmp_path / "src", {"a": "a\n"})
    mnt = tmp_path / "mount point"  # the mount table writes the space as \040
    daemon = mount.foreground(user_repo.path, "main", mnt=mnt)
    if used:
        assert (mnt / "a").read_text() == "a\n"
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait()
    assert mount_fstype(mnt) == "fuse.sapwood"  # dead: "Transport endpoint is not connected"
    assert _dead(mnt)
    again = run("mount", "main", mnt, repo=user_repo.path, text=True)
    result = run("umount", mnt, repo=user_repo.path, text=True)
    assert result.returncode == 0, result.stderr
    assert "already a mount point" in _one_line_error(again)
    assert mount_fstype(mnt) is None
    assert mnt.is_dir() and os.listdir(mnt) == []


@pytest.mark.skipif(not IS_ROOT, reason="sets /dev/fuse to 0666 and switches user: root")
def test_a_user_unmounts_their_dead_mount() -> None:
    """fusermount3 -u run by a user looks at the mount point, which a dead mount
    refuses: sapwood detaches it instead."""
    os.chmod("/dev/fuse", 0o666)  # as standard distributions have it
    work = user_dir()
    mnt, source, repo = work / "mnt", work / "src", work / "repo"
    try:
        give_to_user(write_tree(source, {"a": "a\n"}))
        for args in (("init",), ("commit", "-b", "main", source)):
            assert run_as_user("--repo", repo, *args).returncode == 0
        mnt.mkdir()
        os.chown(mnt, NOBODY, NOBODY)
        assert run_as_user("--repo", repo, "mount", "main", mnt).returncode == 0
        found = subprocess.run(
            ["pgrep", "-u", str(NOBODY), "-f", f"mount main {mnt}$"],
            capture_output=True,
            text=True,
            check=True,
        )
        for pid in found.stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        assert wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in found.stdout.split()))
        result = run_as_user("umount", mnt)
        assert result.returncode == 0, result.stderr
        assert mount_fstype(mnt) is None and os.listdir(mnt) == []
    finally:
        force_unmount(mnt)
        subprocess.run(["rm", "-rf", str(work)], check=True)


def _dead(mnt: Path) -> bool:
    """statfs is always a request (stat may be answered from the kernel's cache)."""
    try:
        os.statvfs(mnt)
    except OSError:
        return True
    return False


@pytest.mark.skipif(not IS_ROOT, reason="mounts a tmpfs: root")
def test_umount_refuses_a_mount_that_is_not_sapwood(user_repo: Repository, tmp_path: Path) -> None:
    """fusermount3 run by root unmounts anything; a tmpfs and its data were lost."""
    data = tmp_path / "data with space"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(data)], check=True)
    try:
        (data / "precious").write_text("keep me\n")
        line = _one_line_error(run("umount", data, repo=user_repo.path, text=True))
        assert "not a sapwood mount" in line and "tmpfs" in line
        assert mount_fstype(data) == "tmpfs"
        assert (data / "precious").read_text() == "keep me\n"
    finally:
        subprocess.run(["umount", str(data)], check=True)


def test_umount_refuses_what_is_not_a_mount(user_repo: Repository, tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "file").write_text("x")
    os.symlink("/", tmp_path / "link-to-root")  # resolves to a mount point: not sapwood's
    for path, message in (
        (tmp_path / "plain", "not a mount point"),
        (tmp_path / "absent", "not a mount point"),
        (tmp_path / "file", "not a mount point"),
        (tmp_path / "link-to-root", "not a sapwood mount"),
    ):
        assert message in _one_line_error(run("umount", path, repo=user_repo.path, text=True)), path
    assert (tmp_path / "file").read_text() == "x" and os.path.ismount("/")


def test_umount_of_a_hung_daemon_does_not_wait_for_it(
    user_repo: Repository, tmp_path: Path, mount: Mounts
) -> None:
    """A stopped daemon answers nothing: a look at its mount point would wait for good
    (and could not even be killed), so umount must not look."""
    commit_files(user_repo, tmp_path / "src", {})
    mnt = tmp_path / "mnt"
    daemon = mount.foreground(user_repo.path, "main", mnt=mnt)
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        argv = sapwood_argv("umount", mnt, repo=user_repo.path)
        ok, _, seconds = run_briefly(argv, seconds=30)
        assert ok and seconds < 10
        assert mount_fstype(mnt) is None
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
