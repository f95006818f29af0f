"""What a killed ``static-delta generate`` leaves is removed by the next generate or
prune; a live generate's is never touched (attack23's remark). Since session 16 a
generate locks its directories (``.tmp-NAME-LUNIQUE``, store/delta_work.py): a killed
one's go at once. An older sapwood's (``.tmp-NAME-PID``, no lock) go once their process
is gone and they have not changed for a minute."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from store import RepoMode, Repository
from store.deltas import generate_delta
from store.summary import list_deltas
from tests.helpers import commit_files

_PAUSED_GENERATE = """
import sys, time
import store.deltas as deltas
from store.ids import ObjectId
from store.repo import Repository
finish = deltas._finish_file
def pause(out, fsync):
    finish(out, fsync)
    print("paused", flush=True)
    time.sleep(600)
deltas._finish_file = pause
repo = Repository.open(sys.argv[1])
deltas.generate_delta(repo, None, ObjectId(bytes.fromhex(sys.argv[2])), part_size=4096)
"""


def _age(path: Path, seconds: float) -> None:
    """Make ``path`` and what it holds look untouched for ``seconds``."""
    then = time.time() - seconds
    for item in [path, *path.iterdir()]:
        os.utime(item, (then, then), follow_symlinks=False)


def _paused_generate(repo: Path, commit: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_GENERATE, str(repo), commit],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "paused"
    return child


def _work_dirs(deltas: Path) -> set[Path]:
    return {p for p in deltas.iterdir() if p.name.startswith(".tmp-")}


def test_a_killed_generates_parts_go_at_once_a_live_ones_stay(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    files = {f"f{n}": os.urandom(3000) for n in range(20)}
    v1 = commit_files(repo, tmp_path / "v1", files)
    files["f0"] = b"changed"
    v2 = commit_files(repo, tmp_path / "v2", files)
    deltas = repo.path / "deltas"

    killed = _paused_generate(repo.path, v2.hex())
    [killed_parts] = _work_dirs(deltas)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed_parts.is_dir() and any(killed_parts.iterdir())

    live = _paused_generate(repo.path, v2.hex())
    try:
        [live_parts] = _work_dirs(deltas) - {killed_parts}
        _age(live_parts, 3600)  # quiet for an hour: its lock, not its age, tells
        generate_delta(repo, v1, v2)  # the killed one's parts changed just now: gone
        assert not killed_parts.exists()
        assert live_parts.is_dir() and any(live_parts.iterdir())
        generate_delta(repo, None, v2)  # replaces the published one (.old-, then gone)
        assert live_parts.is_dir()
    finally:
        live.kill()
        live.wait()
    assert set(list_deltas(repo.path)) == {(v1, v2), (None, v2)}
    assert not [p for p in deltas.iterdir() if p.name.startswith(".old-")]
    generate_delta(repo, v1, v2)  # the live one, killed now: its parts go
    assert not _work_dirs(deltas)


def test_a_directory_being_made_is_left_its_grace(tmp_path: Path) -> None:
    """.new-NAME-LUNIQUE exists unlocked between a generate's mkdir and its lock: left
    alone until it is older than any such moment, then removed."""
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    v1 = commit_files(repo, tmp_path / "v1", {"a": b"1"})
    deltas = repo.path / "deltas"
    young, old = (deltas / f".new-{v1.hex()}-L{n * 12}" for n in "ab")
    for made in (young, old):
        made.mkdir(parents=True)
    _age(old, 3600)
    generate_delta(repo, None, v1)
    assert young.is_dir() and not old.exists()


def test_an_older_sapwoods_leftover_of_a_live_pid_stays(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    v1 = commit_files(repo, tmp_path / "v1", {"a": b"1"})
    v2 = commit_files(repo, tmp_path / "v2", {"a": b"2"})
    # a generate of pid 1 (alive, started long before), untouched for two minutes
    old_pid_1 = repo.path / "deltas" / f".old-{v2.hex()}-1"
    old_pid_1.mkdir(parents=True)
    (old_pid_1 / "0").write_bytes(b"x")
    _age(old_pid_1, 120)
    generate_delta(repo, v1, v2)
    assert old_pid_1.is_dir()


def test_a_leftover_whose_pid_was_reused_goes(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    v1 = commit_files(repo, tmp_path / "v1", {"a": b"1"})
    v2 = commit_files(repo, tmp_path / "v2", {"a": b"2"})
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        reused = repo.path / "deltas" / f".tmp-{v2.hex()}-{sleeper.pid}"
        reused.mkdir(parents=True)
        (reused / "0").write_bytes(b"x" * 100)
        _age(reused, 3600)  # written an hour before its PID's process started
        generate_delta(repo, v1, v2)
        assert not reused.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_prune_removes_a_dead_generates_leftover_only(tmp_path: Path) -> None:
    from store.prune import prune

    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    v1 = commit_files(repo, tmp_path / "v1", {"a": b"1"})
    dead = subprocess.Popen(["true"])
    dead.wait()
    deltas = repo.path / "deltas"
    gone = deltas / f".tmp-{v1.hex()}-{dead.pid}"
    kept = deltas / f".old-{v1.hex()}-1"
    for leftover in (gone, kept):
        leftover.mkdir(parents=True)
        (leftover / "0").write_bytes(b"x")
        _age(leftover, 120)
    prune(repo, dry_run=True)
    assert gone.is_dir()  # a dry run removes nothing
    prune(repo)
    assert not gone.exists() and kept.is_dir()
