"""Pull benchmark: `sapwood pull` against `ostree pull`, from the same nginx on 127.0.0.1.

    .venv/bin/python benchmarks/pull_bench.py [--tree PATH] [--runs 3] [--update-runs 11]

v1 is a real tree (the cached Debian tree of tests/debian.py, debootstrap minbase; needs
root to build it) and v2 is v1 with a few packages changed (deterministic: documentation
directories removed and added, some binaries rebuilt, /etc/motd edited). Each tool gets
two archive repositories of the same commits, one plain and one offering static deltas
(from nothing to v1, from v1 to v2), all four served by one nginx instance (Debian's,
started here with its own config, as the tests do). Timed into fresh bare-user
repositories: the first pull of v1 (median of ``--runs``), then the update pull v1 -> v2
into a copy of a repository that holds v1 (median of ``--update-runs``: an update pull
takes 0.1-0.3 s, and three runs of it varied by more than the two tools differ); the
two tools run in turns (sapwood's run n, then OSTree's), so that a load that changes
during the benchmark weighs on both alike. Caches stay warm (a web server's would be);
the requests each pull made are counted in nginx's access log and printed below the
table, with each figure's runs, quartiles and load. Ratios are sapwood/OSTree: target
of issue 13, <= 0.75 on both pulls. Everything is written to the benchmark's own
filesystem (benchmarks/workfs.py: a fresh journaled ext4, as root; ``--work-fs``).

sapwood runs from bytecode, as an installed package does: where PYTHONDONTWRITEBYTECODE
is set (these sessions set it, and the source tree holds no __pycache__), every command
compiled each of its ~60 modules from source first, about 0.1 s of an update pull that
has nothing to do with pulling. The bytecode goes to a directory of the benchmark's own
(PYTHONPYCACHEPREFIX), made by compileall and one untimed pull before timing.

sapwood runs from a venv of the benchmark's own (``--sapwood venv``, the default), where
the project is found by an ordinary sys.path entry, as a wheel installed into
site-packages is, and its dependencies by a second entry naming the running
interpreter's site-packages; not through .venv's editable install, whose finder (a meta
path hook set up by a .pth file, with its imports) costs every command ~10 ms of
``site`` (~5 ms net of imports a pull makes anyway) that an installed tool does not pay.
``--sapwood editable`` runs .venv/bin/sapwood as before.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import (
    ROOT,
    add_work_options,
    print_table,
    result_row,
    work_filesystem,
    write_results,
)
from common import (
    TOOLS as COMMON_TOOLS,
)
from workfs import footprint

from tests.debian import debian_tree
from tests.net.servers import Nginx

TIMEOUT = 1800  # seconds, for any one command
KINDS = ("plain", "delta")
SAMPLES: dict[str, list[float]] = {}  # every run's seconds, for --results
LOADS: dict[str, list[float]] = {}  # the 1-minute load average after each run: 2 shared
# cores make every figure depend on what else runs, so each is printed with its load


ENV = dict(os.environ)  # what every command runs with (see the docstring: bytecode)
TOOLS = dict(COMMON_TOOLS)  # sapwood's entry replaced by install_venv()
INSTALLS = ("venv", "editable")  # --sapwood: how the sapwood command is installed


def install_venv(where: Path) -> str:
    """A venv at ``where`` whose ``bin/sapwood`` runs this source tree found by a plain
    sys.path entry (see the docstring); TOOLS["sapwood"] runs it from now on. What it
    is, for the results."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the tree first (its packages, never a dependency's of the same name), then the
    # dependencies: a path a .pth file names is searched, its own .pth files are not
    Path(site, "sapwood.pth").write_text(f"{ROOT}\n{sysconfig.get_paths()['purelib']}\n")
    script = where / "bin" / "sapwood"  # as pip writes a console script, with its guard:
    # fsck's worker processes (spawned) import the script again as __mp_main__
    with (ROOT / "pyproject.toml").open("rb") as project:
        entry = tomllib.load(project)["project"]["scripts"]["sapwood"]
    module, function = entry.split(":")
    script.write_text(
        f"#!{python}\nimport sys\nfrom {module} import {function}\n\n"
        f"if __name__ == '__main__':\n    sys.exit({function}())\n"
    )
    script.chmod(0o755)

    def sapwood(repo: Path, *args: str) -> list[str]:
        return [str(script), "--repo", str(repo), *args]

    TOOLS["sapwood"] = sapwood
    return f"a venv of its own, the tree on sys.path ({where})"


def use_bytecode(cache: Path) -> None:
    """Let every command run from bytecode kept in ``cache`` (see the docstring)."""
    ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    ENV["PYTHONPYCACHEPREFIX"] = str(cache)
    packages = [str(ROOT / name) for name in ("sapwood", "store")]
    run([sys.executable, "-m", "compileall", "-q", *packages])


def warm_up(server: Nginx, work: Path) -> None:
    """One untimed pull (of the deltas: quick, and through every step): the modules a
    pull imports, compiled into the cache."""
    repo = client("sapwood", work / "warm-up", f"{server.url}sapwood-delta/")
    run(TOOLS["sapwood"](repo, "pull", "origin", "main"))
    shutil.rmtree(repo)


def run(argv: list[str]) -> str:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=TIMEOUT, check=False, env=ENV
    )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


# ----- the two versions ------------------------------------------------------------------------
def make_v2(v1: Path, v2: Path) -> None:
    """v1 with some packages changed, deterministically: a copy (of hardlinks, where v1
    is on the same filesystem: it costs little), in which every changed file is
    replaced, never written through."""
    same_fs = v1.stat().st_dev == v2.parent.stat().st_dev
    run(["cp", "-al" if same_fs else "-a", str(v1), str(v2)])
    docs = sorted(p for p in (v2 / "usr/share/doc").iterdir() if p.is_dir())
    for gone in docs[:8]:
        shutil.rmtree(gone)
    for n in range(8):
        package = v2 / "usr/share/doc" / f"bench-package-{n}"
        package.mkdir()
        for k in range(10):
            (package / f"file{k}").write_bytes(_bytes(f"{n}/{k}", 20_000 + 3_000 * k))
    binaries = sorted(p for p in (v2 / "usr/bin").iterdir() if p.is_file() and not p.is_symlink())
    for binary in binaries[:: max(1, len(binaries) // 12)]:
        data, st = binary.read_bytes(), binary.stat()
        binary.unlink()
        binary.write_bytes(data + b"\0rebuilt for v2\n")
        os.chmod(binary, st.st_mode & 0o7777)
        os.chown(binary, st.st_uid, st.st_gid)
    motd = v2 / "etc/motd"
    motd.unlink(missing_ok=True)
    motd.write_text("v2\n")


def _bytes(seed: str, size: int) -> bytes:
    """``size`` deterministic bytes that do not compress (as a package's binaries)."""
    out, counter = bytearray(), 0
    while len(out) < size:
        out += hashlib.blake2b(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


# ----- the served repositories ------------------------------------------------------------------
def publish_sapwood(repo: Path, version: Path, deltas: bool, previous: str | None) -> str:
    sw = TOOLS["sapwood"]
    if not repo.exists():
        run(sw(repo, "init", "--mode", "archive"))
    commit = run(sw(repo, "commit", "-b", "main", str(version))).strip()
    if deltas:
        start = ["--from", previous] if previous else []
        run(sw(repo, "static-delta", "generate", *start, "--to", commit))
    run(sw(repo, "summary", "-u"))
    return commit


def publish_ostree(repo: Path, version: Path, deltas: bool, previous: str | None) -> str:
    ot = TOOLS["ostree"]
    if not repo.exists():
        run(ot(repo, "init", "--mode=archive"))
    commit = run(ot(repo, "commit", "-b", "main", f"--tree=dir={version}")).strip()
    if deltas:
        start = [f"--from={previous}"] if previous else ["--empty"]
        run(ot(repo, "static-delta", "generate", *start, f"--to={commit}"))
    run(ot(repo, "summary", "-u"))
    return commit


PUBLISH = {"sapwood": publish_sapwood, "ostree": publish_ostree}


# ----- the clients -----------------------------------------------------------------------------
def client(tool: str, repo: Path, url: str) -> Path:
    """A new bare-user repository with remote ``origin`` at ``url``."""
    cmd = TOOLS[tool]
    if tool == "sapwood":
        run(cmd(repo, "init", "--mode", "bare-user"))
        run(cmd(repo, "remote", "add", "origin", url))
    else:
        run(cmd(repo, "init", "--mode=bare-user"))
        run(cmd(repo, "remote", "add", "--no-gpg-verify", "origin", url))
    return repo


def timed(argv: list[str]) -> float:
    """Seconds one command takes; it must succeed within TIMEOUT."""
    start = time.perf_counter()
    run(argv)
    return time.perf_counter() - start


def timed_pull(tool: str, repo: Path, server: Nginx, requests: Counter[str], key: str) -> float:
    server.clear_log()
    subprocess.run(["sync"], check=True)
    seconds = timed(TOOLS[tool](repo, "pull", "origin", "main"))
    logged = server.requests()
    requests[f"{key} requests"] = len(logged)
    requests[f"{key} delta requests"] = sum("/deltas/" in r.path for r in logged)
    requests[f"{key} MB"] = sum(r.size for r in logged) // 1_000_000
    return seconds


def measure(
    tool: str,
    kind: str,
    server: Nginx,
    work: Path,
    n: int,
    last: bool,
    phase: str,
    counts: Counter[str],
) -> None:
    """Run ``n`` of a pull of ``phase`` (first: into a new repository, kept as
    ``work/tool-kind-base`` after the ``last`` run; update: into a copy of that
    repository, which holds v1), its seconds added to SAMPLES."""
    url = f"{server.url}{tool}-{kind}/"
    base = work / f"{tool}-{kind}-base"
    repo = work / f"{tool}-{kind}-{phase}-{n}"
    if phase == "first":
        client(tool, repo, url)
    else:
        run(["cp", "-a", str(base), str(repo)])
    key = f"{tool} {kind} {phase}"
    SAMPLES.setdefault(key, []).append(timed_pull(tool, repo, server, counts, key))
    LOADS.setdefault(key, []).append(os.getloadavg()[0])
    if phase == "first" and last:
        repo.rename(base)
    else:
        shutil.rmtree(repo)


def quartiles(values: list[float]) -> tuple[float, float]:
    """The first and third quartiles of ``values`` (both the value itself for one run)."""
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def write_pull_results(
    path: Path | None, v1: Path, counts: Counter[str], work_fs: str, install: str
) -> None:
    names = {"first": "first pull", "update": "update pull"}
    rows = []
    for key, values in SAMPLES.items():
        tool, kind, phase = key.split()
        operation = f"{names[phase]}, {'deltas' if kind == 'delta' else 'objects'}"
        requests = counts[f"{key} requests"]
        q1, q3 = quartiles(values)
        rows.append(result_row("pull", operation, tool, values, requests=requests, q1=q1, q3=q3))
    write_results(path, "pull", rows, tree=str(v1), work_fs=work_fs, sapwood=install)


def spread(key: str) -> str:
    """One figure's runs, in the order taken, their median, quartiles and the load."""
    values, loads = SAMPLES[key], LOADS[key]
    q1, q3 = quartiles(values)
    return (
        f"  {key}: median {statistics.median(values):.3f} s of {len(values)}, quartiles "
        f"{q1:.3f}-{q3:.3f}, min-max {min(values):.3f}-{max(values):.3f}; runs "
        + " ".join(f"{value:.2f}" for value in values)
        + f"; load {min(loads):.1f}-{max(loads):.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help="v1 (default: the cached Debian tree)")
    add_work_options(parser)
    parser.add_argument("--runs", type=int, default=3, help="first pulls of each tool and kind")
    parser.add_argument(
        "--update-runs", type=int, default=11, help="update pulls of each tool and kind"
    )
    parser.add_argument(
        "--sapwood",
        choices=INSTALLS,
        default="venv",
        help="run sapwood from a venv of the benchmark's own (default) or .venv's editable install",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--results", type=Path, help="write the figures as JSON (report.py)")
    args = parser.parse_args()
    v1 = args.tree or debian_tree()
    figures: dict[str, float] = {}
    counts: Counter[str] = Counter()
    need = footprint(v1) * 12  # the served repositories (4), v2, clients, their copies
    with (
        work_filesystem(args, need) as fs,
        tempfile.TemporaryDirectory(dir=fs.path, prefix="sapwood-pull-bench-") as tmp,
    ):
        work = Path(tmp)
        served, clients = work / "served", work / "clients"
        served.mkdir()
        clients.mkdir()
        use_bytecode(work / "pycache")
        install = ".venv's editable install"
        if args.sapwood == "venv":
            install = install_venv(work / "sapwood-venv")
        make_v2(v1, work / "v2")
        server = Nginx(served, work / "nginx").start()
        try:
            commits = {}
            for tool in TOOLS:
                for kind in KINDS:
                    repo = served / f"{tool}-{kind}"
                    commits[tool, kind] = PUBLISH[tool](repo, v1, kind == "delta", None)
            warm_up(server, work)
            for phase in ("first", "update"):
                if phase == "update":
                    for tool in TOOLS:
                        for kind in KINDS:
                            repo = served / f"{tool}-{kind}"
                            PUBLISH[tool](repo, work / "v2", kind == "delta", commits[tool, kind])
                runs = args.runs if phase == "first" else args.update_runs
                for n in range(runs):  # the tools in turns: the same load for both
                    for kind in KINDS:
                        for tool in TOOLS:
                            last = n == runs - 1
                            measure(tool, kind, server, clients, n, last, phase, counts)
                for key in [key for key in SAMPLES if key.endswith(phase)]:
                    figures[key] = statistics.median(SAMPLES[key])
        finally:
            server.stop()
    write_pull_results(args.results, v1, counts, fs.kind, install)
    if args.json:
        doc = {
            "tree": str(v1),
            "figures": figures,
            "requests": counts,
            "work_fs": fs.kind,
            "sapwood": install,
        }
        print(json.dumps(doc))
        return 0
    rows = []
    for phase, title in (("first", "first pull"), ("update", "update pull")):
        for kind in KINDS:
            name = f"{title}, {'deltas' if kind == 'delta' else 'objects'}"
            ours, theirs = figures[f"sapwood {kind} {phase}"], figures[f"ostree {kind} {phase}"]
            rows.append((name, ours, theirs, "<= 0.75"))
    print_table(
        f"pull of {v1} (v1, then v2) from nginx on 127.0.0.1 into bare-user; median of "
        f"{args.runs} first pulls, {args.update_runs} update pulls; caches warm; "
        f"written to {fs.kind}; sapwood run from {install}",
        rows,
    )
    for key in sorted(counts):
        print(f"  {key}: {counts[key]}")
    for key in SAMPLES:
        print(spread(key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
