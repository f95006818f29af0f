"""Step 2 of a pull (see store.pull.pull): the wanted commits and their parents
fetched and decoded, their signatures (and the summary's) checked against the
remote's trusted keys, and a ref never moved to an older commit unless downgrades
are allowed."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from store.content import object_relpath
from store.errors import (
    DowngradeError,
    FormatError,
    ObjectMissingError,
    SignatureError,
    SignedDowngradeError,
)
from store.ids import ObjectId, ObjectType
from store.objects import Commit
from store.pull import formats
from store.pull.job import _Job, _settle, _Wanted
from store.pull.objects import verified_meta
from store.repo import Repository

log = logging.getLogger(__name__)
_ANCESTRY_STEPS = 4096  # how far back a ref's own history is searched for the offer


class _Checks(_Job):
    """The commits to pull, fetched and checked."""

    def _verify_summary(self, data: bytes) -> None:
        try:
            sig = self._get("summary.sig", self.settings.max_metadata_size, "summary signature")
        except ObjectMissingError:
            raise SignatureError(
                f"{self.where}: the summary is unsigned, and this remote requires signatures"
            ) from None
        try:
            key = formats.verify(data, sig, self.remote.trusted_keys)
        except FormatError as exc:
            raise SignatureError(f"{self.where}: summary.sig is not valid: {exc}") from None
        if key is None:
            raise SignatureError(f"{self.where}: the summary is signed by no trusted key")

    def _commit_chain(self, head: ObjectId, depth: int) -> list[ObjectId]:
        """The commits to walk: ``head`` and up to ``depth`` parents, fetched (and their
        signatures checked) unless the local repository holds them whole."""
        roots = []
        commit_id: ObjectId | None = head
        for level in range(depth + 1):
            if commit_id is None:
                break
            commit = self._commit(commit_id, required=level == 0)
            if commit is None:
                break
            if commit_id in self.commits:
                roots.append(commit_id)
            commit_id = commit.parent
        return roots

    def _commit(self, commit_id: ObjectId, required: bool) -> Commit | None:
        local = self.repo.has_object(commit_id) and not self.repo.is_partial(commit_id)
        if local and not self.remote.sign_verify:
            return self.repo.read_commit(commit_id)
        if commit_id in self.commits:
            return self.commits[commit_id]
        signatures = self.pool.submit(self._commitmeta, commit_id)  # beside the commit:
        try:  # one round trip, not two, before the trees (checked after the commit still)
            data = self._get_object(commit_id, ObjectType.COMMIT)
        except ObjectMissingError:
            _settle([signatures])
            if required:
                raise
            log.info("%s: parent commit %s is not there; history ends", self.where, commit_id.hex())
            return None
        except BaseException:
            _settle([signatures])
            raise
        commit = verified_meta(commit_id, ObjectType.COMMIT, data, self.where)
        assert isinstance(commit, Commit)
        self._signatures(commit_id, data, signatures.result())
        if not local:
            self.commits[commit_id] = commit
            self.report.commits_fetched += 1
        return commit

    def _commitmeta(self, commit_id: ObjectId) -> bytes | None:
        """The commit's detached signatures as the remote serves them; None if it has none."""
        relpath = "objects/" + object_relpath(commit_id, ObjectType.COMMIT) + "meta"
        try:
            return self._get(relpath, self.settings.max_metadata_size, "commit signatures")
        except ObjectMissingError:
            return None

    def _signatures(self, commit_id: ObjectId, data: bytes, meta: bytes | None) -> None:
        """Keep the commit's detached signatures ``meta`` (fetched beside it) with it in
        the local repository; with sign-verify, refuse it unless one is by a trusted key."""
        if meta is None:
            if self.remote.sign_verify:
                raise SignatureError(
                    f"{self.where}: commit {commit_id.hex()} is unsigned, and this remote "
                    "requires signatures",
                    commit_id=commit_id,
                )
            return
        try:
            key = formats.verify(data, meta, self.remote.trusted_keys)
        except FormatError as exc:
            raise SignatureError(
                f"{self.where}: commit {commit_id.hex()}: its signatures are not valid: {exc}",
                commit_id=commit_id,
            ) from None
        if self.remote.sign_verify and key is None:
            raise SignatureError(
                f"{self.where}: commit {commit_id.hex()} is signed by no trusted key",
                commit_id=commit_id,
            )
        self.signatures[commit_id] = meta

    def _is_ancestor(self, want: _Wanted) -> bool:
        """Whether the offered commit is an ancestor of the one the ref holds (walked in
        the local history: commits of one second, a release and its hotfix, have equal
        timestamps; replaying the release must not undo the hotfix: attack23 5)."""
        if want.old is None:
            return False
        return any(a == want.new for a in _held_ancestors(self.repo, want.old))

    def _refuse_downgrade(self, want: _Wanted) -> None:
        """DowngradeError if ``want`` moves its ref to a commit older than the one it
        holds: a replayed old summary (signed or not) must not roll a machine back."""
        if want.old is None or want.old == want.new or self.allow_downgrade:
            return
        current = self.repo.read_commit(want.old).timestamp
        offered_commit = self.commits.get(want.new) or self.repo.read_commit(want.new)
        offered = offered_commit.timestamp
        if offered > current or (offered == current and not self._is_ancestor(want)):
            return  # of the same second: a child moves the ref, its own parent does not
        error = SignedDowngradeError if self.remote.sign_verify else DowngradeError
        raise error(
            f"{self.where}: would move {want.local} back from commit {want.old.hex()[:12]} "
            f"({_when(current)}) to the {'older' if offered < current else 'ancestor'} "
            f"{want.new.hex()[:12]} ({_when(offered)}); "
            "nothing was pulled: an older commit is taken only when downgrades are allowed",
            ref=want.local,
            current=want.old,
            offered=want.new,
            current_time=current,
            offered_time=offered,
        )


def _held_ancestors(repo: Repository, commit_id: ObjectId) -> Iterator[ObjectId]:
    """The ancestors of ``commit_id`` by id, nearest first, as far as the repository
    holds the commits: the first one it lacks (a pull without depth keeps the head
    alone) is named by its child, and ends the walk; so do _ANCESTRY_STEPS (a looping
    or endless history)."""
    parent = repo.read_commit(commit_id).parent
    for _ in range(_ANCESTRY_STEPS):
        if parent is None:
            return
        yield parent
        if not repo.has_object(parent):
            return
        parent = repo.read_commit(parent).parent


def _when(timestamp: int) -> str:
    """A commit's timestamp as a UTC date (the number itself if out of range)."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
    except (OverflowError, OSError, ValueError):
        return str(timestamp)
