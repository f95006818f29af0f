"""Review 21 (session 16): hostile review of the users'-data retention (bc89450,
80f26c8), prepare-tree (d6c7705) and the /etc walk bound (fd408a8).

A passing test guards a defence; a strict xfail naming "review21 N" is a defect
(/work/plan/review21.md describes each and its fix)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sapwood
from fs.sysroot import pending
from fs.sysroot.prepare_tree import TMPFILES
from store import from_hex, prune
from tests.helpers import IS_ROOT, run
from tests.sysroot.conftest import commit, small_tree, tree_state

needs_root = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")

FILES = {"usr/etc/motd": "1\n", "home": "/", "root/.profile": "# root\n", "usr/local/bin": "/"}


def _deploy_booted(sysroot: sapwood.Sysroot, booted: sapwood.Deployment) -> sapwood.Deployment:
    cmdline = f"root=/dev/vda sapwood={booted.boot_path}"
    return sapwood.Sysroot(sysroot.path, cmdline=cmdline).deploy("debian/main").deployment


def _drop_with_data(
    sysroot: sapwood.Sysroot, tmp_path: Path, where: str = "home/alice/thesis.tex"
) -> tuple[sapwood.Deployment, str, Path]:
    """Deploy v1, write users' data into it, boot it, update twice: v1 is dropped but
    kept on disk for its data. Returns it, its commit and the data's path."""
    first_commit = commit(sysroot, small_tree(tmp_path / "v1", FILES))
    first = sysroot.deploy("debian/main").deployment
    data = sysroot.deployment_path(first) / where
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("three years of work\n")
    booted = first
    for version in ("2", "3"):
        commit(sysroot, small_tree(tmp_path / f"v{version}", {**FILES, "usr/etc/v": version}))
        booted = _deploy_booted(sysroot, booted)
    assert first.key() not in {d.key() for d in sysroot.deployments()}
    assert data.read_text() == "three years of work\n"
    return first, first_commit, data


@needs_root
def test_redeploying_a_kept_deployments_commit_keeps_its_data(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """review21 1 (fixed in 90e89ba): the redeploy took the kept directory's name, the
    checkout refused it and deploy's failure path removed it, data and all."""
    first, first_commit, data = _drop_with_data(sysroot, tmp_path)
    with sysroot.open_repository() as repo:
        repo.set_ref("debian/main", from_hex(first_commit))  # the release rolled back
    failed: Exception | None = None
    try:
        again = sysroot.deploy("debian/main").deployment
    except sapwood.SapwoodError as exc:
        failed = exc
    assert data.read_text() == "three years of work\n"  # FileNotFoundError: removed
    assert failed is None, failed  # and the deploy itself succeeds, beside it
    assert again.name != first.name


@needs_root
def test_hardlinked_users_data_is_kept(sysroot: sapwood.Sysroot, tmp_path: Path) -> None:
    """review21 2 (fixed in 90e89ba): a file of more than one link was taken for an
    object (a cp -al or rsnapshot backup in /srv was removed whole)."""
    commit(sysroot, small_tree(tmp_path / "v1", FILES))
    first = sysroot.deploy("debian/main").deployment
    root = sysroot.deployment_path(first)
    (root / "srv/backup/monday").mkdir(parents=True)
    (root / "srv/backup/monday/db.sql").write_text("the only copy\n")
    (root / "srv/backup/tuesday").mkdir()
    os.link(root / "srv/backup/monday/db.sql", root / "srv/backup/tuesday/db.sql")
    booted = first
    for version in ("2", "3"):
        commit(sysroot, small_tree(tmp_path / f"v{version}", {**FILES, "usr/etc/v": version}))
        booted = _deploy_booted(sysroot, booted)
    assert (root / "srv/backup/monday/db.sql").read_text() == "the only copy\n"


@needs_root
def test_a_commits_file_edited_in_place_is_kept(sysroot: sapwood.Sysroot, tmp_path: Path) -> None:
    """review21 11 (fixed in eedaf34): a commit's file edited in place (the object's
    inode, its mtime no longer 0) was taken for the commit's and removed."""
    commit(sysroot, small_tree(tmp_path / "v1", FILES))
    first = sysroot.deploy("debian/main").deployment
    profile = sysroot.deployment_path(first) / "root/.profile"
    assert profile.stat().st_mtime_ns == 0  # the object's copy (session 17), as stored
    with profile.open("a") as edited:  # as vim (backupcopy=auto) or >> writes it
        edited.write("export EDITOR=vim  # the admin's\n")
    booted = first
    for version in ("2", "3"):  # releases with another .profile: not the edited object
        tree = {**FILES, "root/.profile": f"# root {version}\n", "usr/etc/v": version}
        commit(sysroot, small_tree(tmp_path / f"v{version}", tree))
        booted = _deploy_booted(sysroot, booted)
    assert "the admin's" in profile.read_text()


@needs_root
def test_an_in_place_edit_in_root_does_not_break_the_next_update(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """review21 12 (fixed in session 17): /root, /home, /srv, /opt and /mnt of an
    unprepared tree were writable hardlinks of the repository's objects: appending to
    /root/.profile corrupted its object, and the next deploy failed (CorruptObjectError)."""
    commit(sysroot, small_tree(tmp_path / "v1", FILES))
    first = sysroot.deploy("debian/main").deployment
    with (sysroot.deployment_path(first) / "root/.profile").open("a") as edited:
        edited.write("alias ll='ls -l'\n")
    commit(sysroot, small_tree(tmp_path / "v2", {**FILES, "usr/etc/v": "2"}))
    second = _deploy_booted(sysroot, first)  # the same .profile as v1's: one object
    assert (sysroot.deployment_path(second) / "root/.profile").read_text() == "# root\n"


@needs_root
def test_a_commit_with_a_large_usr_local_is_not_kept_forever(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """review21 3 (fixed in 90e89ba): a bound on entries counted the commit's own files
    (TeX Live in /usr/local: ~200,000), and every dropped deployment was kept."""
    big = {f"usr/local/texlive/d{n % 3}/f{n}": f"{n}\n" for n in range(40)}
    commit(sysroot, small_tree(tmp_path / "v1", {**FILES, **big}))
    first = sysroot.deploy("debian/main").deployment
    booted = first
    for version in ("2", "3"):
        tree = {**FILES, **big, "usr/etc/v": version}
        commit(sysroot, small_tree(tmp_path / f"v{version}", tree))
        booted = _deploy_booted(sysroot, booted)
    assert not sysroot.deployment_path(first).exists()  # nothing but the commit's files


@needs_root
def test_a_deploy_warns_once_of_a_kept_deployment(
    sysroot: sapwood.Sysroot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """review21 4 (fixed in 90e89ba): deploy said it before building and after."""
    first, _, _ = _drop_with_data(sysroot, tmp_path)
    booted = sysroot.deployments()[0]
    commit(sysroot, small_tree(tmp_path / "v4", {**FILES, "usr/etc/v": "4"}))
    caplog.clear()
    cmdline = f"root=/dev/vda sapwood={booted.boot_path}"
    result = sapwood.Sysroot(sysroot.path, cmdline=cmdline).deploy("debian/main")
    said = [r for r in caplog.records if "is no longer listed but stays" in r.getMessage()]
    assert [w for w in result.warnings if first.name in w] != []
    assert len(said) == 1, [r.getMessage()[:60] for r in said]


# ----- prepare-tree (d6c7705) ------------------------------------------------------------
def _unprepared(root: Path) -> Path:
    files = {"root/.profile": "# root\n", "home/alice/notes": "mine\n", "srv/www": "/"}
    return small_tree(root, files | {"var/lib/dpkg/status": "Package: a\n", "usr/lib/os": "/"})


def test_a_fifo_at_the_tmpfiles_conf_does_not_hang_prepare_tree(tmp_path: Path) -> None:
    """review21 5 (fixed in 76b0637): prepare-tree opened its tmpfiles path without
    O_NONBLOCK: a FIFO there blocked it forever."""
    tree = _unprepared(tmp_path / "t")
    (tree / TMPFILES).parent.mkdir(parents=True)
    os.mkfifo(tree / TMPFILES)
    done, hung = threading.Event(), threading.Event()

    def unblock() -> None:  # a writer, so that a blocked open returns and the test ends
        if not done.wait(5.0):
            hung.set()
            fd = os.open(tree / TMPFILES, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)

    helper = threading.Thread(target=unblock)
    helper.start()
    try:
        sapwood.prepare_tree(tree)
    except sapwood.SapwoodError:
        pass  # refusing the FIFO is as good as replacing it: never waiting is the point
    finally:
        done.set()
        helper.join()
    assert not hung.is_set(), "prepare-tree waited for a writer of the FIFO"


def test_a_directory_at_the_tmpfiles_conf_is_named_in_the_error(tmp_path: Path) -> None:
    """review21 6 (fixed in 76b0637): a directory at usr/lib/tmpfiles.d/sapwood-var.conf
    gives 'sapwood: error: Is a directory: 4' (a descriptor number, not the path)"""
    tree = _unprepared(tmp_path / "t")
    (tree / TMPFILES / "inside").mkdir(parents=True)
    state = tree_state(tree)
    proc = run("admin", "prepare-tree", tree, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert tree_state(tree) == state
    assert "sapwood-var.conf" in proc.stderr, proc.stderr


def _chattr(path: Path, flag: str) -> None:
    try:
        subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no chattr, or a filesystem without the immutable flag")


@needs_root
def test_a_move_that_fails_midway_leaves_the_tree_as_it_was_or_says_so(tmp_path: Path) -> None:
    """review21 7 (fixed in 76b0637): a move that fails in the apply phase (srv
    immutable, a mount point, EXDEV) leaves home, root, opt moved: exit 1 with an errno
    line that neither says the tree was changed nor that a second run finishes it"""
    tree = _unprepared(tmp_path / "t")
    state = tree_state(tree)
    _chattr(tree / "srv", "+i")  # rename(2) of an immutable directory: EPERM
    try:
        proc = run("admin", "prepare-tree", tree, text=True)
    finally:
        _chattr(tree / "srv", "-i")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert tree_state(tree) == state or "run it again" in proc.stderr, proc.stderr


@needs_root
def test_prepare_tree_refuses_a_deployment(sysroot: sapwood.Sysroot, tmp_path: Path) -> None:
    """review21 15 (fixed in eedaf34): prepare-tree laid out a deployment, moving its
    /home into its own var/, which the shared /var hides at boot."""
    commit(sysroot, small_tree(tmp_path / "v1", FILES))
    deployed = sysroot.deployment_path(sysroot.deploy("debian/main").deployment)
    (deployed / "home/alice").mkdir()
    (deployed / "home/alice/notes").write_text("mine\n")
    state = tree_state(deployed)
    with pytest.raises(sapwood.SapwoodError):
        sapwood.prepare_tree(deployed)
    assert tree_state(deployed) == state


@pytest.mark.parametrize("link", ["usr/lib/tmpfiles.d", "usr/lib/sysimage", "var/lib"])
def test_prepare_tree_never_writes_through_a_deeper_symlink(tmp_path: Path, link: str) -> None:
    outside = tmp_path / "outside"
    (outside / "dpkg").mkdir(parents=True)
    (outside / "dpkg/status").write_text("the host's\n")
    tree = _unprepared(tmp_path / "t")
    subprocess.run(["rm", "-rf", str(tree / link)], check=True)
    (tree / link).parent.mkdir(parents=True, exist_ok=True)
    (tree / link).symlink_to(outside)
    before, state = tree_state(outside), tree_state(tree)
    with pytest.raises(sapwood.TreeLayoutError, match="is a symbolic link"):
        sapwood.prepare_tree(tree)
    assert tree_state(outside) == before
    assert tree_state(tree) == state


# ----- users' data: the check and the removal (bc89450) ----------------------------------
@needs_root
def test_a_users_file_written_after_the_check_is_not_removed(
    sysroot: sapwood.Sysroot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fs.sysroot import retention, users_data

    commit(sysroot, small_tree(tmp_path / "v1", FILES))
    first = sysroot.deploy("debian/main").deployment
    late = sysroot.deployment_path(first) / "root/late-notes"
    real = users_data.users_file

    def checked_then_written(path: Path, *args: Any) -> str | None:
        found = real(path, *args)
        if path == sysroot.deployment_path(first):
            late.write_text("written just after the look\n")
        return found

    monkeypatch.setattr(retention, "users_file", checked_then_written)
    commit(sysroot, small_tree(tmp_path / "v2", {**FILES, "usr/etc/v": "2"}))
    sysroot.deploy("debian/main")
    sysroot.undeploy(1)
    assert late.read_text() == "written just after the look\n"


@needs_root
@pytest.mark.parametrize(
    "where",
    [
        "home",
        "alice",  # review21 18 (fixed in 0ecdfaf): a directory below one
    ],
)
def test_a_users_directory_that_cannot_be_opened_keeps_the_deployment(
    sysroot: sapwood.Sysroot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """review21 13 (fixed in 5eda9b8): any error opening a users' directory was taken
    for its absence, and the deployment removed unexamined."""
    import errno

    commit(sysroot, small_tree(tmp_path / "v1", FILES))
    first = sysroot.deploy("debian/main").deployment
    data = sysroot.deployment_path(first) / "home/alice/thesis.tex"
    data.parent.mkdir()
    data.write_text("three years of work\n")
    commit(sysroot, small_tree(tmp_path / "v2", {**FILES, "usr/etc/v": "2"}))
    sysroot.deploy("debian/main")
    real_open = os.open

    def home_fails(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if path == where and kwargs.get("dir_fd") is not None:  # the look, not the removal
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", home_fails)
    with contextlib.suppress(sapwood.SapwoodError):  # refusing is as good: the data counts
        sysroot.undeploy(1)
    monkeypatch.undo()
    assert data.read_text() == "three years of work\n"


@needs_root
def test_cleanup_by_the_command_keeps_the_data_and_says_so_once_in_one_line(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    first, _, data = _drop_with_data(sysroot, tmp_path, where="home/al\nice/notes")
    proc = run("admin", "--sysroot", sysroot.path, "cleanup", text=True)
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if "no longer listed" in line]
    assert len(said) == 1 and proc.stderr.count("\n") == 1, proc.stderr  # a newline named
    assert first.name in said[0]
    assert data.read_text() == "three years of work\n"


# A deploy killed (SIGKILL: no handler runs) with its checkout whole but not yet renamed
# into place: deploy/.ID.SERIAL.sapwood-checkout-X is left, its files the commit's objects.
_KILLED_DEPLOY = """
import os, sys
import sapwood
real = os.rename
def rename(src, dst, *args, **kwargs):
    if ".sapwood-checkout-" in os.path.basename(str(src)):
        os.kill(os.getpid(), 9)
    real(src, dst, *args, **kwargs)
os.rename = rename
sapwood.Sysroot(sys.argv[1]).deploy("debian/main")
"""


@needs_root
@pytest.mark.parametrize(
    "pruned",
    [
        pytest.param(False, id="commit-kept"),
        pytest.param(True, id="commit-pruned"),
    ],
)
def test_a_killed_deploys_checkout_is_removed(
    sysroot: sapwood.Sysroot, tmp_path: Path, pruned: bool
) -> None:
    """review21 16, 17 (fixed in 5eda9b8): a killed deploy's checkout under way was
    walked as a deployment whose files were all users' data (its commit not read from its
    name, or pruned since): kept forever, with a warning at every deploy."""
    commit(sysroot, small_tree(tmp_path / "v1", FILES))
    sysroot.deploy("debian/main")
    commit(sysroot, small_tree(tmp_path / "v2", {**FILES, "usr/etc/v": "2"}))
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_DEPLOY, str(sysroot.path)],
        capture_output=True,
        cwd=Path(__file__).parents[2],
        timeout=300,
    )
    assert child.returncode == -9, child.stderr.decode()[-2000:]
    deploy_dir = sysroot.deployment_path(sysroot.deployments()[0]).parent
    [partial] = [p for p in deploy_dir.iterdir() if ".sapwood-checkout-" in p.name]
    if pruned:  # a newer release, and a prune (a timer's) before the next cleanup
        commit(sysroot, small_tree(tmp_path / "v3", {**FILES, "usr/etc/v": "3"}))
        with sysroot.open_repository() as repo:
            prune(repo, refs_only=True, depth=0)
            assert not repo.has_object(from_hex(partial.name[1:65]))  # v2 is gone
    sysroot.cleanup()
    assert not partial.exists()


def test_the_users_data_walk_leaks_no_descriptor_and_never_waits(tmp_path: Path) -> None:
    from fs.sysroot import users_data

    deployment = tmp_path / "deployment"
    deep = deployment / "home"
    for _ in range(users_data.MAX_DEPTH + 3):  # too deep: an early answer
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deployment / "root").mkdir()
    os.mkfifo(deployment / "root/fifo")  # never opened: a FIFO would wait for a writer
    (deployment / "root/loop").symlink_to("loop")
    (deployment / "srv").symlink_to("/")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        found = users_data.users_file(deployment, lambda directory: {})
        assert found is not None and found.endswith("(too deep to look into)")
    (deployment / "home").rename(tmp_path / "home-away")
    assert users_data.users_file(deployment, lambda directory: {}) is None
    assert len(os.listdir("/proc/self/fd")) == before


# ----- the bound of status's /etc walk (fd408a8) ------------------------------------------
def test_the_etc_walk_bound_bounds_what_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review21 9 (fixed in 76b0637): the /etc walk's bound counts entries after os.walk
    has read and sorted each directory whole: one directory of millions of entries is
    read whole at every `admin status`, whatever the bound"""
    etc = tmp_path / "etc"
    (etc / "big").mkdir(parents=True)
    for n in range(400):
        (etc / "big" / f"f{n:04}").write_text("")
    made = tmp_path / "made"
    made.mkdir()
    os.utime(made, (0, 0))  # no effect on ctime: the walk must look, and finds nothing
    read = [0]
    real = os.scandir

    class Counting:
        def __init__(self, *args: Any) -> None:
            self._it = real(*args)

        def __enter__(self) -> Iterator[os.DirEntry[str]]:
            self._it.__enter__()
            return self

        def __exit__(self, *args: Any) -> None:
            self._it.__exit__(*args)

        def __iter__(self) -> Iterator[os.DirEntry[str]]:
            return self

        def __next__(self) -> os.DirEntry[str]:
            entry = next(self._it)
            read[0] += 1
            return entry

        def close(self) -> None:
            self._it.close()

    time.sleep(0.02)
    made.chmod(0o755)  # made changed after everything in etc: nothing is newer
    monkeypatch.setattr(os, "scandir", Counting)
    assert pending.etc_changed_after(etc, made, limit=20) is None
    assert read[0] <= 100, f"{read[0]} entries read for a bound of 20"
