"""The store's own pull and path_history take one str as one ref / one path, not as
its letters (the facade guarded it already: attack23 18)."""

from __future__ import annotations

from pathlib import Path

from store import RepoMode, Repository
from store.pathlog import path_history
from store.pull import Remote, add_remote, pull
from store.summary import update_summary
from tests.helpers import commit_files
from tests.store.pull_server import serve
from tests.store.test_pull_http import FAST


def test_pull_of_one_ref_given_as_a_str(tmp_path: Path) -> None:
    with Repository.init(tmp_path / "archive", RepoMode.ARCHIVE) as archive:
        main = commit_files(archive, tmp_path / "a", {"a": "1\n"}, branch="main")
        commit_files(archive, tmp_path / "b", {"b": "2\n"}, branch="m")  # the letter 'm'
        update_summary(archive)
    with (
        serve(tmp_path / "archive") as served,
        Repository.init(tmp_path / "local", RepoMode.BARE_USER) as local,
    ):
        add_remote(local.path, Remote("origin", served.url))
        report = pull(local, "origin", "main", settings=FAST)
        assert list(report.refs) == ["origin:main"]
        assert local.refs() == {"origin:main": main}


def test_path_history_of_one_path_given_as_a_str(tmp_path: Path) -> None:
    with Repository.init(tmp_path / "repo", RepoMode.BARE_USER) as repo:
        first = commit_files(repo, tmp_path / "1", {"ab": "1\n", "a": "x\n", "b": "y\n"})
        commit_files(repo, tmp_path / "2", {"ab": "1\n", "a": "changed\n", "b": "y\n"})
        last = commit_files(repo, tmp_path / "3", {"ab": "2\n", "a": "changed\n", "b": "y\n"})
        found = [entry.commit_id for entry in path_history(repo, last, "ab")]
        assert found == [last, first]  # 'a' changed in the second: not 'ab'
