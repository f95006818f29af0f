"""The whole repository as a tree: refs/, commits/ and history/ (``sapwood mount MNT``).

    refs/REF/                the tree of REF's head; follows REF when it moves
    commits/ID/              every commit by full id; a unique prefix (4+ digits) resolves too
    history/REF/DATE_ID/     REF's history, newest first (DATE is UTC, ID 12 digits)

A ref name with slashes (os/x86_64/stable) is a path of directories. Each commit's
root directory carries its subject, version, parent, time and id as xattrs
(user.sapwood.*; ``getfattr -d commits/ID``). Listings of refs and commits are
re-read on every request and expire from the kernel's cache within a second; their
mtime is the time they were last seen to change, which is what makes the kernel drop a
listing it keeps. A commit root's inode depends on the commit, so a moved ref shows the
new tree.
"""

from __future__ import annotations

import datetime
import time

from mountd.view import DirNode, TreeView, ViewOptions
from store import DirEntry, ObjectId, PathNotFoundError, Repository, history

_TOP = (b"commits", b"history", b"refs")


class RepositoryView(TreeView):
    def __init__(self, repo: Repository, options: ViewOptions | None = None) -> None:
        self._mounted_ns = time.time_ns()
        self._listings: dict[tuple[str, str], DirNode] = {}
        self._commit_roots: dict[tuple[int, bytes, ObjectId], DirNode] = {}
        self._changed: dict[int, tuple[int, int]] = {}  # instance -> (listing hash, time)
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
            with self.repo.index.reader() as reader:
                matches = reader.commits_with_prefix(text) if len(text) >= 4 else []
            if len(matches) == 1:
                return self._commit_root(parent, matches[0].hex().encode(), matches[0])
            raise PathNotFoundError(f"no single commit {text}")
        return super()._synthetic_child(parent, name)

    def _synthetic_children(self, parent: DirNode) -> list[tuple[bytes, DirNode]]:
        assert parent.synthetic is not None
        kind, prefix = parent.synthetic
        if kind == "root":
            return [(name, self._synthetic(name.decode(), "")) for name in _TOP]
        if kind == "commits":
            with self.repo.index.reader() as reader:
                ids = sorted(cid for cid, _ in reader.commit_ids())
            return [
                (cid.hex().encode(), self._commit_root(parent, cid.hex().encode(), cid))
                for cid in ids
            ]
        if kind == "history-of":
            return self._history(parent, prefix)
        return self._ref_level(parent, kind, prefix)

    def _ref_level(self, parent: DirNode, kind: str, prefix: str) -> list[tuple[bytes, DirNode]]:
        """One level of the ref namespace: leaf refs and deeper prefixes."""
        refs = self.repo.refs()
        found: dict[bytes, DirNode] = {}
        for ref, commit_id in sorted(refs.items()):
            if not ref.startswith(prefix):
                continue
            head, slash, _ = ref[len(prefix) :].partition("/")
            name = head.encode()
            if not slash:  # a ref itself (wins over a prefix of the same name)
                leaf = (
                    self._commit_root(parent, name, commit_id)
                    if kind == "refs"
                    else self._synthetic("history-of", ref)
                )
                found[name] = leaf
            elif name not in found:
                found[name] = self._synthetic(kind, f"{prefix}{head}/")
        return sorted(found.items())

    def _history(self, parent: DirNode, ref: str) -> list[tuple[bytes, DirNode]]:
        head = self.repo.refs().get(ref)
        if head is None:
            return []
        entries = []
        for commit_id, commit in history(self.repo, head):
            moment = datetime.datetime.fromtimestamp(commit.timestamp, tz=datetime.UTC)
            name = f"{moment:%Y-%m-%dT%H%M%SZ}_{commit_id.hex()[:12]}".encode()
            entries.append((name, self._commit_root(parent, name, commit_id)))
        return entries
