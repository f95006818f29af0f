"""ed25519 signatures of commits and summaries (PyNaCl, libsodium's binding).

A signature is detached: it signs the exact bytes of what it vouches for (a commit's
canonical encoding, whose blake3 digest is the commit id; or the summary file) and
is kept beside it. Keys are written as base64 text, as OSTree's ed25519 keys are: a
public key is 32 bytes, a secret key 64 (the seed, then the public key; libsodium's
layout). A keys file holds secret keys, one a line (blank lines and ``#`` comments
allowed).

Encoding of a set of signatures (a commit's ``commitmeta`` record and file, and
``summary.sig``; docs/format.md)::

    'G' 01  u32 n  n x (32-byte public key, 64-byte signature)  sorted by key, unique

A commit's signatures live in the index (every mode) and, in archive mode, in
``objects/XX/REST.commitmeta`` for HTTP clients.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from store.encoding import Reader, Writer
from store.errors import FormatError, KeyFileError, RefConflictError
from store.ids import ObjectId
from store.repo import Repository

log = logging.getLogger(__name__)
PUBLIC_KEY_BYTES = 32
SECRET_KEY_BYTES = 64
SIGNATURE_BYTES = 64
MAX_SIGNATURES = 1024  # a commit signed by more keys than this is not one a client reads
_TAG = b"G"
_VERSION = 1
_MAX_KEYS_FILE = 1 << 20
_CAS_RETRIES = 8


def key_text(key: bytes) -> str:
    """A key as the base64 text users see and type."""
    return base64.b64encode(key).decode()


@dataclass(frozen=True)
class Signature:
    """One detached ed25519 signature: the signer's public key and the signature."""

    public_key: bytes
    signature: bytes

    @property
    def key(self) -> str:
        """The signer's public key, base64."""
        return key_text(self.public_key)

    def verifies(self, data: bytes) -> bool:
        """Whether this is a valid signature of ``data`` by its key."""
        try:
            nacl.signing.VerifyKey(self.public_key).verify(data, self.signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            return False
        return True


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 key pair: ``secret`` (64 bytes: seed and public key) and ``public``."""

    secret: bytes
    public: bytes

    @property
    def secret_text(self) -> str:
        """The secret key as a keys file holds it (base64)."""
        return key_text(self.secret)

    @property
    def public_text(self) -> str:
        """The public key as ``remote add --trusted-key`` takes it (base64)."""
        return key_text(self.public)

    def sign(self, data: bytes) -> Signature:
        """A detached signature of ``data``."""
        signed = nacl.signing.SigningKey(self.secret[:32]).sign(data)
        return Signature(self.public, signed.signature)


def generate_keypair() -> KeyPair:
    """A new random ed25519 key pair."""
    signing = nacl.signing.SigningKey.generate()
    public = bytes(signing.verify_key)
    return KeyPair(bytes(signing) + public, public)


def encode_signatures(signatures: Iterable[Signature]) -> bytes:
    """The canonical encoding of a set of signatures (one per key)."""
    unique = {sig.public_key: sig for sig in signatures}
    writer = Writer()
    writer.raw(_TAG)
    writer.u8(_VERSION)
    writer.u32(len(unique))
    for key in sorted(unique):
        sig = unique[key]
        if len(sig.public_key) != PUBLIC_KEY_BYTES or len(sig.signature) != SIGNATURE_BYTES:
            raise FormatError("a signature of the wrong size")
        writer.raw(sig.public_key)
        writer.raw(sig.signature)
    return writer.getvalue()


def decode_signatures(data: bytes) -> tuple[Signature, ...]:
    """Signatures from their encoding; FormatError on anything but a canonical one."""
    reader = Reader(data, "signatures")
    if reader.raw(1) != _TAG or reader.u8() != _VERSION:
        raise FormatError("not a sapwood signature set (bad tag or version)")
    count = reader.count(PUBLIC_KEY_BYTES + SIGNATURE_BYTES)
    if count > MAX_SIGNATURES:
        raise FormatError(f"{count} signatures: more than {MAX_SIGNATURES}")
    found = tuple(
        Signature(reader.raw(PUBLIC_KEY_BYTES), reader.raw(SIGNATURE_BYTES)) for _ in range(count)
    )
    reader.finish()
    keys = [sig.public_key for sig in found]
    if keys != sorted(set(keys)):
        raise FormatError("signatures not sorted by key, or a key twice")
    return found


def parse_public_key(text: str) -> bytes:
    """A public key from its base64 text; FormatError unless it is 32 bytes."""
    key = _b64(text)
    if key is None or len(key) != PUBLIC_KEY_BYTES:
        raise FormatError(f"{text[:60]!r}: not an ed25519 public key (base64 of 32 bytes)")
    return key


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def verify_signed(
    data: bytes, signatures: bytes | Sequence[Signature], trusted_keys: Iterable[str | bytes]
) -> str | None:
    """The first trusted key (base64) with a valid signature of ``data``, or None.

    ``signatures`` is a decoded set or its encoding (a ``.commitmeta`` file,
    ``summary.sig``: FormatError if it is garbage). ``trusted_keys`` are public keys,
    base64 text or 32 raw bytes. Signatures by other keys are ignored: a commit signed
    by an unknown key is not signed for this caller.
    """
    found = decode_signatures(signatures) if isinstance(signatures, bytes) else signatures
    trusted = {k if isinstance(k, bytes) else parse_public_key(k) for k in trusted_keys}
    for sig in found:
        if sig.public_key in trusted and sig.verifies(data):
            return sig.key
    return None


# ----- keys files -------------------------------------------------------------------
def write_keys_file(path: str | os.PathLike[str], pair: KeyPair) -> None:
    """Write ``pair``'s secret key to a new file of mode 0600 (never over an existing
    one: that could be another key, lost for good)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path}: exists; keys are never overwritten", path=path) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot be written: {exc.strerror}", path=path) from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (pair.secret_text + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_keys_file(path: str | os.PathLike[str]) -> list[KeyPair]:
    """The secret keys of a keys file; KeyFileError if it is missing, unreadable, not a
    regular file, empty, holds anything but secret keys (a public key, say), or is not
    protected: group- or other-readable or -writable, or not the caller's own (as OpenSSH
    refuses an unprotected private key: anyone could have read it, or put their key in)."""
    text, st = _keys_file_text(path)
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key = _b64(line)
        if key is not None and len(key) == PUBLIC_KEY_BYTES:
            raise KeyFileError(
                f"{path}, line {number}: a public key; signing needs the secret key", path=path
            )
        if key is None or len(key) != SECRET_KEY_BYTES:
            raise KeyFileError(
                f"{path}, line {number}: not an ed25519 secret key (base64 of 64 bytes)",
                path=path,
            )
        public = bytes(nacl.signing.SigningKey(key[:32]).verify_key)
        if public != key[32:]:
            raise KeyFileError(
                f"{path}, line {number}: a damaged secret key (its halves disagree)", path=path
            )
        pairs.append(KeyPair(key, public))
    if not pairs:
        raise KeyFileError(f"{path}: holds no key", path=path)
    _check_protected(path, st)
    return pairs


def _check_protected(path: str | os.PathLike[str], st: os.stat_result) -> None:
    """KeyFileError unless the keys file (its ``fstat``) is the caller's alone."""
    if st.st_uid != os.geteuid():
        raise KeyFileError(
            f"{path}: owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}): "
            "a secret key must be the signer's own",
            path=path,
        )
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read or replace "
            f"the secret key; make it the owner's alone (chmod 600 {path})",
            path=path,
        )


def _keys_file_text(path: str | os.PathLike[str]) -> tuple[str, os.stat_result]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such keys file", path=path) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot be read: {exc.strerror}", path=path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path}: not a regular file", path=path)
        data = os.read(fd, _MAX_KEYS_FILE + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot be read: {exc.strerror}", path=path) from None
    finally:
        os.close(fd)
    if len(data) > _MAX_KEYS_FILE:
        raise KeyFileError(f"{path}: too large to be a keys file", path=path)
    try:
        return data.decode("ascii"), st
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a keys file (not text)", path=path) from None


# ----- commits ----------------------------------------------------------------------
def commit_signatures(repo: Repository, commit_id: ObjectId) -> tuple[Signature, ...]:
    """The detached signatures recorded for a commit (valid or not; none if unsigned)."""
    with repo.index.reader() as reader:
        raw = reader.commitmeta(commit_id)
    return () if raw is None else decode_signatures(raw)


def merge_signatures(current: bytes | None, incoming: bytes, data: bytes) -> bytes:
    """The encoding of ``current``'s signatures (what the repository holds for a commit
    of bytes ``data``) with ``incoming``'s added: one per key, a key's signature that
    verifies ``data`` kept over one that does not, the held one kept when both do.

    A pull or a pull-local merges, never replaces: a mirror's own signature added with
    sign_commit must survive the next pull from upstream (attack23 13). A held set that
    cannot be decoded (a damaged index record) counts as none; ``incoming`` was checked.
    """
    try:
        held = () if current is None else decode_signatures(current)
    except FormatError:
        held = ()
    merged = {sig.public_key: sig for sig in held}
    for sig in decode_signatures(incoming):
        mine = merged.get(sig.public_key)
        if mine is None or (not mine.verifies(data) and sig.verifies(data)):
            merged[sig.public_key] = sig
    return encode_signatures(merged.values())


def sign_commit(repo: Repository, commit_id: ObjectId, key: KeyPair) -> bool:
    """Add ``key``'s signature to a commit of ``repo``; False if it held one already
    (the archive file is written again all the same: a crash may have lost it).

    Other keys' signatures are kept. Concurrent signers of one commit each add theirs
    (a compare-and-swap on what was read, retried).
    """
    data = repo.read_commit(commit_id).encode()
    for _ in range(_CAS_RETRIES):
        with repo.index.reader() as reader:
            current = reader.commitmeta(commit_id)
        existing = () if current is None else decode_signatures(current)
        others = [sig for sig in existing if sig.public_key != key.public]
        added = not any(s.public_key == key.public and s.verifies(data) for s in existing)
        signatures = [*others, key.sign(data)]  # ed25519 is deterministic: same bytes again
        try:
            with repo.transaction() as txn:
                txn.set_commitmeta(commit_id, encode_signatures(signatures), expected=current)
        except RefConflictError:
            continue
        log.info("commit %s signed by %s", commit_id.hex(), key.public_text)
        return added
    raise RefConflictError(
        f"the signatures of commit {commit_id.hex()} kept changing; nothing was signed",
        name=commit_id.hex(),
    )
