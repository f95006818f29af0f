"""How a pull talks to a server: timeouts, retries, sizes, batches.

Apart from the fetcher (store/pull/http.py) so that importing sapwood does not import
urllib3: only a pull does (it costs every command a tenth of a second otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import ClassVar

from store.errors import UsageError


@dataclass(frozen=True)
class FetchSettings:
    """How a pull talks to a server. The command line reads overrides from the
    environment (``from_environ``): SAPWOOD_HTTP_TIMEOUT (seconds, connect and
    read), SAPWOOD_HTTP_RETRIES, SAPWOOD_HTTP_BACKOFF (seconds, the first wait),
    SAPWOOD_HTTP_CONNECTIONS (connections open at once), SAPWOOD_PULL_MAX_OBJECT (bytes of
    one content object's file) and SAPWOOD_PULL_BATCH (content objects stored per
    transaction: what an interrupted pull keeps)."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 10.0
    max_redirects: int = 5
    connections: int = 8
    low_speed_bytes: int = 1024
    max_object_size: int = 1 << 30  # a content object's .filez (compressed)
    max_metadata_size: int = 64 << 20  # a dirtree, dirmeta, commit, commitmeta, summary
    batch_objects: int = 2000  # content objects committed to the store at a time

    _ENV: ClassVar[dict[str, str]] = {
        "connect_timeout": "SAPWOOD_HTTP_TIMEOUT",  # both, unless the next one is set
        "read_timeout": "SAPWOOD_HTTP_TIMEOUT",
        "retries": "SAPWOOD_HTTP_RETRIES",
        "backoff": "SAPWOOD_HTTP_BACKOFF",
        "connections": "SAPWOOD_HTTP_CONNECTIONS",
        "max_object_size": "SAPWOOD_PULL_MAX_OBJECT",
        "batch_objects": "SAPWOOD_PULL_BATCH",
    }

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int | float) and not value >= 0:
                raise UsageError(f"pull setting {field.name} must not be negative: {value}")
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
            settings = replace(settings, **{name: value})
        return settings
