"""Checkout against hostile input: whiteouts that point outside DEST, union checkouts
that fail halfway, and object files that were changed or replaced behind the index.

Every test that could reach outside DEST snapshots DEST's parent before and after.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

import fs.checkout
import fs.checkout_union
from fs.checkout import CheckoutConflictError, CheckoutOptions, checkout
from fs.copy import FICLONE
from store import (
    CorruptObjectError,
    InvalidNameError,
    ObjectId,
    OutOfSpaceError,
    RepoMode,
    Repository,
    lookup,
)
from tests.helpers import IS_ROOT, commit_files, run, small_tmpfs

CHUNK = 1 << 20  # fs.copy.CHUNK: the most a comparison or copy reads at once
needs_root = pytest.mark.skipif(not IS_ROOT, reason="mounts need root")
UNION = CheckoutOptions(user_mode=True, union="union", whiteouts=True)
Snapshot = dict[str, tuple[int, int, bytes]]


def _commit(
    repo: Repository, tmp_path: Path, name: str, files: Mapping[str, str | bytes]
) -> ObjectId:
    """Commit a tree given as {path: content} to branch ``name``."""
    return commit_files(repo, tmp_path / "sources" / name, files, name)


def snapshot(root: Path) -> Snapshot:
    """Every entry below ``root``: type, permission bits, content or symlink target."""
    found: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                data = os.fsencode(os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                data = path.read_bytes()
            else:
                data = b""
            found[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_mode, data)
    return found


@pytest.fixture
def area(tmp_path: Path) -> Path:
    """DEST's parent, with neighbours a whiteout must never reach."""
    area = tmp_path / "area"
    (area / "neighbour-dir").mkdir(parents=True)
    (area / "neighbour-dir" / "precious").write_text("keep me")
    (area / "neighbour.txt").write_text("keep me too")
    return area


def _object_path(repo: Repository, commit_id: ObjectId, path: str) -> Path:
    node = lookup(repo, commit_id, path)
    assert node.file is not None
    return repo.content.path(node.file)


@contextmanager
def _writable(path: Path) -> Iterator[Path]:
    """An object file made writable for the test's damage, then read-only again."""
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    path.chmod(mode | stat.S_IWUSR)
    try:
        yield path
    finally:
        path.chmod(mode)


def _flip_a_byte(path: Path, offset: int = -1) -> None:
    with _writable(path):
        data = bytearray(path.read_bytes())
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))


# ----- 1. whiteouts remove only names inside DEST ---------------------------------------
BAD_WHITEOUTS = [".wh...", ".wh..", ".wh.", "sub/.wh..", "sub/.wh..."]


@pytest.mark.parametrize("whiteout", BAD_WHITEOUTS)
def test_a_whiteout_of_dot_or_dotdot_is_refused_in_a_union(
    user_repo: Repository, tmp_path: Path, area: Path, whiteout: str
) -> None:
    base = _commit(user_repo, tmp_path, "base", {"keep": "k", "sub/inner": "i"})
    layer = _commit(user_repo, tmp_path, "layer", {whiteout: "", "new": "n"})
    dest = area / "dest"
    checkout(user_repo, base, dest, CheckoutOptions(user_mode=True))
    before = snapshot(area)
    with pytest.raises(InvalidNameError, match=r"whiteout .* refused.*was not changed"):
        checkout(user_repo, layer, dest, UNION)
    assert snapshot(area) == before  # neither DEST, nor its parent, nor anything beside it


@pytest.mark.parametrize("whiteout", BAD_WHITEOUTS)
def test_a_whiteout_of_dot_or_dotdot_is_refused_in_a_fresh_checkout(
    user_repo: Repository, tmp_path: Path, area: Path, whiteout: str
) -> None:
    layer = _commit(user_repo, tmp_path, "layer", {whiteout: "", "new": "n"})
    before = snapshot(area)
    with pytest.raises(InvalidNameError, match="refused"):
        checkout(user_repo, layer, area / "dest", CheckoutOptions(user_mode=True, whiteouts=True))
    assert snapshot(area) == before  # no DEST, no hidden build directory


def test_a_whiteout_removes_a_symlink_never_what_it_points_to(
    user_repo: Repository, tmp_path: Path, area: Path
) -> None:
    base = _commit(
        user_repo,
        tmp_path,
        "base",
        {"dirlink": f"->{area / 'neighbour-dir'}", "filelink": f"->{area / 'neighbour.txt'}"},
    )
    layer = _commit(user_repo, tmp_path, "layer", {".wh.dirlink": "", ".wh.filelink": ""})
    dest = area / "dest"
    checkout(user_repo, base, dest, CheckoutOptions(user_mode=True))
    outside = {k: v for k, v in snapshot(area).items() if not k.startswith("dest")}
    checkout(user_repo, layer, dest, UNION)
    assert os.listdir(dest) == []
    assert {k: v for k, v in snapshot(area).items() if not k.startswith("dest")} == outside


def test_whiteouts_apply_to_what_dest_held_not_to_the_commit(
    user_repo: Repository, tmp_path: Path, area: Path
) -> None:
    tree = {".wh.x": "", "x": "1", "-a": "2", ".wh.-a": "", "sub/.wh.y": "", "sub/y": "3"}
    layer = _commit(user_repo, tmp_path, "layer", tree)
    fresh = area / "fresh"
    checkout(user_repo, layer, fresh, CheckoutOptions(user_mode=True, whiteouts=True))
    # '-a' sorts before '.wh.-a', and is still not whited out: a whiteout is for what lies below
    assert sorted(os.listdir(fresh)) == ["-a", "sub", "x"] and os.listdir(fresh / "sub") == ["y"]
    base = _commit(user_repo, tmp_path, "base", {"x": "old", "d/inner": "i"})
    over = _commit(user_repo, tmp_path, "over", {".wh.x": "", "x": "new", ".wh.d": "", "d": "f"})
    dest = area / "dest"
    checkout(user_repo, base, dest, CheckoutOptions(user_mode=True))
    checkout(user_repo, over, dest, UNION)  # the directory d goes first: no conflict
    assert (dest / "x").read_text() == "new" and (dest / "d").read_text() == "f"


@needs_root
def test_a_whiteout_never_empties_a_mount_point(
    user_repo: Repository, tmp_path: Path, area: Path
) -> None:
    base = _commit(user_repo, tmp_path, "base", {"mnt/.keep": "", "bound/.keep": ""})
    layer = _commit(user_repo, tmp_path, "layer", {".wh.mnt": "", ".wh.bound": ""})
    dest = area / "dest"
    checkout(user_repo, base, dest, CheckoutOptions(user_mode=True))
    (dest / "mnt").chmod(0o755)
    with small_tmpfs(dest / "mnt" / "fs", "1m") as mounted:
        (mounted / "data").write_text("another filesystem")
        subprocess.run(["mount", "--bind", str(area / "neighbour-dir"), dest / "bound"], check=True)
        try:
            before = snapshot(area)
            with pytest.raises(CheckoutConflictError, match=r"mount point.*was not changed"):
                checkout(user_repo, layer, dest, UNION)
            assert snapshot(area) == before
        finally:
            subprocess.run(["umount", dest / "bound"], check=True)
        assert (mounted / "data").read_text() == "another filesystem"


@needs_root
def test_removal_stops_at_another_device_even_unseen_in_the_mount_table(
    user_repo: Repository, tmp_path: Path, area: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _commit(user_repo, tmp_path, "base", {"mnt/.keep": ""})
    layer = _commit(user_repo, tmp_path, "layer", {".wh.mnt": ""})
    dest = area / "dest"
    checkout(user_repo, base, dest, CheckoutOptions(user_mode=True))
    (dest / "mnt").chmod(0o755)
    # the pre-check sees no mount: removal itself must stop at the other device
    monkeypatch.setattr(fs.checkout_union, "mount_points", list)
    with small_tmpfs(dest / "mnt" / "fs", "1m") as mounted:
        (mounted / "data").write_text("another filesystem")
        with pytest.raises(CheckoutConflictError, match=r"another filesystem.*partly updated"):
            checkout(user_repo, layer, dest, UNION)
        assert (mounted / "data").read_text() == "another filesystem"


@needs_root
def test_dest_as_a_mount_point_survives_a_whiteout_of_dot(
    user_repo: Repository, tmp_path: Path, area: Path
) -> None:
    layer = _commit(user_repo, tmp_path, "layer", {".wh..": ""})
    with small_tmpfs(area / "dest", "1m") as dest:
        (dest / "data").write_text("mounted")
        with pytest.raises(InvalidNameError, match="refused"):
            checkout(user_repo, layer, dest, UNION)
        assert (dest / "data").read_text() == "mounted"


# ----- 2. a failed union checkout says what it left -------------------------------------
def test_a_union_conflict_is_found_before_anything_is_written(
    user_repo: Repository, tmp_path: Path, area: Path
) -> None:
    base = _commit(user_repo, tmp_path, "base", {"early": "e", "zzz/inner": "i"})
    layer = _commit(user_repo, tmp_path, "layer", {"aaa": "new", "early": "changed", "zzz": "f"})
    dest = area / "dest"
    checkout(user_repo, base, dest, CheckoutOptions(user_mode=True))
    before = snapshot(area)
    expected = rf"/zzz: .*; {re.escape(str(dest))} was not changed"
    with pytest.raises(CheckoutConflictError, match=expected):
        checkout(user_repo, layer, dest, CheckoutOptions(user_mode=True, union="union"))
    assert snapshot(area) == before


def test_a_union_copy_failing_midway_says_dest_is_partly_updated(
    user_repo: Repository, tmp_path: Path, area: Path
) -> None:
    base = _commit(user_repo, tmp_path, "base", {"old": "o"})
    layer = _commit(user_repo, tmp_path, "layer", {"a": "fine", "b": "will rot"})
    _flip_a_byte(_object_path(user_repo, layer, "/b"))
    dest = area / "dest"
    checkout(user_repo, base, dest, CheckoutOptions(user_mode=True))
    copy = CheckoutOptions(user_mode=True, copy=True, union="union")
    expected = rf"/b: .*; {re.escape(str(dest))} is partly updated; re-run"
    with pytest.raises(CorruptObjectError, match=expected):
        checkout(user_repo, layer, dest, copy)
    assert sorted(os.listdir(dest)) == ["a", "old"]  # partly updated indeed; no rotten 'b'


def test_a_union_with_verify_refuses_a_corrupt_object_before_writing(
    user_repo: Repository, tmp_path: Path, area: Path
) -> None:
    base = _commit(user_repo, tmp_path, "base", {"old": "o"})
    layer = _commit(user_repo, tmp_path, "layer", {"a": "fine", "z/b": "will rot"})
    _flip_a_byte(_object_path(user_repo, layer, "/z/b"))
    dest = area / "dest"
    checkout(user_repo, base, dest, CheckoutOptions(user_mode=True))
    before = snapshot(area)
    verify = CheckoutOptions(user_mode=True, union="union", verify=True)
    expected = rf"/z/b: .*run sapwood fsck; {re.escape(str(dest))} was not changed"
    with pytest.raises(CorruptObjectError, match=expected):
        checkout(user_repo, layer, dest, verify)
    assert snapshot(area) == before


@needs_root
def test_a_system_error_in_a_union_says_dest_is_partly_updated(
    user_repo: Repository, tmp_path: Path, area: Path
) -> None:
    base = _commit(user_repo, tmp_path, "base", {"a": "old", "sub/x": "x"})
    layer = _commit(user_repo, tmp_path, "layer", {"a": "new", "sub/y": "y"})
    dest = area / "dest"
    checkout(user_repo, base, dest, CheckoutOptions(user_mode=True))
    subprocess.run(["chattr", "+i", dest / "sub"], check=True)  # even root cannot add to it
    try:
        expected = rf"Operation not permitted: y; {re.escape(str(dest))} is partly updated"
        with pytest.raises(fs.checkout.CheckoutError, match=expected):
            checkout(user_repo, layer, dest, CheckoutOptions(user_mode=True, union="union"))
    finally:
        subprocess.run(["chattr", "-i", dest / "sub"], check=True)
    assert (dest / "a").read_text() == "new" and os.listdir(dest / "sub") == ["x"]


@needs_root
def test_a_full_disk_in_a_union_says_dest_is_partly_updated(
    user_repo: Repository, tmp_path: Path
) -> None:
    files: dict[str, str | bytes] = {f"blob{n}": os.urandom(1 << 20) for n in range(6)}
    big = _commit(user_repo, tmp_path, "big", files)
    with small_tmpfs(tmp_path / "mnt", "3m") as mnt:
        (mnt / "dest").mkdir()
        (mnt / "dest" / "mine").write_text("mine")
        copy = CheckoutOptions(user_mode=True, copy=True, union="union")
        with pytest.raises(OutOfSpaceError, match="dest is partly updated") as failure:
            checkout(user_repo, big, mnt / "dest", copy)
        assert "removed" not in str(failure.value)
        assert (mnt / "dest" / "mine").read_text() == "mine"


def test_a_union_into_a_missing_dest_fails_without_leaving_one(
    user_repo: Repository, tmp_path: Path, area: Path
) -> None:
    layer = _commit(user_repo, tmp_path, "layer", {"a": "fine", "b": "will rot"})
    _flip_a_byte(_object_path(user_repo, layer, "/b"))
    before = snapshot(area)
    copy = CheckoutOptions(user_mode=True, copy=True, union="union")
    with pytest.raises(CorruptObjectError):
        checkout(user_repo, layer, area / "dest", copy)
    assert snapshot(area) == before


# ----- 3. object files are not trusted --------------------------------------------------
COPY_MODES = [RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY, RepoMode.ARCHIVE] + (
    [RepoMode.BARE] if IS_ROOT else []
)


@pytest.mark.parametrize("mode", COPY_MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("offset", [0, -1, 70_000])
def test_a_copy_checkout_refuses_a_flipped_byte(
    tmp_path: Path, area: Path, mode: RepoMode, offset: int
) -> None:
    repo = Repository.init(tmp_path / "repo", mode)
    data = os.urandom(150_000)  # random: archive mode stores it deflated as is
    commit_id = _commit(repo, tmp_path, "c", {"a": "fine", "data/blob": data})
    _flip_a_byte(_object_path(repo, commit_id, "/data/blob"), offset)
    before = snapshot(area)
    with pytest.raises(CorruptObjectError, match=r"/data/blob: .*run sapwood fsck"):
        checkout(repo, commit_id, area / "dest", CheckoutOptions(user_mode=True, copy=True))
    assert snapshot(area) == before  # no DEST, no hidden build directory


def test_the_command_fails_clearly_on_a_flipped_byte(user_repo: Repository, tmp_path: Path) -> None:
    commit_id = _commit(user_repo, tmp_path, "c", {"etc/passwd": "root:x:0:0\n"})
    _flip_a_byte(_object_path(user_repo, commit_id, "/etc/passwd"), 5)
    dest = tmp_path / "dest"
    result = run("checkout", "-U", "-C", "c", dest, repo=user_repo.path, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("sapwood: error: /etc/passwd: object ")
    assert "does not hash to its id; run sapwood fsck" in result.stderr
    assert not dest.exists()


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "hardlink"])
def test_an_object_replaced_by_a_symlink_is_never_followed(
    user_repo: Repository, tmp_path: Path, area: Path, copy: bool
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("top secret!\n")  # the same size as the object it replaces
    commit_id = _commit(user_repo, tmp_path, "c", {"a": "fine", "etc/motd": "hello there\n"})
    obj = _object_path(user_repo, commit_id, "/etc/motd")
    obj.unlink()
    obj.symlink_to(secret)
    before = snapshot(area)
    with pytest.raises(CorruptObjectError, match=r"/etc/motd: object .*(symlink|not a regular)"):
        checkout(user_repo, commit_id, area / "dest", CheckoutOptions(user_mode=True, copy=copy))
    assert snapshot(area) == before
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()]
    assert not [p for p in leaked if p != secret and b"top secret" in p.read_bytes()]


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "hardlink"])
def test_an_object_replaced_by_a_fifo_fails_without_hanging(
    user_repo: Repository, tmp_path: Path, copy: bool
) -> None:
    commit_id = _commit(user_repo, tmp_path, "c", {"etc/motd": "hello\n"})
    obj = _object_path(user_repo, commit_id, "/etc/motd")
    obj.unlink()
    os.mkfifo(obj)
    flags = ["-U", "-C"] if copy else ["-U"]
    # a reader blocked on the FIFO would never return
    result = run(
        "checkout", *flags, "c", tmp_path / "dest", repo=user_repo.path, text=True, timeout=60
    )
    assert result.returncode == 1 and "not a regular file" in result.stderr, result.stderr
    assert not (tmp_path / "dest").exists()


def test_union_identical_compares_with_lstat_and_streams_content(
    user_repo: Repository, tmp_path: Path, area: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = os.urandom(3 * CHUNK + 5)
    commit_id = _commit(user_repo, tmp_path, "c", {"f": "right", "big": big})
    dest = area / "dest"
    dest.mkdir()
    (dest / "big").write_bytes(big)  # a copy, not the object: compared by content
    (dest / "f").write_text("wrong")  # the same size, other bytes
    obj = _object_path(user_repo, commit_id, "/f")
    obj.unlink()
    obj.symlink_to(dest / "f")  # stat() would call DEST's file the object itself
    reads: list[int] = []
    pread = os.pread

    def counted(fd: int, length: int, offset: int) -> bytes:
        reads.append(length)
        return pread(fd, length, offset)

    monkeypatch.setattr(os, "pread", counted)
    identical = CheckoutOptions(user_mode=True, union="identical", require_hardlinks=True)
    before = snapshot(area)
    with pytest.raises(CheckoutConflictError, match="/f: File exists and differs"):
        checkout(user_repo, commit_id, dest, identical)
    assert snapshot(area) == before
    assert reads and max(reads) <= CHUNK  # streamed, never read whole
    only_big = _commit(user_repo, tmp_path, "big", {"big": big})
    stats = checkout(user_repo, only_big, dest, identical)
    assert stats.skipped == 1 and stats.hardlinks == 0  # the same content: left as it is


def test_a_reflinked_copy_is_verified_too(
    user_repo: Repository, tmp_path: Path, area: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ext4 cannot reflink: a stand-in FICLONE clones by copying, as btrfs or xfs would."""
    commit_id = _commit(user_repo, tmp_path, "c", {"a": "fine", "b": "will rot"})
    clones: list[int] = []
    ioctl = fcntl.ioctl

    def ficlone(fd: int, request: int, arg: int = 0) -> int:
        if request != FICLONE:
            return ioctl(fd, request, arg)
        clones.append(fd)
        os.write(fd, os.pread(arg, 1 << 20, 0))
        return 0

    monkeypatch.setattr(fcntl, "ioctl", ficlone)
    copy = CheckoutOptions(user_mode=True, copy=True)
    stats = checkout(user_repo, commit_id, area / "good", copy)
    assert stats.copies == 2 and len(clones) == 2
    assert (area / "good" / "b").read_text() == "will rot"
    _flip_a_byte(_object_path(user_repo, commit_id, "/b"))
    before = snapshot(area)
    with pytest.raises(CorruptObjectError, match=r"/b: .*does not hash to its id"):
        checkout(user_repo, commit_id, area / "bad", copy)
    assert len(clones) == 4 and snapshot(area) == before
