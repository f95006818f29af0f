"""sapwood config get|set|unset|list, and the library functions beneath it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sapwood import (
    ConfigKeyError,
    ConfigValueError,
    Repository,
    get_config,
    list_config,
    set_config,
    unset_config,
)
from tests.helpers import cli, run


def _config(repo_path: Path, *args: str) -> tuple[int, str, str]:
    result = cli("--repo", repo_path, "config", *args)
    return result.code, result.out, result.err


def test_get_set_unset_round_trip(repo_path: Path) -> None:
    assert _config(repo_path, "get", "core.fsync") == (0, "true\n", "")
    assert _config(repo_path, "get", "core.mode") == (0, "bare-user\n", "")
    assert _config(repo_path, "get", "core.min-free-space-size") == (1, "", "")  # as git
    assert _config(repo_path, "set", "core.min-free-space-size", "500MB") == (0, "", "")
    assert _config(repo_path, "set", "core.fsync", "false") == (0, "", "")
    assert _config(repo_path, "get", "core.min-free-space-size") == (0, "500MB\n", "")
    with Repository.open(repo_path) as repo:  # what the repository now does
        assert repo.space.size == 500 * 1000**2 and repo.fsync is False
    assert _config(repo_path, "unset", "core.min-free-space-size") == (0, "", "")
    assert _config(repo_path, "unset", "core.min-free-space-size") == (0, "", "")  # no-op
    assert _config(repo_path, "get", "core.min-free-space-size") == (1, "", "")
    code, out, _ = _config(repo_path, "list")
    assert code == 0 and out.splitlines() == [
        "core.repo_version=1",
        "core.mode=bare-user",
        "core.fsync=false",
    ]
    code, out, _ = _config(repo_path, "list", "--json")
    assert json.loads(out) == {
        "core.repo_version": "1",
        "core.mode": "bare-user",
        "core.fsync": "false",
    }


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("core.fsync", "maybe", "Not a boolean: maybe"),
        ("core.min-free-space-percent", "100", "is not between 0 and 99"),
        ("core.min-free-space-percent", "-1", "is not between 0 and 99"),
        ("core.min-free-space-percent", "x", "is not between 0 and 99"),
        ("core.min-free-space-percent", "5_0", "is not between 0 and 99"),
        ("core.min-free-space-percent", "\u0663", "is not between 0 and 99"),
        ("core.min-free-space-size", "\u0661MB", "is not a size like 500MB"),
        ("core.min-free-space-size", "99999999999999999999GB", "is not a size like 500MB"),
        ("core.min-free-space-size", "lots", "is not a size like 500MB"),
        ("core.min-free-space-size", "5 parsecs", "is not a size like 500MB"),
        ("core.fsync", " true", "would not read back as it is"),
        ("core.fsync", "true\n[core]", "is not a setting (printable"),
        ("core.fsync", "x" * 5000, "is not a setting (printable"),
    ],
)
def test_a_value_the_repository_would_refuse_is_never_written(
    repo_path: Path, key: str, value: str, says: str
) -> None:
    before = (repo_path / "config").read_bytes()
    code, out, err = _config(repo_path, "set", key, value)
    assert code == 2 and out == ""
    assert err.startswith("sapwood: error: ") and says in err and err.count("\n") == 1, err
    assert (repo_path / "config").read_bytes() == before
    with pytest.raises(ConfigValueError) as info:
        set_config(repo_path, key, value)
    assert info.value.key == key and info.value.value == value
    Repository.open(repo_path).close()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ("set", "core.bogus", "1"),
            "'core.bogus' is not a repository setting; settable: core.fsync",
        ),
        (("unset", "core.bogus"), "is not a repository setting; settable: core.fsync"),
        (("get", "core.bogus"), "known: core.mode, core.repo_version, core.fsync"),
        (("get", "fsync"), "not a repository setting"),
        (("get", ""), "not a repository setting"),
        (("get", "remote.origin.colour"), "remote.NAME.url"),
        (("set", "core.mode", "archive"), "is fixed when the repository is made"),
        (("unset", "core.repo_version"), "is fixed when the repository is made"),
        (("set", "remote.origin.url", "http://x/"), "delete the remote and add it again"),
        (("set", "k" * 10_000, "1"), "'" + "k" * 60 + "...' is not a repository setting"),
    ],
)
def test_unknown_and_fixed_keys_are_refused(
    repo_path: Path, args: tuple[str, ...], says: str
) -> None:
    before = (repo_path / "config").read_bytes()
    code, out, err = _config(repo_path, *args)
    assert code == 2 and out == "" and says in err and err.count("\n") == 1, err
    assert len(err) < 400
    assert (repo_path / "config").read_bytes() == before


def test_remote_settings_can_be_read(repo_path: Path) -> None:
    result = cli("--repo", repo_path, "remote", "add", "origin", "https://example.org/repo/")
    assert result.code == 0, result.err
    assert _config(repo_path, "get", "remote.origin.url") == (0, "https://example.org/repo/\n", "")
    assert _config(repo_path, "get", "remote.origin.sign-verify") == (0, "false\n", "")
    assert _config(repo_path, "get", "remote.origin.trusted-keys") == (1, "", "")
    assert _config(repo_path, "get", "remote.other.url") == (1, "", "")
    assert ("remote.origin.url", "https://example.org/repo/") in list_config(repo_path)
    set_config(repo_path, "core.fsync", "false")  # the remote's section is kept
    assert get_config(repo_path, "remote.origin.url") == "https://example.org/repo/"


def test_a_broken_setting_can_be_repaired(repo_path: Path) -> None:
    """A value written by hand that the repository refuses to open with: config does
    not need to open the repository, so it can unset or fix it."""
    text = (repo_path / "config").read_text() + "min-free-space-size = lots\n"
    (repo_path / "config").write_text(text)
    assert cli("--repo", repo_path, "refs").code == 2
    code, _, err = _config(repo_path, "set", "core.fsync", "false")
    assert code == 2 and "is not a size like 500MB" in err  # still refused: it would not open
    assert unset_config(repo_path, "core.min-free-space-size") is True
    assert unset_config(repo_path, "core.min-free-space-size") is False
    assert cli("--repo", repo_path, "refs").code == 0


def test_the_config_is_replaced_atomically(repo_path: Path) -> None:
    """A new file renamed over the old one (readers see either), mode 0644, and no
    temporary file left beside it; a planted config.tmp symlink is not followed."""
    victim = repo_path.parent / "victim"
    victim.write_text("keep\n")
    (repo_path / "config.tmp").symlink_to(victim)
    inode = os.stat(repo_path / "config").st_ino
    set_config(repo_path, "core.min-free-space-percent", "5")
    assert os.stat(repo_path / "config").st_ino != inode
    assert os.stat(repo_path / "config").st_mode & 0o777 == 0o644
    assert victim.read_text() == "keep\n"
    assert sorted(
        p.name for p in repo_path.iterdir() if p.name.startswith((".config", "config"))
    ) == [
        "config",
        "config.tmp",
    ]


def test_library_errors_carry_the_key(repo_path: Path) -> None:
    with pytest.raises(ConfigKeyError) as info:
        set_config(repo_path, "core.mode", "archive")
    assert info.value.key == "core.mode" and "core.fsync" in info.value.known
    with pytest.raises(ConfigKeyError):
        get_config(repo_path, "nothing")


def test_config_of_no_repository(tmp_path: Path) -> None:
    result = run("config", "get", "core.fsync", repo=tmp_path / "none", text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert "not a sapwood repository" in result.stderr and result.stderr.count("\n") == 1
    result = run("config", text=True, repo=tmp_path)
    assert result.returncode == 2 and "config" in result.stderr
