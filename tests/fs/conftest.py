"""The scan's prefetcher lists in threads of the test's own process (as where no child
can be started), where the tests that simulate a cold tree can watch and steer it; the
tests of the child process itself turn it back on (tests/fs/prefetching.py)."""

from __future__ import annotations

import pytest

from tests.fs.prefetching import lists_in_threads


@pytest.fixture(autouse=True)
def _prefetch_in_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    lists_in_threads(monkeypatch)
