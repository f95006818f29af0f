"""What prepare-tree counts as a killed run's leftover at one of its temporary names
(``.NAME.sapwood-new``): an empty directory of its own user's. Another user's empty
directory there is refused where a step needs the name and left alone otherwise
(review25 5); the refusal says what to do (review25 6)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sapwood
from fs.sysroot.nofollow import NEW
from store import TreeLayoutError
from tests.helpers import IS_ROOT
from tests.sysroot.conftest import small_tree

FILES = {"home/alice/notes": "mine\n", "root/.profile": "# root\n", "usr/local/bin": "/"}
pytestmark = pytest.mark.skipif(not IS_ROOT, reason="chown to another user needs root")
NOBODY = 65534


def _others_empty_directory(at: Path) -> None:
    at.mkdir(parents=True)
    os.chown(at, NOBODY, NOBODY)


def test_another_users_empty_directory_where_a_place_is_made_is_refused(tmp_path: Path) -> None:
    tree = small_tree(tmp_path / "tree", FILES, kernel=False)
    theirs = tree / f"var/.opt{NEW}"
    _others_empty_directory(theirs)
    before = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    with pytest.raises(TreeLayoutError) as raised:
        sapwood.prepare_tree(tree)
    message = str(raised.value)
    assert f".opt{NEW}" in message and "remove or rename it" in message, message
    assert "laid out otherwise" not in message and "\n" not in message
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*")) == before
    assert theirs.stat().st_uid == NOBODY


def test_another_users_empty_directory_is_left_alone_by_a_run_that_needs_no_name(
    tmp_path: Path,
) -> None:
    tree = small_tree(tmp_path / "tree", FILES, kernel=False)
    sapwood.prepare_tree(tree)  # laid out: the next run makes nothing
    theirs = tree / f"var/.srv{NEW}"
    _others_empty_directory(theirs)
    ours = tree / f"var/.mnt{NEW}"
    ours.mkdir()  # a killed run's (root's, as the run's)
    assert sapwood.prepare_tree(tree) == []
    assert theirs.is_dir() and theirs.stat().st_uid == NOBODY
    assert not ours.exists()
