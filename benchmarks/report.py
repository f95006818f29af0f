"""Gather the benchmarks' JSON results into one page and its plots.

    .venv/bin/python benchmarks/report.py [--results benchmarks/results]

reads RESULTS/json/*.json (each written by a benchmark's --results FILE: rows of
operation, tool, unit, median, min, max, runs) and writes RESULTS/LATEST.md (the
machine, the peers' versions, one table per benchmark, the scale table with time per
file and its growth, issue 15's targets) and the PNG plots beside it: scale-time.png
and scale-memory.png (log-log against file count, sapwood and OSTree) and peers.png
(each benchmark's figures side by side for sapwood and its peers). Needs matplotlib
(the ``bench`` extra of pyproject.toml).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "benchmarks" / "results"
Row = dict[str, Any]
ORDER = ("commit", "maintenance", "roundtrip", "mount", "pull", "history", "scale")
SCALE_OPERATIONS = ("commit", "re-commit", "checkout -H", "mount", "walk", "fsck", "prune")
GROWTH_LIMIT = 1.5
# issue 15 at a million files: peak MiB of these, the daemon after the walk, the mount's seconds
MEMORY_LIMITS = {"commit": 400, "fsck": 400, "prune": 400, "walk": 100}
MOUNT_LIMIT_SECONDS = 1.0


# ----- what ran where --------------------------------------------------------------------------
def _out(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not installed"
    return (done.stdout or done.stderr).strip()


def machine(results: Path) -> list[tuple[str, str]]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or "unknown",
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    fs = _out(["findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", "--target", "/var/tmp"])
    return [
        ("CPU", f"{model}, {os.cpu_count()} cores"),
        ("memory", f"{mem_kib / 1024 / 1024:.1f} GiB"),
        ("kernel", platform.release()),
        ("filesystem of /var/tmp", fs),
        *starts(results),
        ("load at the end (uptime)", _out(["uptime"])),
    ]


def starts(results: Path) -> list[tuple[str, str]]:
    """`uptime` at the start of each part of the run (make bench writes uptime-start.txt;
    a part run on its own may leave uptime-NAME-start.txt)."""
    found = []
    for path in sorted((results / "json").glob("uptime*start.txt")):
        part = path.name.removeprefix("uptime").removesuffix("start.txt").strip("-")
        found.append(
            (f"load at the start{f' of {part}' if part else ''}", path.read_text().strip())
        )
    return found


def versions() -> list[tuple[str, str]]:
    ostree = _out(["ostree", "--version"])
    ostree_version = next(
        (line.split(":", 1)[1].strip(" '") for line in ostree.splitlines() if "Version" in line),
        ostree,
    )
    rev_file = ROOT / "REV"  # a snapshot of a commit carries its id here (no .git)
    rev = (
        rev_file.read_text().strip()
        if rev_file.exists()
        else _out(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
    )
    return [
        ("sapwood (git)", rev),
        ("ostree", ostree_version),
        ("borg", _out(["borg", "--version"])),
        ("restic", _out(["restic", "version"]).split(" compiled")[0]),
        ("python", platform.python_version()),
    ]


# ----- tables ----------------------------------------------------------------------------------
def load(results: Path) -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    paths = (results / "json").glob("*.json")
    for path in sorted(paths, key=lambda p: (p.stat().st_mtime_ns, p.name)):  # oldest first
        doc = json.loads(path.read_text())
        earlier = docs.get(doc["benchmark"])
        docs[doc["benchmark"]] = merged(earlier, doc) if earlier else doc
    return dict(sorted(docs.items(), key=lambda kv: _rank(kv[0])))


def merged(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """One benchmark's results written by two runs (scale.json, then scale-1m.json of
    ``make bench-million``): the later run's rows replace the earlier's for the same
    figure and add the rest; its trees join the earlier's; both loads are kept."""

    def key(row: Row) -> tuple[object, ...]:
        return (row["operation"], row["tool"], row["unit"], row.get("files"))

    rows = {key(row): row for row in earlier["rows"]}
    rows.update((key(row), row) for row in later["rows"])
    meta = {**earlier["meta"], **later["meta"]}
    if "trees" in earlier["meta"] or "trees" in later["meta"]:
        meta["trees"] = {**earlier["meta"].get("trees", {}), **later["meta"].get("trees", {})}
    meta["load"] = f"{earlier['meta'].get('load', '?')}; then {later['meta'].get('load', '?')}"
    for what in ("reclaim", "work_fs"):
        said = [doc["meta"][what] for doc in (earlier, later) if what in doc["meta"]]
        if len(set(said)) > 1:
            meta[what] = "; then ".join(said)
    notes = [doc["meta"]["note"] for doc in (earlier, later) if doc["meta"].get("note")]
    if notes:
        meta["note"] = " ".join(notes)
    return {**earlier, **later, "meta": meta, "rows": list(rows.values())}


def _rank(name: str) -> int:
    return ORDER.index(name) if name in ORDER else len(ORDER)


def written_to(doc: dict[str, Any]) -> str:
    """What the benchmark wrote its repositories to (benchmarks/workfs.py), if it said:
    results of the host filesystem right after a deletion are not comparable."""
    work_fs = doc["meta"].get("work_fs")
    return f"Repositories written to: {work_fs}." if work_fs else ""


def figure(row: Row | None) -> str:
    if row is None:
        return "-"
    unit = " s" if row["unit"] == "s" else f" {row['unit']}"
    digits = 0 if row["unit"] == "MiB" else 2
    if row["runs"] == 1:
        return f"{row['median']:.{digits}f}{unit} (1 run)"
    return f"{row['median']:.{digits}f}{unit} ({row['min']:.{digits}f}-{row['max']:.{digits}f})"


def ratio(ours: Row | None, theirs: Row | None) -> str:
    if not ours or not theirs or not theirs["median"]:
        return "-"
    return f"{ours['median'] / theirs['median']:.2f}"


def peer_table(doc: dict[str, Any]) -> list[str]:
    """Operations down, tools across (sapwood first), then sapwood's ratio to each peer."""
    rows: list[Row] = doc["rows"]
    tools = sorted({r["tool"] for r in rows}, key=lambda t: (t != "sapwood", t))
    peers = [t for t in tools if t != "sapwood"]
    by = {(r["operation"], r["tool"]): r for r in rows}
    operations = list(dict.fromkeys(r["operation"] for r in rows))
    head = ["", *tools, *(f"sapwood / {p}" for p in peers)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for op in operations:
        cells = [figure(by.get((op, t))) for t in tools]
        cells += [ratio(by.get((op, "sapwood")), by.get((op, p))) for p in peers]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    return lines


def per_file_growth(
    rows: list[Row], tool: str, operation: str, figure: str = "median"
) -> dict[int, tuple[float, float | None]]:
    """files -> (microseconds per file of the median run, or of ``figure``: "min", the
    fastest; growth over the previous size's or None)."""
    times = sorted(
        (r["files"], r[figure])
        for r in rows
        if r["tool"] == tool and r["operation"] == operation and r["unit"] == "s"
    )
    out: dict[int, tuple[float, float | None]] = {}
    previous = None
    for files, seconds in times:
        per_file = seconds / files * 1e6
        out[files] = (per_file, per_file / previous if previous else None)
        previous = per_file
    return out


def scale_table(doc: dict[str, Any]) -> list[str]:
    rows: list[Row] = doc["rows"]
    by = {(r["files"], r["operation"], r["tool"], r["unit"]): r for r in rows}
    sizes = sorted({r["files"] for r in rows})
    lines = [
        "| operation | files | sapwood | OSTree | ratio | sapwood peak | OSTree peak "
        "| sapwood µs/file | growth | growth of fastest | OSTree growth |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for op in SCALE_OPERATIONS:
        ours_growth = per_file_growth(rows, "sapwood", op)
        theirs_growth = per_file_growth(rows, "ostree", op)
        fastest_growth = per_file_growth(rows, "sapwood", op, "min")
        for files in sizes:
            ours = by.get((files, op, "sapwood", "s"))
            if ours is None:
                continue
            theirs = by.get((files, op, "ostree", "s"))
            per_file, growth = ours_growth[files]
            their_growth = theirs_growth.get(files, (0.0, None))[1]
            lines.append(
                f"| {op} | {files:,} | {figure(ours)} | {figure(theirs)} | {ratio(ours, theirs)} "
                f"| {figure(by.get((files, op, 'sapwood', 'MiB')))} "
                f"| {figure(by.get((files, op, 'ostree', 'MiB')))} | {per_file:.1f} "
                f"| {_growth(growth)} | {_growth(fastest_growth[files][1])} "
                f"| {_growth(their_growth)} |"
            )
    return lines


def _growth(value: float | None) -> str:
    if value is None:
        return "-"
    return f"**{value:.2f}**" if value > GROWTH_LIMIT else f"{value:.2f}"


def targets(doc: dict[str, Any]) -> list[str]:
    """Issue 15's targets, checked at the largest size measured."""
    rows: list[Row] = doc["rows"]
    largest = max(r["files"] for r in rows)
    by = {(r["operation"], r["tool"], r["unit"]): r for r in rows if r["files"] == largest}
    lines = [
        f"Issue 15's targets (set for a million files) at the largest size measured here "
        f"({largest:,} files); a limit is met when every run is under it:",
        "",
    ]
    lines += ["| target | measured | met |", "|---|---|---|"]
    for op, limit in MEMORY_LIMITS.items():
        row = by.get((op, "sapwood", "MiB"))
        if row:
            what = "mount daemon after the walk" if op == "walk" else f"{op} peak"
            lines.append(f"| {what} < {limit} MiB | {figure(row)} | {_yes(row['max'] < limit)} |")
    mount = by.get(("mount", "sapwood", "s"))
    if mount:
        met = _yes(mount["max"] < MOUNT_LIMIT_SECONDS)
        lines.append(f"| mount < {MOUNT_LIMIT_SECONDS:.0f} s | {figure(mount)} | {met} |")
    for op in SCALE_OPERATIONS:
        if op == "mount":
            continue  # a constant, not a cost per file
        growth = per_file_growth(rows, "sapwood", op).get(largest, (0.0, None))[1]
        if growth is not None:
            met = _yes(growth <= GROWTH_LIMIT)
            lines.append(f"| {op}: time per file within {GROWTH_LIMIT}x | {growth:.2f}x | {met} |")
    return lines


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


# ----- plots ----------------------------------------------------------------------------------
def plot_scale(doc: dict[str, Any], unit: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[Row] = [r for r in doc["rows"] if r["unit"] == unit]
    operations = [op for op in SCALE_OPERATIONS if any(r["operation"] == op for r in rows)]
    columns = 4
    fig, axes = plt.subplots(
        (len(operations) + columns - 1) // columns, columns, figsize=(14, 7), squeeze=False
    )
    for ax, op in zip(axes.flat, operations, strict=False):
        values = [r[k] for r in rows if r["operation"] == op for k in ("min", "max")]
        ax.set_ylim(min(values) / 2, max(values) * 2)  # a flat line looks flat, not zoomed in
        for tool, style in (("sapwood", "o-"), ("ostree", "s--")):
            points = sorted(
                (r["files"], r["median"], r["min"], r["max"])
                for r in rows
                if r["operation"] == op and r["tool"] == tool
            )
            if not points:
                continue
            x = [p[0] for p in points]
            y = [p[1] for p in points]
            err = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
            ax.errorbar(x, y, yerr=err, fmt=style, capsize=3, label=tool)
        ax.set_xscale("log")
        ax.set_yscale("log")
        daemon = {"mount": "daemon after mount", "walk": "daemon after walk"}
        ax.set_title(op if unit == "s" else daemon.get(op, op))
        ax.set_xlabel("files")
        ax.set_ylabel("seconds" if unit == "s" else "peak MiB")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(operations) :]:
        ax.set_visible(False)
    what = "wall time" if unit == "s" else "peak resident memory (process tree)"
    fig.suptitle(f"{what} against file count, median of runs (bars: min-max)")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def plot_peers(docs: dict[str, dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {k: v for k, v in docs.items() if k != "scale" and v["rows"]}
    if not shown:
        return
    fig, axes = plt.subplots(len(shown), 1, figsize=(11, 3.2 * len(shown)), squeeze=False)
    for ax, (name, doc) in zip(axes.flat, shown.items(), strict=True):
        rows: list[Row] = [r for r in doc["rows"] if r["unit"] == "s"]
        tools = sorted({r["tool"] for r in rows}, key=lambda t: (t != "sapwood", t))
        operations = list(dict.fromkeys(r["operation"] for r in rows))
        by = {(r["operation"], r["tool"]): r for r in rows}
        width = 0.8 / len(tools)
        for i, tool in enumerate(tools):
            xs, ys, lo, hi = [], [], [], []
            for j, op in enumerate(operations):
                row = by.get((op, tool))
                if row:
                    xs.append(j + i * width)
                    ys.append(row["median"])
                    lo.append(row["median"] - row["min"])
                    hi.append(row["max"] - row["median"])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=tool)
        ax.set_xticks([j + width * (len(tools) - 1) / 2 for j in range(len(operations))])
        ax.set_xticklabels(operations, fontsize=8)
        ax.set_ylabel("seconds")
        ax.set_title(f"{name} ({doc['meta'].get('tree', '')})", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


# ----- the page --------------------------------------------------------------------------------
def page(results: Path, docs: dict[str, dict[str, Any]]) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks: the latest run",
        "",
        f"Written by `make bench` (benchmarks/report.py) on {now}. Each figure is the median "
        "of its runs with (min-max); ratios are sapwood's median over the peer's (below 1: "
        "sapwood is faster). Both tools use bare-user repositories.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine(results)),
        "",
        "| version | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in versions()),
        "",
    ]
    if "scale" in docs:
        scale = docs["scale"]
        trees = scale["meta"].get("trees", {})
        lines += [
            "## Scale: time and memory against file count",
            "",
            "Synthetic trees of benchmarks/treegen.py (seed "
            f"{scale['meta'].get('seed')}; "
            + ", ".join(f"{int(n):,} files: {t['entries']:,} entries" for n, t in trees.items())
            + "), caches warm. Peak = the largest resident set of the command's whole process "
            "tree (sampled every 20 ms); for mount and walk, the daemon's resident set after "
            "the mount and after the walk. µs/file is sapwood's median over the tree's files; "
            f"growth is that over the previous size's (issue 15: within {GROWTH_LIMIT}, "
            "bold when not), of the median runs and of the fastest (less swayed by the "
            "load of a shared machine).",
            "",
            *([scale["meta"]["note"], ""] if scale["meta"].get("note") else []),
            *(
                [f"Proactive reclaim during the run: {scale['meta']['reclaim']}.", ""]
                if "reclaim" in scale["meta"]
                else []
            ),
            *([written_to(scale), ""] if written_to(scale) else []),
            *scale_table(scale),
            "",
            *targets(scale),
            "",
            "![time against file count](scale-time.png)",
            "",
            "![memory against file count](scale-memory.png)",
            "",
        ]
    for name, doc in docs.items():
        if name == "scale":
            continue
        cold = any(r.get("cold") for r in doc["rows"])
        tree = doc["meta"].get("tree", "")
        caches = ", caches dropped before each cold figure" if cold else ""
        load = f"; load average at the end {doc['meta']['load']}" if "load" in doc["meta"] else ""
        written = [written_to(doc), ""] if written_to(doc) else []
        lines += [f"## {name} ({tree}{caches}{load})", "", *written, *peer_table(doc), ""]
    if any(name != "scale" for name in docs):
        lines += ["![sapwood beside its peers](peers.png)", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args()
    docs = load(args.results)
    if not docs:
        raise SystemExit(f"no results in {args.results / 'json'}")
    if "scale" in docs:
        plot_scale(docs["scale"], "s", args.results / "scale-time.png")
        plot_scale(docs["scale"], "MiB", args.results / "scale-memory.png")
    plot_peers(docs, args.results / "peers.png")
    (args.results / "LATEST.md").write_text(page(args.results, docs))
    print(f"wrote {args.results / 'LATEST.md'} and its plots", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
