"""Commit benchmark: sapwood against OSTree (Debian's ostree), both bare-user, one run.

    .venv/bin/python benchmarks/commit_bench.py [--tree /usr/share] [--runs 1]

Measures, on the same real tree, each in a fresh repository:
  first commit with cold caches (sync, then drop_caches; needs root), and
  an unchanged re-commit (caches cold again).
Prints the seconds and the ratio sapwood/OSTree (below 1 means sapwood is faster).
Targets of issue 2: first commit ratio <= 1.0, unchanged re-commit <= 0.25.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAPWOOD = ROOT / ".venv" / "bin" / "sapwood"


def drop_caches() -> bool:
    subprocess.run(["sync"], check=True)
    time.sleep(2)  # let the disk settle (discard of earlier deletions, writeback)
    if os.geteuid() != 0:
        return False
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    return True


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def commands(tool: str, repo: Path, tree: str) -> tuple[list[str], list[str]]:
    if tool == "sapwood":
        init = [str(SAPWOOD), "--repo", str(repo), "init", "--mode", "bare-user"]
        commit = [str(SAPWOOD), "--repo", str(repo), "commit", "-b", "bench", tree]
    else:
        init = ["ostree", f"--repo={repo}", "init", "--mode=bare-user"]
        commit = ["ostree", f"--repo={repo}", "commit", "-b", "bench", tree]
    return init, commit


def measure(tool: str, work: Path, tree: str) -> dict[str, float]:
    repo = work / f"{tool}-repo"
    init, commit = commands(tool, repo, tree)
    subprocess.run(init, check=True)
    drop_caches()
    first = timed(commit)
    drop_caches()
    again = timed(commit)
    return {"first_cold": first, "recommit_cold": again}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default="/usr/share")
    parser.add_argument("--work", default="/var/tmp", help="where the repositories go")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if shutil.which("ostree") is None:
        print("ostree is not installed (make setup installs it)", file=sys.stderr)
        return 1
    cold = os.geteuid() == 0
    with tempfile.TemporaryDirectory(dir=args.work, prefix="sapwood-bench-") as tmp:
        work = Path(tmp)
        results = {tool: measure(tool, work, args.tree) for tool in ("sapwood", "ostree")}
        for tool in results:
            du = subprocess.run(
                ["du", "-sb", str(work / f"{tool}-repo")], capture_output=True, text=True
            )
            results[tool]["repo_bytes"] = float(du.stdout.split()[0])
    ratios = {
        k: results["sapwood"][k] / results["ostree"][k] for k in ("first_cold", "recommit_cold")
    }
    if args.json:
        print(
            json.dumps(
                {"tree": args.tree, "cold_caches": cold, "results": results, "ratios": ratios}
            )
        )
        return 0
    files = sum(1 for _ in Path(args.tree).rglob("*"))
    caches = "dropped" if cold else "NOT dropped (not root)"
    print(f"tree: {args.tree} ({files} entries); caches {caches}")
    print(f"{'':24}{'sapwood':>10}{'ostree':>10}{'ratio':>8}  target")
    for key, target in (("first_cold", "<= 1.00"), ("recommit_cold", "<= 0.25")):
        s, o = results["sapwood"][key], results["ostree"][key]
        print(f"{key:24}{s:>9.2f}s{o:>9.2f}s{ratios[key]:>8.2f}  {target}")
    print(
        f"{'repository size (MiB)':24}{results['sapwood']['repo_bytes'] / 2**20:>10.0f}"
        f"{results['ostree']['repo_bytes'] / 2**20:>10.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
