"""Archive repositories to serve and local repositories to pull into, through the CLI.

Pulls run as separate processes with a timeout (``pull``): a pull that hangs fails its
test instead of hanging the run.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
from pathlib import Path

from tests.helpers import cli, run

PULL_TIMEOUT = 60  # seconds: far above any pull of these tests' trees


def sapwood_ok(repo: Path, *args: str | Path) -> str:
    """``sapwood --repo REPO ARGS`` in this process; it must succeed. Its stdout."""
    result = cli("--repo", repo, *args)
    assert result.code == 0, result.err
    return result.out


def archive_of(path: Path, source: Path, branch: str = "main", **options: str) -> str:
    """An archive repository at ``path`` (made if need be) with ``source`` committed to
    ``branch`` and the summary updated; the commit id."""
    if not (path / "config").exists():
        sapwood_ok(path, "init", "--mode", "archive")
        no_fsync(path)
    extra = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    commit = sapwood_ok(path, "commit", "-b", branch, *extra, source).strip()
    publish(path)
    return commit


def publish(archive: Path, keys_file: Path | None = None) -> None:
    """``sapwood summary -u``: the archive's summary says what it holds now (signed with
    the keys of ``keys_file``)."""
    signing: list[str | Path] = [] if keys_file is None else ["--keys-file", keys_file]
    sapwood_ok(archive, "summary", "-u", *signing)


def local_repo(path: Path, mode: str = "bare-user") -> Path:
    sapwood_ok(path, "init", "--mode", mode)
    no_fsync(path)
    return path


def no_fsync(repo: Path) -> None:
    """``fsync = false``: the tests measure requests, not the disk, and a machine busy
    writing elsewhere makes each fsync cost seconds (a SIGKILL loses nothing unsynced)."""
    config = configparser.ConfigParser()
    config.read(repo / "config")
    config["core"]["fsync"] = "false"
    with open(repo / "config", "w") as out:
        config.write(out)


def add_remote(local: Path, url: str, name: str = "origin", *options: str) -> None:
    sapwood_ok(local, "remote", "add", name, url, *options)


def pull(
    local: Path, *args: str, timeout: float = PULL_TIMEOUT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``sapwood pull ARGS`` as a separate process (ended by force after ``timeout``),
    in this environment (the tests' HTTP knobs) updated with ``env``."""
    environment = dict(os.environ) | (env or {})
    return run("pull", *args, repo=local, text=True, timeout=timeout, env=environment)


def refs(local: Path) -> dict[str, str]:
    """Every ref of ``local``: name -> commit id."""
    return {r["name"]: r["commit"] for r in json.loads(sapwood_ok(local, "refs", "--json"))}


def fsck_clean(local: Path) -> None:
    result = cli("--repo", local, "fsck", "--all")
    assert result.code == 0, result.out + result.err


def keygen(tmp_path: Path, name: str) -> tuple[str, Path]:
    """A new key pair: the public key's text, and the keys file (0600) of its secret."""
    keys_file = tmp_path / f"{name}.secret"
    public = sapwood_ok(tmp_path, "keygen", "--keys-file", keys_file).strip()
    assert keys_file.stat().st_mode & 0o077 == 0
    return public, keys_file
