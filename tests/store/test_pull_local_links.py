"""pull-local hardlinks the very inode it verified (an open descriptor, linked through
/proc/self/fd) straight into the transaction's staging; where it cannot (another
filesystem, no /proc), it copies every object, and a link that failed after the object
was claimed never keeps the copy from storing it."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from store import RepoMode, Repository
from store.fsck import fsck
from store.pull import pull_local
from tests.helpers import IS_ROOT, commit_files, read_commit_tree, small_tmpfs

FILES = {f"d{n}/f{k}": os.urandom(2000 + k) for n in range(3) for k in range(5)}


def _source(tmp_path: Path) -> Repository:
    source = Repository.init(tmp_path / "src", RepoMode.BARE_USER)
    commit_files(source, tmp_path / "tree", FILES, branch="os")
    return source


def _same_content(a: Path, b: Path) -> None:
    assert read_commit_tree(a, "os") == read_commit_tree(b, "os")


def test_objects_are_hardlinks_of_the_sources_without_a_second_name(tmp_path: Path) -> None:
    source = _source(tmp_path)
    with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
        report = pull_local(dest, source.path, ["os"])
        assert report.linked == report.content_fetched > 0
        assert fsck(dest).clean
        staging = dest.path / "tmp"
        assert not [p for p in staging.rglob("link-*")]  # no extra name made and removed
    _same_content(source.path, tmp_path / "dest")
    linked = [p for p in (tmp_path / "dest/objects").rglob("*.file") if p.stat().st_nlink > 1]
    assert len(linked) == report.linked


def test_a_link_that_fails_after_the_claim_still_lets_the_copy_store_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _source(tmp_path)
    real_link = os.link

    def no_cross_links(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("src_dir_fd") is not None:  # the /proc/self/fd link
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", no_cross_links)
    with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
        report = pull_local(dest, source.path, ["os"])
        assert report.linked == 0 and report.content_fetched > 0
        assert fsck(dest).clean
    _same_content(source.path, tmp_path / "dest")


@pytest.mark.skipif(not IS_ROOT, reason="a tmpfs to mount")
def test_a_repository_on_another_filesystem_gets_copies(tmp_path: Path) -> None:
    source = _source(tmp_path)
    with small_tmpfs(tmp_path / "other", "64m") as other:
        with Repository.init(other / "dest", RepoMode.BARE_USER) as dest:
            report = pull_local(dest, source.path, ["os"])
            assert report.linked == 0 and report.content_fetched > 0
            assert fsck(dest).clean
        _same_content(source.path, other / "dest")
