"""Progress of long commands (issue 14): on a terminal, a bar with the total and the
percentage where the total is known, then one summary line; on a pipe, nothing.

Each command really runs in a separate process with its stderr a pseudo terminal (pty,
100 columns) and its stdout a file, so what the terminal showed and what the command
printed are told apart; the same command with stderr a pipe must print exactly what
it printed before progress existed (stdout unchanged, stderr empty).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import sapwood
from tests.helpers import IS_ROOT, ROOT, Argument, run, sapwood_argv, write_tree
from tests.store.pull_server import serve

FILES = 2500  # more than 1024: commit reports its count every 1024 files
SUMMARY_TIME = r"in \d+\.\d s"


@dataclass
class Shown:
    """A run with stderr a terminal: its exit code, stdout, and the terminal's text."""

    code: int
    out: bytes
    terminal: str

    def lines(self) -> list[str]:
        """What stays on the screen, line by line: each line as its last redraw left it."""
        return [line.split("\r")[-1] for line in self.terminal.split("\r\n")]


def in_terminal(*args: object, env: dict[str, str] | None = None, timeout: float = 120) -> Shown:
    """Run ``sapwood ARGS`` with stderr a pseudo terminal of 24 x 100."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            sapwood_argv(*map(str, args)),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=slave,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
        )
        os.close(slave)
        shown = bytearray()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 1.0)
                if not ready:
                    continue
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer of the terminal is gone
                    break
                if not chunk:
                    break
                shown += chunk
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
        out.seek(0)
        return Shown(code, out.read(), shown.decode("utf-8", "replace"))


def on_a_pipe(
    *args: Argument, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return run(*args, env={**os.environ, **(env or {})}, cwd=ROOT)


def summary(shown: Shown, name: str) -> str:
    """The one summary line of command ``name`` (the last line the terminal keeps)."""
    found = [line for line in shown.lines() if line.startswith(f"{name}: ")]
    assert len(found) == 1, shown.terminal[-2000:]
    return found[0]


def assert_reached_all(shown: Shown, phase: str, total: int) -> None:
    """The bar of ``phase`` was drawn at 100% with its total."""
    full = re.compile(rf"{re.escape(phase)}: 100%\|[^\r]*\| {total}/{total} ")
    assert full.search(shown.terminal), shown.terminal[-2000:]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree of FILES regular files in 25 directories and 10 symlinks."""
    files: dict[str, str | bytes] = {
        f"d{n % 25:02}/f{n:04}": f"content of file {n}\n" * (1 + n % 7) for n in range(FILES)
    }
    files |= {f"links/l{n}": f"->../d00/f{n:04}" for n in range(10)}
    return write_tree(tmp_path_factory.mktemp("progress") / "tree", files)


@pytest.fixture
def repo(tmp_path: Path, source: Path) -> Path:
    """A bare-user repository with ``source`` committed on main."""
    path = tmp_path / "repo"
    assert on_a_pipe("--repo", path, "init").returncode == 0
    committed = on_a_pipe("--repo", path, "commit", "-b", "main", "--timestamp", "0", source)
    assert committed.returncode == 0, committed.stderr
    return path


# ----- the commands on a terminal -----------------------------------------------------------
def test_commit_counts_files_then_sums_them_up(tmp_path: Path, source: Path) -> None:
    for name in ("piped", "shown"):
        assert on_a_pipe("--repo", tmp_path / name, "init").returncode == 0
    args: list[Argument] = ["commit", "-b", "main", "--timestamp", "0", source]
    piped = on_a_pipe("--repo", tmp_path / "piped", *args)
    shown = in_terminal("--repo", tmp_path / "shown", *args)
    assert shown.code == piped.returncode == 0
    assert re.fullmatch(rb"[0-9a-f]{64}\n", piped.stdout)
    assert shown.out == piped.stdout and piped.stderr == b""
    assert "committing: 1024 files [" in shown.terminal  # no total: a count and a rate
    line = summary(shown, "commit")
    assert re.fullmatch(
        rf"commit: {FILES} files \({FILES} read, 0 cached, 0 linked\) {SUMMARY_TIME}", line
    )


def test_checkout_reaches_the_commit_total(tmp_path: Path, repo: Path) -> None:
    piped = on_a_pipe("--repo", repo, "checkout", "-U", "main", tmp_path / "piped")
    shown = in_terminal("--repo", repo, "checkout", "-U", "main", tmp_path / "shown")
    assert shown.code == piped.returncode == 0
    assert shown.out == piped.stdout == b"" and piped.stderr == b""
    total = FILES + 10  # files and symlinks
    assert_reached_all(shown, "checking out", total)
    line = summary(shown, "checkout")
    assert re.fullmatch(
        rf"checkout: checking out {total}/{total} files \(100%\) {SUMMARY_TIME}, \d+ files/s", line
    )
    assert sorted(os.listdir(tmp_path / "shown")) == sorted(os.listdir(tmp_path / "piped"))


def test_fsck_reaches_the_number_of_file_objects(repo: Path) -> None:
    piped = on_a_pipe("--repo", repo, "fsck")
    shown = in_terminal("--repo", repo, "fsck")
    assert shown.code == piped.returncode == 0
    objects = FILES + 10  # each file differs (its number), and each symlink
    expected = f"checked 1 commit, 28 metadata and {objects} file objects\n".encode()
    assert piped.stdout == shown.out == expected and piped.stderr == b""
    assert_reached_all(shown, "checking", objects)
    line = summary(shown, "fsck")
    assert re.fullmatch(
        rf"fsck: checking {objects}/{objects} files \(100%\) {SUMMARY_TIME}, \d+ files/s", line
    )


def test_prune_reaches_the_files_it_deletes(tmp_path: Path, repo: Path) -> None:
    extra = write_tree(tmp_path / "extra", {f"x/{n}": f"only here {n}\n" for n in range(40)})
    assert (
        on_a_pipe("--repo", repo, "commit", "-b", "tmp", "--timestamp", "1", extra).returncode == 0
    )
    assert on_a_pipe("--repo", repo, "refs", "--delete", "tmp").returncode == 0
    args: list[Argument] = ["--repo", repo, "prune", "--refs-only"]
    piped = on_a_pipe(*args, "--dry-run")
    shown = in_terminal(*args, "--dry-run")
    assert shown.code == piped.returncode == 0
    assert shown.out == piped.stdout and piped.stderr == b""
    assert b"Would delete 43 objects and 0 unlisted files" in piped.stdout  # 40, 2 trees, commit
    assert_reached_all(shown, "measuring", 40)
    assert summary(shown, "prune").startswith("prune: measuring 40/40 files (100%) in ")
    deleted = in_terminal(*args)
    assert deleted.code == 0
    assert deleted.out == piped.stdout.replace(b"Would delete", b"Deleted")
    assert_reached_all(deleted, "deleting", 40)
    assert summary(deleted, "prune").startswith("prune: deleting 40/40 files (100%) in ")


def test_pull_reaches_the_content_to_fetch(tmp_path: Path, source: Path) -> None:
    archive = tmp_path / "archive"
    assert on_a_pipe("--repo", archive, "init", "--mode", "archive").returncode == 0
    sub = source / "d00"
    assert (
        on_a_pipe("--repo", archive, "commit", "-b", "os", "--timestamp", "0", sub).returncode == 0
    )
    assert on_a_pipe("--repo", archive, "summary", "-u").returncode == 0
    count = len(os.listdir(sub))
    with serve(archive) as server:
        outputs = []
        for name in ("piped", "shown"):
            local = tmp_path / name
            assert on_a_pipe("--repo", local, "init").returncode == 0
            added = on_a_pipe(
                "--repo", local, "remote", "add", "--no-sign-verify", "origin", server.url
            )
            assert added.returncode == 0, added.stderr
            pull: list[Argument] = ["--repo", local, "pull", "origin", "os"]
            outputs.append(on_a_pipe(*pull) if name == "piped" else in_terminal(*pull))
    piped, shown = outputs
    assert isinstance(piped, subprocess.CompletedProcess) and isinstance(shown, Shown)
    assert shown.code == piped.returncode == 0
    assert shown.out == piped.stdout and piped.stderr == b""
    assert f"fetched 3 metadata objects and {count} content objects".encode() in piped.stdout
    assert re.search(rf": 100%\|[^\r]*\| {count}/{count} \[", shown.terminal), shown.terminal[
        -2000:
    ]
    line = summary(shown, "pull")
    pattern = (
        rf"pull: {count}/{count} content objects \(100%\), [\d.]+ KiB {SUMMARY_TIME}, [\d.]+ \w+/s"
    )
    assert re.fullmatch(pattern, line), line


QUIET_BOOT = {"SAPWOOD_CMDLINE": "quiet"}  # a deployment's kernel command line


def os_sysroot(tmp_path: Path, files: dict[str, str]) -> tuple[Path, Path, Path]:
    """An initialised sysroot with the OS "deb", and a tree to deploy: ``files`` and a
    kernel, an initramfs and os-release; (sysroot, its repository, the tree)."""
    sysroot = tmp_path / "sysroot"
    tree = write_tree(
        tmp_path / "os",
        {
            **files,
            "etc/os-release": "PRETTY_NAME=test\n",
            "boot/vmlinuz-6.1.0-test": "k\n",
            "boot/initrd.img-6.1.0-test": "i\n",
        },
    )
    assert on_a_pipe("admin", "init-fs", sysroot).returncode == 0
    assert on_a_pipe("admin", "--sysroot", sysroot, "os-init", "deb").returncode == 0
    return sysroot, sysroot / "sapwood/repo", tree


@pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")
def test_deploy_reaches_the_commit_total(tmp_path: Path) -> None:
    env = QUIET_BOOT
    sysroot, repo, tree = os_sysroot(tmp_path, {f"usr/share/f{n}": f"{n}\n" for n in range(300)})
    committed = on_a_pipe("--repo", repo, "commit", "-b", "deb/main", "--timestamp", "0", tree)
    commit_id = committed.stdout.decode().strip()
    piped = on_a_pipe("admin", "--sysroot", sysroot, "deploy", "deb/main", env=env)
    shown = in_terminal("admin", "--sysroot", sysroot, "deploy", "deb/main", env=env)
    assert shown.code == piped.returncode == 0, piped.stderr
    said = f"deployed deb {commit_id}.0 as deployment 0 (the default)\n"
    assert piped.stdout == said.encode() and piped.stderr == b""
    assert shown.out == said.replace(".0 as", ".1 as").encode()
    assert_reached_all(shown, "checking out", 303)
    assert summary(shown, "deploy").startswith("deploy: checking out 303/303 files (100%) in ")


# ----- nothing on a pipe, and nothing imported for it -----------------------------------------
def test_an_error_clears_the_bar_and_says_no_summary(tmp_path: Path, repo: Path) -> None:
    (tmp_path / "taken").mkdir()
    shown = in_terminal("--repo", repo, "checkout", "-U", "main", tmp_path / "taken")
    assert shown.code != 0
    assert not [line for line in shown.lines() if line.startswith("checkout: ")]
    assert shown.lines()[-2].startswith("sapwood: error: ")


def test_tqdm_is_not_imported_when_stderr_is_not_a_terminal(repo: Path) -> None:
    probe = (
        "import sys\nfrom sapwood.cli.main import main\n"
        f"code = main(['--repo', {str(repo)!r}, 'fsck'])\n"
        "print(code, 'tqdm' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.splitlines()[-1] == "0 False" and done.stderr == ""


# ----- the library's callbacks ------------------------------------------------------------
def test_library_callbacks_end_at_their_totals(tmp_path: Path, repo: Path) -> None:
    seen: list[sapwood.TaskProgress] = []
    with sapwood.Repository.open(repo) as opened:
        sapwood.fsck(opened, progress=seen.append)
        checked = [s for s in seen if s.phase == "checking"]
        assert seen[0].phase == "reading trees" and checked[-1].done == checked[-1].total
        seen.clear()
        head = opened.ref("main")
        assert head is not None
        started = time.monotonic()
        sapwood.checkout(opened, head, tmp_path / "out", progress=seen.append)
        took = time.monotonic() - started
    written = [s for s in seen if s.phase == "checking out"]
    assert written[0].done == 0 and written[-1].done == written[-1].total == FILES + 10
    assert len(written) <= 2 + took / 0.1  # at most every 0.1 s and at the end, never per file
    assert [s.phase for s in seen][-1] == "syncing"
