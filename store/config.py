"""A repository's settings by key (``sapwood config``): ``core.fsync``, ``remote.origin.url``.

A key is SECTION.OPTION of REPO/config; a remote's is ``remote.NAME.OPTION`` (its
section is ``[remote "NAME"]``, as OSTree writes it). Every key can be read. Only
the [core] settings below can be set or unset, each checked by the code that
Repository.open runs on the whole new config before it is written (one atomic
replace): a value the repository would refuse to open with is never written.
``core.mode`` and ``core.repo_version`` are fixed when the repository is made (the
objects on disk are laid out for them); a remote's settings are checked together
when it is added, so they are changed by deleting and adding it again.

These functions take the repository's path, not an open Repository: a config that
Repository.open refuses (a bad ``core.min-free-space-size`` written by hand) can be
repaired with them.
"""

from __future__ import annotations

import configparser
import os
import re
import stat
from pathlib import Path

from store.durability import replace_file
from store.errors import ConfigKeyError, ConfigValueError, RepoNotFoundError
from store.locking import config_lock
from store.repo import parse_config, read_config_file, settings_of

SETTABLE = {
    "core.fsync": "true or false: make each commit durable before its ref moves",
    "core.min-free-space-percent": "0 to 99: stop a commit before the disk is that full",
    "core.min-free-space-size": "a size as 500MB: wins over min-free-space-percent",
}
FIXED = ("core.mode", "core.repo_version")  # made with the repository
REMOTE_OPTIONS = ("sign-verify", "trusted-keys", "url")
_REMOTE_SECTION = re.compile(r'remote "(?P<name>[^"]*)"')
MAX_VALUE_CHARS = 4096
_BOOLEANS = ("core.fsync",)
_GKEYFILE_BOOLEANS = ("true", "false", "1", "0")  # g_key_file_get_boolean, case and all


def get_config(repo_path: str | os.PathLike[str], key: str) -> str | None:
    """The value of ``key`` in the repository's config, None if it is not set (its
    default then applies). Any key list_config gives can be read, as git reads any;
    ConfigKeyError for a key sapwood does not know that the config does not hold."""
    try:
        section, option = _locate(key)
    except ConfigKeyError:
        value = _listed(repo_path, key)
        if value is None:
            raise  # a key sapwood does not know and the config does not hold: a typo
        return value
    _, config = read_config_file(Path(repo_path))
    if not config.has_section(section):
        return None
    return config[section].get(option)


def list_config(repo_path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Every (key, value) the repository's config sets, in the file's order (keys of
    sections sapwood does not know too, as written)."""
    _, config = read_config_file(Path(repo_path))
    return [
        (f"{_key_prefix(section)}.{option}", value)
        for section in config.sections()
        for option, value in config[section].items()
    ]


def _listed(repo_path: str | os.PathLike[str], key: str) -> str | None:
    """The value list_config gives ``key``; None if it gives none, or if there is no
    repository to read (the caller's error about the key is said first)."""
    try:
        return dict(list_config(repo_path)).get(key)
    except RepoNotFoundError:
        return None


def set_config(repo_path: str | os.PathLike[str], key: str, value: str) -> None:
    """Set ``key`` to ``value``: ConfigKeyError unless the key is one of SETTABLE,
    ConfigValueError (nothing written) if the repository would not open with it."""
    option = _settable(key)
    if len(value) > MAX_VALUE_CHARS or not value.isprintable():
        shown = value[:60] + ("..." if len(value) > 60 else "")
        raise ConfigValueError(
            f"{key}: {shown!r} is not a setting (printable, at most {MAX_VALUE_CHARS} characters)",
            key=key,
            value=value,
        )
    _check_portable(key, value)
    path = Path(repo_path)
    with config_lock(path):
        read_config_file(path)  # a repository's config, or RepoNotFoundError
        _remove_stale_temporaries(path)
        _write_checked(path, _edited(_current_text(path), option, value), key, value)


def unset_config(repo_path: str | os.PathLike[str], key: str) -> bool:
    """Remove ``key`` (its default applies again); False if it was not set.
    ConfigKeyError unless the key is one of SETTABLE."""
    option = _settable(key)
    path = Path(repo_path)
    with config_lock(path):
        _, config = read_config_file(path)
        if not config.has_option("core", option):
            return False
        _remove_stale_temporaries(path)
        _write_checked(path, _edited(_current_text(path), option, None), key, None)
    return True


def _check_portable(key: str, value: str) -> None:
    """Refuse a boolean configparser reads but OSTree's GKeyFile does not (``on``,
    ``yes``): OSTree would refuse to open the repository. A hand-written one still
    opens here; only what sapwood writes is held to it."""
    states = configparser.ConfigParser.BOOLEAN_STATES
    if key in _BOOLEANS and value not in _GKEYFILE_BOOLEANS and value.lower() in states:
        raise ConfigValueError(
            f"{key}: {value!r} refused: OSTree reads only true, false, 1 or 0",
            key=key,
            value=value,
        )


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the .config.tmp-* files of config writers that died before their rename:
    every writer of the config holds the config lock, which the caller holds. Only
    what a writer leaves (a file; a symlink goes as a link): a directory by that name is
    no writer's and failed every set and unset ('Is a directory', attack8.md 3)."""
    for stale in path.glob(".config.tmp-*"):
        if not stat.S_ISDIR(_lstat_mode(stale)):
            stale.unlink(missing_ok=True)


def _lstat_mode(path: Path) -> int:
    try:
        return path.lstat().st_mode
    except FileNotFoundError:
        return 0


_SECTION_LINE = re.compile(r"\[(?P<name>[^\]]*)\]")
_OPTION_LINE = re.compile(r"(?P<option>[^=:\s][^=:]*?)\s*[=:]")


def _current_text(path: Path) -> str:
    return (path / "config").read_text(encoding="utf-8")


def _edited(text: str, option: str, value: str | None) -> str:
    """``text`` with [core]'s ``option`` line replaced by ``option = value`` (removed
    for None; added at the end of [core] if absent), every other line as it was.

    Rewriting the whole file through configparser dropped its comments and folded the
    case of every key of every section (a tool's ``MyKey`` became ``mykey``), as git
    config does not. The caller reads the result back and checks it.
    """
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    in_core, replacing, core_end = False, False, None
    for line in lines:
        if replacing and line[:1] in (" ", "\t") and line.strip():
            continue  # a continuation of the value replaced
        replacing = False
        section = _SECTION_LINE.match(line)
        if section is not None:
            in_core = section["name"] == "core"
        elif in_core and (found := _OPTION_LINE.match(line)) and found["option"].lower() == option:
            replacing = True
            if value is not None and core_end != -1:
                out.append(f"{option} = {value}\n")
            core_end = -1  # replaced: nothing to add
            continue
        out.append(line if line.endswith("\n") else line + "\n")
        if in_core and line.strip() and core_end != -1:
            core_end = len(out)
    if value is not None and core_end != -1:
        out.insert(core_end if core_end is not None else len(out), f"{option} = {value}\n")
    return "".join(out)


def _write_checked(path: Path, text: str, key: str, value: str | None) -> None:
    """Write ``text`` if it reads back as a config the repository opens with, holding
    ``value`` at ``key`` (None: not set).

    A config written by hand may already hold bad settings: a change that removes one
    or more of them and adds none is written too, so a config holding two bad values
    is repaired one key at a time (checking the whole new config refused every change
    until both were fixed together by hand). The settings are checked one by one:
    each is read on its own (SpacePolicy, fsync).
    """
    shown = "unsetting it" if value is None else repr(value)
    option = key.partition(".")[2]
    try:
        _, written = parse_config(path, text)
        bad = _bad_settings(written["core"])
        if bad and not set(bad) < set(_bad_settings(read_config_file(path)[1]["core"])):
            raise ValueError(bad.get(option) or next(iter(bad.values())))
    except (RepoNotFoundError, ValueError) as exc:
        raise ConfigValueError(
            f"{key}: {shown} refused (the repository would not open): {exc}",
            key=key,
            value=value or "",
        ) from None
    if written["core"].get(option) != value:  # spaces around it would be lost, say
        raise ConfigValueError(
            f"{key}: {value!r} would not read back as it is", key=key, value=value or ""
        )
    replace_file(path, "config", text.encode(), fsync=True)


def _bad_settings(core: configparser.SectionProxy) -> dict[str, str]:
    """The settable options of [core] that Repository.open refuses, each with why."""
    bad = {}
    for key in SETTABLE:
        option = key.partition(".")[2]
        if option in core:
            alone = configparser.ConfigParser(interpolation=None)
            alone["core"] = {option: core[option]}
            try:
                settings_of(alone["core"])
            except ValueError as exc:
                bad[option] = str(exc)
    return bad


def _settable(key: str) -> str:
    """The [core] option of a key that may be set or unset."""
    if key in SETTABLE:
        return key.partition(".")[2]
    known = tuple(SETTABLE)
    if key in FIXED:
        reason = "is fixed when the repository is made"
    elif key.startswith("remote."):
        reason = "is a remote's: delete the remote and add it again to change it"
    else:
        reason = "is not a repository setting"
    raise ConfigKeyError(
        f"{_shown(key)} {reason}; settable: {', '.join(known)}", key=key, known=known
    )


def _locate(key: str) -> tuple[str, str]:
    """(section, option) of any key sapwood knows."""
    if key in SETTABLE or key in FIXED:
        return "core", key.partition(".")[2]
    if key.startswith("remote."):
        name, dot, option = key[len("remote.") :].rpartition(".")
        if dot and name and option in REMOTE_OPTIONS:
            return f'remote "{name}"', option
    known = (*FIXED, *SETTABLE, *(f"remote.NAME.{option}" for option in REMOTE_OPTIONS))
    raise ConfigKeyError(
        f"{_shown(key)} is not a repository setting; known: {', '.join(known)}",
        key=key,
        known=tuple(SETTABLE),
    )


def _key_prefix(section: str) -> str:
    match = _REMOTE_SECTION.fullmatch(section)
    return f"remote.{match['name']}" if match else section


def _shown(key: str) -> str:
    return repr(key[:60] + ("..." if len(key) > 60 else ""))
