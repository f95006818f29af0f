"""Fixtures of the network tests: nginx and the tampering server, stopped for sure;
short HTTP timeouts and retries, so that no test waits long on a bad server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.net.servers import Nginx, TamperingServer
from tests.net.test_pipelined import Answer, RawServer

# The pull's knobs (store/pull/http.py reads them from the environment): a stalled
# server is given up on after TIMEOUT seconds, a transient error tried RETRIES more times.
HTTP_ENV = {
    "SAPWOOD_HTTP_TIMEOUT": "2",
    "SAPWOOD_HTTP_RETRIES": "3",
    "SAPWOOD_HTTP_BACKOFF": "0.05",
}


@pytest.fixture(autouse=True)
def _short_http(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in HTTP_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[Path], Nginx]]:
    """``nginx(root)``: Debian's nginx serving ``root`` on 127.0.0.1, until the test ends."""
    servers: list[Nginx] = []

    def serve(root: Path) -> Nginx:
        server = Nginx(root, tmp_path / f"nginx-{len(servers)}").start()
        servers.append(server)
        return server

    yield serve
    for server in servers:
        server.stop()


@pytest.fixture
def tamper(tmp_path: Path) -> Iterator[Callable[[Path], TamperingServer]]:
    """``tamper(root)``: the tampering server on ``root``, until the test ends."""
    servers: list[TamperingServer] = []

    def serve(root: Path) -> TamperingServer:
        server = TamperingServer(root).start()
        servers.append(server)
        return server

    yield serve
    for server in servers:
        server.stop()


@pytest.fixture
def raw(files: Path) -> Iterator[Callable[[Callable[..., Answer]], RawServer]]:
    """Start RawServers (tests/net/test_pipelined.py) over the module's ``files``
    fixture, each answering by the function given; all stopped at the end."""
    servers: list[RawServer] = []

    def serve(answer: Callable[[RawServer, str, int, int], Answer]) -> RawServer:
        servers.append(RawServer(files, answer).start())
        return servers[-1]

    yield serve
    for server in servers:
        server.stop()
