"""What every command needs: the repository named by --repo or $SAPWOOD_REPO."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sapwood import RepoNotFoundError, Repository


def repo_path(args: argparse.Namespace) -> Path:
    path = args.repo or os.environ.get("SAPWOOD_REPO")
    if not path:
        raise RepoNotFoundError("no repository given: use --repo PATH or set SAPWOOD_REPO")
    return Path(path)


def open_repo(args: argparse.Namespace) -> Repository:
    return Repository.open(repo_path(args))
