"""Round-trip benchmark: re-commit of a hardlink farm, sapwood against OSTree, median of --runs.

    .venv/bin/python benchmarks/roundtrip_bench.py [--tree /usr/share] [--runs 3] [--results FILE]

On the same real tree, each tool in a fresh bare-user repository: commit the tree,
check it out as a user-mode hardlink farm (``sapwood checkout -U -H``, ``ostree
checkout -U``), then commit the farm again, ``runs`` times each, warm and with caches
dropped (needs root): ``sapwood commit`` against ``ostree commit
--link-checkout-speedup``, both recognising farm files as their objects by inode
instead of reading them. The figure is the median. The two tools take turns within
each run (the first alternating), so that a machine shared with other work loads both
alike and the ratio holds. sapwood runs as installed, its modules compiled once: the
environment's PYTHONDONTWRITEBYTECODE is dropped for the tools (set, every command
compiled every module it imports, ~0.05 s, a cost no installed copy pays). Each tool
keeps its default fsync policy; OSTree's ends with a syncfs of the whole filesystem
(whatever else is being written there), sapwood's writes nothing but its index here
(no file object is new), so a third row takes OSTree with --fsync=false: the work
alone. Ratios are sapwood/OSTree: below 1 means sapwood is faster. Target of issue 11:
at most 0.5. The farm's re-commit must record every file as the tree's commit did, in
both tools, or the run fails.
--results FILE writes every figure (median, min, max) as JSON for report.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    TOOLS,
    add_work_options,
    drop_caches,
    init_bare_user,
    print_table,
    result_row,
    timed,
    work_filesystem,
    write_results,
)
from workfs import footprint


def farm_checkout(tool: str, repo: Path, farm: Path) -> list[str]:
    """The user-mode hardlink checkout of each tool (OSTree's -U links in bare-user)."""
    if tool == "sapwood":
        return TOOLS[tool](repo, "checkout", "-U", "-H", "base", str(farm))
    return TOOLS[tool](repo, "checkout", "-U", "base", str(farm))


def recommit(tool: str, repo: Path, farm: Path, run: int, fsync: bool = True) -> list[str]:
    if tool == "sapwood":  # nothing staged, so no syncfs: the index's own commit only
        return TOOLS[tool](repo, "commit", "-b", f"farm{run}", str(farm))
    unsynced = [] if fsync else ["--fsync=false"]
    speedup = "--link-checkout-speedup"
    return TOOLS[tool](repo, "commit", "-b", f"farm{run}", speedup, *unsynced, str(farm))


def changed_paths(tool: str, repo: Path, old: str, new: str) -> list[str]:
    """The paths whose entries differ between two commits of ``repo``."""
    if tool == "sapwood":
        argv = TOOLS[tool](repo, "diff", "--json", old, new)
        return [change["path"] for change in json.loads(subprocess.check_output(argv, text=True))]
    argv = TOOLS[tool](repo, "diff", old, new)
    return [
        line.split(None, 1)[1] for line in subprocess.check_output(argv, text=True).splitlines()
    ]


def check_round_trip(tool: str, repo: Path, tree: str) -> None:
    """The farm's re-commit records what the tree's commit did, files and symlinks all
    alike; directories of other owners differ (a user-mode checkout owns them), in both
    tools alike (/usr/share/polkit-1/rules.d, on Debian)."""
    changed = changed_paths(tool, repo, "base", "farm0")
    files = [path for path in changed if not Path(tree + path).is_dir()]
    if files:
        raise SystemExit(f"{tool}: the farm's re-commit changed {len(files)} files: {files[:5]}")


def prepare(tool: str, tmp: Path, tree: str) -> tuple[Path, Path]:
    """A fresh bare-user repository of ``tool`` holding ``tree`` as ``base``, and its farm."""
    repo = init_bare_user(tool, tmp / tool)
    farm = tmp / f"{tool}-farm"
    timed(TOOLS[tool](repo, "commit", "-b", "base", tree))
    timed(farm_checkout(tool, repo, farm))
    return repo, farm


def in_turns(
    runs: int, argv: Callable[[str, int], list[str] | None], cold: bool = False
) -> dict[str, list[float]]:
    """Seconds of each tool's ``argv(tool, run)`` (None: the tool has no such figure),
    the tools in turns within each run, the first of them alternating: the machine is
    shared, and a load that comes and goes then weighs on both tools alike."""
    seconds: dict[str, list[float]] = {tool: [] for tool in TOOLS}
    for run in range(runs):
        order = list(TOOLS) if run % 2 == 0 else list(reversed(TOOLS))
        for tool in order:
            command = argv(tool, run)
            if command is not None:
                seconds[tool].append(timed(command, cold=cold))
    return {tool: values for tool, values in seconds.items() if values}


def measure(tmp: Path, tree: str, runs: int) -> dict[str, dict[str, list[float]]]:
    """Every figure of both tools: tool -> figure -> seconds of each run."""
    places = {tool: prepare(tool, tmp, tree) for tool in TOOLS}
    repos = {tool: repo for tool, (repo, _) in places.items()}
    farms = {tool: farm for tool, (_, farm) in places.items()}
    figures: dict[str, dict[str, list[float]]] = {tool: {} for tool in TOOLS}

    def add(key: str, seconds: dict[str, list[float]]) -> None:
        for tool, values in seconds.items():
            figures[tool][key] = values

    for tool in TOOLS:  # caches warm for the warm runs
        timed(recommit(tool, repos[tool], farms[tool], 4 * runs))
    add("warm", in_turns(runs, lambda tool, run: recommit(tool, repos[tool], farms[tool], run)))
    add(
        "warm_unsynced",
        in_turns(
            runs,
            lambda tool, run: recommit(tool, repos[tool], farms[tool], 2 * runs + run, fsync=False),
        ),
    )
    # issue 11: the farm's re-commit costs no more than an unchanged re-commit of the tree
    sapwood_repo = repos["sapwood"]
    timed(TOOLS["sapwood"](sapwood_repo, "commit", "-b", "tree-warm", tree))  # stat cache filled
    add(
        "statcache_warm",
        in_turns(
            runs,
            lambda tool, run: (
                TOOLS[tool](sapwood_repo, "commit", "-b", f"tree{run}", tree)
                if tool == "sapwood"
                else None
            ),
        ),
    )
    if os.geteuid() == 0:
        add(
            "cold",
            in_turns(
                runs,
                lambda tool, run: recommit(tool, repos[tool], farms[tool], runs + run),
                cold=True,
            ),
        )
    for tool in TOOLS:
        check_round_trip(tool, repos[tool], tree)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default="/usr/share")
    add_work_options(parser)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--results", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # see the module's docstring
    need = footprint(Path(args.tree)) * 3  # both tools' repositories and hardlink farms
    with (
        work_filesystem(args, need) as fs,
        tempfile.TemporaryDirectory(dir=fs.path, prefix="sapwood-bench-") as tmp,
    ):
        samples = measure(Path(tmp), args.tree, args.runs)
    drop_caches()  # the farms' deletion written back before anything else is timed
    figures = {
        tool: {key: statistics.median(values) for key, values in by_key.items()}
        for tool, by_key in samples.items()
    }
    names = {
        "warm": "farm re-commit, warm",
        "warm_unsynced": "farm re-commit, warm, no fsync",
        "statcache_warm": "unchanged re-commit of the tree, warm",
        "cold": "farm re-commit, cold",
    }
    rows = [
        result_row("roundtrip", names[key], tool, values)
        for tool, by_key in samples.items()
        for key, values in by_key.items()
    ]
    write_results(args.results, "roundtrip", rows, tree=args.tree, work_fs=fs.kind)
    if args.json:
        print(json.dumps({"tree": args.tree, "root": os.geteuid() == 0, "figures": figures}))
        return 0
    table = [("farm re-commit, warm", "warm"), ("warm, ostree no fsync", "warm_unsynced")]
    if os.geteuid() == 0:
        table.append(("farm re-commit, cold", "cold"))
    print_table(
        f"re-commit of a checkout -U hardlink farm of {args.tree}, bare-user, "
        f"median of {args.runs}",
        [(name, figures["sapwood"][key], figures["ostree"][key], "<= 0.50") for name, key in table],
    )
    print(
        f"sapwood, unchanged re-commit of {args.tree} through the stat cache, warm: "
        f"{figures['sapwood']['statcache_warm']:.2f}s (the farm's: "
        f"{figures['sapwood']['warm']:.2f}s; issue 11: the farm's no more)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
