"""Checkouts show the recorded permission bits, and diff REV DIR sees what a re-commit
would change (issue 11).

A user-mode checkout, hardlinked (bare-user objects keep the recorded bits masked with
0775, plus u+r, as OSTree's) or copied, shows each file's recorded bits without setuid,
setgid, sticky and world-write; a root checkout shows them all. ``diff`` of a fresh
checkout is empty; a chmod, an edit, an addition and a deletion are exactly four lines.
The price of writable objects (a farm file can be written through) is paid by fsck, the
mount and ``checkout --verify``, which all refuse the changed object.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest

from fs.checkout import CheckoutOptions, checkout
from fs.treediff import diff_dir
from store import (
    CorruptObjectError,
    ObjectId,
    RepoMode,
    Repository,
    fsck,
    lookup,
    root_node,
    user_object_mode,
)
from tests.helpers import (
    AS_NOBODY,
    IS_ROOT,
    Mounts,
    commit_dir,
    give_to_user,
    run_as_user,
    user_dir,
)

root_only = pytest.mark.skipif(not IS_ROOT, reason="recorded owners and setuid bits: root")

# name: recorded bits; setuid, sticky and world-write only where the mode admits them
MODES = {
    "rw-r--r--": 0o644,
    "rwxr-xr-x": 0o755,
    "rw-------": 0o600,
    "r--r--r--": 0o444,
    "rwx------": 0o700,
    "setuid": 0o4755,
    "sticky": 0o1755,
    "world-writable": 0o666,
}
_REFUSED_BY_USER_ONLY = {"setuid", "world-writable"}  # bare-user-only refuses these

# (label, user_mode, copy, require_hardlinks, repository modes it applies to)
CHECKOUTS = [
    ("-U", True, False, False, list(RepoMode)),
    ("-U -H", True, False, True, [RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY]),
    ("-U -C", True, True, False, list(RepoMode)),
    ("-C", False, True, False, list(RepoMode)),
    ("-H", False, False, True, [RepoMode.BARE]),
]
CASES = [
    pytest.param(mode, user, copy, links, id=f"{mode.value} {label}")
    for label, user, copy, links, modes in CHECKOUTS
    for mode in modes
]


def _modes_for(mode: RepoMode) -> dict[str, int]:
    if mode is RepoMode.BARE_USER_ONLY:
        return {k: v for k, v in MODES.items() if k not in _REFUSED_BY_USER_ONLY}
    return MODES


def _source(root: Path, modes: dict[str, int]) -> Path:
    """A tree holding one file of each mode (distinct contents: distinct objects)."""
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "keep").write_text("kept\n")
    (root / "gone").write_text("deleted later\n")
    (root / "link").symlink_to("sub/keep")
    for name, bits in modes.items():
        path = root / name
        path.write_text(f"a file of mode {bits:04o}\n")
        path.chmod(bits)
    return root


def _shown(recorded: int, user: bool) -> int:
    return recorded & 0o775 if user else recorded


def _changes(
    repo: Repository, commit_id: ObjectId, dest: Path, user: bool
) -> list[tuple[str, bytes]]:
    return [c[:2] for c in diff_dir(repo, root_node(repo, commit_id), dest, user_mode=user)]


def _edit_four(dest: Path) -> None:
    """chmod one file, edit one, add one, delete one."""
    os.chmod(dest / "rw-r--r--", 0o640)
    edited = dest / "rwxr-xr-x"
    edited.unlink()  # a farm file is the object: replace it rather than write through
    edited.write_text("edited\n")
    edited.chmod(0o755)
    (dest / "added").write_text("new\n")
    (dest / "gone").unlink()


FOUR = [("M", b"/rw-r--r--"), ("M", b"/rwxr-xr-x"), ("A", b"/added"), ("D", b"/gone")]


@root_only
@pytest.mark.parametrize(("mode", "user", "copy", "links"), CASES)
def test_checkout_shows_the_recorded_bits_and_diffs_clean(
    tmp_path: Path, mode: RepoMode, user: bool, copy: bool, links: bool
) -> None:
    modes = _modes_for(mode)
    repo = Repository.init(tmp_path / "repo", mode)
    commit_id = commit_dir(repo, _source(tmp_path / "src", modes))
    dest = tmp_path / "dest"
    options = CheckoutOptions(user_mode=user, copy=copy, require_hardlinks=links)
    stats = checkout(repo, commit_id, dest, options)
    can_link = not copy and mode is not RepoMode.ARCHIVE and (mode is RepoMode.BARE) != user
    assert (stats.hardlinks > 0) == can_link
    for name, recorded in modes.items():
        st = os.lstat(dest / name)
        assert stat.S_IMODE(st.st_mode) == _shown(recorded, user), name
        node = lookup(repo, commit_id, f"/{name}")
        assert node.file is not None
        linked = os.path.samefile(dest / name, repo.object_path(node.file))
        assert linked == (can_link and bool(recorded & stat.S_IRUSR)), name
    assert _changes(repo, commit_id, dest, user) == []
    _edit_four(dest)
    assert sorted(_changes(repo, commit_id, dest, user)) == sorted(FOUR)


@root_only
def test_setuid_is_recorded_while_the_farm_shows_it_without(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.BARE_USER)
    commit_id = commit_dir(repo, _source(tmp_path / "src", MODES))
    dest = tmp_path / "farm"
    checkout(repo, commit_id, dest, CheckoutOptions(user_mode=True, require_hardlinks=True))
    node = lookup(repo, commit_id, "/setuid")
    assert node.file is not None
    header, _ = repo.read_file_header(node.file)
    assert stat.S_IMODE(header.mode) == 0o4755  # the commit keeps it
    assert stat.S_IMODE(os.stat(dest / "setuid").st_mode) == 0o755  # the farm shows it not
    assert user_object_mode(header.mode) == 0o755
    # a re-commit of the farm takes a linked file's recorded header (setuid included):
    # diff without -U sees no change either; a chmod of the object is one
    assert _changes(repo, commit_id, dest, user=False) == []
    os.chmod(dest / "setuid", 0o750)
    assert _changes(repo, commit_id, dest, user=False) == [("M", b"/setuid")]
    # copies lose those bits for good: without -U diff says so
    copies = tmp_path / "copies"
    checkout(repo, commit_id, copies, CheckoutOptions(user_mode=True, copy=True))
    assert _changes(repo, commit_id, copies, user=True) == []
    assert _changes(repo, commit_id, copies, user=False) == [
        ("M", b"/setuid"),
        ("M", b"/sticky"),
        ("M", b"/world-writable"),
    ]


@root_only
def test_diff_without_user_mode_compares_owners(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.BARE_USER)
    commit_id = commit_dir(repo, _source(tmp_path / "src", {"f": 0o644}))
    dest = tmp_path / "dest"
    checkout(repo, commit_id, dest, CheckoutOptions(copy=True))
    os.chown(dest / "f", 1234, 1234)
    os.lchown(dest / "link", 1234, 1234)
    assert _changes(repo, commit_id, dest, user=False) == [("M", b"/f"), ("M", b"/link")]
    assert _changes(repo, commit_id, dest, user=True) == []  # a user checkout is the caller's


def test_a_changed_directory_mode_is_modified(user_repo: Repository, tmp_path: Path) -> None:
    commit_id = commit_dir(user_repo, _source(tmp_path / "src", {"f": 0o644}))
    dest = tmp_path / "dest"
    checkout(user_repo, commit_id, dest, CheckoutOptions(user_mode=True))
    os.chmod(dest / "sub", 0o700)
    os.chmod(dest, 0o750)
    assert _changes(user_repo, commit_id, dest, user=True) == [("M", b"/"), ("M", b"/sub")]


def _write_through_farm(tmp_path: Path) -> tuple[Repository, ObjectId, Path, ObjectId]:
    """A -U -H farm of a bare-user repository whose 0644 file was written through."""
    repo = Repository.init(tmp_path / "repo", RepoMode.BARE_USER)
    commit_id = commit_dir(repo, _source(tmp_path / "src", {"conf": 0o644}))
    farm = tmp_path / "farm"
    checkout(repo, commit_id, farm, CheckoutOptions(user_mode=True, require_hardlinks=True))
    node = lookup(repo, commit_id, "/conf")
    assert node.file is not None
    assert stat.S_IMODE(os.stat(farm / "conf").st_mode) == 0o644  # the price of the bits
    with open(farm / "conf", "r+b") as stream:  # same size: only the content tells
        stream.write(b"A")
    assert Path(repo.object_path(node.file)).read_bytes().startswith(b"A")  # the object
    return repo, commit_id, farm, node.file


def test_fsck_finds_an_object_written_through_a_farm(tmp_path: Path) -> None:
    repo, _, _, file_id = _write_through_farm(tmp_path)
    problems = fsck(repo).problems
    assert [p.object_id for p in problems] == [file_id]
    assert "content" in problems[0].message or "hash" in problems[0].message, problems


def test_checkout_verify_refuses_an_object_written_through_a_farm(tmp_path: Path) -> None:
    repo, commit_id, _, file_id = _write_through_farm(tmp_path)
    options = CheckoutOptions(user_mode=True, verify=True)
    with pytest.raises(CorruptObjectError, match=file_id.hex()):
        checkout(repo, commit_id, tmp_path / "again", options)
    assert not (tmp_path / "again").exists()
    copied = tmp_path / "copied"  # a copy re-hashes every byte: refused too
    with pytest.raises(CorruptObjectError):
        checkout(repo, commit_id, copied, CheckoutOptions(user_mode=True, copy=True))


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_the_mount_never_serves_an_object_written_through_a_farm(
    tmp_path: Path, mount: Mounts
) -> None:
    repo, _, farm, _ = _write_through_farm(tmp_path)
    mnt = mount.background(repo.path, "main")
    assert (mnt / "sub" / "keep").read_text() == "kept\n"  # the rest is served
    with pytest.raises(OSError) as caught:
        (mnt / "conf").read_bytes()
    assert caught.value.errno == errno.EIO
    assert (farm / "conf").read_bytes().startswith(b"A")


@pytest.mark.parametrize("mode", [RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY])
def test_objects_of_the_old_read_only_rule_stay_valid(tmp_path: Path, mode: RepoMode) -> None:
    """Objects written before (recorded bits & 0555, + u+r) pass fsck; other bits do not."""
    repo = Repository.init(tmp_path / "repo", mode)
    commit_id = commit_dir(repo, _source(tmp_path / "src", {"f": 0o664}))
    node = lookup(repo, commit_id, "/f")
    assert node.file is not None
    path = repo.object_path(node.file)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o664
    os.chmod(path, 0o444)  # the old rule
    assert fsck(repo).problems == []
    os.chmod(path, 0o644)  # neither rule
    assert [p.object_id for p in fsck(repo).problems] == [node.file]


def test_as_a_real_unprivileged_user_in_bare_user() -> None:
    work = user_dir()
    try:
        source = _source(work / "src", {k: v for k, v in MODES.items() if k != "setuid"})
        give_to_user(source)
        repo = work / "repo"
        for args in (
            ("init", "--mode", "bare-user"),
            ("commit", "-b", "main", source),
            ("checkout", "-U", "-H", "main", work / "farm"),
            ("checkout", "-U", "-C", "main", work / "copy"),
        ):
            result = run_as_user("--repo", repo, *args)
            assert result.returncode == 0, (args, result.stderr)
        for dest in (work / "farm", work / "copy"):
            for name, bits in MODES.items():
                if name != "setuid":
                    found = stat.S_IMODE(os.lstat(dest / name).st_mode)
                    assert found == bits & 0o775, (dest, name)
            clean = run_as_user("--repo", repo, "diff", "-U", "main", dest)
            assert (clean.returncode, clean.stdout) == (0, ""), clean.stderr
        copy = work / "copy"
        for edit in (
            ["chmod", "0640", str(copy / "rw-r--r--")],
            ["sh", "-c", f"echo edited > '{copy}/rwxr-xr-x'"],
            ["sh", "-c", f"echo new > '{copy}/added'"],
            ["rm", str(copy / "gone")],
        ):
            subprocess.run([*AS_NOBODY, *edit], check=True)
        shown = run_as_user("--repo", repo, "diff", "-U", "main", copy)
        assert shown.returncode == 0, shown.stderr
        assert sorted(shown.stdout.splitlines()) == sorted(
            f"{kind}    {path.decode()}" for kind, path in FOUR
        )
        assert run_as_user("--repo", repo, "fsck").returncode == 0
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=True)
