"""Checkouts that round-trip: commit -> checkout -> commit gives the same tree.

In every repository mode and every checkout kind that applies to it: user mode (-U:
hardlinks where the mode allows, copies elsewhere), a user-mode hardlink farm (-U -H,
the user modes), a hardlink farm with the recorded owners (-H, bare, as root) and
copies (-C: with the recorded owners as root, user mode otherwise). A checkout in
user mode shows the caller as owner and masks some bits, so the tree used for the
kinds that copy is one those do not change: owned by the caller, without setuid,
setgid, sticky or world-write bits, every file readable by its owner. What a
hardlink farm keeps beyond that (owners, setuid, xattrs) comes back because commit
recognises a farm file as its object by inode and takes the object's id without
reading the file (store/inodes.py); that is tested on its own below, as are the
files it must not trust.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from fs.checkout import CheckoutOptions, checkout
from fs.commit import CommitRequest, CommitResult, Layer, make_commit
from fs.options import ContentOptions
from sapwood import diff_directory
from store import (
    FileHeader,
    ObjectId,
    RepoMode,
    Repository,
    diff_trees,
    fsck,
    lookup,
    prune,
    root_node,
)
from tests.helpers import (
    IS_ROOT,
    NOBODY,
    as_user,
    give_to_user,
    read_commit_tree,
    run_as_user,
    user_dir,
)

KINDS = {
    "U": CheckoutOptions(user_mode=True),
    "UH": CheckoutOptions(user_mode=True, require_hardlinks=True),
    "H": CheckoutOptions(require_hardlinks=True),
    "C": CheckoutOptions(copy=True, user_mode=not IS_ROOT),
}
USER_MODES = (RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY)


def links(mode: RepoMode, kind: str) -> bool:
    """Whether the checkout's regular files (but empty ones) are the objects' inodes."""
    return kind in ("UH", "H") or (kind == "U" and mode in USER_MODES)


def applies(mode: RepoMode, kind: str) -> bool:
    if kind == "UH":
        return mode in USER_MODES
    if kind == "H":
        return mode is RepoMode.BARE and IS_ROOT
    return True


def _cases() -> list[object]:
    """(mode, kind) for every checkout kind that applies to the mode; bare needs root."""
    return [
        pytest.param(
            mode,
            kind,
            id=f"{mode.value}-{kind}",
            marks=[pytest.mark.skip(reason="bare needs root")]
            if mode is RepoMode.BARE and not IS_ROOT
            else [],
        )
        for mode in RepoMode
        for kind in sorted(KINDS)
        if applies(mode, kind)
    ]


CASES = _cases()


def plain_tree(root: Path) -> int:
    """A tree every checkout kind shows as it is; the number of its regular files."""
    files = {
        "README": (b"read me\n", 0o644),
        "bin/tool": (b"\x7fELF tool" * 300, 0o755),
        "bin/big": (os.urandom(5 << 20), 0o755),  # above SMALL_FILE: read in chunks
        "etc/secret": (b"key\n", 0o600),
        "etc/group-readable": (b"g\n", 0o640),
        "share/doc/a": (b"same\n", 0o644),
        "share/doc/b": (b"same\n", 0o644),  # one object, two names
        "share/empty": (b"", 0o644),  # never hardlinked: copied
    }
    for rel, (content, perms) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(perms)
    (root / "bin" / "sh").symlink_to("tool")
    (root / "private").mkdir(mode=0o700)
    (root / "private").chmod(0o700)
    (root / "empty-dir").mkdir()
    return len(files)


def commit(repo: Repository, source: Path, branch: str, **options: Any) -> CommitResult:
    request = CommitRequest(branch, [Layer.directory(source)], options=ContentOptions(**options))
    return make_commit(repo, request)


def root_of(repo: Repository, commit_id: ObjectId) -> tuple[ObjectId, ObjectId]:
    found = repo.read_commit(commit_id)
    return found.tree, found.meta


def changes(repo: Repository, old: ObjectId, new: ObjectId) -> set[tuple[str, bytes]]:
    return {(c.kind, c.path) for c in diff_trees(repo, root_node(repo, old), root_node(repo, new))}


def dir_changes(repo: Repository, rev: ObjectId, path: Path, kind: str) -> set[tuple[str, bytes]]:
    user_mode = KINDS[kind].user_mode
    found = diff_directory(repo, root_node(repo, rev), path, user_mode=user_mode)
    return {(c.kind, c.path) for c in found}


@pytest.mark.parametrize(("mode", "kind"), CASES)
def test_commit_checkout_commit_keeps_the_tree(
    repo: Repository, mode: RepoMode, kind: str, tmp_path: Path
) -> None:
    files = plain_tree(tmp_path / "src")
    first = commit(repo, tmp_path / "src", "first").commit_id
    farm = tmp_path / "farm"
    made = checkout(repo, first, farm, KINDS[kind])
    again = commit(repo, farm, "again")
    assert root_of(repo, again.commit_id) == root_of(repo, first)
    assert dir_changes(repo, first, farm, kind) == set()
    if links(mode, kind):
        assert made.hardlinks == files - 1  # all but the empty file
        assert (again.stats.linked, again.stats.files_read) == (files - 1, 1)
    else:
        assert again.stats.linked == 0


@pytest.mark.parametrize(("mode", "kind"), CASES)
def test_recommit_shows_exactly_what_was_changed(
    repo: Repository, mode: RepoMode, kind: str, tmp_path: Path
) -> None:
    """One file's content (replaced, as careful tools do), one mode (chmod in place,
    so through a farm the object's inode), one file added and one deleted."""
    plain_tree(tmp_path / "src")
    first = commit(repo, tmp_path / "src", "first").commit_id
    farm = tmp_path / "farm"
    checkout(repo, first, farm, KINDS[kind])
    replacement = farm / "bin" / "tool.new"
    replacement.write_bytes(b"a new tool\n")
    replacement.chmod(0o755)
    replacement.rename(farm / "bin" / "tool")
    (farm / "etc" / "group-readable").chmod(0o600)
    (farm / "share" / "doc" / "new").write_bytes(b"new\n")
    (farm / "share" / "doc" / "a").unlink()
    expected = {
        ("M", b"/bin/tool"),
        ("M", b"/etc/group-readable"),
        ("A", b"/share/doc/new"),
        ("D", b"/share/doc/a"),
    }
    assert dir_changes(repo, first, farm, kind) == expected
    again = commit(repo, farm, "again")
    assert changes(repo, first, again.commit_id) == expected
    tree = read_commit_tree(repo.path, "again")
    assert stat.S_IMODE(tree["/etc/group-readable"].mode) == 0o600
    assert repo.read_file(_file_id(repo, again.commit_id, "bin/tool")) == b"a new tool\n"


def test_setuid_and_owners_survive_a_user_farm(tmp_path: Path) -> None:
    """bare-user: the farm shows the file without setuid and as the caller's; the
    re-commit records the setuid bit, the owner and the xattrs of the first commit."""
    repo = Repository.init(tmp_path / "repo", RepoMode.BARE_USER)
    src = tmp_path / "src"
    plain_tree(src)
    su = src / "bin" / "su"
    su.write_bytes(b"su binary")
    owner = (4321, 8765) if IS_ROOT else (os.geteuid(), os.getegid())
    os.chown(su, *owner)
    su.chmod(0o4755)  # after chown, which clears it
    os.setxattr(su, "user.note", b"kept")
    first = commit(repo, src, "first").commit_id
    farm = tmp_path / "farm"
    checkout(repo, first, farm, KINDS["UH"])
    shown = os.lstat(farm / "bin" / "su")
    assert stat.S_IMODE(shown.st_mode) == 0o755  # no setuid in the farm
    assert shown.st_uid == os.geteuid()
    again = commit(repo, farm, "again")
    assert root_of(repo, again.commit_id) == root_of(repo, first)
    header, _ = repo.read_file_header(_file_id(repo, again.commit_id, "bin/su"))
    assert (header.uid, header.gid, stat.S_IMODE(header.mode)) == (*owner, 0o4755)
    assert header.xattrs == ((b"user.note", b"kept"),)
    # An option that changes owners cannot reuse the object: read as the farm shows it.
    owned = commit(repo, farm, "owned", owner_uid=7)
    assert owned.stats.linked == 0
    header, _ = repo.read_file_header(_file_id(repo, owned.commit_id, "bin/su"))
    assert (header.uid, stat.S_IMODE(header.mode)) == (7, 0o755)
    repo.close()


@pytest.mark.parametrize("mode", [RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY], ids=str)
def test_linked_files_are_not_read(mode: RepoMode, tmp_path: Path) -> None:
    """The proof: a farm file rewritten in place, then given back its size and mtime 0,
    is still taken for its object (a read would record the new bytes). That is the
    trade OSTree makes too: such a write damaged the object, fsck's business."""
    repo = Repository.init(tmp_path / "repo", mode)
    plain_tree(tmp_path / "src")
    first = commit(repo, tmp_path / "src", "first").commit_id
    farm = tmp_path / "farm"
    checkout(repo, first, farm, KINDS["UH"])
    readme = farm / "README"
    with open(readme, "r+b") as out:  # the object's own inode
        out.write(b"READ ME\n")
    os.utime(readme, ns=(0, 0))
    again = commit(repo, farm, "again")
    assert root_of(repo, again.commit_id) == root_of(repo, first)
    assert again.stats.files_read == 1  # the empty file, a copy
    readme.write_bytes(b"READ ME\n")  # mtime moves: read, the new bytes recorded
    moved = commit(repo, farm, "moved")
    assert changes(repo, first, moved.commit_id) == {("M", b"/README")}
    assert moved.stats.files_read == 2
    repo.close()


def _link_farm(mode: RepoMode, tmp_path: Path, setuid: bool = True) -> tuple[Repository, Path]:
    repo = Repository.init(tmp_path / "repo", mode)
    src = tmp_path / "src"
    plain_tree(src)
    if setuid:
        (src / "bin" / "tool").chmod(0o4755)
    first = commit(repo, src, "first").commit_id
    checkout(repo, first, tmp_path / "farm", KINDS["UH"])
    return repo, tmp_path / "farm"


def _recorded(repo: Repository, source: Path, name: str) -> FileHeader:
    result = commit(repo, source, "other")
    return repo.read_file_header(_file_id(repo, result.commit_id, name))[0]


@pytest.mark.parametrize("perms", [0o777, 0o775, 0o1777])
def test_a_link_where_others_can_write_is_read_as_usual(perms: int, tmp_path: Path) -> None:
    """A hardlink of a setuid object placed by someone else (a directory others can
    write to) is recorded as the plain file it shows, never setuid."""
    repo, farm = _link_farm(RepoMode.BARE_USER, tmp_path)
    source = tmp_path / "other"
    (source / "shared").mkdir(parents=True)
    (source / "shared").chmod(perms)
    os.link(farm / "bin" / "tool", source / "shared" / "planted")
    header = _recorded(repo, source, "shared/planted")
    assert stat.S_IMODE(header.mode) == 0o755
    (source / "shared").chmod(0o755)  # the control: in the user's own directory
    header = _recorded(repo, source, "shared/planted")
    assert stat.S_IMODE(header.mode) == 0o4755
    repo.close()


def test_diff_agrees_with_commit_on_a_link_it_does_not_trust(tmp_path: Path) -> None:
    """A farm's setuid file in a directory recorded group-writable: commit reads it as
    the plain file it shows (the link is not trusted there), so diff without -U
    reports it, and the re-commit changes exactly that path."""
    repo = Repository.init(tmp_path / "repo", RepoMode.BARE_USER)
    src = tmp_path / "src"
    plain_tree(src)
    (src / "bin" / "tool").chmod(0o4755)
    (src / "bin").chmod(0o775)
    first = commit(repo, src, "first").commit_id
    farm = tmp_path / "farm"
    checkout(repo, first, farm, KINDS["UH"])
    assert stat.S_IMODE(os.lstat(farm / "bin").st_mode) == 0o775
    assert dir_changes(repo, first, farm, "H") == {("M", b"/bin/tool")}  # "H": without -U
    again = commit(repo, farm, "again")
    assert changes(repo, first, again.commit_id) == {("M", b"/bin/tool")}
    (farm / "bin").chmod(0o755)  # the control: a directory commit trusts
    assert dir_changes(repo, first, farm, "H") == {("M", b"/bin")}
    repo.close()


@pytest.mark.skipif(not IS_ROOT, reason="a directory of another owner needs root")
def test_a_link_in_another_users_directory_is_read_as_usual(tmp_path: Path) -> None:
    repo, farm = _link_farm(RepoMode.BARE_USER, tmp_path)
    source = tmp_path / "other"
    (source / "theirs").mkdir(parents=True)
    os.link(farm / "bin" / "tool", source / "theirs" / "planted")
    os.chown(source / "theirs", NOBODY, NOBODY)
    assert stat.S_IMODE(_recorded(repo, source, "theirs/planted").mode) == 0o755
    repo.close()


def test_a_chmodded_farm_file_is_read(tmp_path: Path) -> None:
    repo, farm = _link_farm(RepoMode.BARE_USER, tmp_path)
    (farm / "bin" / "tool").chmod(0o700)  # the object's inode: fsck's business now
    header = _recorded(repo, farm, "bin/tool")
    assert (header.uid, stat.S_IMODE(header.mode)) == (os.geteuid(), 0o700)
    repo.close()


@pytest.mark.skipif(not IS_ROOT, reason="bare needs root")
def test_a_chowned_file_of_a_bare_farm_is_read(tmp_path: Path) -> None:
    """In bare the object file carries the recorded owner: a chown shows, and is read."""
    repo = Repository.init(tmp_path / "repo", RepoMode.BARE)
    plain_tree(tmp_path / "src")
    first = commit(repo, tmp_path / "src", "first").commit_id
    farm = tmp_path / "farm"
    checkout(repo, first, farm, KINDS["H"])
    os.chown(farm / "README", 1234, 5678)  # the object's inode: fsck's business now
    again = commit(repo, farm, "again")
    assert changes(repo, first, again.commit_id) == {("M", b"/README")}
    assert (again.stats.linked, again.stats.files_read) == (6, 2)
    header, _ = repo.read_file_header(_file_id(repo, again.commit_id, "README"))
    assert (header.uid, header.gid) == (1234, 5678)
    repo.close()


def test_a_symlink_object_linked_into_a_tree_stays_a_regular_file(tmp_path: Path) -> None:
    """bare-user keeps a symlink as a small regular file holding its target."""
    repo, _ = _link_farm(RepoMode.BARE_USER, tmp_path, setuid=False)
    link_id = _file_id(repo, repo.ref("first"), "bin/sh")
    source = tmp_path / "other"
    source.mkdir()
    os.link(repo.object_path(link_id), source / "planted")
    header = _recorded(repo, source, "planted")
    assert stat.S_ISREG(header.mode)
    assert repo.read_file(_file_id(repo, repo.ref("other"), "planted")) == b"tool"
    repo.close()


def test_an_archive_object_linked_into_a_tree_is_read(tmp_path: Path) -> None:
    """Archive objects are compressed: a hardlink of one holds other bytes than the
    object's content, and is committed as the bytes it holds."""
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    plain_tree(tmp_path / "src")
    first = commit(repo, tmp_path / "src", "first").commit_id
    readme_id = _file_id(repo, first, "README")
    source = tmp_path / "other"
    source.mkdir()
    os.link(repo.object_path(readme_id), source / "planted")
    result = commit(repo, source, "other")
    assert result.stats.linked == 0
    planted = repo.read_file(_file_id(repo, result.commit_id, "planted"))
    assert planted == (source / "planted").read_bytes() != b"read me\n"
    repo.close()


def test_an_object_file_the_index_does_not_hold_is_read(tmp_path: Path) -> None:
    """A file linked into objects/ under an id the index lacks (an orphan, or forged)
    is never taken for that id: the commit would name an absent object."""
    repo, _ = _link_farm(RepoMode.BARE_USER, tmp_path, setuid=False)
    source = tmp_path / "other"
    source.mkdir()
    orphan = source / "orphan"
    orphan.write_bytes(b"not in the index\n")
    orphan.chmod(0o644)
    os.utime(orphan, ns=(0, 0))
    forged = ObjectId(bytes(range(32)))
    os.link(orphan, repo.object_path(forged))
    result = commit(repo, source, "other")
    recorded = _file_id(repo, result.commit_id, "orphan")
    assert recorded != forged
    assert result.stats.linked == 0
    assert repo.read_file(recorded) == b"not in the index\n"
    repo.close()


def test_a_farm_of_pruned_objects_is_read(tmp_path: Path) -> None:
    """Objects pruned since the checkout are not named: the farm files are read and
    stored again, and the new commit is whole."""
    repo, farm = _link_farm(RepoMode.BARE_USER, tmp_path, setuid=False)
    repo.delete_ref("first")
    assert prune(repo, refs_only=True).objects > 0
    again = commit(repo, farm, "again")
    assert again.stats.linked == 0
    assert fsck(repo).clean
    assert repo.read_file(_file_id(repo, again.commit_id, "README")) == b"read me\n"
    repo.close()


def test_an_object_file_gone_behind_the_stores_back_is_not_listed(tmp_path: Path) -> None:
    """A second farm keeps the inode a candidate (two links); the listing, made when the
    first candidate shows up, no longer holds the object's name."""
    repo, farm = _link_farm(RepoMode.BARE_USER, tmp_path, setuid=False)
    first = repo.ref("first")
    assert first is not None
    checkout(repo, first, tmp_path / "farm2", KINDS["UH"])
    os.unlink(repo.object_path(_file_id(repo, first, "README")))
    readme = farm / "README"
    assert os.lstat(readme).st_nlink == 2
    with repo.snapshot() as snap:
        assert snap.object_for_inode(os.lstat(farm / "bin" / "tool"), os.lstat(farm / "bin"))
        assert snap.object_for_inode(os.lstat(readme), os.lstat(farm)) is None
    repo.close()


def test_a_name_in_objects_that_is_not_hex_shifts_no_id(tmp_path: Path) -> None:
    """A directory's names are converted in one go: a planted name with spaces (which
    fromhex skips) or other letters must leave every real object's id where it was."""
    repo, farm = _link_farm(RepoMode.BARE_USER, tmp_path, setuid=False)
    tool = _file_id(repo, repo.ref("first"), "bin/tool")
    folder = Path(repo.object_path(tool)).parent
    for odd in ("  " + "0" * 60, "zz" + "0" * 60):
        (folder / (odd + ".file")).write_bytes(b"planted\n")
    os.utime(folder / ("  " + "0" * 60 + ".file"), ns=(0, 0))
    with repo.snapshot() as snap:
        found = snap.object_for_inode(os.lstat(farm / "bin" / "tool"), os.lstat(farm / "bin"))
    assert found is not None and found.object_id == tool
    again = commit(repo, farm, "again")
    first = repo.ref("first")
    assert first is not None
    assert root_of(repo, again.commit_id) == root_of(repo, first)
    repo.close()


def test_no_file_is_recognised_where_entries_do_not_give_inodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where d_ino is not st_ino (overlayfs may remap), the listing is refused whole."""
    repo, farm = _link_farm(RepoMode.BARE_USER, tmp_path, setuid=False)
    monkeypatch.setattr("store.inodes._inode_is_true", lambda entry: False)
    again = commit(repo, farm, "again")
    assert (again.stats.linked, again.stats.files_read) == (0, 8)
    repo.close()


@pytest.mark.skipif(not IS_ROOT, reason="runs sapwood as an unprivileged user")
def test_an_unprivileged_user_round_trips_a_farm() -> None:
    """The owner check is the committing user's: a real uid, not root."""
    home = user_dir()
    try:
        plain_tree(home / "src")
        give_to_user(home / "src")
        repo = home / "repo"
        for args in (
            ("init", "--mode", "bare-user"),
            ("commit", "-b", "first", home / "src"),
            ("checkout", "-U", "-H", "first", home / "farm"),
            ("commit", "-b", "again", home / "farm"),
        ):
            done = run_as_user("--repo", repo, *args)
            assert done.returncode == 0, done.stderr
        trees = [
            json.loads(run_as_user("--repo", repo, "show", "--json", rev).stdout)["tree"]
            for rev in ("first", "again")
        ]
        assert trees[0] == trees[1]
        assert as_user("stat", "-c", "%h", home / "farm" / "README").strip() == "2"
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _file_id(repo: Repository, commit_id: ObjectId | None, path: str) -> ObjectId:
    assert commit_id is not None
    found = lookup(repo, commit_id, path).file
    assert found is not None
    return found
