"""Pulling commits from remote archive repositories over HTTP, and from local
repositories: remotes in the repository config, the HTTP fetcher (store.pull.http,
imported by a pull only), pull, pull-local."""

from typing import TYPE_CHECKING

from store.pull.pull import ProgressCallback, PullProgress, PullReport, pull
from store.pull.remotes import Remote, add_remote, delete_remote, get_remote, list_remotes
from store.pull.settings import FetchSettings

if TYPE_CHECKING:
    from store.pull.local import pull_local

__all__ = [
    "FetchSettings",
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


def __getattr__(name: str) -> object:
    """``pull_local``, imported on first use: a pull over HTTP never needs its module."""
    if name == "pull_local":
        from store.pull.local import pull_local

        return pull_local
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "pull_local"})  # loaded on first use, listed all the same
