"""Checkout as any user: unions, whiteouts, subpaths, refusals, diff and verify.

What needs root (the matrix with recorded ownership, full disks and other
filesystems, a real unprivileged user) is in test_checkout_root.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fs.checkout import CheckoutConflictError, CheckoutOptions, checkout
from fs.treediff import diff_dir
from store import CorruptObjectError, Repository, UsageError, root_node
from tests.helpers import commit_trees


def test_union_modes(user_repo: Repository, tmp_path: Path) -> None:
    repo, ids = (
        user_repo,
        commit_trees(
            user_repo,
            tmp_path,
            pkg1={"usr/share/common": "same", "usr/bin/one": "1"},
            pkg2={"usr/share/common": "same", "usr/bin/two": "2"},
            pkg3={"usr/share/common": "same", "usr/bin/three": "3"},
            clash={"usr/share/common": "->elsewhere"},
        ),
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
    with pytest.raises(UsageError, match="needs require_hardlinks"):
        checkout(repo, ids["pkg1"], merged, CheckoutOptions(user_mode=True, union="identical"))


def test_fresh_checkout_refuses_an_existing_dest(user_repo: Repository, tmp_path: Path) -> None:
    repo, ids = user_repo, commit_trees(user_repo, tmp_path, a={"f": "x"})
    (tmp_path / "dest").mkdir()
    with pytest.raises(CheckoutConflictError, match="exists"):
        checkout(repo, ids["a"], tmp_path / "dest", CheckoutOptions(user_mode=True))


def test_symlinks_in_dest_are_never_followed(user_repo: Repository, tmp_path: Path) -> None:
    repo, ids = (
        user_repo,
        commit_trees(
            user_repo,
            tmp_path,
            evil={"etc": "->" + str(tmp_path / "outside")},
            payload={"etc/passwd": "owned"},
        ),
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    checkout(repo, ids["evil"], dest, CheckoutOptions(user_mode=True))
    assert (dest / "etc").is_symlink()
    with pytest.raises(CheckoutConflictError, match="not followed"):
        checkout(repo, ids["payload"], dest, CheckoutOptions(user_mode=True, union="union"))
    assert list(outside.iterdir()) == []


def test_subpath_and_whiteouts(user_repo: Repository, tmp_path: Path) -> None:
    repo, ids = (
        user_repo,
        commit_trees(
            user_repo,
            tmp_path,
            base={"usr/lib/keep": "k", "usr/lib/gone": "g", "usr/lib/gonedir/x": "x"},
            layer={"usr/lib/.wh.gone": "", "usr/lib/.wh.gonedir": "", "usr/lib/new": "n"},
        ),
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


def test_diff_against_a_directory_finds_edits(user_repo: Repository, tmp_path: Path) -> None:
    repo, ids = user_repo, commit_trees(user_repo, tmp_path, a={"f": "x", "g": "y", "d/h": "z"})
    dest = tmp_path / "dest"
    checkout(repo, ids["a"], dest, CheckoutOptions(user_mode=True, copy=True))
    (dest / "f").write_text("changed")
    (dest / "g").unlink()
    (dest / "new").write_text("n")
    changes = [c[:2] for c in diff_dir(repo, root_node(repo, ids["a"]), dest)]
    assert changes == [("M", b"/f"), ("D", b"/g"), ("A", b"/new")]


def test_verify_refuses_an_object_modified_through_a_farm(
    user_repo: Repository, tmp_path: Path
) -> None:
    repo, ids = user_repo, commit_trees(user_repo, tmp_path, a={"etc/passwd": "root:x:0:0\n"})
    farm = tmp_path / "farm"
    checkout(repo, ids["a"], farm, CheckoutOptions(user_mode=True))
    victim = farm / "etc" / "passwd"
    victim.chmod(0o644)  # a careless admin: the object is the same inode
    victim.write_text("root::0:0\n")
    with pytest.raises(CorruptObjectError, match="run sapwood fsck"):
        checkout(repo, ids["a"], tmp_path / "again", CheckoutOptions(user_mode=True, verify=True))
    assert not (tmp_path / "again").exists()
