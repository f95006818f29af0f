"""Changes to REPO/config do not lose each other (attack-history.md #5): config set read
the whole config, and a remote added before it wrote the config back vanished."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import store.config
import store.durability
from sapwood import ConfigValueError, RepoNotFoundError, Repository, set_config, unset_config
from store.pull.remotes import Remote, add_remote, list_remotes


def test_a_remote_added_during_config_set_is_kept(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Path(user_repo.path)
    writing, resume = threading.Event(), threading.Event()
    replace = store.durability.replace_file  # what store.config imports

    def slow_replace(*args: Any, **kwargs: Any) -> None:
        writing.set()  # set_config has read the config and is about to write it
        resume.wait(10)
        replace(*args, **kwargs)

    monkeypatch.setattr(store.config, "replace_file", slow_replace)
    setter = threading.Thread(target=set_config, args=(path, "core.fsync", "false"))
    setter.start()
    assert writing.wait(10)
    adder = threading.Thread(target=add_remote, args=(path, Remote("origin", "http://a/")))
    adder.start()
    adder.join(0.5)  # without the lock, the remote is written now and lost below
    resume.set()
    setter.join(10)
    adder.join(10)
    assert [remote.name for remote in list_remotes(path)] == ["origin"]
    assert store.config.get_config(path, "core.fsync") == "false"


def test_no_repository_is_still_said_so(tmp_path: Path) -> None:
    """The lock is taken in the repository: a path that is none is not made one."""
    with pytest.raises(RepoNotFoundError, match="not a sapwood repository"):
        set_config(tmp_path, "core.fsync", "false")
    with pytest.raises(RepoNotFoundError, match="not a sapwood repository"):
        add_remote(tmp_path / "missing", Remote("origin", "http://a/"))
    assert list(tmp_path.iterdir()) == []


def test_a_removed_tmp_is_made_again(user_repo: Repository) -> None:
    path = Path(user_repo.path)
    (path / "tmp").rmdir()
    set_config(path, "core.fsync", "false")
    assert store.config.get_config(path, "core.fsync") == "false"


def test_a_config_with_two_bad_values_is_repaired_one_key_at_a_time(
    user_repo: Repository,
) -> None:
    """Each change was checked against the whole new config, which still held the other
    bad value: neither could be set nor unset, and only a hand edit repaired it."""
    path = Path(user_repo.path)
    user_repo.close()
    with (path / "config").open("a") as config:
        config.write("min-free-space-percent = 500\nmin-free-space-size = lots\n")
    with pytest.raises(RepoNotFoundError):
        Repository.open(path)
    with pytest.raises(ConfigValueError):
        set_config(path, "core.min-free-space-percent", "101")  # still refused itself
    unset_config(path, "core.min-free-space-size")
    set_config(path, "core.min-free-space-percent", "5")
    Repository.open(path).close()


def test_set_and_unset_change_one_line_of_the_config(user_repo: Repository) -> None:
    """configparser rewrote the whole file: comments gone, every key of every section
    lower-cased (another tool's ``MyKey`` became ``mykey``)."""
    path = Path(user_repo.path)
    user_repo.close()
    text = (
        "# made by hand\n[core]\nrepo_version = 1\nmode = bare-user\n; fsync below\n"
        "FSYNC: true\n  continued\n\n[Custom]\nMyKey = Value\n"
    )
    (path / "config").write_text(text)
    set_config(path, "core.fsync", "false")
    set_config(path, "core.min-free-space-percent", "5")
    assert (path / "config").read_text() == text.replace(
        "FSYNC: true\n  continued\n", "fsync = false\nmin-free-space-percent = 5\n"
    )
    assert unset_config(path, "core.fsync") is True
    assert (path / "config").read_text() == text.replace(
        "FSYNC: true\n  continued\n", "min-free-space-percent = 5\n"
    )
    Repository.open(path).close()
