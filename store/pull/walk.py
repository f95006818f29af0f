"""Steps 4 and 5 of a pull (see store.pull.pull): the trees walked level by level,
the missing dirtrees and dirmetas fetched and verified, and the missing content
objects queued for the batch writer as they are found."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from functools import partial
from typing import BinaryIO

from store.errors import CorruptObjectError, SapwoodError
from store.ids import ObjectId, ObjectType
from store.objects import DirTree, MetaObject
from store.pull.batches import Stopped
from store.pull.job import GROUP, _Job, _Wanted
from store.pull.objects import DecodedContent, decoded_filez, verified_meta
from store.repo import Repository
from store.transaction import Transaction

# A level of at most this many metadata objects is fetched by the walking thread itself,
# pipelined on one kept-alive connection (the summary's and commits' lane): one round
# trip, as through the metadata pool, without handing the level to other threads and
# waiting for them to be scheduled (an update pull's levels hold a few dirtrees each).
OWN_LANE_AT_MOST = 8


class _Walk(_Job):
    """The trees walked, the content fetched."""

    def _walk_trees(self, roots: Iterable[ObjectId]) -> None:
        try:
            self._walk_levels(roots)
        finally:
            self._stop_metadata_pool()

    def _walk_levels(self, roots: Iterable[ObjectId]) -> None:
        level: list[ObjectId] = []
        metas: list[ObjectId] = []
        for commit_id in roots:
            commit = self.commits[commit_id]
            level.append(commit.tree)
            metas.append(commit.meta)
        while level or metas:
            trees = self._fetch_metadata(ObjectType.DIRTREE, level)
            self._fetch_metadata(ObjectType.DIRMETA, metas)
            level, metas = [], []
            files: list[ObjectId] = []
            for tree_id, tree in trees:
                self._children(tree_id, tree, level, metas, files)
            self._note_missing_files(files)

    def _pair_with_held(self, wanted: Iterable[_Wanted]) -> None:
        """Pair each new commit's root tree with the root of the commit its local ref
        holds, so that the walk compares each new tree with the held one at its path
        (``_children``) instead of looking up every entry in the index: an update's
        changed directories are mostly entries it had already (546 look-ups for 94 new
        files; each lets the writers take the interpreter's lock, and waits to get it
        back). Only without partial commits (``thorough``): a ref's commit is then
        complete, and what it names is held; the commit point checks it all again."""
        for want in wanted:
            new = self.commits.get(want.new)
            if new is None or want.old is None or want.old == want.new:
                continue
            try:
                held = self.repo.read_commit(want.old)
            except SapwoodError:  # damaged, or removed meanwhile: every entry looked up
                continue
            self.previous.setdefault(new.tree, held.tree)

    def _children(
        self,
        tree_id: ObjectId,
        tree: DirTree,
        level: list[ObjectId],
        metas: list[ObjectId],
        files: list[ObjectId],
    ) -> None:
        """Add to ``level``, ``metas`` and ``files`` what ``tree`` names that may be
        missing: all of it, but what the held tree at its path names under the same
        name (``previous``); a changed subdirectory is paired with the held one."""
        held = self._held_at_path(tree_id)
        held_files = dict(held.files) if held is not None else {}
        held_dirs = dict(held.dirs) if held is not None else {}
        files += [file_id for name, file_id in tree.files if held_files.get(name) != file_id]
        for name, entry in tree.dirs:
            before = held_dirs.get(name)
            if before is None or before.tree != entry.tree:
                level.append(entry.tree)
                if before is not None:
                    self.previous.setdefault(entry.tree, before.tree)
            if before is None or before.meta != entry.meta:
                metas.append(entry.meta)

    def _held_at_path(self, tree_id: ObjectId) -> DirTree | None:
        held_id = self.previous.pop(tree_id, None)
        if held_id is None:
            return None
        try:
            return self.repo.read_dirtree(held_id)
        except SapwoodError:  # damaged, or removed meanwhile: every entry looked up
            return None

    def _fetch_metadata(
        self, kind: ObjectType, ids: list[ObjectId]
    ) -> list[tuple[ObjectId, DirTree]]:
        """Fetch the objects of ``ids`` that are neither here nor fetched already; the
        dirtrees fetched (the ones whose children are to be walked), and when
        ``thorough`` the held ones not walked yet too (read here, not fetched)."""
        known: dict[ObjectId, MetaObject] = self.trees if kind is ObjectType.DIRTREE else self.metas  # type: ignore[assignment]
        todo: list[ObjectId] = []
        held: list[ObjectId] = []
        with self.repo.snapshot() as snap:
            for oid in dict.fromkeys(ids):
                if oid not in known:
                    (held if snap.has_object(oid) else todo).append(oid)
        found: list[tuple[ObjectId, DirTree]] = []
        if kind is ObjectType.DIRTREE and self.thorough:
            found += self._held_trees(held)
        remote = [oid for oid in todo if oid not in self.from_delta]
        for oid in todo:
            if oid in self.from_delta:
                delta_kind, meta = self.from_delta[oid]
                if delta_kind is not kind:
                    raise CorruptObjectError(
                        f"{self.where}: object {oid.hex()} came in a delta as a "
                        f"{delta_kind.suffix}, but is named as a {kind.suffix}",
                        object_id=oid,
                    )
                known[oid] = meta
        fetched = (
            self._get_objects(remote, kind)  # one round trip on this thread's own lane
            if len(remote) <= OWN_LANE_AT_MOST
            else self._get_spread(remote, kind)
        )
        for oid, data in zip(remote, fetched, strict=True):
            known[oid] = verified_meta(oid, kind, data, self.where)
            self.report.metadata_fetched += 1
        for oid in todo:
            meta = known[oid]
            if isinstance(meta, DirTree):
                found.append((oid, meta))
        return found

    def _held_trees(self, ids: list[ObjectId]) -> list[tuple[ObjectId, DirTree]]:
        """The held dirtrees of ``ids`` not walked yet: after fsck --delete a held
        dirtree no longer stands for its whole subtree, so a commit written (and its
        partial mark cleared) must have had every tree below it walked."""
        trees = []
        for oid in ids:
            if oid not in self.walked_held:
                self.walked_held.add(oid)
                trees.append((oid, self.repo.read_dirtree(oid)))
        return trees

    def _note_missing_files(self, files: list[ObjectId]) -> None:
        """Queue the content objects of ``files`` that are neither here nor queued."""
        with self.repo.snapshot() as snap:
            missing = [
                file_id
                for file_id in dict.fromkeys(files)
                if file_id not in self.queued and not snap.has_object(file_id)
            ]
        for file_id in missing:
            self.queued.add(file_id)
            self.missing_files[file_id] = None
        if self.batches is not None:
            self.batches.on_stop = self.fetcher.halt
            for start in range(0, len(missing), GROUP):
                group = missing[start : start + GROUP]
                self.batches.submit(partial(self._fetch_files, group), weight=len(group))

    # ----- content -----------------------------------------------------------------------
    def _fetch_files(self, ids: list[ObjectId], txn: Transaction) -> None:
        """Fetch, verify and store the content objects of ``ids`` (pipelined)."""

        def decoded(object_id: ObjectId, body: BinaryIO) -> DecodedContent:
            return decoded_filez(body, object_id, self.settings.max_object_size, self._spool_dir)

        fetched = self._fetch_objects(ids, ObjectType.FILE, decoded)
        with contextlib.closing(fetched):
            for object_id, content in fetched:
                try:
                    content.store(txn, object_id, self.repo.mode)
                finally:
                    content.close()
                self.tracker.add_object(content=True)
                if self.batches is not None and self.batches.stopped:
                    raise Stopped  # a failure elsewhere, or a Ctrl-C: not the group's end


def _has_partial_commits(repo: Repository) -> bool:
    """Whether fsck --delete left commits of ``repo`` partial (objects deleted below
    dirtrees that it still holds)."""
    with repo.index.reader() as reader:
        return bool(reader.partial_commits())
