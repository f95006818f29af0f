"""Hostile tester X5 (attack18.md) against session 10's finalizer of an unclosed index
(store/index.py, store/index_env.py) and the prefetch child's isolation (fs/prefetch*.py):
the finalizer must never close an index under a live user, nor touch a parent's
environment from a forked child; the child must import nothing a hostile tree or
environment could shadow."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import RepoMode, Repository
from store.fsck import fsck
from store.index_env import SharedEnv
from tests.helpers import commit_dir

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


@pytest.fixture(autouse=True)
def _resource_warnings_quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield


def _repo(tmp_path: Path, name: str = "repo") -> Path:
    repo = Repository.init(tmp_path / name, RepoMode.ARCHIVE)
    source = tmp_path / f"{name}-src"
    source.mkdir()
    (source / "a").write_bytes(b"a" * 5000)
    commit_dir(repo, source)
    repo.close()
    return tmp_path / name


def _open_under(tmp_path: Path) -> list[str]:
    prefix = os.path.realpath(tmp_path) + os.sep
    return [key for key in SharedEnv._open if key.startswith(prefix)]


def _commit_more(repo: Repository, tmp_path: Path, tag: str) -> None:
    source = tmp_path / f"more-{tag}"
    source.mkdir()
    (source / tag).write_bytes(tag.encode() * 1000)
    commit_dir(repo, source, branch=tag)


# ----- a live user of a repository nobody else references ---------------------------------


def test_a_snapshot_of_an_otherwise_dropped_repository_reads_on_after_a_collection(
    tmp_path: Path,
) -> None:
    path = _repo(tmp_path)
    with Repository.open(path).snapshot() as snap:
        gc.collect()
        assert list(snap.refs()) == ["main"]
        commit = snap.ref("main")
        assert commit is not None and snap.has_object(commit)
    gc.collect()
    assert _open_under(tmp_path) == []


def _refs_lazily(path: Path) -> Iterator[str]:
    with Repository.open(path).snapshot() as snap:
        for name in snap.refs():
            gc.collect()
            yield name
            assert snap.ref(name) is not None


def test_a_running_generator_keeps_its_repository_and_an_abandoned_one_gives_it_back(
    tmp_path: Path,
) -> None:
    path = _repo(tmp_path)
    running = _refs_lazily(path)
    assert next(running) == "main"
    gc.collect()
    assert list(running) == []
    abandoned = _refs_lazily(path)
    next(abandoned)
    del abandoned
    gc.collect()
    assert _open_under(tmp_path) == []


@pytest.mark.long  # ~7 s; test_index_env_dropped.py churns threads in the default run
def test_a_second_repository_of_one_path_dropped_in_threads_while_the_first_writes(
    tmp_path: Path,
) -> None:
    """One Repository writes commits while other threads open and drop (unclosed)
    Repositories of the same path, in cycles too, collecting: the writer's commits all
    land, the index stays sound, and nothing is left open once it closes."""
    path = _repo(tmp_path)
    writer = Repository.open(path)
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                dropped = Repository.open(path)
                assert dropped.refs()
                cycle = [dropped]
                cycle.append(cycle)  # type: ignore[arg-type]
                del dropped, cycle
                gc.collect()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for n in range(6):
            _commit_more(writer, tmp_path, f"b{n}")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert sorted(writer.refs()) == sorted(["main"] + [f"b{n}" for n in range(6)])
    assert fsck(writer, all_objects=True).clean
    writer.close()
    gc.collect()
    assert _open_under(tmp_path) == []


def test_a_finalizer_whose_warning_raises_still_gives_its_share_back(tmp_path: Path) -> None:
    """ResourceWarning made an error (-W error, pytest's filterwarnings = error): the
    finalizer's warning raises inside a collection; the share is given back all the
    same, and the error reaches no caller (it is unraisable, reported)."""
    path = _repo(tmp_path)
    seen: list[object] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            for _ in range(5):
                repo = Repository.open(path)
                del repo
                gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert _open_under(tmp_path) == []
    assert len(seen) == 5


# ----- fork ---------------------------------------------------------------------------------

_FORK_SCRIPT = r"""
import gc, os, sys, warnings
from pathlib import Path
sys.path.insert(0, sys.argv[2])
warnings.simplefilter("ignore", ResourceWarning)
from store import Repository
from store.errors import UsageError
from store.fsck import fsck
from tests.helpers import commit_dir
path = Path(sys.argv[1])
repo = Repository.open(path)
with repo.snapshot() as snap:
    pid = os.fork()
    if pid == 0:
        del repo
        gc.collect()
        try:  # the parent's environment is the only one there may be: refused (attack21 2)
            Repository.open(path)
        except UsageError as exc:
            assert "open when the process forked" in str(exc), exc
        else:
            sys.exit(3)
        if sys.argv[3] == "drop-again":
            gc.collect()
        sys.exit(0)  # the interpreter's own end: every object of the child dealt with
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    assert snap.ref("main") is not None  # the parent's read snapshot, open across fork
source = path.parent / "after-fork"
source.mkdir()
(source / "f").write_bytes(b"after fork" * 100)
commit_dir(repo, source, branch="after")
assert fsck(repo, all_objects=True).clean
repo.close()
print("parent ok")
"""


@pytest.mark.parametrize("child", ["close", "drop-again"])
def test_a_forked_child_that_drops_its_copy_leaves_the_parents_index_alone(
    tmp_path: Path, child: str
) -> None:
    """The parent holds a repository and a read snapshot across fork; the child drops
    its copy (collected), is refused a second open of the repository (one clear error:
    LMDB forbids the parent's environment in a child, attack21 2), and ends through the
    interpreter's exit, after another collection or not. The parent's snapshot still reads, it then
    commits, and fsck finds the index sound."""
    path = _repo(tmp_path)
    done = subprocess.run(
        [PYTHON, "-c", _FORK_SCRIPT, str(path), str(ROOT), child],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "parent ok" in done.stdout
    assert "Exception ignored" not in done.stderr, done.stderr
    with Repository.open(path) as repo:
        assert sorted(repo.refs()) == ["after", "main"]


_EXIT_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from store import Repository
from tests.helpers import commit_dir
repo = Repository.open(Path(sys.argv[1]))
other = Repository.open(Path(sys.argv[1]))
cycle = [other]
cycle.append(cycle)
del other, cycle
source = Path(sys.argv[1]).parent / "at-exit"
source.mkdir()
(source / "f").write_bytes(b"x" * 3000)
commit_dir(repo, source, branch="exit")
print("written")
"""


def test_repositories_left_unclosed_at_interpreter_exit_end_quietly(tmp_path: Path) -> None:
    """Under -X dev (every warning shown): one repository left open at exit, another
    in a reference cycle: no traceback, no "Exception ignored"; the commit is there."""
    path = _repo(tmp_path)
    done = subprocess.run(
        [PYTHON, "-X", "dev", "-c", _EXIT_SCRIPT, str(path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    with Repository.open(path) as repo:
        assert sorted(repo.refs()) == ["exit", "main"]
        assert fsck(repo, all_objects=True).clean


# ----- the prefetch child -----------------------------------------------------------------

_SHADOWS = ("fs", "store", "sapwood", "socket", "struct", "threading", "ctypes", "stat")


def _hostile_tree_of_modules(where: Path, marks: Path) -> None:
    """Modules and packages named as the child's imports (and sitecustomize,
    usercustomize), each leaving a file in ``marks`` when imported."""
    where.mkdir(parents=True, exist_ok=True)
    for name in (*_SHADOWS, "sitecustomize", "usercustomize"):
        code = f"open({str(marks / name)!r}, 'w').close()\n"
        package = where / name
        package.mkdir(exist_ok=True)
        (package / "__init__.py").write_text(code)
        for sub in ("prefetch_threads", "getdents", "prefetch_child"):
            (package / f"{sub}.py").write_text(code)
        (where / f"{name}.py").write_text(code)  # shadowed by the package: both there


def test_the_prefetch_child_imports_nothing_from_a_hostile_cwd_pythonpath_or_site(
    tmp_path: Path,
) -> None:
    """The real child command (fs.prefetch._child_command) run from a working directory
    holding fs/, store/, socket.py, sitecustomize.py..., with PYTHONPATH, PYTHONSTARTUP
    and PYTHONHOME-free hostile settings pointing at more of them: it lists a tree and
    ends (exit 0: its own fs imported), and none of them was imported. The same
    import without -I -S does take them (the attack is real)."""
    from fs.prefetch import _child_command

    command = _child_command()
    assert command is not None
    marks = tmp_path / "marks"
    marks.mkdir()
    cwd, elsewhere = tmp_path / "cwd", tmp_path / "elsewhere"
    _hostile_tree_of_modules(cwd, marks)
    _hostile_tree_of_modules(elsewhere, marks)
    (elsewhere / "startup.py").write_text(f"open({str(marks / 'startup')!r}, 'w').close()\n")
    tree = tmp_path / "tree"
    for n in range(30):
        (tree / f"d{n}" / "e\nnewline").mkdir(parents=True)
    env = dict(
        os.environ,
        PYTHONPATH=str(elsewhere),
        PYTHONSTARTUP=str(elsewhere / "startup.py"),
        PYTHONUSERBASE=str(elsewhere),
        PYTHONINSPECT="1",
    )
    control = subprocess.run(
        [PYTHON, "-c", "import fs"], cwd=cwd, env=env, capture_output=True, timeout=30
    )
    assert control.returncode == 0 and (marks / "fs").exists()
    (marks / "fs").unlink()
    assert (marks / "sitecustomize").exists()  # PYTHONPATH's, through site
    (marks / "sitecustomize").unlink()
    root = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    import socket
    import struct

    ours, theirs = socket.socketpair()
    try:
        child = subprocess.Popen(
            [*command, "2", "256", "0", str(root)],
            stdin=theirs.fileno(),
            cwd=cwd,
            env=env,
            pass_fds=(root,),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        theirs.close()
        ours.sendall(struct.pack(">Q", 0) + b"\1" * 40)
        ours.shutdown(socket.SHUT_WR)
        _, err = child.communicate(timeout=30)
    finally:
        ours.close()
        os.close(root)
    assert child.returncode == 0, err
    assert sorted(os.listdir(marks)) == []


def test_the_prefetch_child_never_lists_through_a_symlink_swapped_in_while_it_lists(
    tmp_path: Path,
) -> None:
    """A tree whose directories are swapped for symlinks to an outside directory (and
    back) while a spied child lists it, names with newlines, a chain deeper than
    MAX_TREE_DEPTH: the child ends, lists no path through a symlink (nothing of the
    outside directory's), and nothing below MAX_TREE_DEPTH + 1."""
    import socket
    import struct

    from store.mtree import MAX_TREE_DEPTH
    from tests.fs.prefetching import spied, spy_child_command

    outside = tmp_path / "outside"
    (outside / "OUTSIDE-MARK" / "deeper").mkdir(parents=True)
    tree = tmp_path / "tree"
    for n in range(40):
        (tree / f"s{n}" / "in\nside").mkdir(parents=True)
    deep = tree / "deep"
    deep.mkdir()
    chain = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(MAX_TREE_DEPTH + 20):
        os.mkdir("d", dir_fd=chain)
        below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=chain)
        os.close(chain)
        chain = below
    os.close(chain)
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            for n in range(40):
                place = tree / f"s{n}"
                aside = tree / f".s{n}"
                try:
                    place.rename(aside)
                    place.symlink_to(outside)
                    place.unlink()
                    aside.rename(place)
                except OSError:
                    pass
                stop.wait(0.0005)  # the directory's lock left to the child between swaps

    out = tmp_path / "spy.out"
    out.touch()
    command = spy_child_command(tmp_path / "spy.py", str(out))
    swapper = threading.Thread(target=swap)
    swapper.start()
    root = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    ours, theirs = socket.socketpair()
    try:
        for _ in range(3):
            child = subprocess.Popen(
                [*command, "2", str(MAX_TREE_DEPTH), "0", str(root)],
                stdin=theirs.fileno(),
                pass_fds=(root,),
                stderr=subprocess.PIPE,
            )
            ours.sendall(struct.pack(">Q", 0) + b"\1" * 2000)
            deadline = 20.0
            while b"ended" not in out.read_bytes() and deadline > 0:
                threading.Event().wait(0.05)
                deadline -= 0.05
            child.kill()
            _, err = child.communicate(timeout=10)
            assert b"ended" in out.read_bytes(), err
            listed, _ = spied(out.read_bytes().splitlines())
            assert listed, "nothing listed"
            assert not [p for p in listed if b"OUTSIDE-MARK" in p]
            assert max(len(p) for p in listed) <= MAX_TREE_DEPTH + 2
            out.write_bytes(b"")
            ours.close()
            theirs.close()
            ours, theirs = socket.socketpair()
    finally:
        stop.set()
        swapper.join()
        ours.close()
        theirs.close()
        os.close(root)


_FORK_SNAPSHOT_SCRIPT = r"""
import gc, os, sys, warnings
sys.path.insert(0, sys.argv[2])
warnings.simplefilter("ignore", ResourceWarning)
from pathlib import Path
from store import Repository
from tests.helpers import raw_index
path = Path(sys.argv[1])
repo = Repository.open(path)
main = repo.refs()["main"]
with raw_index(path) as (txn, dbs):
    for n in range(400):
        txn.put(b"r%04d" % n, bytes(main), db=dbs["refs"])
cm = repo.snapshot()
snap = cm.__enter__()
before = snap.refs()
pid = os.fork()
if pid == 0:
    del snap, cm, repo  # the child drops its copy (collected), then ends at once
    gc.collect()
    os._exit(0)
os.waitpid(pid, 0)
for round in range(6):  # later writes may reuse only pages no reader protects
    with raw_index(path) as (txn, dbs):
        for n in range(400):
            key = b"r%04d" % n
            if (n + round) % 2:
                txn.delete(key, db=dbs["refs"])
            else:
                txn.put(key, bytes(main), db=dbs["refs"])
try:
    after = snap.refs()
except Exception as exc:
    after = repr(exc)
print("unchanged" if after == before else f"changed: {len(before)} refs, then {after!r:.80}")
"""


def test_a_forked_child_dropping_its_copy_of_an_open_snapshot_leaves_the_parents_alone(
    tmp_path: Path,
) -> None:
    """attack18 3, fixed: the parent holds a read snapshot across fork; the child drops its
    copy (collected: the snapshot's LMDB read transaction is aborted in the child,
    which clears the reader slot the parent shares with it in lock.mdb) and ends with
    os._exit. Later writes then reuse the pages the parent's snapshot reads: its refs
    changed under it (seen: 401 refs, then a handful). Now a child keeps the read
    transactions it inherited and lets go of (store/index.py, _INHERITED_READERS)."""
    path = _repo(tmp_path)
    done = subprocess.run(
        [PYTHON, "-c", _FORK_SNAPSHOT_SCRIPT, str(path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "unchanged", done.stdout
