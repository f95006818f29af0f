"""pull-local between every pair of repository modes: the same tree arrives, fsck is
clean, objects are hardlinked only where both repositories keep them alike."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sapwood
from fs.options import ContentOptions
from store import CorruptObjectError, RepoMode, Repository
from store.pull import pull_local
from tests.conftest import ALL_MODES
from tests.helpers import IS_ROOT, cli, commit_dir, read_commit_tree, write_tree

CANONICAL = ContentOptions(canonical_permissions=True)  # what bare-user-only can hold


def _param(mode: RepoMode) -> object:
    marks = (
        [pytest.mark.skip(reason="bare mode needs root")]
        if mode is RepoMode.BARE and not IS_ROOT
        else []
    )
    return pytest.param(mode, id=mode.value, marks=marks)


MODES = [_param(m) for m in ALL_MODES]


def _source(root: Path) -> Path:
    files: dict[str, str | bytes] = {f"etc/conf{n}": f"setting {n}\n" for n in range(5)}
    files["usr/bin/tool"] = os.urandom(5 << 20)  # above SMALL_FILE: copied in chunks
    files["usr/bin/link"] = "->tool"
    files["empty"] = ""
    return write_tree(root, files)


def _file_object_paths(repo: Repository) -> dict[str, os.stat_result]:
    suffix = "filez" if repo.stores_compressed else "file"
    return {p.parent.name + p.stem: p.lstat() for p in repo.path.glob(f"objects/*/*.{suffix}")}


@pytest.mark.parametrize("source_mode", MODES)
@pytest.mark.parametrize("dest_mode", MODES)
def test_pull_local_between_modes(
    tmp_path: Path, source_mode: RepoMode, dest_mode: RepoMode
) -> None:
    with Repository.init(tmp_path / "src-repo", source_mode) as src:
        head = commit_dir(src, _source(tmp_path / "tree"), "os/main", options=CANONICAL)
    with Repository.init(tmp_path / "dest", dest_mode) as dest:
        report = pull_local(dest, tmp_path / "src-repo")
        assert dest.ref("os/main") == head
        assert report.refs == {"os/main": (None, head)}
        assert sapwood.fsck(dest, all_objects=True).clean
        linked = _file_object_paths(dest)
        assert report.content_fetched == len(linked) > 0
    assert read_commit_tree(tmp_path / "dest", "os/main") == read_commit_tree(
        tmp_path / "src-repo", "os/main"
    )
    with Repository.open(tmp_path / "src-repo") as src:
        sources = _file_object_paths(src)
    shared = [name for name, st in linked.items() if st.st_ino == sources[name].st_ino]
    if source_mode is dest_mode and dest_mode is not RepoMode.ARCHIVE:
        assert len(shared) == len(linked) == report.linked
    else:
        assert shared == [] and report.linked == 0
    assert report.bytes > 5 << 20  # the content copied or linked, the tool among it


def test_a_second_pull_local_copies_nothing_and_an_update_only_what_changed(tmp_path: Path) -> None:
    tree = _source(tmp_path / "tree")
    with Repository.init(tmp_path / "src-repo", RepoMode.ARCHIVE) as src:
        commit_dir(src, tree, "main")
    with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
        pull_local(dest, tmp_path / "src-repo", ["main"])
        assert pull_local(dest, tmp_path / "src-repo").content_fetched == 0
        (tree / "etc" / "conf1").write_text("changed\n")
        with Repository.open(tmp_path / "src-repo") as src:
            head = commit_dir(src, tree, "main")
        report = pull_local(dest, tmp_path / "src-repo")
        assert report.content_fetched == 1
        assert report.metadata_fetched == 2  # the root and /etc
        assert dest.ref("main") == head


def test_a_corrupt_source_object_is_refused_and_no_ref_moves(tmp_path: Path) -> None:
    with Repository.init(tmp_path / "src-repo", RepoMode.BARE_USER) as src:
        commit_dir(src, _source(tmp_path / "tree"), "main")
        victim = max(src.path.glob("objects/*/*.file"), key=lambda p: p.stat().st_size)
    victim.chmod(0o644)
    with open(victim, "r+b") as out:
        out.write(b"X")
    victim.chmod(0o444)
    with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
        with pytest.raises(CorruptObjectError):
            pull_local(dest, tmp_path / "src-repo")
        assert dest.refs() == {}


def test_the_command_line_pull_local(tmp_path: Path) -> None:
    with Repository.init(tmp_path / "src-repo", RepoMode.ARCHIVE) as src:
        head = commit_dir(src, _source(tmp_path / "tree"), "main")
    with Repository.init(tmp_path / "dest", RepoMode.BARE_USER):
        pass
    result = cli("--repo", tmp_path / "dest", "pull-local", tmp_path / "src-repo", "main")
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == f"main: (new) -> {head.hex()}"
    assert result.out.splitlines()[1].endswith(" MiB")  # what was copied, not 0 B
    assert result.err == ""
    missing = cli("--repo", tmp_path / "dest", "pull-local", tmp_path / "src-repo", "nope")
    assert missing.code != 0 and len(missing.err.splitlines()) == 1
