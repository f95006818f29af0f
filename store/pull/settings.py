"""How a pull talks to a server: timeouts, retries, sizes, batches.

Apart from the fetcher (store/pull/http.py) so that importing sapwood does not import
urllib3: only a pull does (it costs every command a tenth of a second otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from store.errors import UsageError
from store.record import Frozen


class FetchSettings(Frozen):
    """How a pull talks to a server. The command line reads overrides from the
    environment (``from_environ``): SAPWOOD_HTTP_TIMEOUT (seconds, connect and
    read), SAPWOOD_HTTP_RETRIES, SAPWOOD_HTTP_BACKOFF (seconds, the first wait),
    SAPWOOD_HTTP_CONNECTIONS (connections open at once), SAPWOOD_PULL_MAX_OBJECT (bytes of
    one content object's file) and SAPWOOD_PULL_BATCH (content objects stored per
    transaction: what an interrupted pull keeps)."""

    __slots__ = (
        "backoff",
        "batch_objects",
        "connect_timeout",
        "connections",
        "low_speed_bytes",
        "max_backoff",
        "max_metadata_size",
        "max_object_size",
        "max_redirects",
        "read_timeout",
        "retries",
    )

    connect_timeout: float
    read_timeout: float
    retries: int
    backoff: float
    max_backoff: float
    max_redirects: int
    connections: int
    low_speed_bytes: int
    max_object_size: int  # a content object's .filez (compressed)
    max_metadata_size: int  # a dirtree, dirmeta, commit, commitmeta, summary
    batch_objects: int  # content objects committed to the store at a time

    _ENV: ClassVar[dict[str, str]] = {
        "connect_timeout": "SAPWOOD_HTTP_TIMEOUT",  # both, unless the next one is set
        "read_timeout": "SAPWOOD_HTTP_TIMEOUT",
        "retries": "SAPWOOD_HTTP_RETRIES",
        "backoff": "SAPWOOD_HTTP_BACKOFF",
        "connections": "SAPWOOD_HTTP_CONNECTIONS",
        "max_object_size": "SAPWOOD_PULL_MAX_OBJECT",
        "batch_objects": "SAPWOOD_PULL_BATCH",
    }

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        max_redirects: int = 5,
        connections: int = 4,
        low_speed_bytes: int = 1024,
        max_object_size: int = 1 << 30,
        max_metadata_size: int = 64 << 20,
        batch_objects: int = 2000,
    ) -> None:
        values = {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "retries": retries,
            "backoff": backoff,
            "max_backoff": max_backoff,
            "max_redirects": max_redirects,
            "connections": connections,
            "low_speed_bytes": low_speed_bytes,
            "max_object_size": max_object_size,
            "max_metadata_size": max_metadata_size,
            "batch_objects": batch_objects,
        }
        for name, value in values.items():
            if isinstance(value, int | float) and not value >= 0:
                raise UsageError(f"pull setting {name} must not be negative: {value}")
            object.__setattr__(self, name, value)
        if self.connections < 1 or self.batch_objects < 1:
            raise UsageError("pull needs at least one connection and one object per batch")
        if self.read_timeout <= 0 or self.connect_timeout <= 0:
            raise UsageError("pull timeouts must be more than 0 seconds")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> FetchSettings:
        """The defaults, overridden by the SAPWOOD_PULL_* variables that are set."""
        settings = cls()
        for name, variable in cls._ENV.items():
            text = environ.get(variable)
            if not text:
                continue
            kind = type(getattr(settings, name))
            try:
                value = kind(text)
            except ValueError:
                raise UsageError(f"{variable}={text[:30]!r}: not a number") from None
            settings = settings.replace(**{name: value})
        return settings

    def replace(self, **changes: float) -> FetchSettings:
        """These settings with ``changes`` (checked as new ones are)."""
        values = {name: getattr(self, name) for name in self.__slots__}
        return FetchSettings(**{**values, **changes})
