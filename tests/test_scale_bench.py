"""benchmarks/scale_bench.py measures the memory of a command's whole process tree."""

from __future__ import annotations

import sys
from pathlib import Path

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
