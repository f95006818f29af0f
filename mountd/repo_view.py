"""The whole repository as a tree: refs/, commits/ and history/ (``sapwood mount MNT``).

    refs/REF/                the tree of REF's head; follows REF when it moves
    commits/ID/              every commit by full id; a unique prefix (4+ digits) resolves too
    history/REF/DATE_ID/     REF's history, newest first (DATE is UTC, ID 12 digits)
    history/REF/by-date/D/   REF's newest commit at or before D (any date REV@{D} takes
                             that is a file name: 2026-11-01, 2026-11-01T12:00:00+02:00,
                             yesterday, 3 days ago); looked up, never listed

A ref name with slashes (os/x86_64/stable) is a path of directories. Each commit's
root directory carries its subject, version, parent, time and id as xattrs
(user.sapwood.*; ``getfattr -d commits/ID``). Listings of refs and commits are
re-read on every request and expire from the kernel's cache within a second; their
mtime is the time they were last seen to change, which is what makes the kernel drop a
listing it keeps. A commit root's inode depends on the commit, so a moved ref shows the
new tree.

A ref or commit that cannot be shown (a ref to a dirtree or a file, as repositories made
before the store refused them may hold; a commit whose record or root is damaged) is
left out of the listings, with one log line, and the others are shown. A history that
comes back to a commit it has shown (only a damaged index can say so) stops there.

``by-date`` is found by name in history/REF/ but not listed there, so that the listing
stays one entry per commit (a history name always ends in _ID, so never collides with
it); by-date/ itself lists nothing: its names are computed from what is looked up. A
date that is not one, or that is older than REF's first commit, is not found.
"""

from __future__ import annotations

import array
import datetime
import logging
import time
from collections.abc import Iterator

from mountd.lru import RecentKeys
from mountd.view import DirNode, TreeView, ViewOptions
from store import (
    DirEntry,
    ObjectId,
    PathNotFoundError,
    RefNotFoundError,
    Repository,
    SapwoodError,
    check_name,
    history,
    parse_date,
)

log = logging.getLogger(__name__)

_TOP = (b"commits", b"history", b"refs")
BY_DATE = b"by-date"


class RepositoryView(TreeView):
    def __init__(self, repo: Repository, options: ViewOptions | None = None) -> None:
        self._mounted_ns = time.time_ns()
        self._listings: dict[tuple[str, str], DirNode] = {}
        self._commit_roots: dict[tuple[int, bytes, ObjectId], DirNode] = {}
        self._changed: dict[int, tuple[int, int]] = {}  # instance -> (listing hash, time)
        self._reported = RecentKeys[str](4096)  # what was logged as left out
        self._showable: set[ObjectId] = set()  # commits whose root was read once
        self._walks: dict[ObjectId, _Walk] = {}  # by-date's walks, by head
        super().__init__(repo, None, self._mounted_ns, options)
        self._listings[("root", "")] = self.root

    def _synthetic(self, kind: str, prefix: str) -> DirNode:
        node = self._listings.get((kind, prefix))
        if node is None:
            node = self._add_root(None, self._mounted_ns, synthetic=(kind, prefix))
            self._listings[(kind, prefix)] = node
        return node

    def _commit_root(self, parent: DirNode, name: bytes, commit_id: ObjectId) -> DirNode:
        """The root of a commit as shown at ``name`` of ``parent``: a new inode per commit."""
        key = (parent.instance, name, commit_id)
        node = self._commit_roots.get(key)
        if node is None:
            commit = self.repo.read_commit(commit_id)
            entry = DirEntry(commit.tree, commit.meta)
            node = self._add_root(entry, commit.timestamp * 1_000_000_000, commit=commit_id)
            self._commit_roots[key] = node
        return node

    def _shown_root(
        self, parent: DirNode, name: bytes, commit_id: ObjectId, what: str
    ) -> DirNode | None:
        """A commit root for a listing, or None (logged once) if it cannot be shown."""
        return self._commit_root(parent, name, commit_id) if self._shows(commit_id, what) else None

    def _shows(self, commit_id: ObjectId, what: str) -> bool:
        """Whether ``commit_id`` is a commit whose root can be shown (else logged once)."""
        if commit_id in self._showable:
            return True
        try:
            commit = self.repo.read_commit(commit_id)
            self._tree(commit.tree)
            self._dirmeta(commit.meta)
        except SapwoodError as exc:
            self._leave_out(f"{what} is left out of the listings: {exc}")
            return False
        self._showable.add(commit_id)
        return True

    def _names_paths(self, ref: str) -> bool:
        """Whether every component of ``ref`` can be a directory's name (else logged once).

        The store refuses such refs; a damaged index may still hold one, and one empty
        name would make the kernel refuse the whole listing.
        """
        try:
            for component in ref.split("/"):
                check_name(component.encode(errors="surrogateescape"), f"ref {ref!r}")
        except SapwoodError as exc:
            self._leave_out(f"ref {ref!r} is left out of the listings: {exc}")
            return False
        return True

    def _leave_out(self, message: str) -> None:
        if self._reported.first_time(message):
            log.warning("%s", message)

    def _listing_time(self, node: DirNode) -> int:
        """When the listing was last seen to change: the kernel keeps a listing it has
        read until the directory's mtime moves."""
        listing = self._synthetic_children(node)
        signature = hash(tuple((name, child.instance) for name, child in listing))
        seen = self._changed.get(node.instance)
        if seen is None:
            seen = (signature, self._mounted_ns)
        elif seen[0] != signature:
            seen = (signature, max(time.time_ns(), seen[1] + 1))
        self._changed[node.instance] = seen
        return seen[1]

    def _synthetic_child(self, parent: DirNode, name: bytes) -> DirNode:
        assert parent.synthetic is not None
        if parent.synthetic[0] == "commits":
            text = name.decode("ascii", "replace").lower()
            with self.repo.snapshot() as snapshot:
                matches = snapshot.commits_with_prefix(text) if len(text) >= 4 else []
            if len(matches) == 1:
                return self._commit_root(parent, matches[0].hex().encode(), matches[0])
            raise PathNotFoundError(f"no single commit {text}")
        if parent.synthetic[0] == "history-of" and name == BY_DATE:
            return self._synthetic("by-date", parent.synthetic[1])
        if parent.synthetic[0] == "by-date":
            return self._by_date(parent, parent.synthetic[1], name)
        return super()._synthetic_child(parent, name)

    def _by_date(self, parent: DirNode, ref: str, name: bytes) -> DirNode:
        """history/REF/by-date/NAME: REF's newest commit at or before the date NAME.

        A name that is no date, or a date before REF's first commit, is not found (a
        PathNotFoundError carrying the store's reason); a history that loops is an error.
        """
        text = name.decode("utf-8", "surrogateescape")
        head = self.repo.ref(ref)
        if head is None:
            raise PathNotFoundError(f"no ref {ref}", path=f"history/{ref}")
        try:
            when = parse_date(text, now=int(time.time()))
        except RefNotFoundError as exc:  # InvalidDateError
            raise PathNotFoundError(str(exc), path=f"history/{ref}/by-date/{text}") from exc
        walk = self._walks.pop(head, None) or _Walk(self.repo, head)
        self._walks[head] = walk  # the most recently used last
        while len(self._walks) > _WALKS_KEPT:
            del self._walks[next(iter(self._walks))]
        commit_id = walk.as_of(when)
        if commit_id is None:
            raise PathNotFoundError(
                f"{ref}@{{{text}}}: no commit at or before {_date_name(when)}; " + walk.earliest(),
                path=f"history/{ref}/by-date/{text}",
            )
        # keyed by the commit, not the name: the many names of one commit share a node
        return self._commit_root(parent, commit_id.hex().encode(), commit_id)

    def _synthetic_children(self, parent: DirNode) -> list[tuple[bytes, DirNode]]:
        assert parent.synthetic is not None
        kind, prefix = parent.synthetic
        if kind == "root":
            return [(name, self._synthetic(name.decode(), "")) for name in _TOP]
        if kind == "commits":
            with self.repo.snapshot() as snapshot:
                ids = sorted(cid for cid, _ in snapshot.commits())
            roots = [(cid.hex().encode(), cid) for cid in ids]
            shown = [
                (name, self._shown_root(parent, name, cid, f"commit {cid.hex()}"))
                for name, cid in roots
            ]
            return [(name, node) for name, node in shown if node is not None]
        if kind == "history-of":
            return self._history(parent, prefix)
        if kind == "by-date":
            return []  # computed on lookup
        return self._ref_level(parent, kind, prefix)

    def _ref_level(self, parent: DirNode, kind: str, prefix: str) -> list[tuple[bytes, DirNode]]:
        """One level of the ref namespace: leaf refs and deeper prefixes.

        Only refs to a commit that can be shown count: a prefix of nothing else but
        refs that cannot is not shown either.
        """
        refs = self.repo.refs()
        found: dict[bytes, DirNode] = {}
        for ref, commit_id in sorted(refs.items()):
            if not ref.startswith(prefix):
                continue
            head, slash, _ = ref[len(prefix) :].partition("/")
            name = head.encode()
            if not self._names_paths(ref) or not self._shows(commit_id, f"ref {ref}"):
                continue
            if not slash:  # a ref itself (wins over a prefix of the same name)
                found[name] = (
                    self._commit_root(parent, name, commit_id)
                    if kind == "refs"
                    else self._synthetic("history-of", ref)
                )
            elif name not in found:
                found[name] = self._synthetic(kind, f"{prefix}{head}/")
        return sorted(found.items())

    def _history(self, parent: DirNode, ref: str) -> list[tuple[bytes, DirNode]]:
        head = self.repo.ref(ref)
        if head is None:
            return []
        entries = []
        for commit_id, timestamp in self._ancestors(ref, head):
            name = f"{_date_name(timestamp)}_{commit_id.hex()[:12]}".encode()
            node = self._shown_root(parent, name, commit_id, f"commit {commit_id.hex()}")
            if node is not None:
                entries.append((name, node))
        return entries

    def _ancestors(self, ref: str, head: ObjectId) -> Iterator[tuple[ObjectId, int]]:
        """(id, time) of ``head`` and its ancestors, newest first, while they can be read.

        Ends at a missing parent (a history pulled with a depth, or pruned), and at a
        damaged commit or a commit seen already, with one log line.
        """
        try:
            for commit_id, commit in history(self.repo, head):
                yield commit_id, commit.timestamp
        except SapwoodError as exc:  # a damaged commit, or a loop in a tampered index
            self._leave_out(f"history of {ref} is shown up to where it fails: {exc}")


_WALKS_KEPT = 8  # heads whose walk by-date keeps: 40 bytes a commit each


class _Walk:
    """A history as far as by-date lookups have walked it: each commit's time and id,
    in walk order, so a lookup scans memory instead of reading the commits again.

    Without it every lookup walked from the head (commit_as_of): 74 ms at 5,000
    commits, on the daemon's request path, however many times a client asked. The
    walk goes on only as far as a lookup needs (``now`` reads one commit); what it
    answers is what commit_as_of answers: the first commit of the walk at or before
    the time. A loop (a damaged index) is raised again to each later lookup.
    """

    def __init__(self, repo: Repository, head: ObjectId) -> None:
        self._times = array.array("q")
        self._ids = bytearray()  # 32 bytes a commit
        self._rest = history(repo, head)
        self._failed: SapwoodError | None = None
        self._head = head

    def as_of(self, when: int) -> ObjectId | None:
        """The first commit walked whose time is at or before ``when``; None if none."""
        for index, timestamp in enumerate(self._times):
            if timestamp <= when:
                return ObjectId(bytes(self._ids[index * 32 : index * 32 + 32]))
        if self._failed is not None:
            raise self._failed
        try:
            for commit_id, commit in self._rest:
                self._times.append(commit.timestamp)
                self._ids += commit_id
                if commit.timestamp <= when:
                    return commit_id
        except SapwoodError as exc:  # a loop, or a damaged commit: every lookup says so
            self._failed = exc
            raise
        return None

    def earliest(self) -> str:
        """Which commit of the whole walk is the oldest, for a too-early date's message."""
        if not self._times:
            return f"commit {self._head.hex()[:12]} is not in this repository"
        index = min(range(len(self._times)), key=self._times.__getitem__)
        short = self._ids[index * 32 : index * 32 + 6].hex()  # 12 digits, as history/ names
        return f"the earliest in its history is {short} of {_date_name(self._times[index])}"


def _date_name(timestamp: int) -> str:
    """2026-11-27T061500Z; a time the calendar cannot show (before year 1, after 9999:
    any 64-bit time is a valid commit time) is named by its seconds, 253402300800s."""
    try:
        moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    except (ValueError, OverflowError, OSError):
        return f"{timestamp}s"
    return f"{moment:%Y-%m-%dT%H%M%SZ}"
