"""What every benchmark shares: cold caches, timing, the peers' command lines."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import workfs
from workfs import Footprint, WorkFs

ROOT = Path(__file__).resolve().parent.parent
SAPWOOD = str(ROOT / ".venv" / "bin" / "sapwood")


def drop_caches() -> bool:
    """Write back and drop the page cache (root only); False if caches stay warm."""
    subprocess.run(["sync"], check=True)
    time.sleep(2)  # let the disk settle (discard of earlier deletions, writeback)
    if os.geteuid() != 0:
        return False
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    return True


DAMON = Path("/sys/kernel/mm/damon/admin/kdamonds")


def _pageout_daemons() -> list[tuple[Path, str]]:
    """The running DAMON daemons that page memory out, each with what it does: on this
    machine's VM (Firecracker) one pages out any memory idle for a minute, at up to
    128 MiB/s, page cache included."""
    found = []
    for state in sorted(DAMON.glob("*/state")):
        try:
            if state.read_text().strip() != "on":
                continue
            for scheme in sorted(state.parent.glob("contexts/*/schemes/*")):
                if (scheme / "action").read_text().strip() != "pageout":
                    continue
                attrs = scheme.parent.parent / "monitoring_attrs" / "intervals"
                idle_s = int((scheme / "access_pattern/age/min").read_text()) * int(
                    (attrs / "aggr_us").read_text()
                )
                quota = int((scheme / "quotas/bytes").read_text()) >> 20
                found.append((state, f"pages out memory idle {idle_s / 1e6:.0f} s, {quota} MiB/s"))
        except (OSError, ValueError):
            continue
    return found


def proactive_reclaim() -> str:
    """What proactive reclaim runs on this machine, for the results (\"none\" if nothing)."""
    daemons = _pageout_daemons()
    return "; ".join(f"DAMON {state.parent.name}: {what}" for state, what in daemons) or "none"


@contextmanager
def reclaim_paused() -> Iterator[str]:
    """Switch the machine's proactive pageout (DAMON) off for the block, as root, and back
    on after: it evicts the page cache of whatever was idle for a minute, so that every
    step of a run longer than that reads cold while a short run's steps stay warm (a
    million-file run against a 100,000-file one measured the VM, not the tool). Yields
    what was paused ("none" when nothing runs or this is not root)."""
    daemons = _pageout_daemons() if os.geteuid() == 0 else []
    paused = []
    try:
        for state, _ in daemons:
            state.write_text("off\n")
            paused.append(state)
        yield "; ".join(f"DAMON {s.parent.name} ({w}) paused" for s, w in daemons) or "none"
    finally:
        for state in paused:
            state.write_text("on\n")


def timed(argv: list[str], cold: bool = False) -> float:
    """Seconds one command takes (after dropping caches when ``cold``)."""
    if cold:
        drop_caches()
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def sapwood(repo: Path, *args: str) -> list[str]:
    return [SAPWOOD, "--repo", str(repo), *args]


def ostree(repo: Path, *args: str) -> list[str]:
    return ["ostree", f"--repo={repo}", *args]


def print_table(title: str, rows: list[tuple[str, float, float, str]]) -> None:
    """rows: (measure, sapwood seconds, peer seconds, target)."""
    print(title)
    print(f"{'':24}{'sapwood':>10}{'ostree':>10}{'ratio':>8}  target")
    for name, ours, theirs, target in rows:
        print(f"{name:24}{ours:>9.2f}s{theirs:>9.2f}s{ours / theirs:>8.2f}  {target}")


TOOLS = {"sapwood": sapwood, "ostree": ostree}


def init_bare_user(tool: str, repo: Path) -> Path:
    """A new bare-user repository of ``tool`` (the mode both tools share)."""
    mode = ["--mode", "bare-user"] if tool == "sapwood" else ["--mode=bare-user"]
    timed(TOOLS[tool](repo, "init", *mode))
    return repo


Samples = dict[str, dict[str, list[float]]]  # tool -> figure -> seconds of each run
Figures = dict[str, dict[str, float]]  # tool -> figure -> seconds
RunOnce = Callable[[str, int, str], Figures]  # (tmp, run, tree) -> one run's figures


def sample_runs(one_run: RunOnce, work: str, tree: str, runs: int) -> tuple[Samples, Figures]:
    """``one_run`` ``runs`` times in a temporary directory under ``work``: every tool's
    seconds of each figure in each run, and their medians."""
    samples: Samples = {tool: defaultdict(list) for tool in TOOLS}
    with tempfile.TemporaryDirectory(dir=work, prefix="sapwood-bench-") as tmp:
        for run in range(runs):
            for tool, measured in one_run(tmp, run, tree).items():
                for key, seconds in measured.items():
                    samples[tool][key].append(seconds)
    figures = {
        tool: {key: statistics.median(values) for key, values in by_key.items()}
        for tool, by_key in samples.items()
    }
    return samples, figures


# ----- machine-readable results (`--results FILE`, gathered by report.py) ---------------------
def result_row(
    benchmark: str, operation: str, tool: str, values: list[float], unit: str = "s", **extra: object
) -> dict[str, object]:
    """One figure: the median of ``values`` with their min and max, as report.py reads it."""
    return {
        "benchmark": benchmark,
        "operation": operation,
        "tool": tool,
        "unit": unit,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
        **extra,
    }


def write_results(
    path: Path | None, benchmark: str, rows: list[dict[str, object]], **meta: object
) -> None:
    """Write ``rows`` (and what they were measured on) as JSON to ``path``, atomically, so
    a run cut short leaves the rows of the steps it finished."""
    if path is None:
        return
    load = " ".join(f"{n:.2f}" for n in os.getloadavg())
    doc = {
        "benchmark": benchmark,
        "root": os.geteuid() == 0,
        "meta": {**meta, "load": load},  # the machine is shared: how busy it was at the end
        "rows": rows,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


# ----- the filesystem the benchmark writes to (benchmarks/workfs.py) ---------------------------
def add_work_options(parser: argparse.ArgumentParser, work: str = "/var/tmp") -> None:
    """--work (where the benchmark writes) and --work-fs (on what: see workfs.py)."""
    parser.add_argument("--work", default=work, help="where the repositories go")
    parser.add_argument(
        "--work-fs",
        choices=workfs.CHOICES,
        help="loop (default, as root): a fresh journaled ext4 on a loop device under "
        "--work for the run, deleted after; host: --work's own filesystem (default from "
        f"{workfs.ENV})",
    )


def work_filesystem(args: argparse.Namespace, need: Footprint) -> AbstractContextManager[WorkFs]:
    """The filesystem this run writes to (``args`` from add_work_options), room made
    for ``need``; its ``kind`` goes into the results as ``work_fs``."""
    return workfs.work_filesystem(Path(args.work), need, args.work_fs)
