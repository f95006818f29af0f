"""What the benchmarks' results say beside their figures: the update pulls' spread, and
the filesystem the repositories were written to (benchmarks/workfs.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "benchmarks"))
import pull_bench
import report


def test_the_update_pulls_are_reported_with_their_quartiles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eleven runs with two slow outliers: the median and quartiles hold, min-max show
    the outliers."""
    runs = [0.15, 0.12, 0.58, 0.14, 0.13, 0.16, 0.11, 0.45, 0.15, 0.14, 0.13]
    monkeypatch.setattr(pull_bench, "SAMPLES", {"sapwood plain update": runs})
    monkeypatch.setattr(pull_bench, "LOADS", {"sapwood plain update": [4.9] * 10 + [5.4]})
    assert pull_bench.quartiles(runs) == pytest.approx((0.13, 0.155))
    assert pull_bench.quartiles([0.2]) == (0.2, 0.2)
    line = pull_bench.spread("sapwood plain update")
    assert "median 0.140 s of 11" in line
    assert "quartiles 0.130-0.155" in line
    assert "min-max 0.110-0.580" in line
    assert line.endswith("load 4.9-5.4")


def _doc(work_fs: str | None) -> dict[str, object]:
    meta: dict[str, object] = {"tree": "/usr/share", "load": "1.00"}
    if work_fs is not None:
        meta["work_fs"] = work_fs
    row = {"operation": "fsck", "tool": "sapwood", "unit": "s", "median": 1.0, "runs": 1}
    return {"benchmark": "maintenance", "meta": meta, "rows": [{**row, "min": 1, "max": 1}]}


def test_the_report_says_where_the_repositories_were_written() -> None:
    loop = "ext4 with a journal (mkfs.ext4 defaults) on a 2.0 GiB sparse image"
    assert report.written_to(_doc(loop)) == f"Repositories written to: {loop}."
    assert report.written_to(_doc(None)) == ""  # results of before session 10


def test_two_runs_on_different_filesystems_are_both_named() -> None:
    host = "host filesystem of /var/tmp (ext4 /dev/vda): not root (a loop device needs root)"
    joined = report.merged(_doc("ext4 on a loop device"), _doc(host))
    assert joined["meta"]["work_fs"] == f"ext4 on a loop device; then {host}"
    same = report.merged(_doc(host), _doc(host))
    assert same["meta"]["work_fs"] == host
