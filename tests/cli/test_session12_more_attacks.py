"""Hostile tester X9 (attack22.md) against two of session 12's changes:

- a repository open at a fork is refused in the child with one UsageError
  (store/index_env.py, store/index.py): the parent must stay fine afterwards (commits,
  snapshots, fsck clean), whatever the child did with its copy, and a child (a
  multiprocessing worker) that opens the repository after the fork must work when
  the parent had it closed;
- ``sapwood`` started with descriptors 0-2 closed (sapwood/cli/main.py
  _open_closed_standard_streams): commit, checkout and a background mount with
  ``<&-``, ``>&-``, ``2>&-`` work, and a failure changes nothing.

Each in real processes (the forks and the closed descriptors are the process's own).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import cli, mount_fstype, wait_for
from tests.net.repos import fsck_clean

ROOT = Path(__file__).resolve().parents[2]
SAPWOOD = str(ROOT / ".venv" / "bin" / "sapwood")


def _script(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


_SETUP = """
import os, sys
from pathlib import Path
from store import RepoMode, Repository, lookup
from tests.helpers import commit_dir
path = Path(sys.argv[1])
def tree(name, n):
    source = path.parent / name
    source.mkdir()
    for k in range(n):
        (source / f"f{k}").write_bytes(f"{name} {k}\\n".encode() * 50)
    return source
"""

# The parent keeps the repository open (and a snapshot: a ref read), forks: the child
# tries to use it (refused), drops it, exits normally (atexit, finalizers, collection);
# the parent then commits 20 times and reads its first commit's files back.
_CHILD_REFUSED = (
    _SETUP
    + """
repo = Repository.init(path, RepoMode.ARCHIVE)
first = commit_dir(repo, tree("a", 30))
child = os.fork()
if child == 0:
    import gc
    try:
        repo.ref("main")
        print("child: used", flush=True)
    except Exception as exc:
        print("child:", type(exc).__name__, str(exc).count("\\n"), flush=True)
    del repo
    gc.collect()
    sys.exit(0)
assert os.waitpid(child, 0)[1] == 0
for n in range(20):
    commit_dir(repo, tree(f"b{n}", 5), branch=f"b{n}")
for k in range(30):
    file_id = lookup(repo, first, f"/f{k}").file
    assert repo.read_file(file_id) == f"a {k}\\n".encode() * 50, k
assert repo.ref("main") == first
repo.close()
print("parent: ok", flush=True)
"""
)


def test_a_child_refused_the_repository_leaves_its_parent_whole(tmp_path: Path) -> None:
    """The child's use is one UsageError of one line; the child's normal exit (its copy
    collected) ends nothing of the parent's: 20 commits after it, the first commit's
    files read right, fsck clean."""
    done = _script(_CHILD_REFUSED, str(tmp_path / "repo"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["child: UsageError 0", "parent: ok"], done.stdout
    fsck_clean(tmp_path / "repo")


# A child that closes its copy and opens the repository again, then commits; the parent
# meanwhile holds its own open and commits after the child ended.
_CHILD_REOPENS = (
    _SETUP
    + """
repo = Repository.init(path, RepoMode.ARCHIVE)
first = commit_dir(repo, tree("a", 10))
child = os.fork()
if child == 0:
    repo.close()
    try:
        again = Repository.open(path)
        commit_dir(again, tree("c", 10), branch="child")
        again.close()
        print("child: committed", flush=True)
    except Exception as exc:
        print("child:", type(exc).__name__, flush=True)
    os._exit(0)
os.waitpid(child, 0)
commit_dir(repo, tree("p", 10), branch="parent")
assert repo.ref("main") == first
repo.close()
print("parent: ok", flush=True)
"""
)


def test_a_child_that_closes_its_copy_and_opens_again_leaves_its_parent_whole(
    tmp_path: Path,
) -> None:
    """Whatever the child is told (a commit of its own, or a refusal), the parent's
    commit after it is whole and fsck is clean."""
    done = _script(_CHILD_REOPENS, str(tmp_path / "repo"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    print(lines)
    assert lines[1] == "parent: ok" and lines[0].startswith("child: "), done.stdout
    fsck_clean(tmp_path / "repo")
    listed = cli("--repo", tmp_path / "repo", "refs").out.split()
    assert "parent" in listed
    assert ("child" in listed) == (lines[0] == "child: committed")


# multiprocessing with fork: workers open the repository themselves, read a file each;
# ARGV[2] "closed": the parent closed its own before the pool; "open": it holds it.
_POOL = (
    _SETUP
    + """
import multiprocessing
def work(k):
    try:
        with_repo = Repository.open(path)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        commit = with_repo.ref("main")
        return with_repo.read_file(lookup(with_repo, commit, f"/f{k}").file).decode()
    finally:
        with_repo.close()
repo = Repository.init(path, RepoMode.ARCHIVE)
commit_dir(repo, tree("a", 8))
if sys.argv[2] == "closed":
    repo.close()
with multiprocessing.get_context("fork").Pool(4) as pool:
    got = pool.map(work, range(8))
for line in got:
    print(line.strip().split("\\n")[0])
if sys.argv[2] == "closed":
    repo = Repository.open(path)
commit_dir(repo, tree("b", 3), branch="after")
repo.close()
"""
)


def test_fork_pool_workers_open_the_repository_the_parent_closed_before(
    tmp_path: Path,
) -> None:
    done = _script(_POOL, str(tmp_path / "repo"), "closed")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:8] == [f"a {k}" for k in range(8)], done.stdout
    fsck_clean(tmp_path / "repo")


def test_fork_pool_workers_are_refused_a_repository_the_parent_holds_open_with_one_line(
    tmp_path: Path,
) -> None:
    """The documented limit (close before forking, or spawn): each worker told in one
    line what to do; the parent commits after the pool, fsck clean."""
    done = _script(_POOL, str(tmp_path / "repo"), "open")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")[:8]
    print(lines[0])
    assert all(line.startswith("UsageError: ") and "spawn" in line for line in lines), lines
    fsck_clean(tmp_path / "repo")


# ----- descriptors 0-2 closed ----------------------------------------------------------
CLOSED = ["<&-", ">&-", "2>&-", "<&- >&- 2>&-"]


def _closed(args: list[str], closed: str, tmp_path: Path) -> int:
    """``sapwood ARGS`` (the installed script) run with ``closed``: its exit status."""
    status = tmp_path / "status"
    line = " ".join(f"'{a}'" for a in [SAPWOOD, *args])
    subprocess.run(
        ["bash", "-c", f"{line} {closed}; echo $? > '{status}'"], timeout=120, check=True
    )
    return int(status.read_text())


def _files(top: Path) -> dict[str, str]:
    """Every regular file under ``top``: its sha256, by path (but LMDB's lock.mdb, its
    reader table: each open writes it)."""
    return {
        str(path.relative_to(top)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(top.rglob("*"))
        if path.is_file() and not path.is_symlink() and path.name != "lock.mdb"
    }


@pytest.mark.parametrize("closed", CLOSED)
def test_commit_and_checkout_with_standard_descriptors_closed(tmp_path: Path, closed: str) -> None:
    """A verbose commit (-v: its log lines go to fd 2, which must not be a file the
    command opened) and a checkout: exit 0, the tree back byte for byte, fsck clean."""
    repo = tmp_path / "repo"
    assert cli("--repo", repo, "init", "--mode", "archive").code == 0
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    for k in range(40):
        (source / "d" / f"f{k}").write_bytes(os.urandom(3000 + k))
    (source / "big").write_bytes(os.urandom(1 << 20))
    assert (
        _closed(["--repo", str(repo), "-v", "commit", "-b", "main", str(source)], closed, tmp_path)
        == 0
    )
    out = tmp_path / "out"
    assert _closed(["--repo", str(repo), "-v", "checkout", "main", str(out)], closed, tmp_path) == 0
    assert _files(out) == _files(source)
    fsck_clean(repo)


@pytest.mark.parametrize("closed", CLOSED)
def test_a_failing_commit_with_standard_descriptors_closed_changes_nothing(
    tmp_path: Path, closed: str
) -> None:
    """A commit of a directory that is not there: a non-zero exit, and not a byte of the
    repository changed (its message went to /dev/null, not into a file it opened)."""
    repo = tmp_path / "repo"
    assert cli("--repo", repo, "init", "--mode", "archive").code == 0
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_bytes(b"hello\n")
    assert cli("--repo", repo, "commit", "-b", "main", source).code == 0
    before = _files(repo)
    args = ["--repo", str(repo), "-v", "commit", "-b", "main", str(tmp_path / "nothing")]
    assert _closed(args, closed, tmp_path) != 0
    assert _files(repo) == before
    fsck_clean(repo)


def _daemon_of(mnt: Path) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(mnt).encode() in argv and b"mount" in argv:
            return int(entry.name)
    raise AssertionError(f"no daemon of {mnt}")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts")
@pytest.mark.parametrize("closed", CLOSED)
def test_a_background_mount_with_standard_descriptors_closed(tmp_path: Path, closed: str) -> None:
    """``sapwood mount`` (the daemon goes to the background) started with 0-2 closed:
    mounted, the files read right, the daemon's 0-2 are /dev/null (not /dev/fuse, not
    a repository file), and ``sapwood umount`` with them closed too unmounts it."""
    repo = tmp_path / "repo"
    assert cli("--repo", repo, "init", "--mode", "archive").code == 0
    source = tmp_path / "src"
    source.mkdir()
    content = os.urandom(300_000)
    (source / "f").write_bytes(content)
    assert cli("--repo", repo, "commit", "-b", "main", source).code == 0
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        assert _closed(["--repo", str(repo), "mount", "main", str(mnt)], closed, tmp_path) == 0
        assert wait_for(lambda: mount_fstype(mnt) == "fuse.sapwood")
        assert (mnt / "f").read_bytes() == content
        daemon = _daemon_of(mnt)
        fds = [os.readlink(f"/proc/{daemon}/fd/{fd}") for fd in (0, 1, 2)]
        assert fds == ["/dev/null"] * 3, fds
        assert _closed(["--repo", str(repo), "umount", str(mnt)], closed, tmp_path) == 0
        assert wait_for(lambda: mount_fstype(mnt) is None)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{daemon}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{daemon}").exists(), "the daemon did not end"
    finally:
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, check=False)
    fsck_clean(repo)
