"""Path history benchmark: `sapwood log REF -- PATH` on a 200-commit history of /usr/share.

    .venv/bin/python benchmarks/history_bench.py [--tree /usr/share] [--runs 3] [--results FILE]

The history: commit 0 is the whole tree; each of the 199 later commits changes a few
files (3 files chosen at random with a fixed seed, their content appended to; every
10th commit also the deep file timed below, every 7th adds a new file), built as
OSTree's `commit --tree=ref=PREV --tree=dir=OVERLAY` builds them: the previous commit
overlaid with a directory of the changed files, so each commit is the full tree with
those files changed (the overlay's directories copy the source's modes). Commits are
one day apart from 2026-01-01. The repository is kept in --work (/work/scale/A by
default) and reused while the tree and the parameters are the same.

Timed, median of --runs: the command line (a new process, output to /dev/null) and
the library call (sapwood.path_history, listed to the end), for the deepest file of
the tree, a top-level directory (doc/) and a path that never existed; plain `log`
too, for scale. Target of issue 14: log -- PATH under one second.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import result_row, sapwood, timed, write_results

import sapwood as sw

COMMITS = 200
FILES_PER_COMMIT = 3
SEED = 14
BASE_TIMESTAMP = 1767225600  # 2026-01-01 00:00:00 UTC
DAY = 86400
REF = "bench/history"


def regular_files(tree: Path) -> list[str]:
    """Every regular file of ``tree`` (relative paths, sorted): the candidates to change."""
    found = []
    for directory, dirs, files in os.walk(tree):
        dirs.sort()
        for name in files:
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink():
                found.append(str(path.relative_to(tree)))
    return sorted(found)


def deepest(files: list[str]) -> str:
    return max(files, key=lambda f: (f.count("/"), f))


def build(tree: Path, repo_path: Path) -> tuple[str, str]:
    """Make the history in ``repo_path`` unless a finished one is there; return the
    deep file and the directory to time, as paths inside the commits."""
    files = regular_files(tree)
    deep = deepest(files)
    marker = repo_path / "history-bench.done"
    stamp = f"{tree} {len(files)} {COMMITS} {FILES_PER_COMMIT} {SEED}\n"
    if marker.is_file() and marker.read_text() == stamp:
        return "/" + deep, "/doc"
    shutil.rmtree(repo_path, ignore_errors=True)
    started = time.perf_counter()
    options = sw.ContentOptions(skip_special=True)
    with sw.Repository.init(repo_path, sw.RepoMode.BARE_USER) as repo:
        sw.commit(repo, REF, tree, subject="0", timestamp=BASE_TIMESTAMP, options=options)
        print(f"  commit 0 (the whole tree): {time.perf_counter() - started:.1f} s", flush=True)
        chooser = random.Random(SEED)
        overlay = repo_path.parent / "history-bench-overlay"
        for index in range(1, COMMITS):
            shutil.rmtree(overlay, ignore_errors=True)
            changed = chooser.sample(files, FILES_PER_COMMIT)
            changed += [deep] if index % 10 == 0 else []
            for name in changed:
                _write_changed(tree, overlay, name, f"change {index}\n".encode())
            if index % 7 == 0:
                _write_changed(tree, overlay, f"doc/new-{index}", f"new {index}\n".encode())
            layers = [sw.Layer.commit(REF), sw.Layer.directory(str(overlay))]
            sw.commit(repo, REF, layers, subject=str(index), timestamp=BASE_TIMESTAMP + index * DAY)
        shutil.rmtree(overlay, ignore_errors=True)
    print(f"  {COMMITS} commits built in {time.perf_counter() - started:.1f} s", flush=True)
    marker.write_text(stamp)
    return "/" + deep, "/doc"


def _write_changed(tree: Path, overlay: Path, name: str, extra: bytes) -> None:
    """``name`` in the overlay: the tree's content (if any) plus ``extra``, with the
    tree's modes on the file and on every directory above it."""
    source, target = tree / name, overlay / name
    parts = Path(name).parts
    for depth in range(1, len(parts)):
        directory = overlay.joinpath(*parts[:depth])
        directory.mkdir(exist_ok=True, parents=True)
        if tree.joinpath(*parts[:depth]).is_dir():
            shutil.copymode(tree.joinpath(*parts[:depth]), directory)
    data = source.read_bytes() if source.is_file() else b""
    target.write_bytes(data + extra)
    if source.is_file():
        shutil.copymode(source, target)
    os.chmod(overlay, os.stat(tree).st_mode & 0o7777)


def time_library(repo_path: Path, path: str, runs: int) -> tuple[list[float], int]:
    """Seconds to list path_history to the end (``runs`` times) and how many commits."""
    times, count = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        with sw.Repository.open(repo_path) as repo:
            head = sw.rev_parse(repo, REF)
            count = sum(1 for _ in sw.path_history(repo, head, [path]))
        times.append(time.perf_counter() - start)
    return times, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=Path("/usr/share"))
    parser.add_argument("--work", type=Path, default=Path("/work/scale/A"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--results", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    repo_path = args.work / "history-repo"
    deep, directory = build(args.tree, repo_path)
    cases = [("deep file", deep), ("directory", directory), ("never existed", "/no/such/path")]
    rows = []
    print(f"log -- PATH on {COMMITS} commits of {args.tree} (median of {args.runs}):")
    print(f"{'':16}{'commits':>8}{'CLI':>9}{'library':>10}  path")
    for name, path in cases:
        cli = [timed(sapwood(repo_path, "log", REF, "--", path)) for _ in range(args.runs)]
        library, count = time_library(repo_path, path, args.runs)
        cli_s, lib_s = statistics.median(cli), statistics.median(library)
        print(f"{name:16}{count:>8}{cli_s:>8.3f}s{lib_s:>9.3f}s  {path}")
        rows.append(result_row("history", f"log -- {name}", "sapwood", cli, commits=count))
        rows.append(result_row("history", f"path_history {name}", "library", library))
    plain = [timed(sapwood(repo_path, "log", REF)) for _ in range(args.runs)]
    print(f"{'plain log':16}{COMMITS:>8}{statistics.median(plain):>8.3f}s")
    rows.append(result_row("history", "log (all commits)", "sapwood", plain))
    write_results(args.results, "history", rows, tree=str(args.tree), commits=COMMITS)
    slowest = max(
        float(str(row["median"])) for row in rows if str(row["operation"]).startswith("log --")
    )
    print(f"target: log -- PATH under 1 s: {'met' if slowest < 1 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
