"""config: what list shows, get reads (review6.md 14); a writer's stray temporary file
is cleaned up (attack-history.md 17); only booleans OSTree reads are written (18)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sapwood import Repository
from tests.helpers import cli


def _config(repo_path: Path, *args: str) -> tuple[int, str, str]:
    result = cli("--repo", repo_path, "config", *args)
    return result.code, result.out, result.err


def test_every_listed_key_can_be_read(repo_path: Path) -> None:
    with open(repo_path / "config", "a") as config:
        config.write('foo = bar\n[Custom]\nmykey = Value\n[remote "a.b"]\nurl = http://x/\n')
        config.write("colour = blue\n")
    listed = _config(repo_path, "list")[1].splitlines()
    assert "core.foo=bar" in listed and "Custom.mykey=Value" in listed
    for line in listed:
        key, _, value = line.partition("=")
        assert _config(repo_path, "get", key) == (0, value + "\n", ""), key
    assert _config(repo_path, "get", "remote.a.b.colour") == (0, "blue\n", "")
    code, out, err = _config(repo_path, "get", "core.fo")  # not held and not known: a typo
    assert code == 2 and out == "" and "'core.fo' is not a repository setting" in err


def test_an_unknown_key_of_no_repository_says_the_key(tmp_path: Path) -> None:
    code, _, err = _config(tmp_path / "none", "get", "core.bogus")
    assert code != 0 and "'core.bogus' is not a repository setting" in err


def test_a_dead_writers_temporary_file_is_removed_by_the_next_change(repo_path: Path) -> None:
    stray = repo_path / ".config.tmp-abc123"  # as replace_file names it, left by a crash
    stray.write_text("[core]\nfsync = fals")
    other = repo_path / ".config-not-a-temporary"
    other.write_text("kept")
    assert _config(repo_path, "set", "core.fsync", "false") == (0, "", "")
    assert not stray.exists() and other.exists()
    stray.write_text("again")
    assert _config(repo_path, "unset", "core.fsync") == (0, "", "")
    assert not stray.exists()
    assert sorted(p.name for p in repo_path.glob(".config*")) == [other.name]


@pytest.mark.parametrize("value", ["on", "off", "yes", "no", "True", "FALSE"])
def test_booleans_ostree_does_not_read_are_refused(repo_path: Path, value: str) -> None:
    before = (repo_path / "config").read_bytes()
    code, out, err = _config(repo_path, "set", "core.fsync", value)
    assert code != 0 and out == ""
    assert err == (
        f"sapwood: error: core.fsync: {value!r} refused: OSTree reads only true, false, 1 or 0\n"
    )
    assert (repo_path / "config").read_bytes() == before


@pytest.mark.parametrize(("value", "durable"), [("true", True), ("0", False), ("1", True)])
def test_booleans_ostree_reads_are_written(repo_path: Path, value: str, durable: bool) -> None:
    assert _config(repo_path, "set", "core.fsync", value) == (0, "", "")
    assert _config(repo_path, "get", "core.fsync") == (0, value + "\n", "")
    with Repository.open(repo_path) as opened:
        assert opened.fsync is durable


def test_a_hand_written_yes_still_opens(repo_path: Path) -> None:
    text = (repo_path / "config").read_text()
    (repo_path / "config").write_text(text.replace("fsync = true", "fsync = no"))
    with Repository.open(repo_path) as opened:
        assert opened.fsync is False
    assert _config(repo_path, "get", "core.fsync") == (0, "no\n", "")
