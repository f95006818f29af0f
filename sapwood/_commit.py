"""``sapwood.commit``: the keyword form of fs' commit request."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

from fs.commit import CommitRequest, CommitResult, Layer, NoParent, make_commit
from fs.options import ContentOptions
from store import ObjectId, Repository


def commit(
    repo: Repository,
    branch: str,
    source: str | os.PathLike[str] | Sequence[Layer],
    *,
    subject: str = "",
    body: str = "",
    metadata: Mapping[str, str] | None = None,
    parent: ObjectId | NoParent | None = None,
    timestamp: int | None = None,
    skip_if_unchanged: bool = False,
    options: ContentOptions | None = None,
    progress: Callable[[int], None] | None = None,
    read_all: bool = False,
) -> CommitResult:
    """Commit ``source`` (a directory's path, or layers overlaid in order) and move
    ``branch``.

    ``parent`` None means the branch's current head (a root commit if it has none);
    :data:`sapwood.NO_PARENT` makes a root commit whatever the branch holds; an
    ObjectId names the parent commit. ``timestamp`` defaults to now (seconds since the
    epoch). With ``skip_if_unchanged``, a tree equal to the parent's makes no commit:
    the result then has ``created`` False and the parent's id. ``progress`` is called
    with the number of files scanned so far. ``read_all`` reads every file, none taken
    from the stat cache (after a crash: a file written in place may keep its old
    timestamps, fs/statcache.py).

    The branch moves by compare-and-swap against the value it had when the commit
    began: a concurrent commit to the same branch makes this one fail
    (RefConflictError) rather than silently drop one of them.
    """
    if isinstance(source, (str, os.PathLike)):  # a str is a path, not a sequence of layers
        layers = [Layer.directory(os.fspath(source))]
    else:
        layers = list(source)
    request = CommitRequest(
        branch=branch,
        layers=layers,
        subject=subject,
        body=body,
        metadata=dict(metadata or {}),
        parent=parent,
        timestamp=timestamp,
        skip_if_unchanged=skip_if_unchanged,
        read_all=read_all,
        options=options if options is not None else ContentOptions(),
    )
    return make_commit(repo, request, progress)
