"""``sapwood.pull``, ``pull_local`` and remotes: the facade over store/pull."""

from __future__ import annotations

import os
from collections.abc import Sequence

from store import Repository
from store.pull import (
    FetchSettings,
    ProgressCallback,
    PullReport,
    Remote,
)
from store.pull import add_remote as _add_remote
from store.pull import delete_remote as _delete_remote
from store.pull import get_remote as _get_remote
from store.pull import list_remotes as _list_remotes
from store.pull import pull as _pull


def add_remote(repo: Repository, remote: Remote) -> None:
    """Add ``remote`` to the repository's config (RemoteError if its name is taken)."""
    _add_remote(repo.path, remote)


def remotes(repo: Repository) -> list[Remote]:
    """Every remote of the repository, by name (RemoteError for an invalid one)."""
    return _list_remotes(repo.path)


def get_remote(repo: Repository, name: str) -> Remote:
    """The remote ``name`` (RemoteError if there is none)."""
    return _get_remote(repo.path, name)


def delete_remote(repo: Repository, name: str) -> None:
    """Remove remote ``name`` from the config; refs pulled from it stay."""
    _delete_remote(repo.path, name)


def pull(
    repo: Repository,
    remote: Remote | str,
    refs: str | Sequence[str] = (),
    *,
    depth: int = 0,
    dry_run: bool = False,
    settings: FetchSettings | None = None,
    progress: ProgressCallback | None = None,
    allow_downgrade: bool = False,
) -> PullReport:
    """Pull ``refs`` (one ref as a str, or several; every ref on offer if none) of
    ``remote`` (a Remote, or the name of one in the repository's config) into ``repo``
    as ``REMOTE:REF``.

    Only objects the repository lacks are fetched, each verified against its id as it
    arrives; ``depth`` parents of each commit come too; a static delta is used when
    the remote's summary offers one from what the ref holds. Refs move only once
    their commit's whole tree is stored, by compare-and-swap (RefConflictError if
    another writer moved one meanwhile). An interrupted pull keeps the content it
    stored, and the next one does not fetch it again. ``dry_run``: fetch only the
    metadata and report what would be fetched. ``settings``: timeouts, retries,
    connections (FetchSettings.from_environ reads SAPWOOD_HTTP_*). ``progress``
    receives PullProgress values, from any thread. A ref that exists is not moved to
    a commit older than its own (by the commits' timestamps: a replayed old summary)
    unless ``allow_downgrade``: DowngradeError, SignedDowngradeError (a SignatureError
    too) from a sign-verify remote. Raises NetworkError, SignatureError,
    CorruptObjectError, ObjectMissingError, RemoteError.
    """
    return _pull(
        repo,
        remote,
        refs,
        depth=depth,
        dry_run=dry_run,
        settings=settings,
        progress=progress,
        allow_downgrade=allow_downgrade,
    )


def pull_local(
    repo: Repository,
    source: str | os.PathLike[str],
    refs: str | Sequence[str] = (),
    *,
    progress: ProgressCallback | None = None,
) -> PullReport:
    """Bring ``refs`` (one ref as a str, or several; all if none) of the repository at
    ``source`` into ``repo`` under the same names, with their commits' whole trees:
    objects hardlinked where both repositories keep them alike on one filesystem (after
    verifying them), copied and converted to this repository's mode otherwise."""
    from store.pull.local import pull_local as _pull_local  # a pull over HTTP needs none of it

    return _pull_local(repo, source, refs, progress=progress)
