"""The scan's prefetcher lists in threads of the test's own process (fs/prefetch.py
_IN_A_CHILD), where the tests that simulate a cold tree can watch and steer it; the
tests of the child process itself (test_scan_prefetch.py) turn it back on."""

from __future__ import annotations

import pytest

import fs.prefetch


@pytest.fixture(autouse=True)
def _prefetch_in_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fs.prefetch, "_IN_A_CHILD", False)
