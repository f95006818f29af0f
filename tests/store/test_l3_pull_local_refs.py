"""pull-local with no REF takes the source's own refs only, not the REMOTE:REF ones it
pulled (a source's ``origin:main`` dated 9999 would freeze every later genuine pull as a
downgrade); a pulled ref only when named. A str is one ref (attack23's remark, 18)."""

from __future__ import annotations

from pathlib import Path

from store import RepoMode, Repository
from store.pull import pull_local
from tests.helpers import cli, commit_files


def _source(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    src = Repository.init(tmp_path / "src", RepoMode.ARCHIVE)
    ids = {
        "os/main": commit_files(src, tmp_path / "a", {"a": b"1"}, branch="os/main"),
        "other": commit_files(src, tmp_path / "b", {"b": b"2"}, branch="other"),
        "origin:os/main": commit_files(src, tmp_path / "c", {"c": b"3"}, branch="x"),
    }
    with src.transaction() as txn:
        txn.set_ref("origin:os/main", ids["origin:os/main"])
        txn.set_ref("x", None)
    src.close()
    return src.path, {name: commit.hex() for name, commit in ids.items()}


def test_no_ref_takes_the_sources_own_refs_only(tmp_path: Path) -> None:
    source, ids = _source(tmp_path)
    with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
        report = pull_local(dest, source)
        assert sorted(report.refs) == ["os/main", "other"]
        assert {name: commit.hex() for name, commit in dest.refs().items()} == {
            "os/main": ids["os/main"],
            "other": ids["other"],
        }
        named = pull_local(dest, source, ["origin:os/main"])  # named: taken
        assert list(named.refs) == ["origin:os/main"]
        ref = dest.ref("origin:os/main")
        assert ref is not None and ref.hex() == ids["origin:os/main"]


def test_the_cli_without_a_ref_leaves_the_pulled_refs(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    dest = tmp_path / "dest"
    assert cli("--repo", dest, "init", "--mode", "bare-user").code == 0
    result = cli("--repo", dest, "pull-local", source)
    assert result.code == 0, result.err
    listed = cli("--repo", dest, "refs").out.split()
    assert "origin:os/main" not in listed and "os/main" in listed and "other" in listed


def test_a_single_ref_given_as_a_str_is_that_ref(tmp_path: Path) -> None:
    source, ids = _source(tmp_path)
    with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
        report = pull_local(dest, source, "other")
        assert report.refs["other"][1].hex() == ids["other"]
        assert list(report.refs) == ["other"]
        assert set(dest.refs()) == {"other"}
