"""Checkout as root: every repository mode with every checkout mode gives back the tree
(recorded owners, setuid bits, capabilities), full disks, other filesystems, and the
-U path as a real unprivileged user. What any user can run is in test_checkout.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from fs.checkout import CheckoutOptions, checkout
from fs.treediff import diff_dir
from store import (
    ObjectId,
    OutOfSpaceError,
    RepoMode,
    Repository,
    UsageError,
    lookup,
    root_node,
)
from tests.helpers import (
    IS_ROOT,
    NOBODY,
    Entry,
    build_rich_tree,
    commit_dir,
    commit_files,
    commit_trees,
    give_to_user,
    read_disk_tree,
    run_as_user,
    small_tmpfs,
    user_dir,
    write_tree,
)

SETID = stat.S_ISUID | stat.S_ISGID
pytestmark = pytest.mark.skipif(
    not IS_ROOT, reason="recorded ownership, mounts and switching user: root"
)

# (repository mode, -U, -C): what a user of OSTree can ask for
MATRIX = [
    (RepoMode.BARE, False, False),
    (RepoMode.BARE, False, True),
    (RepoMode.BARE, True, False),
    (RepoMode.BARE_USER, True, False),
    (RepoMode.BARE_USER, True, True),
    (RepoMode.BARE_USER, False, False),
    (RepoMode.BARE_USER_ONLY, True, False),
    (RepoMode.BARE_USER_ONLY, True, True),
    (RepoMode.ARCHIVE, True, False),
    (RepoMode.ARCHIVE, False, False),
]


def _source(tmp_path: Path, mode: RepoMode) -> Path:
    source = tmp_path / "src"
    build_rich_tree(source, setuid=mode is not RepoMode.BARE_USER_ONLY)
    (source / "unreadable").write_text("mode 0")
    (source / "unreadable").chmod(0)
    return source


def _expected(source: Path, mode: RepoMode, user: bool) -> dict[str, Entry]:
    expected = {}
    for path, e in read_disk_tree(source).items():
        uid, gid, bits, xattrs = e.uid, e.gid, e.mode, e.xattrs
        if mode is RepoMode.BARE_USER_ONLY:
            uid, gid, xattrs = 0, 0, ()
        if user:
            uid, gid, xattrs = 0, 0, ()
            if e.kind == "-":  # no setuid, setgid, sticky or world-write, linked or copied
                bits &= 0o775
            elif e.kind == "d":
                bits &= ~SETID
        expected[path] = Entry(e.kind, bits, uid, gid, e.data, xattrs)
    return expected


@pytest.mark.parametrize(
    ("mode", "user", "copy"), MATRIX, ids=lambda v: getattr(v, "value", str(v))
)
def test_checkout_matrix(tmp_path: Path, mode: RepoMode, user: bool, copy: bool) -> None:
    repo = Repository.init(tmp_path / "repo", mode)
    source = _source(tmp_path, mode)
    commit_id = commit_dir(repo, source)
    dest = tmp_path / "dest"
    stats = checkout(repo, commit_id, dest, CheckoutOptions(user_mode=user, copy=copy))
    links = _hardlinked(repo, commit_id, dest)
    should_link = not copy and (
        (mode is RepoMode.BARE and not user)
        or (mode in (RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY) and user)
    )
    linkable = {"/etc/passwd", "/usr/bin/ping", "/usr/bin/dash", "/usr/bin/big", "/dup-a"}
    assert linkable <= links if should_link else links == set()
    assert {"/empty-file", "/unreadable"}.isdisjoint(links)  # never linked
    assert stats.hardlinks == len(_linked_paths_count(repo, commit_id, dest))
    got = read_disk_tree(dest)
    got = {p: Entry(e.kind, e.mode, e.uid, e.gid, e.data, e.xattrs) for p, e in got.items()}
    assert got == _expected(source, mode, user)
    for path in [dest, *dest.rglob("*")]:
        assert os.lstat(path).st_mtime == 0, path
    assert list(diff_dir(repo, root_node(repo, commit_id), dest, user_mode=user)) == []


def _hardlinked(repo: Repository, commit_id: ObjectId, dest: Path) -> set[str]:
    return {p for p, _ in _linked_paths_count(repo, commit_id, dest)}


def _linked_paths_count(repo: Repository, commit_id: ObjectId, dest: Path) -> list[tuple[str, int]]:
    """Checked-out paths that are the object file itself (same inode)."""
    found = []
    for path in dest.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        rel = "/" + path.relative_to(dest).as_posix()
        node = lookup(repo, commit_id, rel)
        assert node.file is not None
        obj = repo.content.path(node.file)
        if obj.exists() and os.path.samefile(obj, path):
            found.append((rel, os.stat(path).st_nlink))
    return found


def test_require_hardlinks_refuses_mode_mismatch(user_repo: Repository, tmp_path: Path) -> None:
    """Root may check out with the recorded owners, but not as hardlinks of a bare-user
    repository (any other user is refused earlier: that checkout needs root)."""
    repo, ids = user_repo, commit_trees(user_repo, tmp_path, a={"f": "x"})
    with pytest.raises(UsageError, match="only in user mode: set user_mode"):
        checkout(repo, ids["a"], tmp_path / "d", CheckoutOptions(require_hardlinks=True))
    assert not (tmp_path / "d").exists()


def test_full_disk_leaves_no_half_tree(user_repo: Repository, tmp_path: Path) -> None:
    repo, ids = user_repo, commit_trees(user_repo, tmp_path, small={"f": "fits"})
    blobs = {f"blob{n}": os.urandom(2 << 20) for n in range(6)}
    commit_id = commit_files(repo, tmp_path / "big", blobs, "big")
    with small_tmpfs(tmp_path / "mnt", "6m") as mnt:
        with pytest.raises(OutOfSpaceError):
            checkout(repo, commit_id, mnt / "dest", CheckoutOptions(user_mode=True, copy=True))
        assert list(mnt.iterdir()) == []  # neither DEST nor the hidden build directory
        checkout(repo, ids["small"], mnt / "dest", CheckoutOptions(user_mode=True, copy=True))
        assert (mnt / "dest" / "f").read_text() == "fits"


def test_user_mode_as_a_real_unprivileged_user() -> None:
    work = user_dir()
    try:
        files = {"bin/tool": "#!/bin/sh\n", "etc/conf": "x=1\n", "empty": "", "lib": "->bin"}
        source = write_tree(work / "src", files)
        give_to_user(source)
        repo = work / "repo"
        for args in (
            ("init", "--mode", "bare-user"),
            ("commit", "-b", "main", source),
            ("checkout", "-U", "main", work / "dest"),
            ("diff", "main", work / "dest"),
            ("fsck",),
        ):
            result = run_as_user("--repo", repo, *args)
            assert result.returncode == 0, (args, result.stderr)
            if args[0] == "diff":
                assert result.stdout == ""
        conf = work / "dest" / "etc" / "conf"
        assert os.stat(conf).st_uid == NOBODY and os.stat(conf).st_nlink == 2  # the object and us
        assert os.stat(work / "dest" / "empty").st_nlink == 1
        denied = run_as_user("--repo", repo, "checkout", "main", work / "owned")
        assert denied.returncode != 0 and "needs root" in denied.stderr
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=True)


def test_links_across_filesystems_fall_back_to_copies_unless_required(
    user_repo: Repository, tmp_path: Path
) -> None:
    repo, ids = (
        user_repo,
        commit_trees(user_repo, tmp_path, a={"bin/tool": "#!/bin/sh\n", "etc/conf": "x=1\n"}),
    )
    with small_tmpfs(tmp_path / "mnt", "4m") as mnt:
        stats = checkout(repo, ids["a"], mnt / "copy", CheckoutOptions(user_mode=True))
        assert stats.hardlinks == 0 and stats.copies == 2  # EXDEV: copied instead
        assert (mnt / "copy" / "etc" / "conf").read_text() == "x=1\n"
        with pytest.raises(UsageError, match="cross-device"):
            checkout(
                repo,
                ids["a"],
                mnt / "linked",
                CheckoutOptions(user_mode=True, require_hardlinks=True),
            )
        assert not (mnt / "linked").exists()
