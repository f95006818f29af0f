"""What went wrong with one fetch of the per-object path, and whether to try again.

:class:`Transient` is a failure worth another attempt (a reset, a timeout, a body cut
short, HTTP 5xx); :func:`describe` and :func:`describe_raw` put urllib3's and the
socket's errors in a few words, the same for a connection used through urllib3's pool
or without it. Used by store/pull/per_object.py and the modules it is made of.
"""

from __future__ import annotations

import ssl

from urllib3 import exceptions as u3
from urllib3.util.ssl_match_hostname import CertificateError


class HeadTimeout(TimeoutError):
    """The response head did not arrive in time (urllib3 makes it a ReadTimeoutError)."""


class Transient(Exception):
    """A failure worth another attempt; ``url`` the redirect's hop that failed, if one
    did (the error names the server that failed, not the remote that redirected)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.url: str | None = None


def describe_raw(exc: BaseException) -> str:
    """What went wrong on a connection used without the pool, in the words
    :func:`describe` has for the pool's wrapping of the same error."""
    if isinstance(exc, ssl.SSLError | CertificateError):  # the pool's SSLError says so too
        return f"TLS error: {exc}"
    if isinstance(exc, TimeoutError):  # socket.timeout, or the watchdog's HeadTimeout
        if isinstance(exc, HeadTimeout):
            return str(exc)
        return "timed out reading"
    return f"connection broken ({type(exc).__name__})"


def describe(exc: BaseException) -> str:
    """What went wrong, in a few words (urllib3's messages repeat the pool's repr)."""
    if isinstance(exc, u3.ReadTimeoutError):
        if isinstance(exc.__cause__, HeadTimeout):
            return str(exc.__cause__)
        return "timed out reading"
    if isinstance(exc, u3.NewConnectionError):  # a subclass of ConnectTimeoutError
        return "could not connect"
    if isinstance(exc, u3.ConnectTimeoutError):
        return "timed out connecting"
    if isinstance(exc, u3.ProtocolError):
        inner = exc.args[1] if len(exc.args) > 1 else exc
        if "IncompleteRead" in type(inner).__name__ or "IncompleteRead" in str(exc):
            return "the body ended before its Content-Length"
        return f"connection broken ({type(inner).__name__})"
    if isinstance(exc, u3.SSLError):
        return f"TLS error: {exc}"
    return f"{type(exc).__name__}"
