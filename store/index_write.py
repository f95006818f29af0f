"""Writing into the index: a WriteBatch checked and applied in one LMDB write
transaction (Index.apply), which is a sapwood transaction's commit point.

Before anything is written it checks what the batch relies on: the objects it names
without adding them are still there (``required``), everything its new trees name is
there as the kind it is named as (``check_trees``), refs move by compare-and-swap onto
commits and none becomes a directory of another. After the write, data.mdb is made to
cover the last page the index uses (``cover_last_page``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

from store.errors import (
    CorruptObjectError,
    ObjectMissingError,
    ReadOnlyRepositoryError,
    RefConflictError,
    RefExistsError,
    RefTargetError,
)
from store.ids import ObjectId, ObjectType
from store.index_env import PageBudget
from store.index_types import ANY, RefUpdate, WriteBatch
from store.objects import DirTree

_I64 = struct.Struct(">q")


def write_batch(
    env: Any,
    dbs: dict[str, Any],
    batch: WriteBatch,
    pages: PageBudget,
    before_commit: Callable[[], None] | None = None,
) -> None:
    """Check ``batch`` and apply it in one LMDB write transaction (Index.apply): the
    commit point. Every row it checks, puts or deletes is counted in ``pages``, which
    lets go of the index's pages as they pass the budget (safe inside the write
    transaction: store/index_env.py, PageBudget). ``before_commit`` runs last, inside
    the transaction: what it raises aborts it."""
    with env.begin(write=True) as txn:
        objects = dbs["objects"]
        _check_required(txn, objects, batch, pages)
        if batch.check_trees:
            _check_new_trees(txn, objects, batch, pages)
        _check_refs(txn, dbs, batch)
        for object_id, record in batch.objects.items():
            pages.note()
            txn.put(object_id, record.encode(), db=objects, overwrite=False)
        for commit_id, timestamp in batch.commits.items():
            txn.put(commit_id, _I64.pack(timestamp), db=dbs["commits"])
        for commit_id in batch.partial_clear:
            txn.delete(commit_id, db=dbs["partial"])
        for commit_id in batch.partial_mark:
            txn.put(commit_id, b"", db=dbs["partial"])
        for object_id in batch.remove_objects:
            pages.note()
            txn.delete(object_id, db=objects)
            txn.delete(object_id, db=dbs["commits"])
            if dbs.get("commitmeta") is not None:
                txn.delete(object_id, db=dbs["commitmeta"])
        _put_commitmeta(txn, dbs.get("commitmeta"), batch)
        for key in batch.statcache_remove:
            pages.note()
            txn.delete(key, db=dbs["statcache"])
        for update in batch.refs:
            if update.new is None:
                txn.delete(update.name.encode(), db=dbs["refs"])
            else:
                txn.put(update.name.encode(), update.new, db=dbs["refs"])
        for key, value in batch.statcache.items():
            pages.note()
            txn.put(key, value, db=dbs["statcache"])
        if before_commit is not None:
            before_commit()


def cover_last_page(env: Any, path: str) -> None:
    """Make data.mdb reach the last page the index says it uses, after a write.

    A write transaction can take pages past the end of the file and free them again
    before it commits (LMDB's loose pages): they are never written, so the file ends
    before ``last_pgno``, which the opening check (store/index_env.py) then took for a
    truncated index (every command refused the repository; seen after a prune, 3 runs
    in 12). They are free, never read: allocating the tail (never shrinking, whatever
    other writers do) keeps the opening check meaningful for a file that really lost
    its end."""
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    data = os.path.join(path, "data.mdb")
    try:
        if os.stat(data).st_size >= needed:
            return
        fd = os.open(data, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.posix_fallocate(fd, 0, needed)
        finally:
            os.close(fd)
    except OSError:  # no space, or no fallocate: the opening check says so later
        return


def _put_commitmeta(txn: Any, db: Any, batch: WriteBatch) -> None:
    """Detached signatures, each a compare-and-swap of what the writer read."""
    for commit_id, (expected, new) in batch.commitmeta.items():
        if db is None:
            raise ReadOnlyRepositoryError("this index cannot hold signatures; nothing was written")
        current = txn.get(commit_id, db=db)
        if expected is not ANY and (None if current is None else bytes(current)) != expected:
            raise RefConflictError(
                f"the signatures of commit {commit_id.hex()} changed while this transaction "
                "ran; nothing was changed",
                name=commit_id.hex(),
            )
        txn.put(commit_id, new, db=db)


_KIND_NAMES = {kind.value: kind.suffix for kind in ObjectType}


def _check_required(txn: Any, objects_db: Any, batch: WriteBatch, pages: PageBudget) -> None:
    for object_id, kind in batch.required:
        pages.note()
        _check_present(txn, objects_db, batch, object_id, kind)


def _check_new_trees(txn: Any, objects_db: Any, batch: WriteBatch, pages: PageBudget) -> None:
    """Everything a dirtree of the batch names must be in the batch or the index, as
    the kind it is named as. Checked from the trees themselves at the commit point
    rather than from a list kept while they were written: a million files would be a
    million entries of that list (store/transaction.py). The index's pages it reads
    are released as it goes (``pages``)."""
    for record in batch.objects.values():
        if record.kind is not ObjectType.DIRTREE:
            continue
        tree = DirTree.decode(record.payload)
        for _, file_id in tree.files:
            pages.note()
            _check_present(txn, objects_db, batch, file_id, ObjectType.FILE)
        for _, entry in tree.dirs:
            pages.note()
            _check_present(txn, objects_db, batch, entry.tree, ObjectType.DIRTREE)
            _check_present(txn, objects_db, batch, entry.meta, ObjectType.DIRMETA)


def _check_present(
    txn: Any, objects_db: Any, batch: WriteBatch, object_id: ObjectId, kind: ObjectType
) -> None:
    """ObjectMissingError unless ``object_id`` is in the batch or the index, and
    CorruptObjectError unless it is of ``kind`` there."""
    record = batch.objects.get(object_id)
    found = record.kind.value if record is not None else None
    if found is None:
        value = txn.get(object_id, db=objects_db)
        if value is None:
            raise ObjectMissingError(  # the CLI rewords the end (sapwood/cli/errors.py)
                f"object {object_id.hex()}, which this commit names, is not in the "
                "repository: never written, or removed while the commit ran "
                "(by prune or fsck with delete); nothing was committed",
                object_id=ObjectId(object_id),
            )
        found = bytes(value[:1])
    if found != kind.value:
        raise CorruptObjectError(
            f"object {object_id.hex()} is named as a {kind.suffix} but is a "
            f"{_KIND_NAMES.get(found, 'another kind')}: nothing was committed",
            object_id=ObjectId(object_id),
        )


def _check_refs(txn: Any, dbs: dict[str, Any], batch: WriteBatch) -> None:
    """Compare-and-swap, refs name commits only, and no ref is a directory of another."""
    deleted = {update.name for update in batch.refs if update.new is None}
    created = {update.name for update in batch.refs if update.new is not None}
    holding = {above for name in created for above in _ref_dirs(name)}  # a/b/c: a, a/b
    for update in batch.refs:
        current = txn.get(update.name.encode(), db=dbs["refs"])
        current_id = None if current is None else bytes(current)
        if update.expected is not ANY and current_id != update.expected:
            now = "absent" if current_id is None else current_id.hex()
            raise RefConflictError(
                f"ref {update.name} moved while this transaction ran (it is now {now}); "
                "nothing was changed",
                name=update.name,
                expected=update.expected,
                actual=None if current_id is None else ObjectId(current_id),
            )
        if update.new is not None:
            _check_is_commit(txn, dbs["objects"], batch, update)
            if current_id is None:
                _check_ref_path(txn, dbs["refs"], update.name, deleted, created, holding)


def _check_is_commit(txn: Any, objects_db: Any, batch: WriteBatch, update: RefUpdate) -> None:
    assert update.new is not None
    record = batch.objects.get(update.new)
    kind = record.kind.value if record is not None else None
    if kind is None:
        value = txn.get(update.new, db=objects_db)
        kind = None if value is None else bytes(value[:1])
    if kind != ObjectType.COMMIT.value:
        what = "no object" if kind is None else "not a commit"
        raise RefTargetError(f"ref {update.name}: {update.new.hex()} is {what}: refs name commits")


def _ref_dirs(name: str) -> list[str]:
    """The refs that would be directories of ``name``'s file: ``r:a/b/c`` -> r:a, r:a/b."""
    remote, sep, ref = name.rpartition(":")
    parts = ref.split("/")
    return [f"{remote}{sep}" + "/".join(parts[:depth]) for depth in range(1, len(parts))]


def _check_ref_path(
    txn: Any, refs_db: Any, name: str, deleted: set[str], created: set[str], holding: set[str]
) -> None:
    """Refs are laid out as files (archive mode's refs/heads/, pull, other tools), so
    ``a`` and ``a/b`` cannot both exist, in any mode. ``holding``: the _ref_dirs of every
    ref ``created`` (a set: comparing each new ref with every other was quadratic)."""
    above = _ref_dirs(name)
    for other in above:
        exists = other not in deleted and txn.get(other.encode(), db=refs_db) is not None
        if exists or other in created:
            raise RefExistsError(
                f"ref {name} cannot exist beside ref {other}: delete it first", name=other
            )
    below = name + "/"
    others = [o for o in created if o.startswith(below)] if name in holding else []
    with txn.cursor(db=refs_db) as cur:
        found = cur.set_range(below.encode())
        while found and bytes(cur.key()).startswith(below.encode()) and not others:
            key = bytes(cur.key()).decode("utf-8", "replace")
            if key not in deleted:
                others.append(key)
            found = cur.next()
    if others:
        raise RefExistsError(
            f"ref {name} cannot exist beside ref {others[0]}: delete it first", name=others[0]
        )
