"""What every command needs: the repository named by --repo or $SAPWOOD_REPO."""

from __future__ import annotations

import argparse
import configparser
import os
from pathlib import Path

from store import RepoNotFoundError, Repository


def repo_path(args: argparse.Namespace) -> Path:
    path = args.repo or os.environ.get("SAPWOOD_REPO")
    if not path:
        raise RepoNotFoundError("no repository given: use --repo PATH or set SAPWOOD_REPO")
    return Path(path)


def open_repo(args: argparse.Namespace) -> Repository:
    path = repo_path(args)
    try:
        return Repository.open(path)
    except configparser.Error as exc:
        # Repository.open lets interpolation errors through: a config value holding '%'
        # fails when read (core.get, getboolean), after read_config's guarded read.
        # That belongs in store/repo.py (ConfigParser(interpolation=None)); until then,
        # one line here.
        raise RepoNotFoundError(f"{path}/config: unreadable repository config ({exc})") from exc
