"""attack8.md 7: a '--' after the first is a PATH, as git reads it. argparse drops it
from the PATHs, and the words left over were counted as revisions: `diff A B -- x --`
said x was a PATH with a revision missing, `log -p main -- --` showed every change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sapwood import Repository, diff_stat, rev_parse, root_node
from tests.helpers import cli, cli_commits, write_tree


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    assert cli("--repo", path, "init").code == 0
    for version in ("1", "2"):
        tree = write_tree(tmp_path / f"t{version}", {"x": f"{version}\n", "--": f"{version}\n"})
        if version == "2":
            (tree / "--").write_text("1\n")  # unchanged: only x changes
        done = cli("--repo", path, "commit", "-b", "main", "--timestamp", version, tree)
        assert done.code == 0, done.err
    return path


def test_a_second_separator_is_a_path_of_diff(repo: Path) -> None:
    done = cli("--repo", repo, "diff", "main^", "main", "--", "x", "--")
    assert (done.code, done.err) == (0, "")
    assert done.out.split() == ["M", "/x"]


def test_a_second_separator_is_a_path_of_log(repo: Path) -> None:
    done = cli("--repo", repo, "log", "-p", "main", "--", "--")
    assert done.code == 0, done.err
    assert done.out.count("\ncommit ") == 0 and done.out.startswith("commit ")  # one commit
    assert "diff --git a/-- b/--\nnew file mode" in done.out  # the one that added '/--'
    assert "a/x" not in done.out


@pytest.mark.parametrize(
    "args",
    [("log", "--", ""), ("log", "-p", "--", ""), ("diff", "--", "", "main")],
)
def test_an_empty_word_after_the_separator_is_an_empty_path(
    repo: Path, args: tuple[str, ...]
) -> None:
    """attack8.md 8: `log -- ""` said 'empty revision' (the word went to the REV); it is
    refused as `log main -- ""` is, the way git refuses an empty pathspec."""
    done = cli("--repo", repo, *args)
    assert (done.code, done.out) == (2, "")
    assert done.err == f"sapwood: error: {args[0]}: '' is not a PATH (the whole tree is /)\n"


@pytest.fixture
def file_and_dirs(tmp_path: Path) -> Path:
    """main^ -> main: the file /mode and the symlink /link change, so does /d/f, and the
    file /t becomes a directory holding g."""
    one = write_tree(tmp_path / "1", {"mode": "1\n", "link": "->d", "d/f": "1\n", "t": "file\n"})
    two = write_tree(tmp_path / "2", {"mode": "2\n", "link": "->e", "d/f": "2\n", "t/g": "dir\n"})
    return cli_commits(tmp_path / "repo", one, two)


def test_a_trailing_slash_names_a_directory_only(file_and_dirs: Path) -> None:
    """attack8.md 12: `log main -- /mode/` matched the file /mode (and /link/ a symlink);
    a git pathspec `mode/` matches a directory only."""
    repo = file_and_dirs

    def shown(*paths: str) -> list[list[str]]:
        done = cli("--repo", repo, "log", "--json", "main", "--", *paths)
        assert done.code == 0, done.err
        return [commit["paths"] for commit in json.loads(done.out)]

    assert shown("/mode/") == [] and shown("/link/") == []
    assert shown("/mode") == [["/mode"], ["/mode"]]
    assert shown("/d/") == [["/d"], ["/d"]]
    assert shown("/t/") == [["/t"]]  # a directory since the second commit only
    assert shown("/t") == [["/t"], ["/t"]]
    assert shown("/mode/", "mode") == [["/mode"], ["/mode"]]  # without the slash too: the file
    patch = cli("--repo", repo, "log", "-p", "main", "--", "t/").out
    assert "b/t/g" in patch and "a/t b/t" not in patch  # the file /t is no part of it


def test_diff_reads_a_trailing_slash_as_log_does(file_and_dirs: Path) -> None:
    """diff -- PATH/ follows the same rule: it showed the file /mode for /mode/."""

    def shown(*args: str) -> str:
        done = cli("--repo", file_and_dirs, "diff", *args)
        assert done.code == 0, done.err
        return done.out

    for path in ("/mode/", "/link/"):
        assert shown("main^", "main", "--", path) == ""
        assert shown("--stat", "main^", "main", "--", path) == ""
    assert shown("main^", "main", "--", "/mode/", "/mode").split() == ["M", "/mode"]
    assert shown("main^", "main", "--", "/d/").split() == ["M", "/d/f"]
    assert shown("main^", "main", "--", "/t/").split() == ["A", "/t"]  # the file was no part
    assert shown("main^", "main", "--", "/t").split() == ["M", "/t"]
    with Repository.open(file_and_dirs) as repo:  # a root commit: all added
        root = root_node(repo, rev_parse(repo, "main"))
        assert diff_stat(repo, None, root, ["/mode/"]).total.added == 0
        assert diff_stat(repo, None, root, ["/mode"]).total.added == 1
