"""Hostile tester X8 (attack21.md) against session 11's pull that ends without the
interpreter's finalization (sapwood/cli/main.py _end_at_once, sapwood/cli/output.py
exit_at_once): nothing the pull wrote may be lost, no temporary file or lock left,
output complete or the failure said, the exit status right. Real ``sapwood pull``
processes from a small HTTP server on 127.0.0.1; fsck after each. A test that passes
guards a defence; a defect is a strict xfail naming its finding in attack21.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import IS_ROOT, cli, sapwood_argv
from tests.net.repos import add_remote, archive_of, fsck_clean, local_repo, publish, refs
from tests.store.pull_server import Served, serve

FAST = {"SAPWOOD_HTTP_TIMEOUT": "5", "SAPWOOD_HTTP_RETRIES": "1", "SAPWOOD_HTTP_BACKOFF": "0.05"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, str]]:
    """An archive repository with 200 small files and one of 300 KiB on main, served;
    the commit id."""
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    for n in range(200):
        (tree / "d" / f"f{n}").write_bytes(f"file {n}\n".encode() * 20)
    (tree / "big").write_bytes(os.urandom(300 * 1024))
    commit = archive_of(tmp_path / "served" / "repo", tree)
    with serve(tmp_path / "served") as server:
        yield server, commit


def _local(tmp_path: Path, server: Served, where: Path | None = None) -> Path:
    local = local_repo((where or tmp_path) / "local")
    add_remote(local, f"{server.url}repo/")
    return local


def _leftovers(repo: Path) -> list[str]:
    """Temporary files and directories a pull left in the repository."""
    found = []
    for root, dirs, files in os.walk(repo):
        for name in dirs + files:
            if "tmp" in name or name.startswith("."):
                found.append(os.path.relpath(os.path.join(root, name), repo))
    tmp = repo / "tmp"
    if tmp.is_dir():
        found += [f"tmp/{name}" for name in os.listdir(tmp)]
    return sorted(set(found) - {"tmp"})


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=dict(os.environ) | FAST,
        check=False,
    )


def _pull_line(local: Path) -> str:
    return " ".join(f"'{part}'" for part in sapwood_argv("pull", "origin", "main", repo=local))


def _sound_after(local: Path, commit: str) -> None:
    assert refs(local)["origin:main"] == commit
    fsck_clean(local)
    assert _leftovers(local) == []
    # no lock left: a write that needs the lock runs at once
    assert cli("--repo", local, "refs", "--create", "mine", commit).code == 0
    out = cli("--repo", local, "cat", "origin:main", "d/f7")
    assert out.raw == b"file 7\n" * 20


def test_a_pull_into_a_reader_that_takes_one_byte(
    tmp_path: Path, served: tuple[Served, str]
) -> None:
    """``sapwood pull ... | head -c1``: the pull ends 0 (its report fitted the pipe) or
    is killed by SIGPIPE (141), never a traceback; everything it pulled is there."""
    server, commit = served
    local = _local(tmp_path, server)
    done = _shell(f'{_pull_line(local)} | head -c1; echo "${{PIPESTATUS[0]}}" >&2', tmp_path)
    status = done.stderr.strip().splitlines()[-1]
    assert status in {"0", "141"}, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == "o"
    _sound_after(local, commit)


def test_a_pull_into_a_reader_gone_before_it_writes(
    tmp_path: Path, served: tuple[Served, str]
) -> None:
    """The reader is gone before the pull writes its report: killed by SIGPIPE as git
    is (141, nothing on stderr), and the pull is whole all the same."""
    server, commit = served
    local = _local(tmp_path, server)
    done = _shell(f'{_pull_line(local)} | true; echo "${{PIPESTATUS[0]}}" >&2', tmp_path)
    lines = done.stderr.strip().splitlines()
    assert lines[-1] in {"0", "141"}, done.stderr
    assert lines[:-1] == [] or all("sapwood: " in line for line in lines[:-1]), done.stderr
    assert "Traceback" not in done.stderr
    _sound_after(local, commit)


def test_a_pull_report_read_whole_through_a_pipe(
    tmp_path: Path, served: tuple[Served, str]
) -> None:
    """stdout a pipe (block-buffered) read by cat: the report's lines are all there, in
    order, ended by a newline, exit 0."""
    server, commit = served
    local = _local(tmp_path, server)
    done = _shell(f'{_pull_line(local)} | cat; echo "${{PIPESTATUS[0]}}" >&2', tmp_path)
    assert done.stderr.strip().splitlines()[-1] == "0", done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"origin:main: (new) -> {commit}"
    assert lines[1].startswith("fetched ") and done.stdout.endswith("\n")
    _sound_after(local, commit)


def test_a_pull_whose_report_cannot_be_written_says_so_and_fails(
    tmp_path: Path, served: tuple[Served, str]
) -> None:
    """stdout /dev/full (ENOSPC on the report's flush): one line on stderr, non-zero
    exit, no traceback; the pull itself is whole (it happened before the report)."""
    server, commit = served
    local = _local(tmp_path, server)
    done = _shell(f"{_pull_line(local)} >/dev/full", tmp_path)
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "No space left" in done.stderr, done.stderr
    _sound_after(local, commit)


# ----- a full disk ---------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of its own (root only), unmounted for sure."""
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "x8small", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _filled(small_fs: Path, server: Served, tmp_path: Path, room: int) -> Path:
    """A local repository on ``small_fs`` (no free-space reserve: the pull runs into the
    full disk itself), the filesystem then filled to leave ``room`` KiB."""
    local = _local(tmp_path, server, small_fs / f"r{room}")
    assert cli("--repo", local, "config", "set", "core.min-free-space-percent", "0").code == 0
    free = os.statvfs(small_fs)
    with open(small_fs / "filler", "wb") as out:
        out.write(b"\0" * max(0, free.f_bavail * free.f_frsize - room * 1024))
    return local


# The pull needs ~1,140 KiB on this tmpfs: below ~1,100 it fails writing objects, from
# there to ~1,140 writing the index (LMDB's commit), above it succeeds.
@pytest.mark.parametrize("room", [600, 1050, 1120, 1300], ids=lambda k: f"{k}KiB")
def test_a_pull_that_fills_the_disk_fails_cleanly_and_leaves_nothing(
    tmp_path: Path, served: tuple[Served, str], small_fs: Path, room: int
) -> None:
    """The local repository on a small tmpfs filled to leave ``room`` KiB: a failure is
    one line, non-zero, no ref moved; either way fsck is clean, no temporary file is
    left, and once room is made the same pull succeeds."""
    server, commit = served
    local = _filled(small_fs, server, tmp_path, room)
    done = _shell(_pull_line(local), tmp_path)
    assert "Traceback" not in done.stderr
    if done.returncode != 0:
        assert done.stderr.count("\n") == 1, done.stderr
        assert "origin:main" not in refs(local)
    fsck_clean(local)
    assert _leftovers(local) == [], done.stderr
    (small_fs / "filler").unlink()
    again = _shell(_pull_line(local), tmp_path)
    assert again.returncode == 0, again.stderr
    _sound_after(local, commit)


@pytest.mark.long  # 26 pulls: ~30 s
def test_a_pull_stopped_by_a_full_disk_says_the_disk_is_full(
    tmp_path: Path, served: tuple[Served, str], small_fs: Path
) -> None:
    """Every pull that a full disk stops says so, wherever it stops: writing objects it
    says 'no space left on the disk'; at the index's commit LMDB's short write comes
    back as EIO and the line says 'Input/output error', which sends a user looking for
    a failing disk."""
    server, _ = served
    said = []
    for room in range(1000, 1208, 8):
        local = _filled(small_fs, server, tmp_path, room)
        done = _shell(_pull_line(local), tmp_path)
        (small_fs / "filler").unlink()
        if done.returncode != 0:
            said.append(done.stderr.strip())
        fsck_clean(local)
    assert said, "no pull was stopped"
    assert all("no space left" in line.lower() for line in said), sorted(set(said))


# ----- standard streams closed ---------------------------------------------------------------


@pytest.mark.parametrize("closed", [">&-", "2>&-"], ids=["stdout", "stderr"])
def test_a_command_run_with_a_standard_stream_closed(
    tmp_path: Path, served: tuple[Served, str], closed: str
) -> None:
    """A pull and a commit started with stdout or stderr closed (a daemon's child, a
    cron line with >&-): Python makes sys.stdout/sys.stderr None. Today run()'s
    sys.stdout.flush() raises AttributeError after the work is done (a traceback, exit
    1), and Progress's sys.stderr.isatty() makes the command an internal error (exit
    70) before it does anything. Either the command works (as git's do: they open
    /dev/null on closed 0-2 at start) or it says one line and changes nothing."""
    server, commit = served
    local = _local(tmp_path, server)
    status = tmp_path / "status"
    pulled = _shell(f"{_pull_line(local)} {closed}; echo $? > '{status}'", tmp_path)
    assert "Traceback" not in pulled.stderr + pulled.stdout
    assert status.read_text().strip() == "0", pulled.stderr + pulled.stdout
    assert refs(local)["origin:main"] == commit
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_bytes(b"hello\n")
    line = " ".join(f"'{p}'" for p in sapwood_argv("commit", "-b", "mine", source, repo=local))
    committed = _shell(f"{line} {closed}; echo $? > '{status}'", tmp_path)
    assert "Traceback" not in committed.stderr + committed.stdout
    assert status.read_text().strip() == "0", committed.stderr + committed.stdout
    assert cli("--repo", local, "cat", "mine", "f").raw == b"hello\n"
    fsck_clean(local)


def test_a_delta_pull_that_ends_at_once_leaves_nothing_in_tmpdir(tmp_path: Path) -> None:
    """An update pull through a static delta (temporary files of its own) ends without
    the interpreter's finalization: nothing is left in TMPDIR or in the repository, the
    new commit reads back and fsck is clean."""
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    for n in range(50):
        (tree / "d" / f"f{n}").write_bytes(f"file {n}\n".encode() * 20)
    (tree / "big").write_bytes(os.urandom(200_000))
    served = tmp_path / "served"
    old = archive_of(served / "repo", tree)
    shutil.copytree(served / "repo", served / "old", symlinks=True)
    (tree / "big").write_bytes(os.urandom(200_000))
    (tree / "d" / "f3").write_bytes(b"changed\n" * 100)
    new = archive_of(served / "repo", tree)
    assert (
        cli("--repo", served / "repo", "static-delta", "generate", "--from", old, "--to", new).code
        == 0
    )
    publish(served / "repo")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with serve(served) as server:
        local = _local(tmp_path, server)
        add_remote(local, f"{server.url}old/", "old")
        assert cli("--repo", local, "pull", "old", "main").code == 0
        assert cli("--repo", local, "refs", "--create", "origin:main", old).code == 0
        done = subprocess.run(
            sapwood_argv("pull", "origin", "main", repo=local),
            capture_output=True,
            text=True,
            env=dict(os.environ) | FAST | {"TMPDIR": str(scratch)},
            timeout=120,
            check=False,
        )
        assert any("/deltas/" in path for path in server.log), server.log
    assert done.returncode == 0, done.stderr
    assert "in deltas" in done.stdout
    assert os.listdir(scratch) == []
    assert _leftovers(local) == []
    assert refs(local)["origin:main"] == new
    assert cli("--repo", local, "cat", "origin:main", "d/f3").raw == b"changed\n" * 100
    fsck_clean(local)
