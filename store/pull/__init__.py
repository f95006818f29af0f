"""Pulling commits from remote archive repositories over HTTP, and from local
repositories: remotes in the repository config, the HTTP fetcher, pull, pull-local."""

from store.pull.http import Fetcher, FetchSettings
from store.pull.local import pull_local
from store.pull.pull import ProgressCallback, PullProgress, PullReport, pull
from store.pull.remotes import Remote, add_remote, delete_remote, get_remote, list_remotes

__all__ = [
    "FetchSettings",
    "Fetcher",
    "ProgressCallback",
    "PullProgress",
    "PullReport",
    "Remote",
    "add_remote",
    "delete_remote",
    "get_remote",
    "list_remotes",
    "pull",
    "pull_local",
]
