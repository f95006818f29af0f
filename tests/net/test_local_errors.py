"""An error of the local disk while a fetched body is consumed is no network error:
it is raised as it is, not retried, and the file is asked for once (review12 4)."""

from __future__ import annotations

import errno
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from store.pull.per_object import PerObjectFetcher
from store.pull.settings import FetchSettings


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "small").write_bytes(b"x" * 50)
    (tmp_path / "large").write_bytes(b"x" * (2 << 20))  # past 1 MiB: streamed
    handler = functools.partial(_Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("name", ["small", "large"])
def test_a_disk_error_while_consuming_is_raised_as_it_is_and_not_retried(
    served: str, name: str
) -> None:
    def consume(body: BinaryIO) -> None:
        body.read(4096)
        raise OSError(errno.EIO, "the disk says no")

    fetcher = PerObjectFetcher(served, FetchSettings(backoff=0.01, retries=3))
    with pytest.raises(OSError) as raised:
        fetcher.fetch(name, 4 << 20, consume)
    assert raised.value.errno == errno.EIO
    assert fetcher.requests == 1
