"""REPO/config: reading it, checking it and writing it. It holds the repository's
mode and [core] settings (fixed or checked here) and other sections that their
readers check (remotes: store/pull/remotes.py). ``sapwood config`` edits it by key
through store/config.py."""

from __future__ import annotations

import configparser
import io
import os
import stat
from pathlib import Path
from typing import cast

from store.durability import replace_file
from store.errors import ModePolicyError, RepoNotFoundError
from store.modes import RepoMode
from store.space import SpacePolicy

REPO_VERSION = 1


def read_config(path: Path) -> tuple[RepoMode, configparser.SectionProxy]:
    """The mode and the [core] section of the repository at ``path``."""
    mode, config = read_config_file(path)
    return mode, config["core"]


def read_config_file(path: Path) -> tuple[RepoMode, configparser.ConfigParser]:
    """The mode and the whole config of the repository at ``path`` (its [core] checked;
    other sections, such as remotes (store/pull/remotes.py), are their readers' to check)."""
    if "\0" in os.fspath(path):
        raise RepoNotFoundError(f"{str(path)!r}: not a sapwood repository", path=path)
    try:
        text = _config_text(path / "config")
    except UnicodeDecodeError as exc:
        raise RepoNotFoundError(
            f"{path}/config: not a readable repository config ({exc})", path=path
        ) from None
    return parse_config(path, text)


def parse_config(path: Path, text: str | None) -> tuple[RepoMode, configparser.ConfigParser]:
    """The mode and the config that ``text`` holds, checked as read_config_file checks
    the config of the repository at ``path`` (None: there is no readable config)."""
    config = configparser.ConfigParser(interpolation=None)  # '%' is a plain character
    try:
        if text is not None:
            # the source as config.read() named it (a Path): messages show its repr
            source = cast(str, path / "config")
            config.read_file(io.StringIO(text, newline=None), source=source)
    except configparser.Error as exc:
        raise RepoNotFoundError(
            f"{path}/config: not a readable repository config ({exc})", path=path
        ) from None
    if text is None or not config.has_section("core"):
        raise RepoNotFoundError(f"{path}: not a sapwood repository", path=path)
    core = config["core"]
    if core.get("repo_version") != str(REPO_VERSION):
        raise RepoNotFoundError(
            f"{path}: unsupported repository version {core.get('repo_version')}", path=path
        )
    try:
        mode = RepoMode.parse(core.get("mode", ""))
    except ModePolicyError as exc:
        raise RepoNotFoundError(f"{path}/config: {exc}", path=path) from None
    return mode, config


def core_settings(path: Path, core: configparser.SectionProxy) -> tuple[SpacePolicy, bool]:
    """The free-space policy and the fsync setting of a repository's [core] section;
    RepoNotFoundError if one of them is not valid (Repository.open refuses it)."""
    try:
        return settings_of(core)
    except ValueError as exc:
        raise RepoNotFoundError(
            f"{path}/config: a bad repository setting: {exc}", path=path
        ) from None


def settings_of(core: configparser.SectionProxy) -> tuple[SpacePolicy, bool]:
    """The free-space policy and the fsync setting of [core]; ValueError saying which
    setting is not valid."""
    return SpacePolicy.from_config(core), core.getboolean("fsync", fallback=True)


def write_config(path: Path, config: configparser.ConfigParser, fsync: bool = True) -> None:
    """Replace the config of the repository at ``path`` atomically (a new file, made
    durable unless ``fsync`` is off, renamed over the old one): a crash leaves the old
    config or the new."""
    text = io.StringIO()
    config.write(text)
    replace_file(path, "config", text.getvalue().encode(), fsync)


_CONFIG_MAX = 1 << 20


def _config_text(config: Path) -> str | None:
    """The text of a repository's config; None if it cannot be read, is not a regular
    file (a FIFO there would hang every command: opened without blocking, never read)
    or is too large to be one."""
    try:
        fd = os.open(config, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, _CONFIG_MAX + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8") if len(data) <= _CONFIG_MAX else None
