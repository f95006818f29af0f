"""benchmarks/report.py joins the results of one benchmark written by two runs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import report


def _row(files: int, tool: str, median: float, runs: int = 3) -> dict[str, object]:
    return {
        "benchmark": "scale",
        "operation": "commit",
        "tool": tool,
        "unit": "s",
        "median": median,
        "min": median,
        "max": median,
        "runs": runs,
        "files": files,
    }


def _write(path: Path, rows: list[dict[str, object]], trees: dict[str, object], load: str) -> None:
    meta = {"trees": trees, "load": load, "note": f"measured at load {load}."}
    doc = {"benchmark": "scale", "meta": meta, "rows": rows}
    path.write_text(json.dumps(doc))


def test_the_million_file_run_joins_the_smaller_sizes(tmp_path: Path) -> None:
    """scale.json holds 10,000 and 100,000 (and a stale million); scale-million.json,
    written later (not sorted later by name), replaces the stale figure and keeps the rest."""
    (tmp_path / "json").mkdir()
    small = [_row(10_000, "sapwood", 1.0), _row(100_000, "sapwood", 10.0)]
    _write(tmp_path / "json/scale.json", [*small, _row(10**6, "sapwood", 999.0)], {"10000": 1}, "1")
    million = [_row(10**6, "sapwood", 100.0), _row(10**6, "ostree", 300.0, runs=1)]
    _write(tmp_path / "json/scale-million.json", million, {"1000000": 2}, "2")
    os.utime(tmp_path / "json/scale.json", ns=(10**18, 10**18))  # written first
    os.utime(tmp_path / "json/scale-million.json", ns=(2 * 10**18, 2 * 10**18))

    doc = report.load(tmp_path)["scale"]

    by = {(r["files"], r["tool"]): r["median"] for r in doc["rows"]}
    assert by == {
        (10_000, "sapwood"): 1.0,
        (100_000, "sapwood"): 10.0,
        (10**6, "sapwood"): 100.0,
        (10**6, "ostree"): 300.0,
    }
    assert doc["meta"]["trees"] == {"10000": 1, "1000000": 2}
    assert doc["meta"]["load"] == "1; then 2"
    assert doc["meta"]["note"] == "measured at load 1. measured at load 2."


def test_a_figure_of_one_run_says_so() -> None:
    assert report.figure(_row(10, "ostree", 2.5, runs=1)) == "2.50 s (1 run)"
    assert report.figure(_row(10, "ostree", 2.5)) == "2.50 s (2.50-2.50)"
