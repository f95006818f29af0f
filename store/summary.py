"""The summary of a repository: what a client reads first (``REPO/summary``).

It lists the repository's refs (each with its commit id and the commit's timestamp)
and the static deltas on offer (each with the blake3 digest of its superblock), so a
client learns with one request what there is to pull and which delta fits. ``sapwood
summary -u`` regenerates it; with keys it is signed (``REPO/summary.sig``, the
encoding of store/signing.py).

Encoding (canonical and versioned, like the objects of docs/format.md)::

    'S' 01  u32 n  n x (blob ref name (UTF-8), id commit, i64 timestamp)
                    sorted by name bytes, unique, valid ref names without a remote
            u32 m  m x (u8 has_from, [id from], id to, id superblock digest)
                    sorted by (from, or nothing first; to), unique

Pulled refs (``REMOTE:REF``) are not offered: the summary says what this repository
publishes. The decoder refuses anything whose re-encoding differs (FormatError).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from store.durability import replace_file
from store.encoding import Reader, Writer
from store.errors import FormatError, InvalidRefNameError
from store.ids import ID_BYTES, ObjectId, digest, is_full_hex
from store.names import check_ref_name
from store.record import Frozen
from store.repo import Repository

if TYPE_CHECKING:
    from store.signing import KeyPair

log = logging.getLogger(__name__)
SUMMARY_FILE = "summary"
SIGNATURE_FILE = "summary.sig"
DELTAS_DIR = "deltas"
SUPERBLOCK_FILE = "superblock"
MAX_SUMMARY_BYTES = 64 << 20  # a client reads no more than this of a summary
_MAX_SIGNATURE_FILE = 1 << 20  # 1024 signatures of 96 bytes, and more
_TAG = b"S"
_VERSION = 1
_REF_MIN = 4 + ID_BYTES + 8  # the smallest ref entry: empty name, id, timestamp
_DELTA_MIN = 1 + 2 * ID_BYTES

DeltaKey = tuple[ObjectId | None, ObjectId]


class Summary(Frozen):
    """What a repository publishes: ``refs`` name -> (commit id, commit timestamp);
    ``deltas`` (from id or None, to id) -> blake3 digest of the delta's superblock."""

    __slots__ = ("deltas", "refs")

    refs: Mapping[str, tuple[ObjectId, int]]
    deltas: Mapping[DeltaKey, bytes]

    def __init__(
        self,
        refs: Mapping[str, tuple[ObjectId, int]] | None = None,
        deltas: Mapping[DeltaKey, bytes] | None = None,
    ) -> None:
        object.__setattr__(self, "refs", {} if refs is None else refs)
        object.__setattr__(self, "deltas", {} if deltas is None else deltas)

    def encode(self) -> bytes:
        """The canonical encoding (:func:`encode_summary`)."""
        return encode_summary(self)


def _delta_order(key: DeltaKey) -> tuple[bytes, bytes]:
    return (key[0] or b"", key[1])


def encode_summary(summary: Summary) -> bytes:
    """The canonical bytes of a summary; FormatError for a name or id it cannot hold."""
    writer = Writer()
    writer.raw(_TAG)
    writer.u8(_VERSION)
    names = sorted(summary.refs, key=lambda name: name.encode("utf-8", "surrogatepass"))
    writer.u32(len(names))
    for name in names:
        _check_published_name(name)
        commit_id, timestamp = summary.refs[name]
        writer.blob(name.encode())
        writer.object_id(commit_id)
        writer.i64(timestamp)
    keys = sorted(summary.deltas, key=_delta_order)
    writer.u32(len(keys))
    for from_id, to_id in keys:
        writer.u8(from_id is not None)
        if from_id is not None:
            writer.object_id(from_id)
        writer.object_id(to_id)
        writer.object_id(summary.deltas[(from_id, to_id)])
    return writer.getvalue()


def decode_summary(data: bytes) -> Summary:
    """A summary from its bytes; FormatError for anything but a canonical encoding."""
    if len(data) > MAX_SUMMARY_BYTES:
        raise FormatError(f"a summary of {len(data)} bytes: more than {MAX_SUMMARY_BYTES}")
    reader = Reader(data, "summary")
    if reader.raw(1) != _TAG or reader.u8() != _VERSION:
        raise FormatError("not a sapwood summary (bad tag or version)")
    refs: dict[str, tuple[ObjectId, int]] = {}
    for _ in range(reader.count(_REF_MIN)):
        raw = reader.blob()
        try:
            name = raw.decode()
        except UnicodeDecodeError:
            raise FormatError("summary: a ref name that is not UTF-8") from None
        _check_published_name(name)
        refs[name] = (reader.object_id(), reader.i64())
    deltas: dict[DeltaKey, bytes] = {}
    for _ in range(reader.count(_DELTA_MIN)):
        has_from = reader.u8()
        if has_from > 1:
            raise FormatError("summary: a delta's has_from is not 0 or 1")
        from_id = reader.object_id() if has_from else None
        to_id = reader.object_id()
        deltas[(from_id, to_id)] = bytes(reader.object_id())
    reader.finish()
    summary = Summary(refs, deltas)
    if encode_summary(summary) != data:
        raise FormatError("summary: not canonical (unsorted or repeated entries)")
    return summary


def _check_published_name(name: str) -> None:
    try:
        check_ref_name(name)
    except InvalidRefNameError as exc:
        raise FormatError(f"summary: {exc}") from None
    if ":" in name:
        raise FormatError(f"summary: {name!r} is a pulled ref, never published")


# ----- a repository's summary ---------------------------------------------------------
def list_deltas(repo_path: Path) -> dict[DeltaKey, bytes]:
    """The static deltas under ``deltas/`` (``TO`` or ``FROM-TO``, each with a
    superblock) and the blake3 digest of each superblock; other entries are skipped."""
    found: dict[DeltaKey, bytes] = {}
    root = repo_path / DELTAS_DIR
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir()):
        key = parse_delta_name(entry.name)
        superblock = entry / SUPERBLOCK_FILE
        if key is None or entry.is_symlink() or not superblock.is_file():
            continue
        found[key] = bytes(digest(superblock.read_bytes()))
    return found


def parse_delta_name(name: str) -> DeltaKey | None:
    """``TO`` or ``FROM-TO`` (full hex ids) as (from or None, to); None otherwise."""
    from_hex, sep, to_hex = name.rpartition("-")
    if not is_full_hex(to_hex) or (sep and not is_full_hex(from_hex)):
        return None
    from_id = ObjectId(bytes.fromhex(from_hex)) if sep else None
    return from_id, ObjectId(bytes.fromhex(to_hex))


def delta_name(from_id: ObjectId | None, to_id: ObjectId) -> str:
    """The directory of a delta below ``deltas/``."""
    return to_id.hex() if from_id is None else f"{from_id.hex()}-{to_id.hex()}"


def build_summary(repo: Repository) -> Summary:
    """The summary of ``repo`` as it is now: its own refs, and the deltas on disk
    between commits it still holds."""
    heads = {name: cid for name, cid in repo.refs().items() if ":" not in name}
    refs = {name: (cid, repo.read_commit(cid).timestamp) for name, cid in heads.items()}
    deltas = {
        (from_id, to_id): superblock
        for (from_id, to_id), superblock in list_deltas(repo.path).items()
        if repo.has_object(to_id) and (from_id is None or repo.has_object(from_id))
    }  # a delta between pruned commits is no longer offered
    return Summary(refs, deltas)


def update_summary(repo: Repository, keys: Sequence[KeyPair] = ()) -> Summary:
    """Regenerate ``REPO/summary`` (and ``summary.sig`` signed by ``keys``; without
    keys, a stale ``summary.sig`` is removed: it would not match). Each file is written
    whole and renamed into place, so a reader sees the old file or the new one."""
    repo.require_writable()
    summary = build_summary(repo)
    data = summary.encode()
    replace_file(repo.path, SUMMARY_FILE, data, repo.fsync)
    if keys:
        from store.signing import encode_signatures  # here: PyNaCl only for signers

        signature = encode_signatures(key.sign(data) for key in keys)
        replace_file(repo.path, SIGNATURE_FILE, signature, repo.fsync)
    else:
        (repo.path / SIGNATURE_FILE).unlink(missing_ok=True)
    log.info("summary: %d refs, %d deltas", len(summary.refs), len(summary.deltas))
    return summary


def _read_regular(path: Path, limit: int) -> bytes | None:
    """At most ``limit`` + 1 bytes of the regular file ``path``; None if it is absent.
    A FIFO or a device there (a damaged repository) is refused at once, never waited
    on or read without end; a symlink is not followed (attack23 9)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FormatError(f"{path}: is a symlink, not a file of this repository") from None
        raise
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FormatError(f"{path}: is not a regular file")
        return stream.read(limit + 1)


def read_summary(repo_path: Path) -> Summary | None:
    """The summary file of a repository, decoded; None if there is none."""
    data = _read_regular(repo_path / SUMMARY_FILE, MAX_SUMMARY_BYTES)
    return None if data is None else decode_summary(data)


def summary_signers(repo_path: Path) -> tuple[str, ...] | None:
    """The keys (base64) of the signatures in ``summary.sig`` that are valid signatures
    of the summary file as it is; None when there is no ``summary.sig``. A signature
    file that cannot be decoded, or whose signatures are of another summary (an older
    one copied back), gives () (attack23 10): what a sign-verify client would accept,
    before its trusted keys are looked at."""
    from store.signing import decode_signatures  # here: PyNaCl only when asked

    sig = _read_regular(repo_path / SIGNATURE_FILE, _MAX_SIGNATURE_FILE)
    if sig is None:
        return None
    data = _read_regular(repo_path / SUMMARY_FILE, MAX_SUMMARY_BYTES)
    if data is None or len(sig) > _MAX_SIGNATURE_FILE:
        return ()
    try:
        signatures = decode_signatures(sig)
    except FormatError:
        return ()
    return tuple(s.key for s in signatures if s.verifies(data))
