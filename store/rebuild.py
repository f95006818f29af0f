"""Rebuilding a lost index from what an archive repository keeps on disk.

In archive mode every object is a file (metadata objects as they are encoded, file
objects with their header and size in front of the compressed content) and the refs
are mirrored under ``refs/`` for HTTP clients: everything the index holds, except
the stat cache, can be read back from the disk (commits' signatures too, from their
``.commitmeta`` files). The bare modes keep dirtrees,
dirmetas and commits in the index only; for them there is nothing to rebuild from.

Every object is verified (hashed against its id) before it is indexed again; what
does not verify is left out and counted. Commits whose trees are then incomplete
are marked partial, as fsck --delete marks them. The new index is built beside the
old one and renamed into place; the old one, if any, is kept as
``index.old-TIMESTAMP-PID`` for whoever wants to look at it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from store.content import ArchiveStore
from store.errors import (
    CorruptObjectError,
    FormatError,
    InvalidRefNameError,
    ObjectMissingError,
    UsageError,
)
from store.ids import ID_HEX, ObjectId, ObjectType, digest, is_full_hex
from store.index import ANY, Access, Index, ObjectRecord, RefUpdate, WriteBatch
from store.locking import repo_lock
from store.modes import RepoMode
from store.names import check_ref_name
from store.objects import Commit, DirMeta, DirTree
from store.reachability import commits_needing, walk_commits
from store.repo import read_config
from store.signing import decode_signatures
from store.verify import open_object_file

log = logging.getLogger(__name__)
_COMMITMETA = ".commitmeta"
_MAX_COMMITMETA = 1 << 20
_SUFFIXES = {f".{kind.suffix}": kind for kind in ObjectType if kind is not ObjectType.FILE}
_DECODERS: dict[ObjectType, Callable[[bytes], object]] = {
    ObjectType.COMMIT: Commit.decode,
    ObjectType.DIRTREE: DirTree.decode,
    ObjectType.DIRMETA: DirMeta.decode,
}


@dataclass
class RebuildReport:
    """What rebuild_index indexed, skipped and moved aside."""

    objects: int = 0  # objects indexed again
    refs: int = 0
    skipped: list[str] = field(default_factory=list)  # object files left out, and why
    partial: list[ObjectId] = field(default_factory=list)
    old_index: Path | None = None  # where the damaged index was moved


def rebuild_index(path: Path) -> RebuildReport:
    """Replace the index of the archive repository at ``path`` with one read from disk."""
    mode, _ = read_config(path)
    if mode is not RepoMode.ARCHIVE:
        raise UsageError(
            f"{path}: a {mode.value} repository keeps its trees and commits in the index "
            "only; restore the index from a backup, or commit or pull again into a new one"
        )
    with repo_lock(path, exclusive=True):
        fresh = path / f"index.rebuild-{os.getpid()}"
        fresh.mkdir()
        try:
            index = Index(fresh, Access.CREATE)
            try:
                report = _fill(path, index)
            finally:
                index.close()
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        report.old_index = _swap(path, fresh)
    log.info("rebuilt the index: %d objects, %d refs", report.objects, report.refs)
    return report


def _fill(path: Path, index: Index) -> RebuildReport:
    store = ArchiveStore(path / "objects")
    report = RebuildReport()
    batch = WriteBatch()
    signatures: dict[ObjectId, bytes] = {}
    for entry in sorted((path / "objects").glob("??/*")):
        if entry.name.endswith(_COMMITMETA):
            _read_commitmeta(entry, signatures, report)
            continue
        object_id, kind = _parse_name(entry)
        if object_id is None or kind is None:
            report.skipped.append(f"{entry.name}: not an object file name")
            continue
        try:
            record = _read_object(store, entry, object_id, kind)
        except (CorruptObjectError, ObjectMissingError, FormatError, OSError) as exc:
            report.skipped.append(f"{object_id.hex()}: {exc}")
            continue
        batch.objects[object_id] = record
        if kind is ObjectType.COMMIT:
            batch.commits[object_id] = Commit.decode(record.payload).timestamp
    report.objects = len(batch.objects)
    for commit_id, data in signatures.items():
        if commit_id in batch.commits:
            batch.commitmeta[commit_id] = (ANY, data)
    batch.refs = _mirrored_refs(path / "refs", batch, report)
    report.refs = len(batch.refs)
    index.apply(batch)
    with index.reader() as reader:
        found = walk_commits(reader, batch.commits, verify=False)  # each tree once
        missing = set(found.bad_metadata)
        missing.update(f for f in found.files if not reader.has_object(f))
        needed = commits_needing(reader, batch.commits, missing) if missing else {}
        report.partial = sorted({cid for commits in needed.values() for cid in commits})
    index.apply(WriteBatch(partial_mark=set(report.partial)))
    return report


def _read_commitmeta(entry: Path, found: dict[ObjectId, bytes], report: RebuildReport) -> None:
    """A commit's detached signatures (``.commitmeta``), kept if they decode."""
    hexid = entry.parent.name + entry.name.removesuffix(_COMMITMETA)
    if not is_full_hex(hexid):
        report.skipped.append(f"{entry.name}: not an object file name")
        return
    commit_id = ObjectId(bytes.fromhex(hexid))
    try:
        with open(open_object_file(str(entry), commit_id), "rb") as stream:
            data = stream.read(_MAX_COMMITMETA + 1)
        decode_signatures(data)
    except (CorruptObjectError, ObjectMissingError, OSError) as exc:
        report.skipped.append(f"{hexid}.commitmeta: {exc}")
        return
    found[commit_id] = data


def _parse_name(entry: Path) -> tuple[ObjectId | None, ObjectType | None]:
    stem, dot, suffix = entry.name.partition(".")
    hexid = entry.parent.name + stem
    if not is_full_hex(hexid):
        return None, None
    kind = ObjectType.FILE if f"{dot}{suffix}" == ".filez" else _SUFFIXES.get(f"{dot}{suffix}")
    return ObjectId(bytes.fromhex(hexid)), kind


def _read_object(
    store: ArchiveStore, entry: Path, object_id: ObjectId, kind: ObjectType
) -> ObjectRecord:
    if kind is ObjectType.FILE:
        size, header = store.stored_record(object_id)
        encoded = header.encode()
        problem = store.verify(object_id, encoded, size)
        if problem:
            raise CorruptObjectError(problem)
        return ObjectRecord.for_file(size, encoded)
    with open(open_object_file(str(entry), object_id), "rb") as stream:
        payload = stream.read()
    if digest(payload) != object_id:
        raise CorruptObjectError(f"its bytes do not hash to its id ({kind.suffix})")
    _DECODERS[kind](payload)  # canonical, or FormatError
    return ObjectRecord(kind, payload)


def _mirrored_refs(refs_dir: Path, batch: WriteBatch, report: RebuildReport) -> list[RefUpdate]:
    """refs/heads/NAME and refs/remotes/REMOTE/NAME, where they name an indexed commit."""
    updates = []
    for file in sorted(p for p in refs_dir.rglob("*") if p.is_file() and not p.is_symlink()):
        relative = file.relative_to(refs_dir).parts
        if relative[0] == "heads" and len(relative) > 1:
            name = "/".join(relative[1:])
        elif relative[0] == "remotes" and len(relative) > 2:
            name = f"{relative[1]}:{'/'.join(relative[2:])}"
        else:
            continue
        try:
            check_ref_name(name)
        except InvalidRefNameError:
            report.skipped.append(f"ref {name!a}: not a valid ref name")
            continue
        text = file.read_text(errors="replace").strip()
        target = bytes.fromhex(text) if len(text) == ID_HEX and is_full_hex(text) else None
        record = batch.objects.get(ObjectId(target)) if target else None
        if record is None or record.kind is not ObjectType.COMMIT:
            report.skipped.append(f"ref {name}: does not name a commit found on disk")
            continue
        updates.append(RefUpdate(name, ObjectId(target)))  # type: ignore[arg-type]
    return updates


def _swap(path: Path, fresh: Path) -> Path | None:
    current = path / "index"
    kept = None
    if current.exists():
        kept = path / f"index.old-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        os.rename(current, kept)
    os.rename(fresh, current)
    return kept
