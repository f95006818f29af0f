"""Commit, fsck and prune hold memory that does not grow with the tree (issue 15).

The default run commits 20,000 small files in a child process and measures how far
its peak resident set grows past the point where the repository was opened. Before
the transaction published its file objects in batches (store/transaction.py) and the
scan wrote each directory as it left it (fs/scan.py), every pending object, staged
path, stat-cache row and tree entry was held to the commit point: about 1.2 KiB a
file, 171 MiB at 100,000 files and 1,472 MiB at a million. For 40,000 files the old
code grew 58 MiB (measured); now the growth is the batch (2,048 files here, with
SAPWOOD_FLUSH_AT), the trees held to the commit point and what LMDB keeps of the
index: 19-22 MiB. The bound was 35 MiB. Session 11 halved the tree (40,000 files took
18-23 s of the default run): both figures scale with the files (11.6 MiB measured at
20,000 against 22.5 at 40,000; the old code held ~1.45 KiB a file, ~29 MiB), so the
bound is halved too, 18 MiB, and sits between in the same proportions.

SAPWOOD_LONG=1 (make test-long) runs the issue's case: a million files in 5,000
directories; commit, an unchanged re-commit, fsck and a prune with work to do must
each peak under 400 MiB resident.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run, sapwood_argv

LONG = bool(os.environ.get("SAPWOOD_LONG"))
_GROWTH_BOUND_KIB = 18 * 1024
_MILLION_BOUND_KIB = 400 * 1024

_COMMIT_GROWTH = """
import sys
from pathlib import Path
from fs.commit import CommitRequest, Layer, make_commit
from store import RepoMode, Repository

def peak_kib():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM"))

repo = Repository.init(Path(sys.argv[1]), RepoMode.BARE_USER)
with open("/proc/self/clear_refs", "w") as clear:  # starts the peak afresh
    clear.write("5")
before = peak_kib()
result = make_commit(repo, CommitRequest("main", [Layer.directory(sys.argv[2])]))
print(peak_kib() - before, result.stats.files_read)
"""


def _tree(root: Path, dirs: int, files: int) -> Path:
    """``dirs`` directories of ``files`` small files, each of its own content."""
    for d in range(dirs):
        directory = root / f"d{d // 100:03d}" / f"e{d % 100:02d}"
        directory.mkdir(parents=True)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for f in range(files):
                out = os.open(f"f{f:03d}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(out, b"file %d %d\n" % (d, f) * (1 + f % 7))
                os.close(out)
        finally:
            os.close(fd)
    return root


def test_commit_memory_does_not_grow_with_the_tree(tmp_path: Path) -> None:
    source = _tree(tmp_path / "src", dirs=100, files=200)
    env = {**os.environ, "SAPWOOD_FLUSH_AT": "2048"}
    done = subprocess.run(
        [sys.executable, "-c", _COMMIT_GROWTH, str(tmp_path / "repo"), str(source)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    growth_kib, files_read = map(int, done.stdout.split())
    assert files_read == 20_000
    assert growth_kib < _GROWTH_BOUND_KIB, f"commit grew {growth_kib} KiB for 20,000 files"


def _peak_kib(argv: list[str]) -> int:
    """Run a command; its peak resident set (of it or any child it waited for)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, proc.stderr.read().decode()
    proc.stderr.close()
    return int(usage.ru_maxrss)


@pytest.mark.skipif(not LONG, reason="a million files: SAPWOOD_LONG=1 (make test-long)")
def test_a_million_files_commit_fsck_and_prune_under_400_mib(tmp_path: Path) -> None:
    source = _tree(tmp_path / "src", dirs=5000, files=200)
    repo = tmp_path / "repo"
    run("init", repo=repo, text=True, check=True)
    commit = sapwood_argv("commit", "-b", "main", source, repo=repo)
    peaks = {"commit": _peak_kib(commit), "re-commit": _peak_kib(commit)}
    peaks["fsck"] = _peak_kib(sapwood_argv("fsck", repo=repo))
    run("refs", "--delete", "main", repo=repo, text=True, check=True)
    peaks["prune"] = _peak_kib(sapwood_argv("prune", "--refs-only", repo=repo))
    assert not any((repo / "objects").glob("*/*")), "prune left objects behind"
    over = {step: kib // 1024 for step, kib in peaks.items() if kib >= _MILLION_BOUND_KIB}
    assert not over, f"peak resident MiB over 400: {over} (all: {peaks})"
