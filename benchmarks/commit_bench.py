"""Commit and checkout benchmark: sapwood against OSTree (Debian's ostree), bare-user.

    .venv/bin/python benchmarks/commit_bench.py [--tree /usr/share] [--runs 1] [--results FILE]

On the same real tree, each tool in a fresh repository: the first commit with cold
caches (needs root to drop them), an unchanged re-commit (caches cold again), and a
hardlink checkout in user mode (-U; each tool with its default fsync policy).
With --runs N each figure is the median of N runs, each in fresh repositories;
--results FILE writes every figure (median, min, max) as JSON for report.py.
Ratios are sapwood/OSTree: below 1 means sapwood is faster. Targets of issue 2:
first commit <= 1.0, unchanged re-commit <= 0.25; of issue 3: checkout <= 1.0.
"""

from __future__ import annotations

import argparse
import json
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

KEYS = {
    "first_cold": "first commit",
    "recommit_cold": "unchanged re-commit",
    "checkout_cold": "checkout -U (hardlinks)",
}


def one_run(tmp: str, run: int, tree: str) -> dict[str, dict[str, float]]:
    figures = {}
    for tool, cmd in TOOLS.items():
        repo = init_bare_user(tool, Path(tmp) / f"{tool}-{run}")
        commit = cmd(repo, "commit", "-b", "bench", tree)
        figures[tool] = {
            "first_cold": timed(commit, cold=True),
            "recommit_cold": timed(commit, cold=True),
            "checkout_cold": timed(
                cmd(repo, "checkout", "-U", "bench", f"{tmp}/{tool}-{run}-co"), cold=True
            ),
        }
        shutil.rmtree(repo)
        shutil.rmtree(f"{tmp}/{tool}-{run}-co")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default="/usr/share")
    add_work_options(parser)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--results", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    need = footprint(Path(args.tree)) * 2  # a repository and a checkout at a time
    with work_filesystem(args, need) as fs:
        samples, figures = sample_runs(one_run, str(fs.path), args.tree, args.runs)
    rows = [
        result_row("commit", KEYS[key], tool, values, cold=os.geteuid() == 0)
        for tool, by_key in samples.items()
        for key, values in by_key.items()
    ]
    write_results(args.results, "commit", rows, tree=args.tree, work_fs=fs.kind)
    if args.json:
        print(json.dumps({"tree": args.tree, "root": os.geteuid() == 0, "figures": figures}))
        return 0
    caches = "dropped" if os.geteuid() == 0 else "NOT dropped (not root)"
    shown = [  # (measure, figure, target): `rows` above are the results file's
        ("first commit", "first_cold", "<= 1.00"),
        ("unchanged re-commit", "recommit_cold", "<= 0.25"),
        ("checkout -U (hardlinks)", "checkout_cold", "<= 1.00"),
    ]
    print_table(
        f"commit and checkout of {args.tree}, bare-user; caches {caches}",
        [
            (name, figures["sapwood"][key], figures["ostree"][key], target)
            for name, key, target in shown
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
