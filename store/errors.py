"""The one error hierarchy of sapwood.

Every error a user can cause or meet derives from :class:`SapwoodError`. What went
wrong is in the class, and the facts a caller acts on are attributes (the object id,
the ref, the path); every constructor still takes the message alone. Messages state
facts and never name command-line flags: the command line (sapwood/cli/errors.py)
maps classes to exit codes and words its own advice; the FUSE adapter maps classes
to errno values.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from store.ids import ObjectId


class SapwoodError(Exception):
    """Base of every error sapwood raises on purpose."""


class RepoNotFoundError(SapwoodError):
    """The path is not a sapwood repository (``path`` None: no repository was named)."""

    def __init__(self, message: str = "", *, path: str | os.PathLike[str] | None = None):
        super().__init__(message or f"{path}: not a sapwood repository")
        self.path = path


class RepoExistsError(SapwoodError):
    """init was asked to create a repository where one (or other data) exists."""


class UsageError(SapwoodError):
    """A call with arguments that do not fit together, or that the repository refuses."""


class ConfigKeyError(UsageError):
    """A repository config key that is unknown, or that cannot be changed this way
    (``key``; ``known``: the keys that can be set)."""

    def __init__(self, message: str = "", *, key: str = "", known: tuple[str, ...] = ()):
        super().__init__(message or f"{key}: not a repository setting")
        self.key = key
        self.known = known


class ConfigValueError(UsageError):
    """A value the repository would refuse to open with (``key``, ``value``): refused
    before anything is written."""

    def __init__(self, message: str = "", *, key: str = "", value: str = ""):
        super().__init__(message or f"{key}: {value!r} is not a valid value")
        self.key = key
        self.value = value


class InvalidNameError(SapwoodError):
    """A file name breaks the rules of DESIGN.md (empty, '.', '..', '/', NUL, >255 bytes)."""


class InvalidRefNameError(SapwoodError):
    """A ref name is not acceptable."""


class RefNotFoundError(SapwoodError):
    """No ref, commit id or prefix matches a revision (``rev``: what was asked for)."""

    def __init__(self, message: str = "", *, rev: str = ""):
        super().__init__(message or f"{rev}: no such ref or commit")
        self.rev = rev


class InvalidDateError(RefNotFoundError):
    """The date of ``REV@{DATE}`` is not one sapwood reads (``date``: the text given;
    ``rev``: the whole revision, when there was one)."""

    def __init__(self, message: str = "", *, rev: str = "", date: str = ""):
        super().__init__(message or f"not a date: {date!r}", rev=rev)
        self.date = date


class NoCommitAtDateError(RefNotFoundError):
    """No commit of ``rev``'s history is as old as ``time`` (seconds since the epoch):
    the date is before its first commit, or a commit id is newer than the date.
    ``earliest`` is the oldest commit looked at and ``earliest_time`` its time."""

    def __init__(
        self,
        message: str = "",
        *,
        rev: str = "",
        time: int = 0,
        earliest: bytes | None = None,
        earliest_time: int | None = None,
    ):
        super().__init__(message or f"{rev}: no commit at or before that time", rev=rev)
        self.time = time
        self.earliest = cast("ObjectId | None", earliest)
        self.earliest_time = earliest_time


class AmbiguousRevError(SapwoodError):
    """An id prefix matches more than one commit (``prefix``)."""

    def __init__(self, message: str = "", *, prefix: str = ""):
        super().__init__(message or f"{prefix}: matches several commits")
        self.prefix = prefix


class RefExistsError(SapwoodError):
    """A ref that should be new already exists (``name``)."""

    def __init__(self, message: str = "", *, name: str = ""):
        super().__init__(message or f"ref {name!r} exists")
        self.name = name


class RefTargetError(SapwoodError):
    """A ref was to name something that is not a commit of this repository."""


class RefConflictError(SapwoodError):
    """A compare-and-swap ref update found another value than expected.

    ``name`` is the ref, ``expected`` the target the caller assumed and ``actual`` the
    one found (None: no such ref).
    """

    def __init__(
        self,
        message: str = "",
        *,
        name: str = "",
        expected: ObjectId | None = None,
        actual: ObjectId | None = None,
    ):
        super().__init__(message or f"ref {name!r} moved while it was being updated")
        self.name = name
        self.expected = expected
        self.actual = actual


class CommitIsHeadError(SapwoodError):
    """A commit to delete is the head of refs (``refs``): deleting it would leave them
    pointing at nothing. ``commit_id`` is the commit."""

    def __init__(
        self, message: str = "", *, commit_id: ObjectId | None = None, refs: tuple[str, ...] = ()
    ):
        super().__init__(message or f"commit is the head of {', '.join(refs)}")
        self.commit_id = commit_id
        self.refs = refs


class ObjectMissingError(SapwoodError):
    """An object the repository should hold is absent (``object_id``, when known)."""

    def __init__(self, message: str = "", *, object_id: bytes | None = None):
        super().__init__(message or f"object {_hex(object_id)} is missing")
        self.object_id = cast("ObjectId | None", object_id)


class CorruptObjectError(SapwoodError):
    """An object's bytes do not match its id or do not decode canonically
    (``object_id``, when known: bytes being decoded may not have one yet)."""

    def __init__(self, message: str = "", *, object_id: bytes | None = None):
        super().__init__(message or f"object {_hex(object_id)} is corrupt")
        self.object_id = cast("ObjectId | None", object_id)


class FormatError(CorruptObjectError):
    """Bytes are not a canonical encoding of the expected object type."""


class UnsupportedFileTypeError(SapwoodError):
    """A source tree holds a device node, fifo or socket (``path``, as in the source)."""

    def __init__(self, message: str = "", *, path: str | os.PathLike[str] | None = None):
        super().__init__(message or f"{path}: not a regular file, symlink or directory")
        self.path = path


class SourceError(SapwoodError):
    """A source tree or archive cannot be read, or is unsafe (absolute or ../ members)."""


class ModePolicyError(SapwoodError):
    """The repository mode refuses this content (bare-user-only and setuid, say):
    ``path`` names the entry and ``file_mode`` its mode, when content was refused."""

    def __init__(self, message: str = "", *, path: str = "", file_mode: int | None = None):
        super().__init__(message or f"{path}: refused by the repository's mode")
        self.path = path
        self.file_mode = file_mode


class PermissionDeniedError(SapwoodError):
    """The operation needs privileges the process lacks (a bare repository as a user)."""


class PathNotFoundError(SapwoodError):
    """A path does not exist inside a commit (``path``, as asked for)."""

    def __init__(self, message: str = "", *, path: str = ""):
        super().__init__(message or f"{path}: no such file or directory in the commit")
        self.path = path


class NotADirectoryInTreeError(PathNotFoundError):
    """A path component inside a commit is not a directory."""


class NoSuchAttributeError(SapwoodError):
    """An extended attribute that an entry does not have."""


class OutOfSpaceError(SapwoodError):
    """The disk is full, or the configured minimum of free space would be crossed."""


class IndexDamagedError(SapwoodError):
    """The repository's index is missing, truncated or unreadable.

    Never answered by creating a new, empty index: that would make every object
    look unreachable and let prune delete them all.
    """


class AddressSpaceError(SapwoodError):
    """An index could not be mapped: this process's address space is full. The index
    is intact. Each open repository maps ``needed`` bytes of address space (1 TiB, of
    x86-64's 128 TiB) until it is closed or collected: close repositories no longer
    used."""

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


class ReadOnlyRepositoryError(PermissionDeniedError):
    """A write was asked of a repository this process may only read."""


class MountError(SapwoodError):
    """A mount could not be made or removed; the message is the daemon's or libfuse's."""


class ObjectReadError(SapwoodError):
    """An object's file, or its decompressed copy, could not be read or written: a disk
    error, a full TMPDIR. Its message names the object (the OSError alone would not)."""


class TooManyFilesError(SapwoodError):
    """A directory holds more files than the mount's inode numbers can address."""


class UnsafeToPruneError(SapwoodError):
    """Prune could not read everything that is reachable, so it deletes nothing."""


class RepoBusyError(SapwoodError):
    """A repository's lock stayed held by another process (a prune or a repair, which
    hold it exclusively) past the wait allowed (``path``: the repository)."""

    def __init__(self, message: str = "", *, path: str = ""):
        super().__init__(message or f"{path}: the repository is locked by another process")
        self.path = path


class NetworkError(SapwoodError):
    """Fetching from a remote failed: the connection, a timeout, an HTTP status, a
    redirect loop, or a body larger than allowed. ``url`` is what was fetched and
    ``status`` the HTTP status when there was one (404: the file is not there)."""

    def __init__(self, message: str = "", *, url: str = "", status: int | None = None):
        super().__init__(message or f"{url}: fetch failed")
        self.url = url
        self.status = status


class ReaderGoneError(SapwoodError):
    """The mount's answer to a read whose reader is gone (exited or killed) before its
    object was verified: an answer no one sees (the verification was given up, or goes
    on for others). Raised inside the mount daemon only (mountd/preparing.py)."""


class PullHaltedError(SapwoodError):
    """A fetch given up because its pull stops: a Ctrl-C, or an error the pull raises
    already (``url``: what was being fetched, empty if nothing yet). Never the pull's
    own error: the pull reports the error or the interruption that halted it, so this
    one is not expected to reach a caller."""

    def __init__(self, message: str = "", *, url: str = ""):
        super().__init__(message or f"{url or 'a fetch'}: the pull stopped")
        self.url = url


class RemoteError(SapwoodError):
    """A remote is unknown, or its configuration (URL, name, settings) is not valid
    (``name``: the remote)."""

    def __init__(self, message: str = "", *, name: str = ""):
        super().__init__(message or f"remote {name!r}: not configured")
        self.name = name


class SignatureError(SapwoodError):
    """A commit or summary is unsigned, or signed by no trusted key, where signatures
    are required (``commit_id``: the commit; None for a summary)."""

    def __init__(self, message: str = "", *, commit_id: bytes | None = None):
        super().__init__(message or f"commit {_hex(commit_id)}: no trusted signature")
        self.commit_id = cast("ObjectId | None", commit_id)


class DowngradeError(SapwoodError):
    """A pull would move ``ref`` from its commit ``current`` back to ``offered``, whose
    timestamp (``offered_time``, seconds) is older than the current one's
    (``current_time``): refused unless downgrades are allowed, since replaying an old
    release is how a man in the middle or a stale mirror rolls a machine back."""

    def __init__(
        self,
        message: str = "",
        *,
        ref: str = "",
        current: bytes | None = None,
        offered: bytes | None = None,
        current_time: int = 0,
        offered_time: int = 0,
    ):
        super().__init__(message or f"{ref}: would move back to an older commit")
        self.ref = ref
        self.current = cast("ObjectId | None", current)
        self.offered = cast("ObjectId | None", offered)
        self.current_time = current_time
        self.offered_time = offered_time


class SignedDowngradeError(DowngradeError, SignatureError):
    """DowngradeError from a remote that requires signatures: the older commit is
    genuinely signed, but a signature says who made a commit, not that it is the newest
    (``commit_id``: the older commit offered)."""

    def __init__(
        self,
        message: str = "",
        *,
        ref: str = "",
        current: bytes | None = None,
        offered: bytes | None = None,
        current_time: int = 0,
        offered_time: int = 0,
    ):
        super().__init__(
            message,
            ref=ref,
            current=current,
            offered=offered,
            current_time=current_time,
            offered_time=offered_time,
        )
        self.commit_id = cast("ObjectId | None", offered)


class SysrootError(SapwoodError):
    """A sysroot (deployments, boot entries) refuses an operation; base of the others."""


class SysrootNotFoundError(SysrootError):
    """The path is not an initialised sysroot (``path``)."""

    def __init__(self, message: str = "", *, path: str | os.PathLike[str] | None = None):
        super().__init__(message or f"{path}: not a sapwood sysroot")
        self.path = path


class UnknownOSError(SysrootError):
    """No OS (stateroot) of that name in the sysroot (``os_name``)."""

    def __init__(self, message: str = "", *, os_name: str = ""):
        super().__init__(message or f"no OS {os_name!r} in the sysroot")
        self.os_name = os_name


class DeploymentIndexError(SysrootError):
    """A deployment index outside the list (``index``, ``count`` deployments)."""

    def __init__(self, message: str = "", *, index: int = 0, count: int = 0):
        super().__init__(message or f"no deployment {index} (there are {count})")
        self.index = index
        self.count = count


class BootedDeploymentError(SysrootError):
    """The operation would remove the deployment the machine is running (``index``)."""

    def __init__(self, message: str = "", *, index: int = 0):
        super().__init__(message or f"deployment {index} is the booted one")
        self.index = index


class TreeLayoutError(SysrootError):
    """A commit cannot be deployed as it is (both /etc and /usr/etc, say): ``path``."""

    def __init__(self, message: str = "", *, path: str = ""):
        super().__init__(message or f"{path}: cannot be deployed")
        self.path = path


class EtcMergeConflictError(SysrootError):
    """A locally changed /etc entry and the new default differ in type (``path``)."""

    def __init__(self, message: str = "", *, path: str = ""):
        super().__init__(message or f"/etc/{path}: local and new default differ in type")
        self.path = path


class InitramfsTreeError(SysrootError):
    """A tree cannot take sapwood's initramfs hook: ``tree`` is not a directory, or
    ``missing`` (a path inside it: initramfs-tools, util-linux mount) is absent."""

    def __init__(self, message: str = "", *, tree: str = "", missing: str = ""):
        if not message:
            message = (
                f"{tree}: no {missing} in the tree (install initramfs-tools and mount)"
                if missing
                else f"{tree}: not a directory"
            )
        super().__init__(message)
        self.tree = tree
        self.missing = missing


class KeyFileError(SapwoodError):
    """A keys file (ed25519 secret keys, base64, one a line) is missing, unreadable or
    malformed, or holds a public key where a secret one belongs (``path``)."""

    def __init__(self, message: str = "", *, path: str | os.PathLike[str] | None = None):
        super().__init__(message or f"{path}: not a keys file")
        self.path = path


def _hex(object_id: bytes | None) -> str:
    return object_id.hex() if object_id is not None else "(unknown)"
