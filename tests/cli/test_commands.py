"""Every command, through the command line, on a repository in every mode."""

from __future__ import annotations

import json
import os
from pathlib import Path

from store import RepoMode, Repository
from tests.helpers import build_rich_tree, cli, run


def _setup(repo: Repository, tmp_path: Path) -> tuple[Path, str, str]:
    source = tmp_path / "src"
    build_rich_tree(source, setuid=False)
    first = cli(
        "--repo",
        repo.path,
        "commit",
        "-b",
        "os/main",
        "-s",
        "first",
        "-m",
        "body text",
        "--add-metadata-string",
        "version=1.0",
        source,
    )
    assert first.code == 0, first.err
    (source / "etc" / "passwd").write_text("changed\n")
    (source / "added").write_text("new\n")
    (source / "dup-a").unlink()
    second = cli("--repo", repo.path, "commit", "-b", "os/main", "-s", "second", source)
    assert second.code == 0, second.err
    return source, first.out.strip(), second.out.strip()


def test_commit_prints_only_the_id(repo: Repository, tmp_path: Path) -> None:
    _, first, second = _setup(repo, tmp_path)
    assert len(first) == 64 and len(second) == 64 and first != second


def test_log_show_rev_parse(repo: Repository, tmp_path: Path) -> None:
    _, first, second = _setup(repo, tmp_path)
    log = cli("--repo", repo.path, "log", "os/main")
    assert log.out.index(second) < log.out.index(first)
    assert "Version: 1.0" in log.out and "    first" in log.out and "    body text" in log.out
    entries = json.loads(cli("--repo", repo.path, "log", "--json", "os/main").out)
    assert [e["commit"] for e in entries] == [second, first]
    assert entries[1]["metadata"] == {"version": "1.0"}
    shown = json.loads(cli("--repo", repo.path, "show", "--json", "os/main^").out)
    assert shown["commit"] == first and shown["parent"] is None
    assert cli("--repo", repo.path, "show", first[:8]).out.startswith(f"commit {first}")
    assert cli("--repo", repo.path, "rev-parse", "os/main~1").out.strip() == first
    assert cli("--repo", repo.path, "rev-parse", second[:6]).out.strip() == second


def test_diff(repo: Repository, tmp_path: Path) -> None:
    _, first, second = _setup(repo, tmp_path)
    lines = cli("--repo", repo.path, "diff", first, second).out.splitlines()
    assert [line.split() for line in lines] == [
        ["A", "/added"],
        ["D", "/dup-a"],
        ["M", "/etc/passwd"],
    ]
    assert cli("--repo", repo.path, "diff", second, second).out == ""


def test_ls_and_cat(repo: Repository, tmp_path: Path) -> None:
    _setup(repo, tmp_path)
    top = cli("--repo", repo.path, "ls", "os/main").out.splitlines()
    assert top[0].endswith(" /") and any(line.endswith(" /lib -> usr/lib") for line in top)
    assert not any("/usr/bin/" in line for line in top)
    deep = cli("--repo", repo.path, "ls", "-R", "os/main", "/usr").out
    assert "/usr/bin/sh -> dash" in deep
    xattrs = cli("--repo", repo.path, "ls", "-X", "os/main", "/etc/passwd").out
    keeps_xattrs = repo.mode is not RepoMode.BARE_USER_ONLY
    assert ("user.comment=" + b"hello".hex() in xattrs) == keeps_xattrs
    one = cli("--repo", repo.path, "ls", "os/main", "/etc/passwd").out.split()
    assert one[0] == "-00644" and one[3] == str(len("changed\n"))
    assert cli("--repo", repo.path, "cat", "os/main", "/etc/passwd").out == "changed\n"
    assert (
        cli("--repo", repo.path, "cat", "os/main", "usr/bin/big").raw
        == (tmp_path / "src/usr/bin/big").read_bytes()
    )


def test_refs_create_list_delete(repo: Repository, tmp_path: Path) -> None:
    _, first, _ = _setup(repo, tmp_path)
    assert cli("--repo", repo.path, "refs", "--create", "pinned/old", first).code == 0
    assert cli("--repo", repo.path, "refs").out.split() == ["os/main", "pinned/old"]
    listed = json.loads(cli("--repo", repo.path, "refs", "--json").out)
    assert {"name": "pinned/old", "commit": first} in listed
    assert cli("--repo", repo.path, "refs", "--delete", "pinned/old").code == 0
    assert cli("--repo", repo.path, "refs").out.split() == ["os/main"]


def test_sapwood_repo_environment_and_real_process(repo: Repository, tmp_path: Path) -> None:
    _setup(repo, tmp_path)
    env = {**os.environ, "SAPWOOD_REPO": str(repo.path)}
    proc = run("refs", env=env)
    assert proc.returncode == 0 and proc.stdout.decode().split() == ["os/main"]
    assert run("--repo", repo.path, "cat", "os/main", "/empty-file").stdout == b""


def test_init_modes_and_tree_options(tmp_path: Path) -> None:
    for mode in ("bare-user", "bare-user-only", "archive"):
        assert cli("--repo", tmp_path / mode, "init", "--mode", mode).code == 0
        assert Repository.open(tmp_path / mode).mode.value == mode
    source = tmp_path / "src"
    (source / "a").mkdir(parents=True)
    (source / "a" / "f").write_text("f")
    overrides = tmp_path / "stat.txt"
    overrides.write_text("# comment\n=0o600 /a/f\n")
    skip = tmp_path / "skip.txt"
    skip.write_text("/a/never\n")
    result = cli(
        "--repo",
        tmp_path / "archive",
        "commit",
        "-b",
        "x",
        f"--tree=dir={source}",
        "--statoverride",
        overrides,
        "--skip-list",
        skip,
        "--owner-uid",
        "5",
        "--timestamp",
        "2020-01-02T03:04:05",
    )
    assert result.code == 0, result.err
    listing = json.loads(cli("--repo", tmp_path / "archive", "ls", "--json", "x", "/a/f").out)[0]
    assert (listing["mode"], listing["uid"]) == ("-00600", 5)
    shown = json.loads(cli("--repo", tmp_path / "archive", "show", "--json", "x").out)
    assert shown["timestamp"] == 1577934245
