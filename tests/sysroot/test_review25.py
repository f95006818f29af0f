"""review25 (session 19): a hostile review of prepare-tree's places and the directories on
their way made under a temporary name, ``.NAME.sapwood-new``, fchmodded and renamed
(helper d6; /work/plan/review25.md): its findings, fixed the same session (1 in 50deed8,
2-4 in b54621d, 7 in 4aecbbf), and the attacks the change held (kills at
every system call over several tree shapes and umasks, no inode left at each step)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import sapwood
from fs.sysroot import nofollow
from fs.sysroot import prepare_tree as prepare_tree_module
from fs.sysroot.nofollow import NEW
from store import TreeLayoutError
from tests.helpers import IS_ROOT, run, small_tmpfs
from tests.sysroot import test_prepare_tree_full as full
from tests.sysroot.conftest import after_mkdir, small_tree
from tests.sysroot.conftest import tree_shape as _shape

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a tree with root's modes needs root")

# home and root moved, opt absent (var/opt made under .opt.sapwood-new), usr/lib made
FILES = {"home/alice/notes": "mine\n", "root/.profile": "# root\n", "usr/local/bin": "/"}
SNIPPET_NEW = f"usr/lib/tmpfiles.d/.sapwood-var.conf{NEW}"


# ----- review25 1: a directory at the snippet's temporary name -----------------------------
@pytest.mark.parametrize("held", ["empty", "with files"])
def test_a_directory_at_the_snippets_temporary_name_is_refused_or_removed(
    tmp_path: Path, held: str
) -> None:
    """docs/deployments.md: "anything but a killed run's empty directory at a temporary
    name: one line, nothing changed". A directory at usr/lib/tmpfiles.d's
    .sapwood-var.conf.sapwood-new: the run either refuses it before any change (one
    line, the tree as it was) or, an empty one, removes it and runs through with the
    snippet written; never a failure midway that every later run repeats (what it was,
    at every run: write_below's unlink got EISDIR; fixed in 50deed8, the same session)."""
    tree = small_tree(tmp_path / "tree", {**FILES, "usr/lib/tmpfiles.d": "/"}, kernel=False)
    (tree / SNIPPET_NEW).mkdir()
    if held == "with files":
        (tree / SNIPPET_NEW / "keep").write_text("the user's\n")
    before = _shape(tree)
    for _ in range(2):
        proc = run("admin", "prepare-tree", tree, text=True, timeout=60)
        if proc.returncode == 0:  # an empty one removed: the snippet written
            assert held == "empty" and (tree / "usr/lib/tmpfiles.d/sapwood-var.conf").is_file()
            assert not os.path.lexists(tree / SNIPPET_NEW)
            return
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert "nothing was changed" in proc.stderr, proc.stderr
        assert _shape(tree) == before
    assert held == "with files" or os.path.isdir(tree / SNIPPET_NEW)


# ----- review25 2: a users' directory swapped in at the temporary name ---------------------
def test_a_users_directory_swapped_in_at_the_temporary_name_keeps_its_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the mkdir of var/.opt.sapwood-new and its open, a process that can write
    var/ (but owns nothing else there) removes it and renames var/secret (root's, 0700,
    with a file) to that name: root then fchmods var/secret 0755 and renames it to
    var/opt, which the process could not have done. Its mode must stay 0700 and it must
    not become the place (a failure midway, in one line, is fine). Fixed in b54621d
    (the directory at the temporary name checked: ours and empty)."""
    tree = small_tree(tmp_path / "tree", {**FILES, "var/secret/key": "secret\n"}, kernel=False)
    os.chmod(tree / "var/secret", 0o700)
    secret = os.lstat(tree / "var/secret").st_ino
    temporary = f".opt{NEW}"

    def swap(parent: int) -> None:
        os.rmdir(temporary, dir_fd=parent)
        os.rename("secret", temporary, src_dir_fd=parent, dst_dir_fd=parent)

    swapped = after_mkdir(monkeypatch, swap, temporary)
    with contextlib.suppress(TreeLayoutError):
        sapwood.prepare_tree(tree)
    monkeypatch.undo()
    assert swapped, "the precondition: the swap happened"
    (found,) = [path for path in tree.rglob("*") if os.lstat(path).st_ino == secret]
    assert (found / "key").read_text() == "secret\n"  # the same directory
    assert stat.S_IMODE(os.lstat(found).st_mode) == 0o700
    assert found != tree / "var/opt"


# ----- review25 3: a users' directory made at the place just before the rename -----------
def test_a_directory_made_at_the_place_just_before_the_rename_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's empty 0700 var/opt made after make_dir saw no var/opt, just before its
    rename: the rename replaces it (its inode gone, the place 0755). decisions.md
    accepts this window ("only one made in the microseconds between"); fs/getdents.py
    already calls libc through ctypes, so renameat2(RENAME_NOREPLACE) is at hand and
    would fail EEXIST instead, the user's directory kept with its inode and mode.
    (The race is hooked on os.rename, or on nofollow.rename_noreplace where there is
    one: just before the rename whichever way it is made.) Fixed in b54621d."""
    tree = small_tree(tmp_path / "tree", FILES, kernel=False)
    temporary = f".opt{NEW}"
    users: list[int] = []

    def users_mkdir(parent: int, src: str, dst: str) -> None:
        if (src, dst) == (temporary, "opt") and not users:
            os.mkdir("opt", 0o700, dir_fd=parent)
            users.append(os.lstat(tree / "var/opt").st_ino)

    real_rename = os.rename

    def rename(src: str, dst: str, **dir_fds: int) -> None:
        parent = dir_fds.get("dst_dir_fd")
        if parent is not None:
            users_mkdir(parent, src, dst)
        real_rename(src, dst, **dir_fds)

    monkeypatch.setattr(os, "rename", rename)
    real_noreplace: Callable[[int, str, str], None] | None
    real_noreplace = getattr(nofollow, "rename_noreplace", None)
    if real_noreplace is not None:
        noreplace = real_noreplace

        def rename_noreplace(parent: int, src: str, dst: str) -> None:
            users_mkdir(parent, src, dst)
            noreplace(parent, src, dst)

        monkeypatch.setattr(nofollow, "rename_noreplace", rename_noreplace)
    with contextlib.suppress(TreeLayoutError):
        sapwood.prepare_tree(tree)
    monkeypatch.undo()
    assert users, "the precondition: the user's directory was made just before the rename"
    after = os.lstat(tree / "var/opt")
    assert (after.st_ino, stat.S_IMODE(after.st_mode)) == (users[0], 0o700)


# ----- review25 4: a symlink swapped in at the temporary name after its fchmod ------------
def test_a_symlink_swapped_in_after_the_fchmod_never_becomes_the_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Just after the fchmod of var/.opt.sapwood-new, a process that can write var/
    renames it away and puts a symlink to a directory outside the tree there: make_dir's
    rename makes var/opt that symlink, the run says "opt -> var/opt: made", and the next
    run refuses var/opt. Nothing outside is written (never followed); the place must be
    the directory made and chmodded, or the run fail in one line with no place. Fixed
    in b54621d (renamed only while the temporary name holds the directory chmodded)."""
    tree = small_tree(tmp_path / "tree", FILES, kernel=False)
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    var, temporary = tree / "var", f".opt{NEW}"
    real_fchmod = os.fchmod
    swapped: list[str] = []

    def fchmod(fd: int, mode: int) -> None:
        real_fchmod(fd, mode)
        if not swapped and os.path.isdir(var / temporary) and not (var / temporary).is_symlink():
            os.rename(var / temporary, var / ".moved")
            os.symlink(outside, var / temporary)
            swapped.append(temporary)

    monkeypatch.setattr(os, "fchmod", fchmod)
    try:
        done = sapwood.prepare_tree(tree)
    except TreeLayoutError as exc:
        assert "\n" not in str(exc)
        done = []
    monkeypatch.undo()
    assert swapped, "the precondition: the swap happened"
    assert os.listdir(outside) == [] and stat.S_IMODE(os.stat(outside).st_mode) == 0o700
    assert not (tree / "var/opt").is_symlink(), done


# ----- review25 7: a filesystem whose directories have one link (btrfs) ----------------
def test_a_filesystem_whose_directories_have_one_link_still_gets_its_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """btrfs keeps every directory's link count at 1 (it never counts subdirectories),
    as some FUSE filesystems do: a check that the directory just made has st_nlink 2
    (the proposed fix of review25 2) refuses every place there. Simulated: fstat says 1
    for a directory; the run still makes every place and directory on the way. (b54621d
    checked st_nlink 2; 4aecbbf dropped that check.)"""
    tree = small_tree(tmp_path / "tree", FILES, kernel=False)
    real_fstat = os.fstat

    def fstat(fd: int) -> os.stat_result:
        found = real_fstat(fd)
        if not stat.S_ISDIR(found.st_mode):
            return found
        reduced = found.__reduce__()  # (stat_result, (fields, the *_ns and other extras))
        assert isinstance(reduced, tuple)
        fields, extra = reduced[1]
        return os.stat_result((*fields[:3], 1, *fields[4:]), extra)

    monkeypatch.setattr(os, "fstat", fstat)
    fd = os.open(tree, os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert os.fstat(fd).st_nlink == 1  # the precondition: what btrfs says
    finally:
        os.close(fd)
    done = sapwood.prepare_tree(tree)
    monkeypatch.undo()
    assert "opt -> var/opt: made" in done and "srv -> var/srv: made" in done, done
    for place in ("var/opt", "var/srv", "var/mnt", "usr/lib", "usr/lib/tmpfiles.d"):
        assert stat.S_IMODE(os.lstat(tree / place).st_mode) == 0o755, place


# ----- held: a run killed at any system call, over tree shapes and umasks -----------------
USERS_MODES = {"opt": 0o705, "var/opt": 0o700, "var/srv": 0o711, "mnt": 0o750}
_CALLS = ("open", "mkdir", "rename", "symlink", "fchmod", "chmod", "rmdir", "unlink", "stat")


def _shape_kinds(at: Path, kind: str) -> Path:
    """A tree of the shape ``kind`` not laid out."""
    if kind == "no var":
        tree = small_tree(at, {"usr/local/x": "y\n"}, kernel=False)
        shutil.rmtree(tree / "var")
    elif kind == "dpkg link, no place":  # "place": usr/lib and usr/lib/sysimage made
        files = {"var/lib/dpkg": "->../../usr/lib/sysimage/dpkg", "home/a/b": "c\n"}
        tree = small_tree(at, files, kernel=False)
    elif kind == "no usr":  # usr made for usr/local's link and the snippet
        tree = small_tree(at, {"root/.p": "x\n"}, kernel=False)
        shutil.rmtree(tree / "usr")
    else:  # users' places of their own modes, kept; a users' mnt moved with its
        files = {"opt/x": "y\n", "var/opt": "/", "var/srv": "/", "mnt": "/"}
        tree = small_tree(at, {**files, "var/lib/dpkg/status": "s\n"}, kernel=False)
        for name, mode in USERS_MODES.items():
            os.chmod(tree / name, mode)
    return tree


def _killed_at(tree: Path, point: int, umask: int) -> int:
    """prepare_tree on ``tree`` in a forked child under ``umask``, SIGKILLed before its
    system call numbered ``point`` (0: never); its wait status's signal or exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.umask(umask)
            count = [0]

            def killing(real: Callable[..., object]) -> Callable[..., object]:
                def call(*args: object, **kwargs: object) -> object:
                    count[0] += 1
                    if count[0] == point:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real(*args, **kwargs)

                return call

            for name in _CALLS:
                setattr(os, name, killing(getattr(os, name)))
            prepare_tree_module.prepare_tree(tree)
            os._exit(0)
        except BaseException as exc:  # the child says why, and exits
            sys.stderr.write(f"child: {exc}\n")
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _modes(tree: Path) -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(tree.rglob("*")):
        target = os.readlink(path) if path.is_symlink() else ""
        found.append((str(path.relative_to(tree)), os.lstat(path).st_mode, target))
    return found


@pytest.mark.parametrize(
    ("kind", "umask"),
    [("no var", 0o077), ("dpkg link, no place", 0o000), ("no usr", 0o077), ("users", 0o000)],
)
def test_a_run_killed_at_any_call_is_finished_with_the_plans_modes(
    tmp_path: Path, kind: str, umask: int
) -> None:
    """Killed before each of its system calls in turn (stat's too), the next run under
    the same umask ends as a run never killed: the same entries, modes and links, no
    temporary name left; the users' places keep their modes."""
    reference = _shape_kinds(tmp_path / "reference", kind)
    assert _killed_at(reference, 0, umask) == 0
    wanted = _modes(reference)
    assert not [name for name, _, _ in wanted if NEW in name or "sapwood-aside" in name]
    if kind == "users":
        kept = {"var/opt": 0o705, "var/srv": 0o711, "var/mnt": 0o750}  # opt moved onto var/opt
        assert {p: stat.S_IMODE(os.lstat(reference / p).st_mode) for p in kept} == kept
    else:
        made = ("var", "usr", "usr/lib", "usr/lib/sysimage", "var/opt", "var/mnt")
        modes = {
            stat.S_IMODE(os.lstat(reference / p).st_mode) for p in made if (reference / p).exists()
        }
        assert modes == {0o755}, modes  # whatever the umask
    unfinished, point, code = [], 0, -signal.SIGKILL
    while code != 0:
        point += 1
        assert point < 400, "prepare-tree never ran through"
        tree = _shape_kinds(tmp_path / f"t{point}", kind)
        code = _killed_at(tree, point, umask)
        assert code in (0, -signal.SIGKILL), code
        if code != 0:
            assert _killed_at(tree, 0, umask) == 0, f"the run after point {point}"
            if _modes(tree) != wanted:
                unfinished.append((point, sorted(set(_modes(tree)) ^ set(wanted))[:2]))
        shutil.rmtree(tree)
    assert point > 100, f"killed at only {point - 1} points"
    assert not unfinished, unfinished


# ----- held: no inode left at each step, under umask 077 ---------------------------------
def test_no_inode_left_at_any_step_under_umask_077_is_finished_with_the_plans_modes(
    tmp_path: Path,
) -> None:
    """With 0, 1, 2, ... inodes left (a tmpfs), each run under umask 077 stops in one
    line, the tree as it says (no temporary name left), until one runs through; the run
    after each, with room, ends with the places and the directories made on the way
    0755 (a 0700 mkdir fchmodded before its rename), whichever step ran out."""
    made = ("var/opt", "var/mnt", "usr/lib", "usr/lib/sysimage", "usr/lib/tmpfiles.d")
    old = os.umask(0o077)
    try:
        stopped = 0
        for left in range(40):
            with small_tmpfs(tmp_path / f"disk{left}", "4m,nr_inodes=400") as disk:
                tree = full._unprepared(disk / "tree")
                with full._inodes_left(disk, left):
                    try:
                        done = sapwood.prepare_tree(tree)
                    except sapwood.OutOfSpaceError as exc:
                        assert "\n" not in str(exc)
                        done = full._done_lines(str(exc))
                        full._assert_as_said(tree, done)
                    else:
                        break
                stopped += 1
                rest = sapwood.prepare_tree(tree)
                full._assert_as_said(tree, done + rest)
                modes = {p: stat.S_IMODE(os.lstat(tree / p).st_mode) for p in made}
                assert modes == dict.fromkeys(made, 0o755), (left, modes)
    finally:
        os.umask(old)
    assert stopped > 8, f"stopped at {stopped} points only"
