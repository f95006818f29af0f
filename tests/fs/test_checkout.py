"""Checkout: every repository mode with every checkout mode gives back the tree.

Root runs the whole matrix; the -U path also runs as a real unprivileged user.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from fs.checkout import CheckoutConflictError, CheckoutOptions, checkout
from fs.commit import CommitRequest, Layer, make_commit
from fs.treediff import diff_dir
from store import (
    CorruptObjectError,
    ObjectId,
    OutOfSpaceError,
    RepoMode,
    Repository,
    UsageError,
    lookup,
    root_node,
)
from tests.helpers import IS_ROOT, Entry, build_rich_tree, read_disk_tree, small_tmpfs
from tests.unprivileged import NOBODY, run_as_user, user_dir

SETID = stat.S_ISUID | stat.S_ISGID
pytestmark = pytest.mark.skipif(not IS_ROOT, reason="the matrix includes recorded ownership: root")

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


def _expected(source: Path, mode: RepoMode, user: bool, hardlinked: set[str]) -> dict[str, Entry]:
    expected = {}
    for path, e in read_disk_tree(source).items():
        uid, gid, bits, xattrs = e.uid, e.gid, e.mode, e.xattrs
        if mode is RepoMode.BARE_USER_ONLY:
            uid, gid, xattrs = 0, 0, ()
        if user:
            uid, gid, xattrs = 0, 0, ()
            bits &= ~SETID
            if path in hardlinked:
                bits = (bits & 0o555) | 0o400  # objects carry no write bits
        expected[path] = Entry(e.kind, bits, uid, gid, e.data, xattrs)
    return expected


@pytest.mark.parametrize(
    ("mode", "user", "copy"), MATRIX, ids=lambda v: getattr(v, "value", str(v))
)
def test_checkout_matrix(tmp_path: Path, mode: RepoMode, user: bool, copy: bool) -> None:
    repo = Repository.init(tmp_path / "repo", mode)
    source = _source(tmp_path, mode)
    commit_id = make_commit(repo, CommitRequest("main", [Layer("dir", str(source))])).commit_id
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
    assert got == _expected(source, mode, user, links)
    for path in [dest, *dest.rglob("*")]:
        assert os.lstat(path).st_mtime == 0, path
    assert list(diff_dir(repo, root_node(repo, commit_id), dest)) == []


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


def _user_repo(tmp_path: Path, **trees: dict[str, str]) -> tuple[Repository, dict[str, ObjectId]]:
    repo = Repository.init(tmp_path / "repo", RepoMode.BARE_USER)
    ids = {}
    for name, files in trees.items():
        root = tmp_path / name
        for rel, content in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            if content.startswith("->"):
                (root / rel).symlink_to(content[2:])
            else:
                (root / rel).write_text(content)
        ids[name] = make_commit(repo, CommitRequest(name, [Layer("dir", str(root))])).commit_id
    return repo, ids


def test_union_modes(tmp_path: Path) -> None:
    repo, ids = _user_repo(
        tmp_path,
        pkg1={"usr/share/common": "same", "usr/bin/one": "1"},
        pkg2={"usr/share/common": "same", "usr/bin/two": "2"},
        pkg3={"usr/share/common": "same", "usr/bin/three": "3"},
        clash={"usr/share/common": "->elsewhere"},
    )
    dest = tmp_path / "dest"
    user = CheckoutOptions(user_mode=True, union="union")
    checkout(repo, ids["pkg1"], dest, user)
    count = len(list(dest.rglob("*")))
    checkout(repo, ids["pkg1"], dest, user)  # --union twice: same files
    assert len(list(dest.rglob("*"))) == count
    (dest / "usr/bin/one").unlink()
    (dest / "usr/bin/one").write_text("mine")
    checkout(repo, ids["pkg1"], dest, CheckoutOptions(user_mode=True, union="add"))
    assert (dest / "usr/bin/one").read_text() == "mine"  # --union-add keeps DEST's file
    checkout(repo, ids["pkg1"], dest, user)
    assert (dest / "usr/bin/one").read_text() == "1"  # --union: the commit wins
    merged = tmp_path / "merged"
    identical = CheckoutOptions(user_mode=True, union="identical", require_hardlinks=True)
    for pkg in ("pkg1", "pkg2", "pkg3"):
        checkout(repo, ids[pkg], merged, identical)
    assert sorted(p.name for p in (merged / "usr/bin").iterdir()) == ["one", "three", "two"]
    with pytest.raises(CheckoutConflictError, match="File exists"):
        checkout(repo, ids["clash"], merged, identical)
    with pytest.raises(UsageError, match="needs -H"):
        checkout(repo, ids["pkg1"], merged, CheckoutOptions(user_mode=True, union="identical"))


def test_fresh_checkout_refuses_an_existing_dest(tmp_path: Path) -> None:
    repo, ids = _user_repo(tmp_path, a={"f": "x"})
    (tmp_path / "dest").mkdir()
    with pytest.raises(CheckoutConflictError, match="exists"):
        checkout(repo, ids["a"], tmp_path / "dest", CheckoutOptions(user_mode=True))


def test_symlinks_in_dest_are_never_followed(tmp_path: Path) -> None:
    repo, ids = _user_repo(
        tmp_path,
        evil={"etc": "->" + str(tmp_path / "outside")},
        payload={"etc/passwd": "owned"},
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    checkout(repo, ids["evil"], dest, CheckoutOptions(user_mode=True))
    assert (dest / "etc").is_symlink()
    with pytest.raises(CheckoutConflictError, match="not followed"):
        checkout(repo, ids["payload"], dest, CheckoutOptions(user_mode=True, union="union"))
    assert list(outside.iterdir()) == []


def test_subpath_and_whiteouts(tmp_path: Path) -> None:
    repo, ids = _user_repo(
        tmp_path,
        base={"usr/lib/keep": "k", "usr/lib/gone": "g", "usr/lib/gonedir/x": "x"},
        layer={"usr/lib/.wh.gone": "", "usr/lib/.wh.gonedir": "", "usr/lib/new": "n"},
    )
    dest = tmp_path / "dest"
    checkout(repo, ids["base"], dest, CheckoutOptions(user_mode=True))
    checkout(
        repo, ids["layer"], dest, CheckoutOptions(user_mode=True, union="union", whiteouts=True)
    )
    assert sorted(p.name for p in (dest / "usr/lib").iterdir()) == ["keep", "new"]
    sub = tmp_path / "sub"
    checkout(repo, ids["base"], sub, CheckoutOptions(user_mode=True, subpath="/usr/lib"))
    assert sorted(p.name for p in sub.iterdir()) == ["gone", "gonedir", "keep"]


def test_require_hardlinks_refuses_mode_mismatch(tmp_path: Path) -> None:
    repo, ids = _user_repo(tmp_path, a={"f": "x"})
    with pytest.raises(UsageError, match="add -U"):
        checkout(repo, ids["a"], tmp_path / "d", CheckoutOptions(require_hardlinks=True))
    assert not (tmp_path / "d").exists()


def test_diff_against_a_directory_finds_edits(tmp_path: Path) -> None:
    repo, ids = _user_repo(tmp_path, a={"f": "x", "g": "y", "d/h": "z"})
    dest = tmp_path / "dest"
    checkout(repo, ids["a"], dest, CheckoutOptions(user_mode=True, copy=True))
    (dest / "f").write_text("changed")
    (dest / "g").unlink()
    (dest / "new").write_text("n")
    changes = list(diff_dir(repo, root_node(repo, ids["a"]), dest))
    assert changes == [("M", b"/f"), ("D", b"/g"), ("A", b"/new")]


def test_full_disk_leaves_no_half_tree(tmp_path: Path) -> None:
    repo, ids = _user_repo(tmp_path, small={"f": "fits"})
    big = tmp_path / "big"
    big.mkdir()
    for n in range(6):
        (big / f"blob{n}").write_bytes(os.urandom(2 << 20))
    commit_id = make_commit(repo, CommitRequest("big", [Layer("dir", str(big))])).commit_id
    with small_tmpfs(tmp_path / "mnt", "6m") as mnt:
        with pytest.raises(OutOfSpaceError):
            checkout(repo, commit_id, mnt / "dest", CheckoutOptions(user_mode=True, copy=True))
        assert list(mnt.iterdir()) == []  # neither DEST nor the hidden build directory
        checkout(repo, ids["small"], mnt / "dest", CheckoutOptions(user_mode=True, copy=True))
        assert (mnt / "dest" / "f").read_text() == "fits"


def test_user_mode_as_a_real_unprivileged_user() -> None:
    work = user_dir()
    try:
        source = work / "src"
        for rel, content in {"bin/tool": "#!/bin/sh\n", "etc/conf": "x=1\n", "empty": ""}.items():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            (source / rel).write_text(content)
        (source / "lib").symlink_to("bin")
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(source)], check=True)
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


def test_verify_refuses_an_object_modified_through_a_farm(tmp_path: Path) -> None:
    repo, ids = _user_repo(tmp_path, a={"etc/passwd": "root:x:0:0\n"})
    farm = tmp_path / "farm"
    checkout(repo, ids["a"], farm, CheckoutOptions(user_mode=True))
    victim = farm / "etc" / "passwd"
    victim.chmod(0o644)  # a careless admin: the object is the same inode
    victim.write_text("root::0:0\n")
    with pytest.raises(CorruptObjectError, match="run sapwood fsck"):
        checkout(repo, ids["a"], tmp_path / "again", CheckoutOptions(user_mode=True, verify=True))
    assert not (tmp_path / "again").exists()


def test_links_across_filesystems_fall_back_to_copies_unless_required(tmp_path: Path) -> None:
    repo, ids = _user_repo(tmp_path, a={"bin/tool": "#!/bin/sh\n", "etc/conf": "x=1\n"})
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
