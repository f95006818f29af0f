"""What the scan's prefetcher (fs/prefetch.py) lists, for its tests."""

from __future__ import annotations

import pytest

from fs.prefetch import Prefetcher


def prefetcher_listings(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, ...]]:
    """The directories the prefetcher lists, as it lists them (a list that grows)."""
    listed: list[tuple[bytes, ...]] = []
    real = Prefetcher._list

    def spy(self: Prefetcher, path: tuple[bytes, ...], subdirs: list[tuple[bytes, ...]]) -> None:
        listed.append(path)
        real(self, path, subdirs)

    monkeypatch.setattr(Prefetcher, "_list", spy)
    return listed
