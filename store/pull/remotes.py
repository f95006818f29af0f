"""Remotes: named URLs of archive repositories, kept in the repository's config.

Each remote is a section of ``REPO/config``, as OSTree writes them::

    [remote "origin"]
    url = https://updates.example.org/repo/
    sign-verify = true
    trusted-keys = BASE64KEY BASE64KEY

Settings are checked when a remote is added and again whenever it is read: a config
edited by hand into something invalid is refused with a RemoteError naming it, never
used as it is.
"""

from __future__ import annotations

import binascii
import configparser
import re
import string
import urllib.parse
from pathlib import Path

from store.errors import InvalidRefNameError, RemoteError
from store.locking import config_lock
from store.names import check_remote_name
from store.record import Frozen
from store.repo import read_config_file, write_config

ED25519_KEY_BYTES = 32
_SECTION = re.compile(r'remote "(?P<name>[^"]*)"')
_URL_CHARS = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")
MAX_URL = 2048


class Remote(Frozen):
    """A remote: its ``name``, the ``url`` of its repository (ends with '/'), whether
    commits and summaries pulled from it must carry a signature by one of
    ``trusted_keys`` (base64 ed25519 public keys)."""

    __slots__ = ("name", "sign_verify", "trusted_keys", "url")

    name: str
    url: str
    sign_verify: bool
    trusted_keys: tuple[str, ...]

    def __init__(
        self, name: str, url: str, sign_verify: bool = False, trusted_keys: tuple[str, ...] = ()
    ) -> None:
        try:
            check_remote_name(name)
        except InvalidRefNameError as exc:
            raise RemoteError(str(exc), name=name) from None
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "url", check_url(url, name))
        object.__setattr__(self, "sign_verify", sign_verify)
        object.__setattr__(self, "trusted_keys", trusted_keys)
        for key in self.trusted_keys:
            check_public_key(key, self.name)
        if self.sign_verify and not self.trusted_keys:
            raise RemoteError(
                f"remote {self.name}: signatures required but no trusted key given",
                name=self.name,
            )

    def key_bytes(self) -> list[bytes]:
        """The trusted keys as raw 32-byte ed25519 public keys."""
        import base64  # here: a pull from a remote without keys never needs it (~1 ms)

        return [base64.b64decode(key, validate=True) for key in self.trusted_keys]


def check_url(url: str, name: str = "") -> str:
    """``url`` with a trailing '/' if it is an http or https URL with a host, else
    RemoteError. Control characters, spaces and user:password parts are refused."""
    where = f"remote {name}: " if name else ""
    if len(url) > MAX_URL or not url or not set(url) <= _URL_CHARS:
        raise RemoteError(f"{where}not a URL: {url[:80]!r}", name=name)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # an unclosed "[" of an IPv6 host
        raise RemoteError(f"{where}not a URL: {url[:80]!r}", name=name) from None
    if parts.scheme not in ("http", "https"):
        raise RemoteError(
            f"{where}{url!r}: only http:// and https:// URLs are supported", name=name
        )
    try:
        host, port = parts.hostname, parts.port  # port: ValueError when not a number
    except ValueError:
        host = port = None
        raise RemoteError(f"{where}{url!r}: not a valid host and port", name=name) from None
    if not host or parts.username is not None or parts.query or parts.fragment:
        raise RemoteError(
            f"{where}{url!r}: give scheme://host[:port]/path, without a query, fragment or "
            "user name",
            name=name,
        )
    del port
    return url if url.endswith("/") else url + "/"


def check_public_key(key: str, name: str = "") -> bytes:
    """The 32 raw bytes of a base64 ed25519 public key, or RemoteError."""
    import base64

    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != ED25519_KEY_BYTES:
        raise RemoteError(
            f"remote {name}: {key[:60]!r} is not an ed25519 public key (base64 of 32 bytes)",
            name=name,
        )
    return raw


def _section(name: str) -> str:
    return f'remote "{name}"'


def _from_section(repo_path: Path, name: str, section: configparser.SectionProxy) -> Remote:
    where = f"{repo_path}/config"
    try:
        sign_verify = section.getboolean("sign-verify", fallback=False)
    except ValueError:
        raise RemoteError(
            f"{where}: remote {name}: sign-verify is not true or false", name=name
        ) from None
    url = section.get("url")
    if url is None:
        raise RemoteError(f"{where}: remote {name} has no url", name=name)
    keys = tuple(section.get("trusted-keys", "").split())
    try:
        return Remote(name, url, sign_verify, keys)
    except RemoteError as exc:
        raise RemoteError(f"{where}: {exc}", name=name) from None


def list_remotes(repo_path: Path) -> list[Remote]:
    """Every remote of the repository at ``repo_path``, by name."""
    _, config = read_config_file(repo_path)
    found = []
    for section in config.sections():
        match = _SECTION.fullmatch(section)
        if match:
            found.append(_from_section(repo_path, match["name"], config[section]))
        elif section.startswith("remote"):
            raise RemoteError(f"{repo_path}/config: a malformed section [{section[:60]}]")
    return sorted(found, key=lambda remote: remote.name)


def get_remote(repo_path: Path, name: str) -> Remote:
    """The remote ``name``, or RemoteError if the repository has none of that name."""
    try:
        check_remote_name(name)
    except InvalidRefNameError as exc:
        raise RemoteError(str(exc), name=name) from None
    _, config = read_config_file(repo_path)
    section = _section(name)
    if not config.has_section(section):
        raise RemoteError(f"no remote {name}", name=name)
    return _from_section(repo_path, name, config[section])


def add_remote(repo_path: Path, remote: Remote) -> None:
    """Add ``remote`` to the repository's config; RemoteError if one of its name exists."""
    with config_lock(repo_path):  # config set/unset and other remotes write it too
        _, config = read_config_file(repo_path)
        section = _section(remote.name)
        if config.has_section(section):
            raise RemoteError(f"remote {remote.name} exists; delete it first", name=remote.name)
        config[section] = {"url": remote.url, "sign-verify": str(remote.sign_verify).lower()}
        if remote.trusted_keys:
            config[section]["trusted-keys"] = " ".join(remote.trusted_keys)
        write_config(repo_path, config)


def delete_remote(repo_path: Path, name: str) -> None:
    """Remove remote ``name`` from the config (its pulled refs stay, as OSTree keeps
    them); RemoteError if there is none."""
    get_remote(repo_path, name)
    with config_lock(repo_path):
        _, config = read_config_file(repo_path)
        if not config.remove_section(_section(name)):
            raise RemoteError(f"no remote {name}", name=name)
        write_config(repo_path, config)
