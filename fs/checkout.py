"""Checkout: a commit made real on disk, as a hardlink farm or as copies.

Everything is done relative to directory file descriptors opened with O_NOFOLLOW,
and entries are created with O_EXCL semantics, so no symlink (from the commit or
already in DEST) is ever followed: nothing is written outside DEST. A whiteout
removes only an entry of its own directory (its target must be a valid name, never
'.' or '..'), never follows a symlink and never removes another filesystem's files.

Object files are not trusted. A copy hashes every byte it copies and is removed if
they were not the object's; a hardlink is checked, once made, to be a regular file
of the recorded size, and re-hashed only with --verify (the cost of a farm is the
cost of its links; fsck re-hashes the store).

Without a union option (or when DEST does not exist yet) the tree is built in a
hidden sibling of DEST and renamed into place at the end, so a failed checkout
leaves nothing. A union checkout writes into an existing DEST and cannot be rolled
back cheaply: it first checks, without writing, what it can (conflicts, whiteouts,
with --verify the objects it will hardlink), so most failures leave DEST unchanged;
an error after it began to write says that DEST is partly updated.

This module holds the two ways a checkout goes (fresh, union) and what an error leaves
DEST as. The rest, by module: fs.checkout_tree walks the commit's directories,
fs.checkout_union deals with what DEST already holds (pre-check, existing entries,
whiteouts), fs.checkout_files writes files (links, verified copies, symlinks),
fs.checkout_options holds the options, modes and errors, fs.checkout_remove opens and
removes directories without following symlinks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from fs.checkout_options import (
    CheckoutConflictError,
    CheckoutError,
    CheckoutOptions,
    CheckoutStats,
    SubpathNotADirectoryError,
    Union,
    check_options,
)
from fs.checkout_remove import (
    WHITEOUT,
    open_dir,
    open_existing_dir,
    remove_tree,
)
from fs.checkout_tree import TreeBuilder
from store import (
    Node,
    ObjectId,
    OutOfSpaceError,
    Repository,
    SapwoodError,
    TaskCallback,
    Ticker,
    UsageError,
    count_files,
    lookup,
    show_path,
    space_errors,
    syncfs,
    tick,
)

__all__ = [  # the names callers import from here; they live in the fs.checkout_* modules
    "WHITEOUT",
    "CheckoutConflictError",
    "CheckoutError",
    "CheckoutOptions",
    "CheckoutStats",
    "SubpathNotADirectoryError",
    "Union",
    "checkout",
    "remove_tree",
]
log = logging.getLogger(__name__)
_PARTLY_UPDATED = "is partly updated; re-run the checkout or remove it"
_UNCHANGED = "was not changed"


def checkout(
    repo: Repository,
    commit_id: ObjectId,
    dest: Path,
    options: CheckoutOptions,
    progress: TaskCallback | None = None,
) -> CheckoutStats:
    """Check ``options.subpath`` of a commit out into ``dest``. ``progress`` is told of
    the count of the commit's files (a quick read of the trees: only when it is given),
    then of the files (and symlinks) checked out of that total, then of the sync."""
    check_options(repo, options)
    _refuse_dest_in_repository(repo, dest)
    node = lookup(repo, commit_id, options.subpath)
    if node.dir is None:
        raise SubpathNotADirectoryError(subpath=options.subpath)
    builder = TreeBuilder(repo, options, progress)
    if progress is not None:
        tick(progress, "reading trees")
        builder.ticker = Ticker(progress, "checking out", count_files(repo, node.dir.tree), "file")
    if options.union == "none":
        return _fresh_checkout(builder, node, dest)
    if not os.path.lexists(dest):  # nothing to unite with: build aside, as a fresh checkout
        dest.parent.mkdir(parents=True, exist_ok=True)
        return _fresh_checkout(builder, node, dest)
    return _union_checkout(builder, node, dest)


def _refuse_dest_in_repository(repo: Repository, dest: Path) -> None:
    """A checkout never writes among the repository's own files."""
    inside = os.path.realpath(dest)
    home = os.path.realpath(repo.path)
    if inside == home or inside.startswith(home + "/"):
        raise UsageError(f"{dest}: is inside the repository {repo.path}; check out elsewhere")


def _fresh_checkout(builder: TreeBuilder, node: Node, dest: Path) -> CheckoutStats:
    if os.path.lexists(dest):
        raise CheckoutConflictError(f"{dest}: exists; check out with a union mode to write into it")
    if not dest.parent.is_dir():
        raise UsageError(f"{dest.parent}: no such directory")
    building = dest.parent / f".{dest.name}.sapwood-checkout-{uuid.uuid4().hex[:8]}"
    os.mkdir(building, 0o700)
    try:
        fd = open_dir(building, None)
        try:
            with space_errors("the checkout was removed"):
                builder.fill(node, fd, existing=False)
            builder.finish_dir(node, fd)
        finally:
            os.close(fd)
        builder.ticker.finish()
        if builder.options.fsync:
            tick(builder.progress, "syncing")
            syncfs(building)
        os.rename(building, dest)
    except BaseException:
        _remove_leftover(building)
        raise
    return builder.stats


def _union_checkout(builder: TreeBuilder, node: Node, dest: Path) -> CheckoutStats:
    fd = open_existing_dir(dest, None, str(dest))
    try:
        with _dest_state_on_failure(dest, _UNCHANGED):
            builder.precheck(node, fd)
        with (
            _dest_state_on_failure(dest, _PARTLY_UPDATED),
            space_errors(f"{dest} {_PARTLY_UPDATED}"),
        ):
            builder.fill(node, fd, existing=True)
            builder.ticker.finish()
            if builder.options.fsync:
                tick(builder.progress, "syncing")
                syncfs(dest)
    finally:
        os.close(fd)
    return builder.stats


@contextlib.contextmanager
def _dest_state_on_failure(dest: Path, state: str) -> Iterator[None]:
    """Add to an error raised in the block what it left DEST as (``state``)."""
    try:
        yield
    except OutOfSpaceError:
        raise  # space_errors has said it
    except SapwoodError as exc:
        raise _amended(exc, f"{dest} {state}") from exc
    except OSError as exc:
        name = exc.filename
        where = f": {show_path(name) if isinstance(name, bytes) else name}" if name else ""
        raise CheckoutError(f"{exc.strerror or exc}{where}; {dest} {state}") from exc
    except BaseException:
        log.warning("%s %s", dest, state)
        raise


def _amended(exc: SapwoodError, note: str) -> SapwoodError:
    """The same kind of error (class and facts), its message followed by ``note``."""
    try:
        amended = type(exc)(f"{exc}; {note}")
    except TypeError:  # an error class with another constructor
        return CheckoutError(f"{exc}; {note}")
    amended.__dict__.update(exc.__dict__)
    return amended


def _remove_leftover(building: Path) -> None:
    try:
        remove_tree(building)
    except (OSError, SapwoodError) as exc:
        log.warning("could not remove the partial checkout %s: %s", building, exc)
