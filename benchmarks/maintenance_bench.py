"""fsck and prune benchmark: sapwood against OSTree, both bare-user, one run.

    .venv/bin/python benchmarks/maintenance_bench.py [--tree /usr/share]

Both tools commit the same real tree, then: fsck with cold caches (every object
re-hashed), and prune --refs-only after the ref is deleted (everything goes).
Target of issue 5: fsck at most half of OSTree's time (ratio <= 0.5).
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(dir=args.work, prefix="sapwood-bench-") as tmp:
        for tool, cmd in TOOLS.items():
            repo = init_bare_user(tool, Path(tmp) / tool)
            timed(cmd(repo, "commit", "-b", "bench", args.tree))
            fsck = timed(cmd(repo, "fsck"), cold=True)
            timed(cmd(repo, "refs", "--delete", "bench"))
            prune = timed(cmd(repo, "prune", "--refs-only"), cold=True)
            figures[tool] = {"fsck": fsck, "prune": prune}
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
