"""Review 23 (session 18): hostile review of the copies record (70a8f7b, taken back in
1eef0ce after review23 2: the drop compares every copy again), the one name parser
(299433b) and prepare-tree's full-disk undo (125ba0b). A passing test is a defence that
holds; a strict xfail naming "review23 N" is a defect written up in
/work/plan/review23.md."""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sapwood
from fs.sysroot import deploy, users_data
from fs.sysroot.prepare_tree import MOVES
from tests.helpers import IS_ROOT, fill_inodes, run, small_tmpfs
from tests.sysroot.conftest import commit, remove, small_tree

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")

FILES = {"usr/etc/motd": "1\n", "opt/app/small.txt": "small\n", "root/.profile": "# p\n"}
BIG = bytes(range(256)) * (8 << 10)  # 2 MiB


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the copies compared byte for byte with their objects."""
    found: list[str] = []
    real = users_data._same_bytes

    def counted(parent: int, name: str, *args: object) -> bool:
        found.append(name)
        return real(parent, name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(users_data, "_same_bytes", counted)
    return found


def _deploy(sysroot: sapwood.Sysroot, tree: Path) -> Path:
    commit(sysroot, tree)
    return sysroot.deployment_path(sysroot.deploy("debian/main").deployment)


def _deploy_v1(
    sysroot: sapwood.Sysroot, tmp_path: Path, extra: dict[str, str] | None = None
) -> Path:
    tree = small_tree(tmp_path / "v1", {**FILES, **(extra or {})})
    (tree / "opt/app/big").write_bytes(BIG)
    return _deploy(sysroot, tree)


def _drop(sysroot: sapwood.Sysroot, tmp_path: Path, first: Path) -> None:
    """Two more releases deployed: the first is dropped by the second."""
    for version in ("2", "3"):
        commit(sysroot, small_tree(tmp_path / f"v{version}", {**FILES, "usr/etc/v": version}))
        sysroot.deploy("debian/main")
    assert first.name not in {d.name for d in sysroot.deployments()}


def _kept(sysroot: sapwood.Sysroot) -> list[str]:
    return [d.name for d in sysroot.kept_on_disk()]


def test_a_prepared_trees_links_add_nothing_to_the_drop(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """Held: the drop never walks a symlinked users' directory: the deployment's
    var/home (hidden by the OS's shared /var at boot) does not keep it."""
    tree = small_tree(
        tmp_path / "v1",
        {"home": "->var/home", "var/home/alice/notes": "commit's\n", "root/.profile": "# p\n"},
    )
    first = _deploy(sysroot, tree)
    _drop(sysroot, tmp_path, first)
    assert not first.exists()
    assert _kept(sysroot) == []


# ----- 2: bytes that change while ctime stays (the record, 70a8f7b, taken back) --------
def _precondition(ok: bool, what: str) -> None:
    """Not an AssertionError: a setup that did not happen must fail the test, not pass
    as the expected failure of a strict xfail."""
    if not ok:
        raise RuntimeError(f"the setup did not hold: {what}")


def test_bytes_changed_while_the_identity_stays_are_kept(
    sysroot: sapwood.Sysroot, tmp_path: Path, reads: list[str]
) -> None:
    """review23 2 (fixed by taking the record back, 1eef0ce): a copy whose bytes change
    while its device, inode, ctime, size and mtime 0 stay (here a shared writable mapping
    dirtied before, written again without a fault; a crash after an fdatasync'ed write
    in place leaves the same) is compared byte for byte at the drop, and kept."""
    first = _deploy_v1(sysroot, tmp_path)
    big = first / "opt/app/big"
    user = b"USER" + BIG[4:]
    fd = os.open(big, os.O_RDWR)
    try:
        mapped = mmap.mmap(fd, 0)
        mapped[0:4] = mapped[0:4]  # the page dirtied, same bytes: the fault sets the times
        os.utime(big, ns=(0, 0))
        before = big.stat()
        mapped[0:4] = b"USER"  # the dirty page again: no fault, no time changed
        mapped.close()
    finally:
        os.close(fd)
    after = big.stat()
    _precondition(big.read_bytes() == user, "the bytes changed")
    _precondition(
        (after.st_ino, after.st_ctime_ns, after.st_mtime_ns, after.st_size)
        == (before.st_ino, before.st_ctime_ns, 0, before.st_size),
        "the identity stayed",
    )
    _drop(sysroot, tmp_path, first)
    assert big.exists() and big.read_bytes() == user, "a user's bytes removed unread"
    assert _kept(sysroot) == [first.name]
    assert "big" in reads  # compared, not taken on its identity


def test_a_mapping_made_after_the_deploy_changes_the_times(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """Held: a shared writable mapping made once the deployment is in place faults on
    its first write, which sets ctime; the edit, its mtime put back, is kept."""
    first = _deploy_v1(sysroot, tmp_path)
    big = first / "opt/app/big"
    before = big.stat().st_ctime_ns
    fd = os.open(big, os.O_RDWR)
    try:
        with mmap.mmap(fd, 0) as mapped:
            mapped[0:4] = b"USER"
    finally:
        os.close(fd)
    assert big.stat().st_ctime_ns != before
    os.utime(big, ns=(0, 0))
    _drop(sysroot, tmp_path, first)
    assert big.read_bytes()[:4] == b"USER"
    assert _kept(sysroot) == [first.name]


# ----- held: edits that change the identity -------------------------------------------------
def _rename_over(first: Path, big: Path) -> None:
    other = first / "opt/app/.other"
    other.write_bytes(b"USER" + BIG[4:])
    os.utime(other, ns=(0, 0))
    os.rename(other, big)


def _swap(first: Path, big: Path) -> None:
    """Two recorded copies of one size swapped by renames: each name holds the other's."""
    twin = first / "opt/app/twin"
    aside = first / "opt/app/.aside"
    os.rename(big, aside)
    os.rename(twin, big)
    os.rename(aside, twin)


def _through_a_hardlink(first: Path, big: Path) -> None:
    """Written through a link made outside the deployment (same filesystem)."""
    link = first.parent.parent / "hl"
    os.link(big, link)
    with link.open("r+b") as edited:
        edited.write(b"USER")
    os.utime(link, ns=(0, 0))
    link.unlink()


def _punched(first: Path, big: Path) -> None:
    subprocess.run(["fallocate", "-p", "-o", "0", "-l", "4096", str(big)], check=True)
    os.utime(big, ns=(0, 0))


EDITS = {
    "a file renamed over it": _rename_over,
    "two copies swapped": _swap,
    "written through a hardlink": _through_a_hardlink,
    "a hole punched": _punched,
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edit_that_keeps_size_and_mtime_is_still_seen(
    sysroot: sapwood.Sysroot, tmp_path: Path, reads: list[str], edit: str
) -> None:
    twin = bytes(reversed(BIG))
    tree = small_tree(tmp_path / "v1", FILES)
    (tree / "opt/app/big").write_bytes(BIG)
    (tree / "opt/app/twin").write_bytes(twin)
    first = _deploy(sysroot, tree)
    big = first / "opt/app/big"
    EDITS[edit](first, big)
    written = big.read_bytes()
    assert written != BIG and len(written) == len(BIG)
    assert big.stat().st_mtime_ns == 0
    _drop(sysroot, tmp_path, first)
    assert big.read_bytes() == written
    assert _kept(sysroot) == [first.name]
    assert "big" in reads  # compared


def test_a_non_utf8_named_copy_untouched_goes(
    sysroot: sapwood.Sysroot, tmp_path: Path, reads: list[str]
) -> None:
    """Held: a copy whose name is not UTF-8 is found in its commit by that name and
    compared: untouched, its deployment goes."""
    name = os.fsdecode(b"caf\xe9-\xff")
    first = _deploy_v1(sysroot, tmp_path, {f"opt/app/{name}": "latin-1 name\n"})
    _drop(sysroot, tmp_path, first)
    assert name in reads
    assert not first.exists()


def test_a_non_utf8_named_copy_edited_is_kept(
    sysroot: sapwood.Sysroot, tmp_path: Path, reads: list[str]
) -> None:
    name = os.fsdecode(b"caf\xe9-\xff")
    first = _deploy_v1(sysroot, tmp_path, {f"opt/app/{name}": "latin-1 name\n"})
    path = first / "opt/app" / name
    with path.open("r+b") as edited:
        edited.write(b"USER")
    os.utime(path, ns=(0, 0))
    _drop(sysroot, tmp_path, first)
    assert path.read_bytes().startswith(b"USER")
    assert _kept(sysroot) == [first.name]


# ----- 3: prepare-tree's undo of a step whose link failed ---------------------------------
def _empty(fillers: Path) -> None:
    for name in os.listdir(fillers):
        (fillers / name).unlink()
    fillers.rmdir()


def _prepare_fails(tree: Path) -> str:
    proc = run("admin", "prepare-tree", tree, text=True, timeout=60)
    assert proc.returncode != 0, proc.stdout
    return proc.stderr


def _fails_with_inodes_left(disk: Path, tree: Path, left: int) -> str:
    """prepare-tree run with all inodes of ``disk`` but ``left`` taken: it fails for the
    full disk having done nothing (checked), the inodes given back; its stderr."""
    fillers = fill_inodes(disk, left)
    try:
        stderr = _prepare_fails(tree)
    finally:
        _empty(fillers)
    _precondition("No space left on device" in stderr, f"a full disk: {stderr}")
    _precondition("done before it: nothing" in stderr, stderr)
    return stderr


def test_an_undone_move_leaves_the_place_that_was_there(tmp_path: Path) -> None:
    """review23 3 (fixed in 098680a): the undo of a move onto an empty place took the
    place's name away."""
    with small_tmpfs(tmp_path / "disk", "4m,nr_inodes=400") as disk:
        tree = small_tree(
            disk / "tree",
            {
                "home": "->var/home",
                "var/home": "/",
                "root": "->var/roothome",
                "var/roothome": "/",
                "opt/app/f": "app\n",
                "var/opt": "/",  # Debian's base-files has it, empty
            },
            kernel=False,
        )
        os.chmod(tree / "var/opt", 0o750)
        # the empty place held open: the rename over it frees no inode, so the link fails
        held = os.open(tree / "var/opt", os.O_RDONLY | os.O_DIRECTORY)
        try:
            _fails_with_inodes_left(disk, tree, 0)
        finally:
            os.close(held)
        _precondition((tree / "opt/app/f").read_text() == "app\n", "opt moved back")
        assert (tree / "var/opt").is_dir(), "the directory that was there is gone"
        assert (tree / "var/opt").stat().st_mode & 0o777 == 0o750


def test_an_undone_move_leaves_no_directory_it_made(tmp_path: Path) -> None:
    """review23 3 (fixed in 098680a): the undo left the parents its step made."""
    with small_tmpfs(tmp_path / "disk", "4m,nr_inodes=400") as disk:
        tree = small_tree(disk / "tree", {"usr/lib/x": "x\n"}, kernel=False)
        sapwood.prepare_tree(tree)  # every link made; no package database yet
        (tree / "var/lib/dpkg").mkdir()
        (tree / "var/lib/dpkg/status").write_text("Package: openssl\n")
        _precondition(not (tree / "usr/lib/sysimage").exists(), "no sysimage yet")
        _fails_with_inodes_left(disk, tree, 1)  # usr/lib/sysimage made; the link has none
        _precondition((tree / "var/lib/dpkg/status").is_file(), "dpkg moved back")
        assert not os.path.lexists(tree / "usr/lib/sysimage"), "a directory made and left"


def test_a_fifo_at_the_snippets_temporary_name_does_not_hang(tmp_path: Path) -> None:
    """review23 4 (fixed in 05a2f20): a FIFO at the snippet's temporary name hung the
    open (O_WRONLY without O_NONBLOCK)."""
    tree = small_tree(tmp_path / "tree", {"usr/lib/tmpfiles.d": "/"}, kernel=False)
    os.mkfifo(tree / "usr/lib/tmpfiles.d/.sapwood-var.conf.sapwood-new")
    try:
        proc = run("admin", "prepare-tree", tree, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("prepare-tree hung on a FIFO") from None
    # one line, refused or done; never a hang
    assert proc.stderr.count("\n") <= 1, proc.stderr


# ----- 5: a serial deploy makes that the reader refuses -----------------------------------
def test_deploy_never_writes_a_serial_the_list_refuses(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """review23 5 (fixed in 05a2f20): one past a nine-digit serial on disk was written
    into the list, which every later command refused."""
    first = _deploy_v1(sysroot, tmp_path)
    high = first.with_name(first.name.rsplit(".", 1)[0] + ".999999999")
    (high / "root").mkdir(parents=True)
    (high / "root/mine").write_text("users' data\n")  # kept: a users' file
    with contextlib.suppress(sapwood.SapwoodError):  # refused: fine, if still readable
        sysroot.deploy("debian/main")
    try:
        names = [d.name for d in sysroot.deployments()]
    except sapwood.SapwoodError as exc:
        raise AssertionError(f"the list is no longer readable: {exc}") from None
    assert first.name in names
    assert high.is_dir() and (high / "root/mine").is_file()
    # again and again: each a serial no other deployment of the commit has, all readable
    for _ in range(3):
        sysroot.deploy("debian/main")
        names = [d.name for d in sysroot.deployments()]
        assert len(set(names)) == len(names)
        assert high.name not in names and (high / "root/mine").is_file()
    assert [d.name for d in sysroot.kept_on_disk()] == [high.name]


@pytest.mark.parametrize(
    "spelled", ["/sapwood/deploy/debian/deploy/{}", "//sapwood/./deploy/debian/deploy/{}"]
)
def test_the_list_read_back_from_the_entries_keeps_the_booted_deployment(
    sysroot: sapwood.Sysroot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spelled: str,
) -> None:
    """Held: with deployments.json gone, the list read back from the boot entries (the
    one parser) still has every deployment with a kernel; the booted one (named as the
    initramfs would accept it) survives two more deploys and a cleanup."""
    first = _deploy_v1(sysroot, tmp_path)
    monkeypatch.setenv("SAPWOOD_CMDLINE", f"quiet sapwood={spelled.format(first.name)}")
    loader = sysroot.path / "boot/loader"
    (loader / "deployments.json").unlink()
    assert [d.name for d in sysroot.deployments()] == [first.name]
    v2 = small_tree(tmp_path / "v2", {**FILES, "usr/etc/v": "2"})
    commit(sysroot, v2)
    sysroot.deploy("debian/main")
    commit(sysroot, small_tree(tmp_path / "v3", {**FILES, "usr/etc/v": "3"}))
    sysroot.deploy("debian/main")
    sysroot.cleanup()
    assert first.name in [d.name for d in sysroot.deployments()]
    assert (first / "opt/app/big").read_bytes() == BIG


# ----- held: prepare-tree SIGKILLed before each of its changes -----------------------------
_KILLER = """
import os, signal, sys
point, count = int(sys.argv[2]), [0]
def killing(real):
    def call(*args, **kwargs):
        count[0] += 1
        if count[0] == point:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call
for name in ("open", "mkdir", "rename", "symlink", "chmod", "rmdir", "unlink"):
    setattr(os, name, killing(getattr(os, name)))
from fs.sysroot.prepare_tree import prepare_tree
prepare_tree(sys.argv[1])
"""

_UNPREPARED = {
    "opt/app/f": "app\n",  # moved onto the empty var/opt below
    "root/.profile": "# root\n",
    "home/alice/notes": "mine\n",
    "usr/local/bin/tool": "#!/bin/sh\n",
    "srv": "/",
    "var/opt": "/",
    "var/lib/dpkg/status": "Package: openssl\n",
}


def _shape(tree: Path) -> list[tuple[str, int, int, str]]:
    found = []
    for path in sorted(tree.rglob("*")):
        st = os.lstat(path)
        target = os.readlink(path) if path.is_symlink() else ""
        size = 0 if path.is_dir() else st.st_size
        found.append((str(path.relative_to(tree)), st.st_mode, size, target))
    return found


# every place there already, empty (each move sets one aside), and the dpkg one too
_EVERY_PLACE = {
    "home/alice/notes": "mine\n",
    "root/.profile": "# root\n",
    "srv/www/index": "i\n",
    "mnt/x/y": "y\n",
    "usr/local/bin/tool": "#!/bin/sh\n",
    "opt/app/f": "app\n",
    "var/lib/dpkg/status": "Package: openssl\n",
    **{place: "/" for _, place in MOVES},
}
SHAPES = {"some places there": _UNPREPARED, "every place there": _EVERY_PLACE}


def _killed_at(tmp_path: Path, files: dict[str, str], point: int) -> tuple[Path, int]:
    tree = small_tree(tmp_path / f"t{point}", files, kernel=False)
    proc = subprocess.run(
        [sys.executable, "-c", _KILLER, str(tree), str(point)],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode in (0, -9), proc.stderr
    return tree, proc.returncode


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_prepare_tree_killed_before_any_change_is_finished_by_the_next_run(
    tmp_path: Path, shape: str
) -> None:
    """review23 6 (fixed in 05a2f20): killed between the dpkg database's move and its
    link, the next run never made the link. review23 7 (fixed in c8835a0): killed after
    opt's link and before its set-aside var/opt went, the next run left that aside."""
    files = SHAPES[shape]
    reference = small_tree(tmp_path / "reference", files, kernel=False)
    sapwood.prepare_tree(reference)
    wanted = _shape(reference)
    unfinished = []
    point, code = 0, -9
    while code != 0:
        point += 1
        _precondition(point < 300, "prepare-tree ran through")
        tree, code = _killed_at(tmp_path, files, point)
        sapwood.prepare_tree(tree)
        _precondition((tree / "var/home/alice/notes").read_text() == "mine\n", "notes")
        if _shape(tree) != wanted:
            differ = sorted(set(wanted) ^ set(_shape(tree)))
            unfinished.append((point, differ[0][0]))
        remove(tree)  # one tree at a time on disk
    _precondition(point > 10, "killed before each change, then ran through")
    assert not unfinished, unfinished


def test_a_set_aside_place_left_by_a_killed_run_goes_at_the_next(tmp_path: Path) -> None:
    """review23 7 (fixed in c8835a0): an aside left by a run killed after its link
    stayed for good."""
    tree = small_tree(tmp_path / "tree", _UNPREPARED, kernel=False)
    sapwood.prepare_tree(tree)
    (tree / "var/.opt.sapwood-aside").mkdir()  # killed between opt's link and its rmdir
    sapwood.prepare_tree(tree)
    assert not os.path.lexists(tree / "var/.opt.sapwood-aside")


def test_a_moved_package_database_gets_its_link(tmp_path: Path) -> None:
    """review23 6 (fixed in 05a2f20): a database moved without its link was left so."""
    tree = small_tree(tmp_path / "tree", _UNPREPARED, kernel=False)
    (tree / "usr/lib/sysimage").mkdir(parents=True)
    (tree / "var/lib/dpkg").rename(tree / "usr/lib/sysimage/dpkg")  # killed here
    sapwood.prepare_tree(tree)
    assert (tree / "var/lib/dpkg").is_symlink(), "no link where dpkg looks"
    assert os.readlink(tree / "var/lib/dpkg") == "../../usr/lib/sysimage/dpkg"


# ----- held: a deploy SIGKILLed in each system call of its users' copies, and after ----
_DEPLOY_KILLER = """
import os, signal, sys
import sapwood
from fs.sysroot import deploy
point, count, armed = int(sys.argv[2]), [0], [False]
def killing(real):
    def call(*args, **kwargs):
        if armed[0]:
            count[0] += 1
            if count[0] == point:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call
for name in ("open", "fsync", "rename", "unlink", "lstat", "scandir", "mkdir", "symlink",
             "utime", "chmod", "chown", "rmdir", "replace", "link", "setxattr"):
    setattr(os, name, killing(getattr(os, name)))
real_copy = deploy._copy_users_dirs
def armed_copy(dest):
    armed[0] = True
    real_copy(dest)
    count[0] += 1
    if count[0] == point:  # just after the copies, before the rest of the build
        os.kill(os.getpid(), signal.SIGKILL)
    armed[0] = False
deploy._copy_users_dirs = armed_copy
sapwood.Sysroot(sys.argv[1], cmdline="quiet").deploy("debian/main")
"""


def test_a_deploy_killed_while_copying_leaves_nothing_after_the_next(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """Held: killed before each system call that copies the users' directories (and just
    after), the list stays old or new, and the next cleanup leaves only the listed
    deployments with their origins, none kept as users' data."""
    assert callable(deploy._copy_users_dirs)  # what the killer wraps
    first = _deploy_v1(sysroot, tmp_path)
    commit(sysroot, small_tree(tmp_path / "v2", {**FILES, "usr/etc/v": "2"}))
    deploy_dir = first.parent
    point, ran_through = 0, 0
    while not ran_through:
        point += 1
        _precondition(point < 400, "the deploy ran through")
        before = [d.name for d in sysroot.deployments()]
        proc = subprocess.run(
            [sys.executable, "-c", _DEPLOY_KILLER, str(sysroot.path), str(point)],
            cwd=Path(__file__).parents[2],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode in (0, -9), proc.stderr
        after = [d.name for d in sysroot.deployments()]
        assert after == before or after[1:] == before[:1], (point, before, after)
        sysroot.cleanup()
        listed = sysroot.deployments()
        names = {f"{d.name}{s}" for d in listed for s in ("", ".origin")}
        assert set(os.listdir(deploy_dir)) == names, point
        assert sysroot.kept_on_disk() == [], point
        assert (first / "opt/app/big").read_bytes() == BIG
        if proc.returncode == 0:
            ran_through = point
    _precondition(ran_through > 5, f"killed at {ran_through - 1} points")


@pytest.mark.parametrize("serial", ["7", 7.0, 1234567890, -1, True])
def test_a_list_with_one_bad_serial_removes_nothing(
    sysroot: sapwood.Sysroot, tmp_path: Path, serial: object
) -> None:
    """Held: the list is read whole or not at all; a record the one parser refuses never
    drops just that deployment from the list (which cleanup would then remove)."""
    first = _deploy_v1(sysroot, tmp_path)
    commit(sysroot, small_tree(tmp_path / "v2", {**FILES, "usr/etc/v": "2"}))
    second = sysroot.deployment_path(sysroot.deploy("debian/main").deployment)
    listing = sysroot.path / "boot/loader/deployments.json"
    records = json.loads(listing.read_text())
    records[1]["serial"] = serial
    listing.write_text(json.dumps(records))
    with pytest.raises(sapwood.SapwoodError, match="bad serial"):
        sysroot.cleanup()
    assert (first / "opt/app/big").read_bytes() == BIG
    assert second.is_dir()


@pytest.mark.parametrize("what", ["a symlink", "a directory", "a file"])
def test_whatever_is_at_the_snippets_temporary_name_is_never_followed(
    tmp_path: Path, what: str
) -> None:
    """Held (05a2f20): the temporary name is sapwood's own: a symlink there is removed,
    not written through; a directory there fails in one line; a file is replaced."""
    outside = tmp_path / "outside"
    outside.write_text("not the tree's\n")
    tree = small_tree(tmp_path / "tree", {"usr/lib/tmpfiles.d": "/"}, kernel=False)
    temporary = tree / "usr/lib/tmpfiles.d/.sapwood-var.conf.sapwood-new"
    if what == "a symlink":
        temporary.symlink_to(outside)
    elif what == "a directory":
        (temporary / "inside").mkdir(parents=True)
    else:
        temporary.write_text("left\n")
    proc = run("admin", "prepare-tree", tree, text=True, timeout=60)
    assert outside.read_text() == "not the tree's\n"
    if what == "a directory":
        assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr
        assert (temporary / "inside").is_dir()
    else:
        assert proc.returncode == 0, proc.stderr
        assert not os.path.lexists(temporary)
        assert (tree / "usr/lib/tmpfiles.d/sapwood-var.conf").read_text().startswith("# sapwood")


def test_a_failed_make_leaves_no_directory_it_made(tmp_path: Path) -> None:
    """review23 8 (fixed in 2841a98): a place whose own mkdir failed left the parents
    its step made."""
    with small_tmpfs(tmp_path / "disk", "4m,nr_inodes=400") as disk:
        tree = small_tree(disk / "tree", {"usr/lib/x": "x\n"}, kernel=False)
        for name in ("var/lib/state", "var/lib", "var"):
            path = tree / name
            path.rmdir() if path.is_dir() else path.unlink()
        _fails_with_inodes_left(disk, tree, 1)  # var/ made; var/home has none
        assert not os.path.lexists(tree / "var"), "a directory made and left"


def test_a_copies_record_left_by_70a8f7b_goes_at_the_cleanup(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """Held (1eef0ce): a sysroot deployed while the record existed has ID.SERIAL.copies
    beside its listed deployments; nothing reads it any more, and the next cleanup
    removes it, never the deployment it names."""
    first = _deploy_v1(sysroot, tmp_path)
    record = first.parent / f"{first.name}.copies"
    record.write_text('{"version": 1, "deployment": [0, 0], "files": {}}')
    sysroot.cleanup()
    assert not record.exists()
    assert (first / "opt/app/big").read_bytes() == BIG
    assert [d.name for d in sysroot.deployments()] == [first.name]


def test_prepare_tree_on_a_full_disk_killed_in_its_undo_is_finished_by_the_next_run(
    tmp_path: Path,
) -> None:
    """Held (098680a, c8835a0): no inode left, the first move's link fails (its empty
    place set aside keeps its inode) and the step is undone; killed before each system
    call up to that failure, including those of the undo, the next run with room ends
    as a run never killed."""
    reference = small_tree(tmp_path / "reference", _EVERY_PLACE, kernel=False)
    sapwood.prepare_tree(reference)
    wanted = _shape(reference)
    unfinished = []
    with small_tmpfs(tmp_path / "disk", "8m,nr_inodes=600") as disk:
        point, code = 0, -9
        while code == -9:
            point += 1
            _precondition(point < 300, "prepare-tree stopped")
            tree = small_tree(disk / "tree", _EVERY_PLACE, kernel=False)
            fillers = fill_inodes(disk, 0)
            try:
                proc = subprocess.run(
                    [sys.executable, "-c", _KILLER, str(tree), str(point)],
                    cwd=Path(__file__).parents[2],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            finally:
                _empty(fillers)
            code = proc.returncode
            sapwood.prepare_tree(tree)
            if _shape(tree) != wanted:
                unfinished.append((point, sorted(set(wanted) ^ set(_shape(tree)))[0][0]))
            remove(tree)
        _precondition(code == 1 and "No space left" in proc.stderr, proc.stderr[-300:])
        _precondition(point > 10, f"killed at {point - 1} points before the failure")
    assert not unfinished, unfinished
