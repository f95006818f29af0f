"""The whole repository as a tree: refs/, commits/ and history/ (``sapwood mount MNT``).

    refs/REF/                the tree of REF's head; follows REF when it moves
    commits/ID/              every commit by full id; a unique prefix (4+ digits) resolves too
    history/REF/DATE_ID/     REF's history, newest first (DATE is UTC, ID 12 digits)

A ref name with slashes (os/x86_64/stable) is a path of directories. Each commit's
root directory carries its subject, version, parent, time and id as xattrs
(user.sapwood.*; ``getfattr -d commits/ID``). Listings of refs and commits are
re-read on every request and expire from the kernel's cache within a second; a
commit root's inode depends on the commit, so a moved ref shows the new tree.
"""

from __future__ import annotations

import datetime
import time

from mountd.view import _MASK, ROOT_INODE, TreeView, ViewOptions, _hash_ino, _Node
from store import DirEntry, ObjectId, PathNotFoundError, Repository, history

_TOP = (b"commits", b"history", b"refs")


class RepositoryView(TreeView):
    def __init__(self, repo: Repository, options: ViewOptions | None = None) -> None:
        self._mounted_ns = time.time_ns()
        root = _Node(ROOT_INODE, time_ns=self._mounted_ns, synthetic=("root", ""))
        super().__init__(repo, root, options)

    def _synthetic(self, kind: str, prefix: str) -> _Node:
        ino = _hash_ino(b"synthetic", kind.encode(), prefix.encode()) & _MASK
        return _Node(max(ino, ROOT_INODE + 1), time_ns=self._mounted_ns, synthetic=(kind, prefix))

    def _commit_root(self, parent: _Node, name: bytes, commit_id: ObjectId) -> _Node:
        commit = self.repo.read_commit(commit_id)
        ino = _hash_ino(parent.ino.to_bytes(8, "big"), name, commit_id) & _MASK
        return _Node(
            max(ino, ROOT_INODE + 1),
            dir=DirEntry(commit.tree, commit.meta),
            time_ns=commit.timestamp * 1_000_000_000,
            commit=commit_id,
        )

    def _synthetic_child(self, parent: _Node, name: bytes) -> _Node:
        assert parent.synthetic is not None
        if parent.synthetic[0] == "commits":
            text = name.decode("ascii", "replace").lower()
            with self.repo.index.reader() as reader:
                matches = reader.commits_with_prefix(text) if len(text) >= 4 else []
            if len(matches) == 1:
                return self._commit_root(parent, matches[0].hex().encode(), matches[0])
            raise PathNotFoundError(f"no single commit {text}")
        return super()._synthetic_child(parent, name)

    def _synthetic_children(self, parent: _Node) -> list[tuple[bytes, _Node]]:
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

    def _ref_level(self, parent: _Node, kind: str, prefix: str) -> list[tuple[bytes, _Node]]:
        """One level of the ref namespace: leaf refs and deeper prefixes."""
        refs = self.repo.refs()
        found: dict[bytes, _Node] = {}
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

    def _history(self, parent: _Node, ref: str) -> list[tuple[bytes, _Node]]:
        head = self.repo.refs().get(ref)
        if head is None:
            return []
        entries = []
        for commit_id, commit in history(self.repo, head):
            moment = datetime.datetime.fromtimestamp(commit.timestamp, tz=datetime.UTC)
            name = f"{moment:%Y-%m-%dT%H%M%SZ}_{commit_id.hex()[:12]}".encode()
            entries.append((name, self._commit_root(parent, name, commit_id)))
        return entries

    def volatile_dir(self, ino: int) -> bool:
        return self._node(ino).synthetic is not None
