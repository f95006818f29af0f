"""diff --stat, diff -- PATH and show --stat on the shared 24-commit history.

What should change comes from the history's manifests (the tree as the filesystem
showed it at each commit, made without sapwood) and file sizes from reading each
file's content out of the repository, never from diff_trees or store.treestat.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import sapwood
from tests.helpers import cli
from tests.history_tree import DOC, SSHD, Entry, HistoryCommit, HistoryTree

Manifest = Mapping[str, Entry]
COUNT_KEYS = ("added", "modified", "deleted", "bytes_added", "bytes_removed")


def parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def kind(manifest: Manifest, path: str) -> str | None:
    entry = manifest.get(path)
    return None if entry is None else str(entry[0])


def content_size(history: HistoryTree, commit_id: str, path: str) -> int:
    """The length of a regular file's content, read out of the repository."""
    with sapwood.Repository.open(history.repo_path) as repo:
        node = sapwood.lookup(repo, sapwood.from_hex(commit_id), path)
        assert node.file is not None
        with repo.open_file(node.file) as stream:
            return len(stream.read())


def expected_stat(
    history: HistoryTree, old: HistoryCommit | None, new: HistoryCommit, top: str = "/"
) -> dict[str, Any]:
    """diff --stat --json as docs/decisions.md defines it, entry by entry."""
    before: Manifest = {} if old is None else old.manifest
    groups: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNT_KEYS, 0))
    for path in (before.keys() | new.manifest.keys()) - {"/"}:
        a, b = before.get(path), new.manifest.get(path)
        if a == b or not (top == "/" or path == top or path.startswith(top + "/")):
            continue
        names = path.split("/")
        either_dir = "dir" in (kind(before, path), kind(new.manifest, path))
        counts = groups["/" + names[1] if len(names) > 2 or either_dir else "/"]
        counts["added" if a is None else "deleted" if b is None else "modified"] += 1
        if kind(new.manifest, path) == "file":
            counts["bytes_added"] += content_size(history, new.commit_id, path)
        if old is not None and kind(before, path) == "file":
            counts["bytes_removed"] += content_size(history, old.commit_id, path)
    total = {key: sum(c[key] for c in groups.values()) for key in COUNT_KEYS}
    lines = [{"path": path, **groups[path]} for path in sorted(groups)]
    return {"directories": lines, "total": total}


def expected_diff(old: Manifest, new: Manifest, top: str) -> list[list[str]]:
    """diff's A/M/D lines limited to ``top``: ``top`` itself, then each path below it
    whose parent is a directory on both sides."""
    found = []
    for path in (old.keys() | new.keys()) - {"/"}:
        if not (top == "/" or path == top or path.startswith(top + "/")):
            continue
        both_dirs = kind(old, parent(path)) == kind(new, parent(path)) == "dir"
        if path != top and not both_dirs:
            continue
        a, b = old.get(path), new.get(path)
        if a != b:
            found.append(["A" if a is None else "D" if b is None else "M", path])
    return sorted(found, key=lambda line: line[1].split("/"))


def sapwood_json(history: HistoryTree, *args: str) -> Any:
    result = cli("--repo", history.repo_path, args[0], "--json", *args[1:])  # before any --
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_show_stat_of_every_commit_counts_what_its_step_changed(
    history_tree: HistoryTree,
) -> None:
    previous = None
    for commit in history_tree.commits:
        shown = sapwood_json(history_tree, "show", "--stat", commit.commit_id)
        assert shown["commit"] == commit.commit_id
        assert shown["stat"] == expected_stat(history_tree, previous, commit), commit.subject
        previous = commit
    assert len(history_tree.commits) >= 20


def test_diff_stat_across_the_whole_history(history_tree: HistoryTree) -> None:
    first, last = history_tree.commits[0], history_tree.commits[-1]
    got = sapwood_json(history_tree, "diff", "--stat", first.commit_id, last.commit_id)
    assert got == expected_stat(history_tree, first, last)
    assert got["total"]["added"] and got["total"]["deleted"] and got["total"]["modified"]
    etc = sapwood_json(history_tree, "diff", "--stat", first.commit_id, "os/main", "--", "/etc")
    assert etc == expected_stat(history_tree, first, last, "/etc")
    assert [line["path"] for line in etc["directories"]] == ["/etc"]


def test_the_stat_text_shows_the_json_numbers(history_tree: HistoryTree) -> None:
    first, last = history_tree.commits[0], history_tree.commits[-1]
    args = ("diff", "--stat", first.commit_id, last.commit_id)
    text = cli("--repo", history_tree.repo_path, *args).out.splitlines()
    as_json = sapwood_json(history_tree, *args)
    assert text[0].split() == ["added", "modified", "deleted", "+bytes", "-bytes", "directory"]
    rows = list(as_json["directories"])
    rows.append({**as_json["total"], "path": "total"})
    assert [line.split() for line in text[1:]] == [
        [*(str(row[key]) for key in COUNT_KEYS), row["path"]] for row in rows
    ]
    assert len({len(line) - len(line.split()[-1]) for line in text}) == 1  # columns line up


def test_show_stat_text_is_the_commit_then_its_stat(history_tree: HistoryTree) -> None:
    commit = history_tree.by_kind("multi")
    plain = cli("--repo", history_tree.repo_path, "show", commit.commit_id).out
    with_stat = cli("--repo", history_tree.repo_path, "show", "--stat", commit.commit_id).out
    assert with_stat.startswith(plain)
    rest = with_stat[len(plain) :].splitlines()
    assert rest[0].split()[-1] == "directory" and rest[-1].split()[-1] == "total"
    assert [line.split()[-1] for line in rest[1:-1]] == ["/etc", "/usr"]


def test_nothing_changed_prints_nothing(history_tree: HistoryTree) -> None:
    same = history_tree.by_kind("none").commit_id
    assert cli("--repo", history_tree.repo_path, "diff", "--stat", same + "^", same).out == ""
    empty = sapwood_json(history_tree, "diff", "--stat", same + "^", same)
    assert empty == {"directories": [], "total": dict.fromkeys(COUNT_KEYS, 0)}


@pytest.mark.parametrize(
    "top",
    [SSHD, "/etc", "/etc/issue", "/etc/issue/net", "/etc/localtime", "/var/cache/thing", DOC],
)
def test_diff_limited_to_a_path_at_every_step(history_tree: HistoryTree, top: str) -> None:
    commits = history_tree.commits
    for old, new in [*itertools.pairwise(commits), (commits[0], commits[-1])]:
        got = sapwood_json(history_tree, "diff", old.commit_id, new.commit_id, "--", top)
        assert [[c["change"], c["path"]] for c in got] == expected_diff(
            old.manifest, new.manifest, top
        ), new.subject


def test_several_paths_and_the_text_form(history_tree: HistoryTree) -> None:
    first, last = history_tree.commits[0], history_tree.commits[-1]
    args = ("diff", first.commit_id, last.commit_id, "--", "/var", SSHD, "/etc/ssh")
    lines = cli("--repo", history_tree.repo_path, *args).out.splitlines()
    expected = expected_diff(first.manifest, last.manifest, "/etc/ssh")
    expected += expected_diff(first.manifest, last.manifest, "/var")
    assert [line.split() for line in lines] == expected and expected


def test_a_path_that_never_existed_gives_nothing(history_tree: HistoryTree) -> None:
    first, last = history_tree.commits[0].commit_id, history_tree.commits[-1].commit_id
    for options in ((), ("--stat",)):
        result = cli("--repo", history_tree.repo_path, "diff", *options, first, last, "--", "/nope")
        assert (result.code, result.out, result.err) == (0, "", "")


def test_bad_input_is_one_line_and_a_usage_exit(history_tree: HistoryTree, tmp_path: Path) -> None:
    first, last = history_tree.commits[0].commit_id, history_tree.commits[-1].commit_id
    cases = {
        ("diff", first, last, "--"): "needs at least one PATH",
        ("diff", "--stat", first, last, "--"): "needs at least one PATH",
        ("diff", first, last, "/etc"): "PATHs go after --",
        ("diff", "--stat", first, str(tmp_path)): "--stat compares two commits",
        ("diff", first, str(tmp_path), "--", "/etc"): "-- PATH compares two commits",
    }
    for args, words in cases.items():
        result = cli("--repo", history_tree.repo_path, *args)
        assert result.code == 2 and result.out == "", args
        assert result.err.count("\n") == 1 and words in result.err, (args, result.err)


def test_dot_dot_is_refused(history_tree: HistoryTree) -> None:
    first, last = history_tree.commits[0].commit_id, history_tree.commits[-1].commit_id
    for path in ("/etc/../usr", "..", "../etc"):
        result = cli("--repo", history_tree.repo_path, "diff", first, last, "--", path)
        assert result.code != 0 and result.out == ""
        assert result.err.count("\n") == 1 and "'..'" in result.err, result.err


def test_show_stat_of_a_commit_whose_parent_was_not_pulled(
    history_tree: HistoryTree, tmp_path: Path
) -> None:
    """pull-local copies the head commit alone: as git does at a shallow clone's
    boundary, and as log -p does, show --stat compares it with the empty tree."""
    shallow = tmp_path / "shallow"
    assert cli("--repo", shallow, "init").code == 0
    pulled = cli("--repo", shallow, "pull-local", history_tree.repo_path, history_tree.ref)
    assert pulled.code == 0, pulled.err
    head = history_tree.commits[-1]
    result = cli("--repo", shallow, "show", "--stat", "--json", history_tree.ref)
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    assert shown["parent"] == history_tree.commits[-2].commit_id
    assert shown["stat"] == expected_stat(history_tree, None, head)
    patch = cli("--repo", shallow, "log", "-p", history_tree.ref)
    assert patch.code == 0 and f"+++ b{SSHD}\n" in patch.out  # log -p agrees


def test_without_the_new_options_diff_is_as_before(history_tree: HistoryTree) -> None:
    """A '--' before the commits still only ends the options: `diff -- A B` is the
    whole diff of A and B, as it was before PATHs existed."""
    first, last = history_tree.commits[0].commit_id, history_tree.commits[-1].commit_id
    whole = cli("--repo", history_tree.repo_path, "diff", first, last)
    assert whole.code == 0 and whole.out
    assert cli("--repo", history_tree.repo_path, "diff", "--", first, last).out == whole.out
    lines = [line.split() for line in whole.out.splitlines()]
    assert lines == expected_diff(
        history_tree.commits[0].manifest, history_tree.commits[-1].manifest, "/"
    )
