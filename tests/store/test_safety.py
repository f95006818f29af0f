"""Data is never lost: concurrent processes, SIGKILL at random points, full disks.

The default run kills a handful of commits and prunes; SAPWOOD_LONG=1 (make
test-long) kills at least 50 of each. Every kill is followed by a clean fsck.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from store import RepoMode, Repository
from tests.helpers import IS_ROOT, run, sapwood_argv, small_tmpfs, spawn

LONG = bool(os.environ.get("SAPWOOD_LONG"))
KILLS = 50 if LONG else 4
SEED = int(os.environ.get("SAPWOOD_SEED", time.time_ns() % 10**6))


def make_tree(root: Path, files: int, seed: int) -> Path:
    rng = random.Random(seed)
    for n in range(files):
        sub = root / f"d{n % 17}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{n}").write_bytes(rng.randbytes(rng.choice([0, 10, 300, 5000, 70000])))
    return root


def assert_sound(repo: Path) -> None:
    """fsck is clean and every ref's commit is complete; no transaction left staged."""
    result = run("fsck", repo=repo, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_parallel_commits_and_prunes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    run("init", repo=repo, text=True, check=True)
    trees = [make_tree(tmp_path / f"src{i}", 300, seed=i) for i in range(3)]
    rounds = 12 if LONG else 4
    cli = shlex.join(sapwood_argv(repo=repo))

    def loop(step: str) -> subprocess.Popen[bytes]:
        """A shell running ``step`` ``rounds`` times, stopping at the first failure."""
        script = " && ".join(step.format(r=r) for r in range(rounds))
        return subprocess.Popen(["bash", "-c", script], stderr=subprocess.PIPE)

    committers = [
        loop(f"echo {{r}} > {tree}/round && {cli} commit -b branch{i} {tree} >/dev/null")
        for i, tree in enumerate(trees)
    ]
    pruners = [loop(f"{cli} prune --refs-only --depth 1 >/dev/null") for _ in range(2)]
    for proc in committers + pruners:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()
    assert_sound(repo)
    for i in range(3):
        round_file = run("cat", f"branch{i}", "/round", repo=repo, text=True, check=True).stdout
        assert round_file.strip() == str(rounds - 1)
        log = json.loads(
            run("log", "--json", f"branch{i}", repo=repo, text=True, check=True).stdout
        )
        head = run("rev-parse", f"branch{i}", repo=repo, text=True, check=True).stdout.strip()
        # every commit was made on top of the branch's last; prune --depth 1 keeps the
        # head and its parent, and a later round may have added more
        assert 2 <= len(log) <= rounds and log[0]["commit"] == head


def test_racing_commits_on_one_branch_never_lose_history(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    run("init", repo=repo, text=True, check=True)
    trees = [make_tree(tmp_path / f"src{i}", 200, seed=10 + i) for i in range(4)]
    procs = [
        spawn(
            "commit",
            "-b",
            "main",
            t,
            repo=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for t in trees
    ]
    results = [p.communicate(timeout=300) for p in procs]
    landed = {out.strip() for (out, _), p in zip(results, procs, strict=True) if p.returncode == 0}
    for (_, err), proc in zip(results, procs, strict=True):
        assert proc.returncode == 0 or "moved while this transaction ran" in err, err
    history = run("log", "main", repo=repo, text=True, check=True).stdout
    assert landed and all(commit_id in history for commit_id in landed)
    assert_sound(repo)


def _kill_at(argv: list[str], delay: float) -> int:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


def _duration(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def test_sigkill_during_commit_leaves_a_clean_repository(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    repo = tmp_path / "repo"
    run("init", repo=repo, text=True, check=True)
    source = make_tree(tmp_path / "src", 1500, seed=SEED)
    commit = sapwood_argv("commit", "-b", "main", source, repo=repo)
    span = _duration(commit)
    for n in range(KILLS):
        (source / "d0" / "f0").write_bytes(rng.randbytes(1000))  # a new tree every time
        for extra in range(20):
            (source / "d1" / f"new{n}-{extra}").write_bytes(rng.randbytes(4000))
        _kill_at(commit, rng.uniform(0, span * 1.2))
        assert_sound(repo)
    run("commit", "-b", "main", source, repo=repo, text=True, check=True)
    assert list((repo / "tmp").iterdir()) == []  # the next transaction cleaned up
    assert_sound(repo)


def test_sigkill_during_prune_leaves_a_clean_repository(tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    repo = tmp_path / "repo"
    run("init", repo=repo, text=True, check=True)
    source = make_tree(tmp_path / "src", 800, seed=SEED)
    prune = sapwood_argv("prune", "--refs-only", "--depth", "0", repo=repo)
    for n in range(KILLS):
        for version in range(2):  # garbage for the prune: a superseded tree
            for f in list((source / "d2").iterdir())[:50]:
                f.write_bytes(rng.randbytes(3000))
            run(
                "commit",
                "-b",
                "main",
                "-s",
                f"{n}.{version}",
                source,
                repo=repo,
                text=True,
                check=True,
            )
        span = _duration([*prune, "--dry-run"]) * 2
        _kill_at(prune, rng.uniform(0, span))
        assert_sound(repo)
    run("prune", "--refs-only", "--depth", "0", repo=repo, text=True, check=True)
    assert run("fsck", "--all", repo=repo, text=True, check=True).stdout.count("unlisted") == 0


needs_root = pytest.mark.skipif(not IS_ROOT, reason="mounting a small tmpfs needs root")


def _repo_with(repo: Path, key: str, value: str) -> Path:
    """A new bare-user repository with one config setting added."""
    Repository.init(repo, RepoMode.BARE_USER).close()
    config = (repo / "config").read_text()
    (repo / "config").write_text(config.rstrip() + f"\n{key} = {value}\n")
    return repo


def _random_blobs(source: Path, count: int) -> Path:
    """``count`` incompressible files of 2 MiB."""
    source.mkdir()
    for n in range(count):
        (source / f"blob{n}").write_bytes(os.urandom(2 << 20))
    return source


@needs_root
def test_full_disk_fails_cleanly(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "mnt", "16m") as mnt:
        repo = _repo_with(mnt / "repo", "min-free-space-percent", "0")
        source = _random_blobs(tmp_path / "big", 12)
        result = run("commit", "-b", "main", source, repo=repo, text=True)
        assert result.returncode != 0 and result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
        assert "no space left" in result.stderr or "index cannot grow" in result.stderr
        assert list((repo / "tmp").iterdir()) == []
        assert run("refs", repo=repo, text=True, check=True).stdout == ""
        small = tmp_path / "small"
        small.mkdir()
        (small / "f").write_text("fits")
        run("commit", "-b", "main", small, repo=repo, text=True, check=True)
        assert run("cat", "main", "/f", repo=repo, text=True, check=True).stdout == "fits"
        assert_sound(repo)


@needs_root
def test_free_space_floor_stops_a_commit_before_the_disk_fills(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "mnt", "32m") as mnt:
        repo = _repo_with(mnt / "repo", "min-free-space-size", "24MB")
        source = _random_blobs(tmp_path / "src", 5)
        result = run("commit", "-b", "main", source, repo=repo, text=True)
        assert result.returncode != 0
        assert "min-free-space-size" in result.stderr and "would be exceeded" in result.stderr
        free = os.statvfs(mnt)
        assert free.f_bavail * free.f_frsize > 24 * 10**6  # the floor held
        assert list((repo / "tmp").iterdir()) == []
        assert_sound(repo)
