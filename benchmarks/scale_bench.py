"""Scale benchmark: time and peak memory against file count, sapwood beside OSTree.

    .venv/bin/python benchmarks/scale_bench.py [--sizes 10000,100000] [--runs 3]
        [--seed 1] [--cache DIR] [--results FILE]

``--runs`` times, each run going through every size (so that a shared machine's load
falls on every size alike), on the synthetic tree of benchmarks/treegen.py (generated
once, cached), for each tool in a fresh bare-user repository: commit, unchanged
re-commit, ``checkout -U -H``, then for sapwood the mount (until the command returns)
and a full metadata walk through it (os.walk and an lstat of every entry, in this
process), then fsck, and prune of everything after the ref is deleted. Caches are warm:
the tree is read once, untimed, before each commit (another size's run in between may
have pushed it out), and every later step reads what the one before wrote;
--pause-reclaim keeps a VM's proactive pageout from evicting what a step longer than a
minute left idle.

Each figure is the median of the runs, with min and max. Memory is the peak resident
set of the whole process tree of the command: the proportional set size (Pss) of the
process and its descendants summed, sampled every 20 ms (not wait4's ru_maxrss, which
carries the harness's own size across fork and exec: see run_measured); for the mount,
the daemon's Pss right after the mount and after the walk. Per-file figures divide by
the tree's non-directory entries; "growth" is a size's time per file over the previous
size's (issue 15: within 1.5). A million files is opt-in: ``make bench-million`` runs
--sizes 1000000 --peer-runs 1 after ``make bench``, and report.py joins the two.

The repositories and checkouts go to the benchmark's own filesystem (benchmarks/workfs.py:
as root, a fresh journaled ext4 on a loop device, sized for one repository of the
largest tree and its checkout; ``--work-fs host`` writes to --work's own filesystem).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import treegen
from common import (
    SAPWOOD,
    TOOLS,
    add_work_options,
    proactive_reclaim,
    reclaim_paused,
    result_row,
    work_filesystem,
    write_results,
)
from workfs import Footprint, WorkFs, footprint

SAMPLE_SECONDS = 0.02
KIB_PER_MIB = 1024
OPERATIONS = ("commit", "re-commit", "checkout -H", "mount", "walk", "fsck", "prune")
TIMEOUT = 6 * 3600

# samples[(files, operation, tool)] = [(seconds, peak MiB or None), ...]
Samples = dict[tuple[int, str, str], list[tuple[float, float | None]]]


# ----- memory of a process tree ------------------------------------------------------------------
def _rss_kib(pid: int) -> int:
    """``pid``'s proportional set size (Pss): its private pages plus its share of pages it
    shares. Summed over a process tree, a page that a fork left shared between parent and
    child counts once, where VmRSS would count it in each (a 60 MiB parent forking two
    children read as 626 MiB on a loaded machine). VmRSS where smaps_rollup is missing."""
    for name, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(name) as fields:
                for line in fields:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            continue
    return 0  # gone, or a zombie


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tids = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as children:
                    todo.extend(int(child) for child in children.read().split())
            except OSError:
                continue
    return found


def tree_rss_kib(pid: int) -> int:
    """Resident KiB of ``pid`` and everything below it, now (shared pages counted once)."""
    return sum(_rss_kib(p) for p in _descendants(pid))


def run_measured(argv: list[str]) -> tuple[float, float]:
    """Seconds ``argv`` takes and its process tree's peak resident MiB; fails loudly."""
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errors)
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss_kib(proc.pid))
                done.wait(SAMPLE_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, _usage = os.wait4(proc.pid, 0)  # its ru_maxrss: see below
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace").strip()
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {message}")
    # Not _usage.ru_maxrss: Linux carries the high-water mark of the forked copy of this
    # process across exec, so a child of a large parent (pytest at the end of a run:
    # 640 MiB) reports the parent's size whatever it uses itself.
    return seconds, peak / KIB_PER_MIB


def _quiet(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=TIMEOUT)


# ----- the mount ------------------------------------------------------------------------------
def _daemon_pid(mnt: Path) -> int:
    """The mount daemon serving ``mnt``: the process whose command line ends with it."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mount" in args and args[-2:] in ([str(mnt).encode(), b""], [str(mnt).encode()]):
            return int(entry)
    raise SystemExit(f"no daemon found serving {mnt}")


def walk(root: Path) -> int:
    """lstat every entry below ``root``; how many there were."""
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lstat(os.path.join(dirpath, name))
            count += 1
    return count


def mount_and_walk(repo: Path, mnt: Path, entries: int) -> dict[str, tuple[float, float | None]]:
    mnt.mkdir()
    seconds, _ = run_measured([SAPWOOD, "--repo", str(repo), "mount", "bench", str(mnt)])
    try:
        daemon = _daemon_pid(mnt)
        after_mount = _rss_kib(daemon) / KIB_PER_MIB
        start = time.perf_counter()
        seen = walk(mnt)
        walked = time.perf_counter() - start
        after_walk = _rss_kib(daemon) / KIB_PER_MIB
    finally:
        _quiet([SAPWOOD, "umount", str(mnt)])
    if seen != entries:
        raise SystemExit(f"the walk of the mount saw {seen} entries, the tree has {entries}")
    return {"mount": (seconds, after_mount), "walk": (walked, after_walk)}


# ----- one run of one tool --------------------------------------------------------------------
def warm(tree: Path) -> int:
    """Read every file and directory of ``tree`` once (untimed), so that the commit that
    follows finds it in memory: a run of another size in between (a million files write
    9 GB) may have pushed it out, and "caches warm" would then hold for one size only.
    Returns the bytes read."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(tree):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # a symlink, a special file: lstat'ed by the walk already
            try:
                while chunk := os.read(fd, 1 << 20):
                    total += len(chunk)
            finally:
                os.close(fd)
    return total


def checkout_argv(tool: str, repo: Path, dest: Path) -> list[str]:
    return TOOLS[tool](repo, "checkout", "-U", "-H", "bench", str(dest))


def one_run(
    tool: str,
    tree: Path,
    work: Path,
    entries: int,
    report: Callable[[str, float, float | None], None],
) -> None:
    """Every operation of ``tool`` once, in a fresh repository under ``work``."""
    cmd = TOOLS[tool]
    repo, dest = work / f"{tool}-repo", work / f"{tool}-checkout"
    mode = ["--mode", "bare-user"] if tool == "sapwood" else ["--mode=bare-user"]
    _quiet(cmd(repo, "init", *mode))
    commit = cmd(repo, "commit", "-b", "bench", str(tree))
    warm(tree)
    report("commit", *run_measured(commit))
    report("re-commit", *run_measured(commit))
    report("checkout -H", *run_measured(checkout_argv(tool, repo, dest)))
    shutil.rmtree(dest)
    if tool == "sapwood":
        for operation, figures in mount_and_walk(repo, work / "mnt", entries).items():
            report(operation, *figures)
        (work / "mnt").rmdir()
    report("fsck", *run_measured(cmd(repo, "fsck")))
    _quiet(cmd(repo, "refs", "--delete", "bench"))
    report("prune", *run_measured(cmd(repo, "prune", "--refs-only")))
    shutil.rmtree(repo)


def count_entries(tree: Path) -> tuple[int, int]:
    """(non-directory entries, all entries) below ``tree``."""
    files = everything = 0
    for _, dirnames, filenames in os.walk(tree):
        files += len(filenames)
        everything += len(dirnames) + len(filenames)
    return files, everything


# ----- figures ----------------------------------------------------------------------------------
def rows(samples: Samples) -> list[dict[str, object]]:
    """The JSON rows: per (size, operation, tool) one time row and one memory row."""
    out: list[dict[str, object]] = []
    for (files, operation, tool), runs in sorted(samples.items()):
        seconds = [s for s, _ in runs]
        out.append(result_row("scale", operation, tool, seconds, files=files))
        memory = [m for _, m in runs if m is not None]
        if memory:
            out.append(result_row("scale", operation, tool, memory, unit="MiB", files=files))
    return out


def print_tables(samples: Samples, sizes: list[int]) -> None:
    tools = list(TOOLS)
    header = f"{'':14}{'files':>9}" + "".join(f"{t + ' s':>24}{t + ' MiB':>14}" for t in tools)
    print(header + f"{'ratio':>7}{'us/file':>9}{'growth':>8}")
    for operation in OPERATIONS:
        previous: float | None = None
        for files in sizes:
            cells, medians = "", {}
            for tool in tools:
                runs = samples.get((files, operation, tool))
                if not runs:
                    cells += f"{'-':>24}{'-':>14}"
                    continue
                seconds = [s for s, _ in runs]
                medians[tool] = statistics.median(seconds)
                spread = f"{medians[tool]:.2f} ({min(seconds):.2f}-{max(seconds):.2f})"
                memory = [m for _, m in runs if m is not None]
                cells += (
                    f"{spread:>24}{(f'{statistics.median(memory):.0f}' if memory else '-'):>14}"
                )
            if "sapwood" not in medians:
                continue
            ratio = medians["sapwood"] / medians["ostree"] if medians.get("ostree") else None
            per_file = medians["sapwood"] / files * 1e6
            growth = per_file / previous if previous else None
            previous = per_file
            print(
                f"{operation:14}{files:>9}{cells}{(f'{ratio:.2f}' if ratio else '-'):>7}"
                f"{per_file:>9.1f}{(f'{growth:.2f}' if growth else '-'):>8}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated file counts")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--peer-runs",
        type=int,
        help="runs of the peers (default: --runs); OSTree takes about 45 minutes a run at a "
        "million files here, so the million-file run (make bench-million) measures it once",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=treegen.DEFAULT_CACHE)
    add_work_options(parser)
    parser.add_argument("--results", type=Path, help="write the figures as JSON here")
    parser.add_argument(
        "--pause-reclaim",
        action="store_true",
        help="as root, switch the machine's proactive pageout (DAMON) off for the run: it "
        "makes every step longer than a minute read cold (see common.reclaim_paused)",
    )
    args = parser.parse_args()
    if not args.pause_reclaim:
        return measure(args, proactive_reclaim())
    with reclaim_paused() as paused:
        return measure(args, paused)


def measure(args: argparse.Namespace, reclaim: str) -> int:
    """Every size, every run, every tool; ``reclaim`` (the machine's proactive pageout
    during the run) goes into the results."""
    sizes = [int(size) for size in args.sizes.split(",")]
    peer_runs = args.runs if args.peer_runs is None else args.peer_runs
    samples: Samples = defaultdict(list)
    trees: dict[str, object] = {}
    paths: dict[int, tuple[Path, int]] = {}
    need = Footprint(0, 0)
    for files in sizes:
        print(f"[scale {files:,}] tree (generated once, then cached)", file=sys.stderr, flush=True)
        tree = treegen.ensure_tree(files, args.seed, args.cache)
        entries = count_entries(tree)
        trees[str(files)] = {"path": str(tree), "entries": entries[1]}
        paths[files] = tree, entries[1]
        size = footprint(tree)
        need = Footprint(max(need.bytes, size.bytes), max(need.inodes, size.inodes))
    # one tool's repository at a time (each run's is deleted before the next), its
    # checkout (hardlinks, but its directories) and index: at 100,000 files (613 MiB,
    # 104,014 inodes) sapwood's repository took 646 MiB and 92,789 inodes, OSTree's 612
    # MiB and 97,751, a checkout 22 MiB and 9,802 inodes: 1.1 trees, 1.25 with a margin
    with work_filesystem(args, need * 1.25) as fs:
        run_all(args, fs, reclaim, samples, trees, paths)
    print(
        f"scale: trees of benchmarks/treegen.py (seed {args.seed}), bare-user, caches warm, "
        f"median (min-max) of {args.runs} (peers: {peer_runs}); ratio and per-file: sapwood; "
        f"written to {fs.kind}"
    )
    print_tables(samples, sizes)
    return 0


def run_all(
    args: argparse.Namespace,
    fs: WorkFs,
    reclaim: str,
    samples: Samples,
    trees: dict[str, object],
    paths: dict[int, tuple[Path, int]],
) -> None:
    """Every run of every size (``paths``: each one's tree and entries) of every tool
    into ``samples``, written to ``fs``; the results say what reclaim ran, and on what
    filesystem."""
    sizes = list(paths)
    peer_runs = args.runs if args.peer_runs is None else args.peer_runs
    # Runs outermost, sizes within: a shared machine's load then weighs on every size's
    # runs alike, and growth (a size's time per file over the previous size's) compares
    # runs measured side by side.
    for run in range(args.runs):
        for files in sizes:
            for tool in TOOLS:
                if tool != "sapwood" and run >= peer_runs:
                    continue
                step = f"[scale {files:,}] run {run + 1}/{args.runs} {tool}"
                with tempfile.TemporaryDirectory(dir=fs.path, prefix="sapwood-scale-") as tmp:

                    def report(operation: str, seconds: float, mib: float | None) -> None:
                        samples[files, operation, tool].append((seconds, mib))  # noqa: B023
                        memory = f", {mib:.0f} MiB" if mib is not None else ""
                        print(
                            f"{step} {operation}: {seconds:.2f} s{memory}",  # noqa: B023
                            file=sys.stderr,
                            flush=True,
                        )
                        write_results(
                            args.results,
                            "scale",
                            rows(samples),
                            seed=args.seed,
                            trees=trees,
                            reclaim=reclaim,
                            work_fs=fs.kind,
                        )

                    tree, entries = paths[files]
                    one_run(tool, tree, Path(tmp), entries, report)


if __name__ == "__main__":
    sys.exit(main())
