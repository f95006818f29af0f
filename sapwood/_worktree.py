"""Commits against real directories: ``sapwood.checkout`` and ``sapwood.diff_directory``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from fs.checkout import CheckoutOptions, CheckoutStats
from fs.checkout import checkout as checkout_tree
from fs.treediff import diff_dir
from store import Change, Node, ObjectId, Repository, SourceError, TaskCallback, UsageError


def checkout(
    repo: Repository,
    commit_id: ObjectId,
    dest: str | os.PathLike[str],
    options: CheckoutOptions | None = None,
    progress: TaskCallback | None = None,
) -> CheckoutStats:
    """Check a commit out into ``dest``: hardlinks to the objects where the repository's
    mode allows, verified copies elsewhere (see CheckoutOptions).

    Without a union mode ``dest`` must not exist, and a failed checkout leaves none.
    ``progress``, if given, receives TaskProgress values: the files checked out of the
    commit's total (counted first from its trees), at most every 0.1 s.
    """
    if "\0" in str(dest):
        raise UsageError(f"{str(dest)!r}: no path holds NUL")
    return checkout_tree(repo, commit_id, Path(dest), options or CheckoutOptions(), progress)


def diff_directory(
    repo: Repository, node: Node, path: str | os.PathLike[str], *, user_mode: bool = False
) -> Iterator[Change]:
    """A :class:`Change` for every difference between a commit's directory ``node`` and
    the real directory ``path``: the paths a commit of ``path`` would change.

    Types, file contents (re-hashed), symlink targets and permission bits are compared,
    and owners (outside bare-user-only, whose commits record 0:0). With ``user_mode``
    (for a user-mode checkout) the recorded bits are masked as such a checkout masks
    them (files without setuid, setgid, sticky and world-write, directories without
    setuid and setgid) and owners are not compared (the checkout is the caller's): a
    fresh user-mode checkout gives no change, a chmod of one file gives one. Xattrs are
    not compared. ``node`` itself is reported ("M") when ``path``'s own bits differ.
    ``change.old`` is the commit's node (None for "A": only in the directory);
    ``change.new`` is always None, as the directory's side is not in the repository:
    ``change.path`` (relative to the commit's root, as ``node.path`` is) names it.
    """
    if "\0" in str(path):
        raise SourceError(f"{str(path)!r}: no path holds NUL")
    yield from diff_dir(repo, node, Path(path), user_mode=user_mode)
