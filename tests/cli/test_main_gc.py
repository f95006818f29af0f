"""main() in a process that goes on (a library caller, tests) leaves the garbage
collector as it found it: only run(), which ends the process, turns it off for the
start-up and sets the start-up's objects aside (gc.freeze)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from sapwood.cli.main import main


@pytest.fixture
def gc_disabled() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("gc_disabled")
def test_main_leaves_a_callers_disabled_collector_alone(tmp_path: Path) -> None:
    frozen = gc.get_freeze_count()
    assert main(["--repo", str(tmp_path / "repo"), "init"]) == 0
    assert not gc.isenabled()
    assert gc.get_freeze_count() == frozen
