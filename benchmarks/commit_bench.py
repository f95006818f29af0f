"""Commit benchmark: sapwood against OSTree (Debian's ostree), both bare-user, one run.

    .venv/bin/python benchmarks/commit_bench.py [--tree /usr/share]

On the same real tree, each tool in a fresh repository: the first commit with cold
caches (needs root to drop them) and an unchanged re-commit (caches cold again).
Ratios are sapwood/OSTree: below 1 means sapwood is faster. Targets of issue 2:
first commit <= 1.0, unchanged re-commit <= 0.25.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ostree, print_table, sapwood, timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default="/usr/share")
    parser.add_argument("--work", default="/var/tmp", help="where the repositories go")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(dir=args.work, prefix="sapwood-bench-") as tmp:
        for tool, cmd in (("sapwood", sapwood), ("ostree", ostree)):
            repo = Path(tmp) / tool
            init = (
                ["init", "--mode", "bare-user"]
                if tool == "sapwood"
                else ["init", "--mode=bare-user"]
            )
            timed(cmd(repo, *init))
            commit = cmd(repo, "commit", "-b", "bench", args.tree)
            figures[tool] = {
                "first_cold": timed(commit, cold=True),
                "recommit_cold": timed(commit, cold=True),
            }
    if args.json:
        print(json.dumps({"tree": args.tree, "root": os.geteuid() == 0, "figures": figures}))
        return 0
    caches = "dropped" if os.geteuid() == 0 else "NOT dropped (not root)"
    print_table(
        f"commit of {args.tree}, bare-user; caches {caches}",
        [
            (
                "first commit",
                figures["sapwood"]["first_cold"],
                figures["ostree"]["first_cold"],
                "<= 1.00",
            ),
            (
                "unchanged re-commit",
                figures["sapwood"]["recommit_cold"],
                figures["ostree"]["recommit_cold"],
                "<= 0.25",
            ),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
