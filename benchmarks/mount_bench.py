"""Mount benchmark: sapwood mount against borg mount, restic mount and the native tree.

    .venv/bin/python benchmarks/mount_bench.py [--tree /usr/share] [--runs 1] [--results FILE]

All four serve the same real tree in one run. For each: a metadata walk
(`find -printf '%s %m %U'`) and a full read of every byte (`find -type f | xargs cat`),
each with cold caches (sync + drop_caches, root only) and warm. Targets of issue 4:
faster than borg and restic on all four figures; cold walk within 2x of native, warm
read within 3x. The time each mount command takes to return (until the tree is there,
for restic, which stays in the foreground) is shown too. The daemons' own in-memory
caches survive drop_caches (so do the index pages sapwood has mapped): "cold" is the
kernel's page cache and dentries only, for every tool alike. With --runs N each tool
is mounted and measured N times (one repository each) and each figure is the median;
--results FILE writes every figure (median, min, max) as JSON for report.py.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    SAPWOOD,
    add_work_options,
    drop_caches,
    result_row,
    work_filesystem,
    write_results,
)
from workfs import footprint

ENV = {
    **os.environ,
    "RESTIC_PASSWORD": "bench",
    "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
}


def run(*argv: str | Path) -> None:
    subprocess.run(
        [str(a) for a in argv],
        check=True,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for(path: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} never appeared")
        time.sleep(0.1)


def timed_run(*argv: str | Path) -> float:
    start = time.perf_counter()
    run(*argv)
    return time.perf_counter() - start


# Each tool: a setup (repository and backup, once) and a mount of it (once per run),
# which yields the tree's root in the mount and how long mounting took.
Mount = Callable[[], AbstractContextManager[tuple[Path, float]]]


def sapwood_mount(work: Path, tree: str) -> Mount:
    repo, mnt = work / "sapwood-repo", work / "sapwood-mnt"
    mnt.mkdir()
    run(SAPWOOD, "--repo", repo, "init", "--mode", "bare-user")
    run(SAPWOOD, "--repo", repo, "commit", "-b", "bench", tree)

    @contextmanager
    def mounted() -> Iterator[tuple[Path, float]]:
        seconds = timed_run(SAPWOOD, "--repo", repo, "mount", "bench", mnt)
        try:
            yield mnt, seconds
        finally:
            run(SAPWOOD, "umount", mnt)

    return mounted


def borg_mount(work: Path, tree: str) -> Mount:
    repo, mnt = work / "borg-repo", work / "borg-mnt"
    mnt.mkdir()
    run("borg", "init", "-e", "none", repo)
    run("borg", "create", f"{repo}::bench", tree)

    @contextmanager
    def mounted() -> Iterator[tuple[Path, float]]:
        seconds = timed_run("borg", "mount", f"{repo}::bench", mnt)
        try:
            yield mnt / tree.lstrip("/"), seconds
        finally:
            run("borg", "umount", mnt)

    return mounted


def restic_mount(work: Path, tree: str) -> Mount:
    repo, mnt = work / "restic-repo", work / "restic-mnt"
    mnt.mkdir()
    run("restic", "-r", repo, "init")
    run("restic", "-r", repo, "backup", tree)

    @contextmanager
    def mounted() -> Iterator[tuple[Path, float]]:
        start = time.perf_counter()
        daemon = subprocess.Popen(
            ["restic", "-r", str(repo), "mount", str(mnt)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            target = mnt / "snapshots" / "latest" / tree.lstrip("/")
            wait_for(target)
            yield target, time.perf_counter() - start
        finally:
            daemon.send_signal(signal.SIGINT)
            daemon.wait(timeout=60)

    return mounted


def native(work: Path, tree: str) -> Mount:
    @contextmanager
    def mounted() -> Iterator[tuple[Path, float]]:
        yield Path(tree), 0.0

    return mounted


def measure(root: Path) -> dict[str, float]:
    walk = ["find", str(root), "-printf", "%s %m %U\n"]
    read = ["bash", "-c", f"find '{root}' -type f -print0 | xargs -0 cat > /dev/null"]
    figures = {}
    for name, argv in (("walk", walk), ("read", read)):
        for state in ("cold", "warm"):
            if state == "cold":
                drop_caches()
            start = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            figures[f"{name} {state}"] = time.perf_counter() - start
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default="/usr/share")
    add_work_options(parser)
    parser.add_argument("--only", help="measure only this one (native, sapwood, borg, restic)")
    parser.add_argument("--runs", type=int, default=1, help="mounts of each; figures: median")
    parser.add_argument("--results", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    samples: dict[str, dict[str, list[float]]] = {}
    need = footprint(Path(args.tree)) * 3  # sapwood's, borg's and restic's repositories
    with (
        work_filesystem(args, need) as fs,
        tempfile.TemporaryDirectory(dir=fs.path, prefix="sapwood-mount-bench-") as tmp,
    ):
        for name, setup in (
            ("native", native),
            ("sapwood", sapwood_mount),
            ("borg", borg_mount),
            ("restic", restic_mount),
        ):
            if args.only and name != args.only:
                continue
            mounted = setup(Path(tmp), args.tree)
            samples[name] = defaultdict(list)
            for _ in range(args.runs):
                with mounted() as (root, mount_seconds):
                    for key, seconds in {**measure(root), "mount": mount_seconds}.items():
                        samples[name][key].append(seconds)
    results = {
        name: {key: statistics.median(values) for key, values in figures.items()}
        for name, figures in samples.items()
    }
    rows = [
        result_row("mount", key, name, values, cold=os.geteuid() == 0)
        for name, figures in samples.items()
        for key, values in figures.items()
        if name != "native" or key != "mount"
    ]
    write_results(args.results, "mount", rows, tree=args.tree, work_fs=fs.kind)
    keys = ["mount", "walk cold", "walk warm", "read cold", "read warm"]
    print(f"mount of {args.tree}; caches {'dropped' if os.geteuid() == 0 else 'NOT dropped'}")
    print(f"{'':12}" + "".join(f"{k:>12}" for k in keys))
    for name, figures in results.items():
        print(f"{name:12}" + "".join(f"{figures[k]:>11.2f}s" for k in keys))
    for peer in [p for p in ("native", "borg", "restic") if p in results and "sapwood" in results]:
        ratios = "".join(
            f"{results['sapwood'][k] / results[peer][k]:>12.2f}"
            if results[peer][k]
            else f"{'-':>12}"
            for k in keys
        )
        print(f"{'/' + peer:12}{ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
