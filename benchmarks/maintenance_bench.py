"""fsck and prune benchmark: sapwood against OSTree, both bare-user.

    .venv/bin/python benchmarks/maintenance_bench.py [--tree /usr/share] [--runs 1] [--results FILE]

Both tools commit the same real tree, then: fsck with cold caches (every object
re-hashed), and prune --refs-only after the ref is deleted (everything goes).
With --runs N each figure is the median of N runs, each in fresh repositories;
--results FILE writes every figure (median, min, max) as JSON for report.py.
Target of issue 5: fsck at most half of OSTree's time (ratio <= 0.5).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    TOOLS,
    add_work_options,
    init_bare_user,
    print_table,
    result_row,
    sample_runs,
    timed,
    work_filesystem,
    write_results,
)
from workfs import footprint


def one_run(tmp: str, run: int, tree: str) -> dict[str, dict[str, float]]:
    figures = {}
    for tool, cmd in TOOLS.items():
        repo = init_bare_user(tool, Path(tmp) / f"{tool}-{run}")
        timed(cmd(repo, "commit", "-b", "bench", tree))
        fsck = timed(cmd(repo, "fsck"), cold=True)
        timed(cmd(repo, "refs", "--delete", "bench"))
        prune = timed(cmd(repo, "prune", "--refs-only"), cold=True)
        figures[tool] = {"fsck": fsck, "prune": prune}
        shutil.rmtree(repo)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default="/usr/share")
    add_work_options(parser)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--results", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    need = footprint(Path(args.tree)) * 1.5  # one repository at a time
    with work_filesystem(args, need) as fs:
        samples, figures = sample_runs(one_run, str(fs.path), args.tree, args.runs)
    names = {"fsck": "fsck", "prune": "prune (all unreferenced)"}
    rows = [
        result_row("maintenance", names[key], tool, values, cold=os.geteuid() == 0)
        for tool, by_key in samples.items()
        for key, values in by_key.items()
    ]
    write_results(args.results, "maintenance", rows, tree=args.tree, work_fs=fs.kind)
    caches = "dropped" if os.geteuid() == 0 else "NOT dropped (not root)"
    print_table(
        f"maintenance of a commit of {args.tree}, bare-user; caches {caches}",
        [
            ("fsck", figures["sapwood"]["fsck"], figures["ostree"]["fsck"], "<= 0.50"),
            (
                "prune (all unreferenced)",
                figures["sapwood"]["prune"],
                figures["ostree"]["prune"],
                "-",
            ),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
