"""Hostile input for issue 14's history commands (attack session, /work/plan/attack-history.md):
log -p on contents that made difflib quadratic or split lines where git does not."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from sapwood import DirEntry, Node, Repository
from sapwood.cli.patch_view import patch_chunks
from tests.helpers import cli, commit_files, delete_record, many_directories_commit


def _two_commits(repo: Repository, tmp_path: Path, old: bytes, new: bytes) -> None:
    commit_files(repo, tmp_path / "one", {"f": old}, timestamp=1_700_000_000)
    commit_files(repo, tmp_path / "two", {"f": new}, timestamp=1_700_086_400)


def test_patch_of_a_costly_diff_ends_quickly(user_repo: Repository, tmp_path: Path) -> None:
    """Every other line changed in a 20,000-line file took difflib 23 s (quadratic:
    30,000 take 90); past a work bound the changed middle is one replacement hunk,
    still a valid patch."""
    count = 30_000
    old = b"".join(b"x\n" if i % 2 else b"%d\n" % i for i in range(count))
    new = b"".join(b"y\n" if i % 2 else b"%d\n" % i for i in range(count))
    _two_commits(user_repo, tmp_path, b"head\n" + old + b"tail\n", b"head\n" + new + b"tail\n")
    started = time.monotonic()
    result = cli("--repo", user_repo.path, "log", "-p", "main~0", "--", "/f")
    elapsed = time.monotonic() - started
    assert result.code == 0, result.err
    assert elapsed < 30, f"log -p took {elapsed:.1f} s"  # 90 s before, 2 s unloaded after
    hunks = result.raw.split(b"\n@@ ")[1:]
    first = hunks[0]
    assert first.startswith(b"-1,%d +1,%d @@\n" % (count + 2, count + 2))
    removed = [line for line in result.raw.split(b"\n") if line.startswith(b"-x")]
    added = [line for line in result.raw.split(b"\n") if line.startswith(b"+y")]
    assert len(removed) == len(added) == count // 2


def test_patch_of_a_file_of_many_lines_is_not_split_into_them(
    user_repo: Repository, tmp_path: Path
) -> None:
    """4 Mi empty lines are 4 MiB of text but four million list items a side (hundreds
    of MiB, and a 64 MiB file of them gigabytes): such a file is not diffed."""
    _two_commits(user_repo, tmp_path, b"\n" * (4 << 20), b"x" + b"\n" * (4 << 20))
    result = cli("--repo", user_repo.path, "log", "-p", "main~0", "--", "/f")
    assert result.code == 0, result.err
    assert b"Binary files a/f and b/f differ\n" in result.raw


def test_patch_of_a_file_of_a_few_hundred_thousand_lines_is_not_diffed(
    user_repo: Repository, tmp_path: Path
) -> None:
    """300,000 short lines (3 MB) cost difflib ~50 MB a side: over 2**18 lines, a file is
    shown as binary (attack-history.md 23: a million lines peaked at 521 MB)."""
    text = b"".join(b"%d\n" % n for n in range(300_000))
    _two_commits(user_repo, tmp_path, text, b"first\n" + text)
    result = cli("--repo", user_repo.path, "log", "-p", "main~0", "--", "/f")
    assert result.code == 0, result.err
    assert b"Binary files a/f and b/f differ\n" in result.raw
    assert b"+first" not in result.raw


def test_rev_past_a_truncated_history_is_an_error(user_repo: Repository, tmp_path: Path) -> None:
    """main~1 whose commit was not pulled (a depth) or was pruned: log printed nothing and
    exited 0, rev-parse printed the missing id; as git at a shallow boundary, it is an
    unknown revision."""
    _two_commits(user_repo, tmp_path, b"a\n", b"b\n")
    head = user_repo.ref("main")
    assert head is not None
    parent = user_repo.read_commit(head).parent
    assert parent is not None
    user_repo.close()
    delete_record(Path(user_repo.path), parent)
    for command in ("log", "rev-parse", "show"):
        result = cli("--repo", user_repo.path, command, "main~1")
        assert (result.code, result.out) == (1, ""), command
        assert result.err.count("\n") == 1 and "not in this repository" in result.err
    assert cli("--repo", user_repo.path, "log", "main").code == 0


_PEAK_RSS = """
import re, sys
from sapwood.cli.main import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:  # ru_maxrss would count the forking pytest's
    sys.stderr.write(re.search(r"VmHWM:\\s*(\\d+)", status.read())[1] + "\\n")
sys.exit(code)
"""


def _peak_kib(*args: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
        timeout=120,
    )
    return int(done.stderr.split()[-1])


def test_patch_of_a_commit_is_written_a_file_at_a_time(
    user_repo: Repository, tmp_path: Path
) -> None:
    """log -p built each commit's whole diff before writing it: the first commit of a
    tree diffs every file, so its content (here 48 MiB, /usr/share's is gigabytes) was
    held twice over (the parts, then their join)."""
    line = b"%0127d\n"
    files = {f"f{n}": b"".join(line % (n * 20_000 + i) for i in range(16_384)) for n in range(24)}
    commit_files(user_repo, tmp_path / "tree", files, timestamp=1_700_000_000)
    path = str(user_repo.path)
    baseline = _peak_kib("--repo", path, "log", "main")
    patched = _peak_kib("--repo", path, "log", "-p", "main")
    assert patched - baseline < 40 << 10, (baseline, patched)  # KiB: the diff is 48 MiB


def test_diff_of_one_commit_and_a_path_after_the_separator_is_a_usage_error(
    user_repo: Repository, tmp_path: Path
) -> None:
    """`diff main -- /usr` (git: the working tree against main, in /usr) took /usr as
    diff's second argument and compared main with the host's /usr directory: `-- /`
    walked the whole host filesystem."""
    _two_commits(user_repo, tmp_path, b"a\n", b"b\n")
    result = cli("--repo", user_repo.path, "diff", "main", "--", str(tmp_path / "one"))
    assert (result.code, result.out) == (2, "")
    assert "after -- is a PATH" in result.err and result.err.count("\n") == 1
    assert cli("--repo", user_repo.path, "diff", "--", "main~1", "main").out == "M    /f\n"
    assert cli("--repo", user_repo.path, "log", "--", "main").code == 0


def test_patch_remembers_no_file_it_has_shown(user_repo: Repository) -> None:
    """patch_chunks kept every (path, old, new) it wrote, to show overlapping paths'
    files once: 16 MB for /usr/share's 51,000 files, 320 MB at a million.

    10,000 files (30,000 took 20-35 s of the default run under tracemalloc): with the
    set back, the peak was 4.7 MiB (over the bound) and the peak after the first 1,000
    files 2.4 MiB above theirs; now 2.0 MiB and no growth."""
    commit_id = many_directories_commit(user_repo, 100, 100)  # no one big dirtree
    root = Node(
        b"/",
        dir=DirEntry(user_repo.read_commit(commit_id).tree, user_repo.read_commit(commit_id).meta),
    )
    chunks = patch_chunks(user_repo, [(None, root)])
    next(chunks)
    tracemalloc.start()
    try:
        for _ in itertools.islice(chunks, 1_000):
            pass
        _, early_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in chunks:
            pass
        _, late_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    peak = max(early_peak, late_peak)
    assert peak < 4 << 20, f"{peak} bytes traced while writing 10,000 files' diffs"
    assert late_peak - early_peak < 1 << 20, (early_peak, late_peak)  # flat, not per file


def test_overlapping_paths_show_each_file_once(user_repo: Repository, tmp_path: Path) -> None:
    _two_commits(user_repo, tmp_path, b"a\n", b"b\n")
    paths = ("/f", "/", "/f", "//f/")
    result = cli("--repo", user_repo.path, "log", "-p", "main~0", "--", *paths)
    assert result.out.count("diff --git a/f b/f") == 2  # once in each of the two commits


def test_a_commit_remakes_a_removed_tmp(user_repo: Repository, tmp_path: Path) -> None:
    """tmp/ removed by hand (attack-history.md 6): commit said "No such file or
    directory" and exited 1; as OSTree, it is made again, private, and the commit lands."""
    (user_repo.path / "tmp").rmdir()
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(b"content\n")
    result = cli("--repo", user_repo.path, "commit", "-b", "m", tree)
    assert result.code == 0, result.err
    assert (user_repo.path / "tmp").stat().st_mode & 0o777 == 0o700
    assert cli("--repo", user_repo.path, "cat", "m", "/f").raw == b"content\n"
    assert cli("--repo", user_repo.path, "fsck").code == 0
