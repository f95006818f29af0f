"""`sapwood log REV -- PATH...` (issue 14) on the shared 24-commit history: the exact
commits per kind of change (expected from the fixture's filesystem manifests), --json,
-p for text, binary, added, deleted and mode changes, and the bad input."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import cli, run
from tests.history_tree import CHANGE_KINDS, DOC, SSHD, TOOL, HistoryTree

JSON_KEYS = {"commit", "parent", "timestamp", "subject", "body", "metadata", "tree", "meta"}


def _log(history_tree: HistoryTree, *args: str) -> tuple[int, str, str]:
    result = cli("--repo", history_tree.repo_path, "log", *args)
    return result.code, result.out, result.err


def _ids(out: str) -> list[str]:
    return re.findall(r"^commit ([0-9a-f]{64})$", out, flags=re.M)


def _sections(out: str) -> dict[str, str]:
    """log -p's output cut at each commit line: id -> its header, message and diff."""
    parts = re.split(r"^commit ([0-9a-f]{64})\n", out, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("kind", CHANGE_KINDS)
def test_each_kind_of_change(history_tree: HistoryTree, kind: str) -> None:
    step = history_tree.step_or_skip(kind)
    for path in step.paths:
        code, out, err = _log(history_tree, history_tree.ref, "--", path)
        assert (code, err) == (0, "")
        assert step.commit_id in _ids(out)
        assert _ids(out) == history_tree.changed(path)


def test_directories_and_several_paths(history_tree: HistoryTree) -> None:
    for paths in (["/etc/ssh"], [DOC], ["/etc/motd", TOOL], ["/etc/ssh", "/usr/lib/deep"]):
        code, out, _ = _log(history_tree, history_tree.ref, "--", *paths)
        assert code == 0
        assert _ids(out) == history_tree.changed(*paths), paths
    code, out, _ = _log(history_tree, history_tree.ref, "--", "etc/ssh/", "//usr/lib/./deep/")
    assert _ids(out) == history_tree.changed("/etc/ssh", "/usr/lib/deep")


def test_patch_without_paths_diffs_whole_commits(history_tree: HistoryTree) -> None:
    code, out, _ = _log(history_tree, "-p", history_tree.ref)
    sections = _sections(out)
    assert code == 0 and list(sections) == history_tree.ids_newest_first()
    both = sections[history_tree.by_kind("multi").commit_id]
    assert "+PermitRootLogin prohibit-password\n" in both
    assert "Binary files a/usr/bin/tool and b/usr/bin/tool differ\n" in both
    assert "diff --git" not in sections[history_tree.by_kind("none").commit_id]
    renamed = sections[history_tree.by_kind("dir-rename").commit_id]
    old, new = history_tree.by_kind("dir-rename").paths
    assert f"--- a{old}/copyright\n+++ /dev/null\n" in renamed
    assert f"--- /dev/null\n+++ b{new}/copyright\n" in renamed


def test_plain_log_is_unchanged(history_tree: HistoryTree) -> None:
    code, out, _ = _log(history_tree, history_tree.ref)
    assert code == 0 and _ids(out) == history_tree.ids_newest_first()
    assert "diff --git" not in out
    code, out, _ = _log(history_tree, history_tree.ref, "--json")
    shown = json.loads(out)
    assert [c["commit"] for c in shown] == history_tree.ids_newest_first()
    assert all(set(c) == JSON_KEYS for c in shown)


def test_json_lists_the_commits_and_the_paths_each_changed(history_tree: HistoryTree) -> None:
    code, out, _ = _log(history_tree, "--json", history_tree.ref, "--", "/etc/motd", TOOL)
    assert code == 0
    shown = json.loads(out)
    assert [c["commit"] for c in shown] == history_tree.changed("/etc/motd", TOOL)
    for entry in shown:
        assert set(entry) == JSON_KEYS | {"paths"}
        expected = [p for p in ("/etc/motd", TOOL) if entry["commit"] in history_tree.changed(p)]
        assert entry["paths"] == expected
    code, out, _ = _log(history_tree, "--json", "-p", history_tree.ref, "--", SSHD)
    first_edit = history_tree.by_kind("content").commit_id
    patches = {c["commit"]: c["patch"] for c in json.loads(out)}
    assert "+PermitRootLogin no\n" in patches[first_edit]


def test_patch_of_a_text_change(history_tree: HistoryTree) -> None:
    code, out, _ = _log(history_tree, "-p", history_tree.ref, "--", SSHD)
    assert code == 0
    section = _sections(out)[history_tree.by_kind("content").commit_id]
    diff = section[section.index("diff --git") :]
    lines = diff.splitlines()
    assert lines[0] == "diff --git a/etc/ssh/sshd_config b/etc/ssh/sshd_config"
    assert re.fullmatch(r"index [0-9a-f]{7}\.\.[0-9a-f]{7} 100644", lines[1])
    assert lines[2:4] == ["--- a/etc/ssh/sshd_config", "+++ b/etc/ssh/sshd_config"]
    assert lines[4] == "@@ -8,7 +8,7 @@"  # three lines of context around line 11
    assert [line for line in lines if line[:1] in "+-" and line[:3] not in ("---", "+++")] == [
        "-PermitRootLogin yes",
        "+PermitRootLogin no",
    ]


def test_patch_of_a_binary_change_and_a_mode_change(history_tree: HistoryTree) -> None:
    code, out, _ = _log(history_tree, "-p", history_tree.ref, "--", TOOL)
    assert code == 0
    sections = _sections(out)
    binary = sections[history_tree.by_kind("binary").commit_id]
    assert "Binary files a/usr/bin/tool and b/usr/bin/tool differ\n" in binary
    assert "@@" not in binary
    mode = sections[history_tree.by_kind("mode").commit_id]
    assert "old mode 100755\nnew mode 100700\n" in mode
    assert "index " not in mode  # the content is the same: nothing else to show
    added = sections[history_tree.commits[0].commit_id]
    assert "new file mode 100755\n" in added
    assert "Binary files /dev/null and b/usr/bin/tool differ\n" in added


def test_patch_of_added_and_deleted_files_is_against_dev_null(history_tree: HistoryTree) -> None:
    code, out, _ = _log(history_tree, "-p", history_tree.ref, "--", "/etc/motd", "/etc/ssh")
    assert code == 0
    sections = _sections(out)
    deleted = sections[history_tree.by_kind("delete").commit_id]
    assert "deleted file mode 100644\n" in deleted
    assert "--- a/etc/motd\n+++ /dev/null\n@@ -1 +0,0 @@\n-Welcome.\n" in deleted
    added = sections[_add_step(history_tree)]
    assert "--- /dev/null\n+++ b/etc/ssh/ssh_config.d/local.conf\n" in added
    assert "+Host *\n+  ForwardAgent no\n" in added


def _add_step(history_tree: HistoryTree) -> str:
    """The commit that added /etc/ssh/ssh_config.d/local.conf (commit 0 is an "add" too)."""
    return next(
        c.commit_id
        for c in history_tree.commits
        if c.paths == ("/etc/ssh/ssh_config.d/local.conf",)
    )


def test_patch_of_a_type_change_is_a_deletion_and_an_addition(history_tree: HistoryTree) -> None:
    code, out, _ = _log(history_tree, "-p", history_tree.ref, "--", "/etc/localtime")
    assert code == 0
    section = _sections(out)[history_tree.by_kind("file-to-symlink").commit_id]
    assert "deleted file mode 100644\n" in section
    assert "Binary files a/etc/localtime and /dev/null differ\n" in section
    assert "+++ b/etc/localtime\n@@ -0,0 +1 @@\n+/usr/share/zoneinfo/UTC\n" in section


@pytest.mark.parametrize("path", ["/never/existed", "/usr/bin/tool/below-a-file"])
def test_a_path_that_never_existed_prints_nothing(history_tree: HistoryTree, path: str) -> None:
    assert _log(history_tree, history_tree.ref, "--", path) == (0, "", "")


def test_bad_input(history_tree: HistoryTree) -> None:
    code, out, err = _log(history_tree, history_tree.ref, "--")
    assert (code, out) == (2, "") and err.count("\n") == 1 and "PATH" in err
    for args in ([SSHD], ["/etc", "--", SSHD]):  # PATHs go after --, as diff's
        code, out, err = _log(history_tree, history_tree.ref, *args)
        assert (code, out) == (2, "") and "unrecognized arguments" in err and "--" in err
    code, out, err = _log(history_tree, "no/such/ref", "--", "/etc")
    assert (code, out) == (1, "") and "no/such/ref: no such ref or commit" in err
    code, out, err = _log(history_tree, history_tree.ref, "--", "/etc/../usr")
    assert code != 0 and out == "" and err.count("\n") == 1 and "'..'" in err


def test_as_a_real_process(history_tree: HistoryTree) -> None:
    """argv as a shell passes it: `--` with no path is refused, a real path listed."""
    proc = run("log", history_tree.ref, "--", repo=history_tree.repo_path, text=True)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    proc = run("log", history_tree.ref, "--", SSHD, repo=history_tree.repo_path, text=True)
    assert proc.returncode == 0 and _ids(proc.stdout) == history_tree.changed(SSHD)
