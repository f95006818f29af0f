"""attack24 (/work/plan/attack24.md): races between processes on one repository, and
SIGKILL at random points of a pull with deltas and of pull-local (then fsck and a
resumed pull)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import spawn, write_tree
from tests.net.repos import (
    add_remote,
    archive_of,
    fsck_clean,
    local_repo,
    publish,
    pull,
    refs,
    sapwood_ok,
)
from tests.store.pull_server import serve

_HOLD = """
import sys, time
from store import Repository
with Repository.open(sys.argv[1]) as repo, repo.lock(exclusive=True):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _files(count: int, tag: str, seed: int) -> dict[str, str | bytes]:
    rng = random.Random(seed)
    return {f"d{n % 9}/f{n:03d}": rng.randbytes(rng.randrange(10, 40_000)) for n in range(count)}


def test_static_delta_generate_waits_for_a_running_prune(tmp_path: Path) -> None:
    """prune holds the repository lock exclusively while it deletes objects; a
    ``static-delta generate`` run meanwhile read objects prune was deleting (stress:
    'file object X is missing', or a delta published for a commit just pruned). It
    should wait for the lock (shared) like a commit or a pull: while the exclusive lock
    is held, no delta appears."""
    archive = tmp_path / "archive"
    archive_of(archive, write_tree(tmp_path / "a", _files(30, "a", 1)))
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(archive), "8"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        generate = spawn("static-delta", "generate", "--to", "main", repo=archive)
        with contextlib.suppress(subprocess.TimeoutExpired):
            generate.wait(timeout=5)
        written = list((archive / "deltas").glob("*/superblock"))
        assert written == [], "a delta was written while prune held the lock"
    finally:
        holder.wait(timeout=30)
        if generate.poll() is None:
            generate.wait(timeout=30)


def _kill_at_random(argv_pull: list[str], local: Path, rng: random.Random, spread: float) -> None:
    process = spawn(*argv_pull, repo=local, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0, spread))
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


@pytest.mark.long
@pytest.mark.parametrize("seed", [24, 2424])
def test_sigkill_during_pulls_with_deltas_and_pull_local(tmp_path: Path, seed: int) -> None:
    """Many SIGKILLs at random moments of a pull that applies a static delta and of a
    pull-local from that repository: after each, fsck is clean and no ref names a
    missing commit; at the end a pull and a pull-local bring the served commits."""
    rng = random.Random(seed)
    archive = tmp_path / "archive"
    first = archive_of(archive, write_tree(tmp_path / "a", _files(150, "a", seed)))
    second = archive_of(archive, write_tree(tmp_path / "b", _files(150, "b", seed + 1)))
    sapwood_ok(archive, "static-delta", "generate", "--to", "main^")
    sapwood_ok(archive, "static-delta", "generate", "--from", "main^", "--to", "main")
    publish(archive)
    local = local_repo(tmp_path / "local")
    copy = local_repo(tmp_path / "copy")
    with serve(archive) as served:
        add_remote(local, served.url)
        for trial in range(12):
            target = "main" if trial % 2 else first
            if trial % 3 == 2:
                _kill_at_random(["pull-local", str(local), "origin:main"], copy, rng, 1.5)
                fsck_clean(copy)
            else:
                _kill_at_random(["pull", "origin", target], local, rng, 2.0)
                fsck_clean(local)
        result = pull(local, "origin", "main")
        assert result.returncode == 0, result.stderr
    assert refs(local)["origin:main"] == second
    fsck_clean(local)
    sapwood_ok(copy, "pull-local", local, "origin:main")
    assert refs(copy)["origin:main"] == second
    fsck_clean(copy)


@pytest.mark.skipif(os.geteuid() != 0, reason="root's prune in a user's repository")
def test_root_prune_in_a_users_repository_leaves_it_usable(tmp_path: Path) -> None:
    """An unprivileged user pulls into a bare-user repository of theirs; root runs
    prune, fsck and static-delta generate in it (an administrator's cron). Whatever root
    made there must not lock the user out: the user's next pull and prune succeed."""
    from tests.helpers import give_to_user, run_as_user, user_dir

    archive = tmp_path / "archive"
    archive_of(archive, write_tree(tmp_path / "a", _files(40, "a", 3)))
    home = user_dir()
    try:
        with serve(archive) as served:
            assert run_as_user("--repo", home / "r", "init", "--mode", "bare-user").returncode == 0
            local = home / "r"
            assert run_as_user("--repo", local, "remote", "add", "o", served.url).returncode == 0
            first = run_as_user("--repo", local, "pull", "o", "main")
            assert first.returncode == 0, first.stderr
            second = archive_of(archive, write_tree(tmp_path / "b", _files(40, "b", 4)))
            sapwood_ok(local, "prune", "--refs-only", "--depth", "0")
            sapwood_ok(local, "fsck", "--all")
            sapwood_ok(local, "static-delta", "generate", "--to", "o:main")
            owned_by_root = [p for p in local.rglob("*") if p.lstat().st_uid == 0]
            again = run_as_user("--repo", local, "pull", "o", "main")
            assert again.returncode == 0, (again.stderr, owned_by_root)
            pruned = run_as_user("--repo", local, "prune", "--refs-only", "--depth", "0")
            assert pruned.returncode == 0, (pruned.stderr, owned_by_root)
            assert refs(local)["o:main"] == second
    finally:
        give_to_user(home)
        subprocess.run(["rm", "-rf", str(home)], check=False)


def test_a_pull_whose_ref_another_pull_set_the_same_succeeds(tmp_path: Path) -> None:
    """Two pulls of one remote at once (a timer's and an administrator's): the one that
    commits second found the ref already at the very commit it brings, and failed with
    'ref origin:main moved while this transaction ran' only when the other set another
    commit (stress, /tmp/a24/stress.sh): the same commit, set while this pull fetched
    (its report counts the objects it fetched), is no conflict."""
    import sapwood

    archive = tmp_path / "archive"
    commit = archive_of(archive, write_tree(tmp_path / "a", _files(60, "a", 5)))
    local = local_repo(tmp_path / "local")
    with serve(archive) as served:
        add_remote(local, served.url)
        other: list[subprocess.CompletedProcess[str]] = []

        def meanwhile(progress: sapwood.PullProgress) -> None:
            if not other and progress.phase in ("content", "writing"):  # ref read, not set
                other.append(pull(local, "origin", "main"))

        with sapwood.Repository.open(local) as repo:
            report = sapwood.pull(repo, "origin", "main", progress=meanwhile)
        assert report.content_fetched + report.delta_objects > 0, report
        assert other and other[0].returncode == 0, other
    assert refs(local) == {"origin:main": commit}
    fsck_clean(local)
