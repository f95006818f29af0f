"""benchmarks/scale_bench.py measures the memory of a command's whole process tree."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import scale_bench

HOLD = "import time; b = bytearray({mib} << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep({s})"


def test_the_peak_counts_children_that_run_beside_their_parent() -> None:
    """A parent of 60 MiB waiting for two children of 80 MiB each peaks above 200 MiB,
    which no single process's ru_maxrss shows."""
    child = f'{sys.executable} -c "{HOLD.format(mib=80, s=0.6)}"'
    script = (
        "import subprocess, time; "
        f"b = bytearray(60 << 20); b[::4096] = b'x' * len(b[::4096]); "
        f"ps = [subprocess.Popen({child!r}, shell=True) for _ in range(2)]; "
        "[p.wait() for p in ps]"
    )
    seconds, peak_mib = scale_bench.run_measured([sys.executable, "-c", script])
    assert seconds >= 0.6
    assert 60 + 80 + 80 <= peak_mib < 400


def test_a_failing_command_stops_the_benchmark_with_its_message() -> None:
    with pytest.raises(SystemExit, match="went wrong"):
        scale_bench.run_measured([sys.executable, "-c", "import sys; sys.exit('went wrong')"])


def test_a_small_command_of_a_large_parent_is_measured_small() -> None:
    """Linux carries a forked child's high-water mark across exec, so ru_maxrss of a
    command run by a 300 MiB parent says 300 MiB: the sampled figure must not."""
    ballast = bytearray(300 << 20)
    ballast[::4096] = b"x" * len(ballast[::4096])
    _, peak_mib = scale_bench.run_measured([sys.executable, "-c", "import time; time.sleep(0.3)"])
    assert 1 < peak_mib < 100


def _fake_damon(root: Path, state: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Path]:
    """benchmarks/common.py, run as root over a sysfs tree laid out as DAMON's admin
    interface lays it out: one daemon in ``state``, one pageout scheme of a minute's
    idleness (12 aggregations of 5 s), 128 MiB a second. The module and the state file."""
    import common

    daemon = root / "0"
    context = daemon / "contexts" / "0"
    scheme = context / "schemes" / "0"
    for path, text in {
        daemon / "state": state,
        context / "monitoring_attrs" / "intervals" / "aggr_us": "5000000",
        scheme / "action": "pageout",
        scheme / "access_pattern" / "age" / "min": "12",
        scheme / "quotas" / "bytes": str(128 << 20),
    }.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    monkeypatch.setattr(common, "DAMON", root)
    monkeypatch.setattr("common.os.geteuid", lambda: 0)
    return common, daemon / "state"


def test_reclaim_is_paused_for_the_run_and_restored_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common, state = _fake_damon(tmp_path, "on", monkeypatch)
    assert common.proactive_reclaim() == "DAMON 0: pages out memory idle 60 s, 128 MiB/s"
    with pytest.raises(RuntimeError), common.reclaim_paused() as paused:
        assert state.read_text() == "off\n"
        assert "paused" in paused
        raise RuntimeError("a step failed")
    assert state.read_text() == "on\n"


def test_a_daemon_already_off_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common, state = _fake_damon(tmp_path, "off", monkeypatch)
    with common.reclaim_paused() as paused:
        assert paused == "none"
    assert state.read_text() == "off\n" and common.proactive_reclaim() == "none"


def test_warm_reads_every_file_and_follows_no_symlink(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x" * 3_000_000)
    (tmp_path / "b").write_bytes(b"yz")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "big").write_bytes(b"o" * 1000)
    tree = tmp_path / "d"
    (tree / "link").symlink_to(tmp_path / "outside" / "big")
    os.mkfifo(tree / "fifo")  # never blocks: opened O_NONBLOCK, read gives nothing
    assert scale_bench.warm(tree) == 3_000_000
