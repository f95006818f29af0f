"""Commit and checkout benchmark: sapwood against OSTree (Debian's ostree), bare-user, one run.

    .venv/bin/python benchmarks/commit_bench.py [--tree /usr/share]

On the same real tree, each tool in a fresh repository: the first commit with cold
caches (needs root to drop them), an unchanged re-commit (caches cold again), and a
hardlink checkout in user mode (-U; each tool with its default fsync policy).
Ratios are sapwood/OSTree: below 1 means sapwood is faster. Targets of issue 2:
first commit <= 1.0, unchanged re-commit <= 0.25; of issue 3: checkout <= 1.0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TOOLS, init_bare_user, print_table, timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default="/usr/share")
    parser.add_argument("--work", default="/var/tmp", help="where the repositories go")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(dir=args.work, prefix="sapwood-bench-") as tmp:
        for tool, cmd in TOOLS.items():
            repo = init_bare_user(tool, Path(tmp) / tool)
            commit = cmd(repo, "commit", "-b", "bench", args.tree)
            figures[tool] = {
                "first_cold": timed(commit, cold=True),
                "recommit_cold": timed(commit, cold=True),
                "checkout_cold": timed(
                    cmd(repo, "checkout", "-U", "bench", f"{tmp}/{tool}-co"), cold=True
                ),
            }
    if args.json:
        print(json.dumps({"tree": args.tree, "root": os.geteuid() == 0, "figures": figures}))
        return 0
    caches = "dropped" if os.geteuid() == 0 else "NOT dropped (not root)"
    rows = [
        ("first commit", "first_cold", "<= 1.00"),
        ("unchanged re-commit", "recommit_cold", "<= 0.25"),
        ("checkout -U (hardlinks)", "checkout_cold", "<= 1.00"),
    ]
    print_table(
        f"commit and checkout of {args.tree}, bare-user; caches {caches}",
        [
            (name, figures["sapwood"][key], figures["ostree"][key], target)
            for name, key, target in rows
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
