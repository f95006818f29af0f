"""The summary line's rate is the counted phase's (review7.md 22): a walk of the trees
that counts nothing of the files before them no longer drags their rate down."""

from __future__ import annotations

import io
import re

import pytest

from sapwood import TaskProgress
from sapwood.cli import progress as progress_module


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_rate_is_the_counted_phases(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(progress_module, "time", clock)
    terminal = _Terminal()
    monkeypatch.setattr("sapwood.cli.progress.sys.stderr", terminal)
    shown = progress_module.Progress("fsck")
    shown.task(TaskProgress("reading trees", 0, 1, "commit"))
    clock.now += 9.0  # the walk: 9 s
    shown.task(TaskProgress("reading trees", 1, 1, "commit"))
    shown.task(TaskProgress("checking", 0, 1000, "file"))
    clock.now += 1.0  # the check: 1,000 files in 1 s
    shown.task(TaskProgress("checking", 1000, 1000, "file"))
    clock.now += 0.5  # what follows the last count (fsck's last writes)
    shown.close()
    lines = [line for line in terminal.getvalue().splitlines() if line.startswith("fsck: ")]
    assert re.fullmatch(
        r"fsck: checking 1000/1000 files \(100%\) in 10\.5 s, 1000 files/s", lines[-1]
    ), lines
