"""Hostile tester X8 (attack21.md) against session 11's saved listing of objects/
(store/inode_cache.py, store/inodes.py), the fork hook of store/index_env.py and
prune's batches (store/prune.py).

A farm re-commit (``checkout -U -H`` then ``commit``) maps a farm file's inode to an
object id from a listing of objects/ saved in index/object-inodes. The attacks try to
make that listing stale or forged so that a commit records a WRONG id; each reads the
commit back (``cat``) and runs fsck. A test that passes guards a defence; a defect is a
strict xfail naming its finding in /work/plan/attack21.md.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import store.inode_cache as inode_cache
from store import RepoMode, Repository
from store.fsck import fsck
from tests.helpers import IS_ROOT, NOBODY, ROOT, cli, sapwood_argv

SAVED = ("index", "object-inodes")
SIZE = 100  # every attacked file's size: a forged or stale id must match it


@pytest.fixture(autouse=True)
def _settled_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Directories count as settled at once (the real rule waits 2 s after the last
    change): the listing is saved by the first farm commit, as it would be 2 s later.
    The attacks here are about what a saved listing is trusted for, not about ticks."""
    monkeypatch.setattr(inode_cache, "_SETTLED_NS", -(10**12))


def ok(repo: Path, *args: str | Path) -> str:
    result = cli("--repo", repo, *args)
    assert result.code == 0, result.err
    return result.out


def _cat(repo: Path, rev: str, name: str) -> bytes:
    result = cli("--repo", repo, "cat", rev, name)
    assert result.code == 0, result.err
    return result.raw


def _fsck_clean(repo: Path) -> None:
    result = cli("--repo", repo, "fsck", "--all")
    assert result.code == 0, result.out + result.err


def _repo_with(tmp_path: Path, files: dict[str, bytes], name: str = "repo") -> Path:
    repo = tmp_path / name
    ok(repo, "init", "--mode", "bare-user")
    source = tmp_path / f"{name}-src"
    source.mkdir()
    for file_name, data in files.items():
        (source / file_name).write_bytes(data)
    ok(repo, "commit", "-b", "main", source)
    return repo


def _farm(repo: Path, rev: str, dest: Path) -> Path:
    ok(repo, "checkout", "-U", "-H", rev, dest)
    return dest


# ----- symlinked objects/XX ----------------------------------------------------------------


def test_a_listing_behind_symlinked_object_directories_goes_stale(tmp_path: Path) -> None:
    """Every objects/XX a symlink to side/XX (same filesystem; sapwood follows them and
    fsck is clean): directory_keys lstats the symlinks, which never change, so the
    listing saved once stays 'valid'. An object file replaced by an identical copy and
    its old inode, kept by the farm, rewritten with other bytes of the same size (mtime
    reset to 0, a second link): the re-commit recorded the OLD id for the new bytes
    (attack21 1). Now object directories that are not directories on objects/'s device
    are never saved, and farm files there are read."""
    repo = tmp_path / "repo"
    ok(repo, "init", "--mode", "bare-user")
    side = tmp_path / "side"
    side.mkdir()
    for byte in range(256):
        directory = repo / "objects" / f"{byte:02x}"
        if directory.exists():
            os.rename(directory, side / directory.name)
        else:
            (side / directory.name).mkdir()
        os.symlink(side / directory.name, directory)
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_bytes(b"A" * SIZE)
    (source / "c").write_bytes(b"C" * 50)
    ok(repo, "commit", "-b", "main", source)
    farm = _farm(repo, "main", tmp_path / "farm")
    ok(repo, "commit", "-b", "first", farm)
    assert not (repo.joinpath(*SAVED)).exists()  # this layout is never saved, read instead
    inode = os.stat(farm / "a").st_ino
    [obj] = [p for p in side.rglob("*.file") if p.stat().st_ino == inode]
    copy = obj.with_name("restore.tmp")
    shutil.copy2(obj, copy)
    os.utime(copy, ns=(0, 0))
    os.rename(copy, obj)  # the object as it was, at a new inode
    os.link(farm / "a", farm / "a2")
    with open(farm / "a", "r+b") as out:
        out.write(b"B" * SIZE)
    os.utime(farm / "a", ns=(0, 0))
    _fsck_clean(repo)
    ok(repo, "commit", "-b", "second", farm)
    assert _cat(repo, "second", "a") == b"B" * SIZE


# ----- prune, then recycled inode numbers --------------------------------------------------


def test_prune_then_new_objects_on_recycled_inodes_are_read_right(tmp_path: Path) -> None:
    """A listing saved, then everything pruned and new objects of the same size made
    (ext4 hands freed inode numbers out again): the new farm's re-commit records the
    new bytes, for several rounds."""
    repo = _repo_with(tmp_path, {"a": b"A" * SIZE})
    for round_ in range(4):
        rev = "main" if round_ == 0 else f"r{round_}"
        farm = _farm(repo, rev, tmp_path / f"farm{round_}")
        ok(repo, "commit", "-b", f"again{round_}", farm)
        assert _cat(repo, f"again{round_}", "a") == _cat(repo, rev, "a")
        old_inode = os.stat(farm / "a").st_ino
        shutil.rmtree(farm)
        for ref in ok(repo, "refs").split():
            ok(repo, "refs", "--delete", ref)
        ok(repo, "prune", "--refs-only")
        assert not any(p.stat().st_ino == old_inode for p in (repo / "objects").rglob("*.file"))
        letter = bytes([ord("B") + round_])
        source = tmp_path / f"src{round_}"
        source.mkdir()
        (source / "a").write_bytes(letter * SIZE)
        ok(repo, "commit", "-b", f"r{round_ + 1}", source)
        farm = _farm(repo, f"r{round_ + 1}", tmp_path / f"new{round_}")
        recycled = os.stat(farm / "a").st_ino == old_inode
        ok(repo, "commit", "-b", f"check{round_}", farm)
        assert _cat(repo, f"check{round_}", "a") == letter * SIZE, recycled
        shutil.rmtree(farm)
        _fsck_clean(repo)


# ----- the saved file forged, damaged, or not this user's alone --------------------------


def _forge_swap(data: bytes, id_a: bytes, id_b: bytes) -> bytes:
    """The listing with the ids ``id_a`` and ``id_b`` swapped, its CRC made right."""
    body = data[:-4]
    assert body.count(id_a) == 1 and body.count(id_b) == 1
    at_a, at_b = body.index(id_a), body.index(id_b)
    swapped = bytearray(body)
    swapped[at_a : at_a + 32], swapped[at_b : at_b + 32] = id_b, id_a
    body = bytes(swapped)
    return body + struct.pack("<I", zlib.crc32(body))


def _object_id(repo: Path, farm_file: Path) -> bytes:
    inode = os.stat(farm_file).st_ino
    [obj] = [p for p in (repo / "objects").rglob("*.file") if p.stat().st_ino == inode]
    return bytes.fromhex(obj.parent.name + obj.name[:62])


def _plant(saved: Path, forged: bytes, how: str, tmp_path: Path) -> None:
    saved.unlink()
    if how == "symlink":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.write_bytes(forged)
        elsewhere.chmod(0o600)
        saved.symlink_to(elsewhere)
        return
    if how == "truncated":
        forged = forged[:-1]
    if how == "bit-flipped":
        middle = len(forged) - 40
        forged = forged[:middle] + bytes([forged[middle] ^ 0x01]) + forged[middle + 1 :]
    saved.write_bytes(forged)
    saved.chmod({"world-writable": 0o606, "group-writable": 0o620}.get(how, 0o600))
    if how == "other-user":
        os.chown(saved, NOBODY, NOBODY)


KINDS = ["symlink", "truncated", "bit-flipped", "world-writable", "group-writable", "other-user"]


@pytest.mark.parametrize("how", ["this-user", *KINDS])
def test_a_forged_listing_is_taken_only_when_it_is_this_users_alone(
    tmp_path: Path, how: str
) -> None:
    """A listing with two same-sized objects' ids swapped (its CRC right): the file
    trusted as far as the index (this user's, 0600) makes the commit record the swap (by
    design: whoever writes it can write the index); every other form is ignored and the
    commit records what the farm holds."""
    if how == "other-user" and not IS_ROOT:
        pytest.skip("chown needs root")
    repo = _repo_with(tmp_path, {"a": b"A" * SIZE, "b": b"B" * SIZE})
    farm = _farm(repo, "main", tmp_path / "farm")
    ok(repo, "commit", "-b", "saved", farm)
    saved = repo.joinpath(*SAVED)
    forged = _forge_swap(
        saved.read_bytes(), _object_id(repo, farm / "a"), _object_id(repo, farm / "b")
    )
    _plant(saved, forged, how, tmp_path)
    ok(repo, "commit", "-b", "after", farm)
    swapped = _cat(repo, "after", "a") == b"B" * SIZE
    assert swapped == (how == "this-user")
    if how != "this-user":
        assert _cat(repo, "after", "b") == b"B" * SIZE
        _fsck_clean(repo)


@pytest.mark.parametrize("what", ["fifo", "directory", "empty"])
def test_a_saved_listing_that_is_no_file_neither_hangs_nor_leaves_temporaries(
    tmp_path: Path, what: str
) -> None:
    repo = _repo_with(tmp_path, {"a": b"A" * SIZE})
    saved = repo.joinpath(*SAVED)
    if what == "fifo":
        os.mkfifo(saved, 0o600)
    elif what == "directory":
        saved.mkdir()
    else:
        saved.write_bytes(b"")
        saved.chmod(0o600)
    farm = _farm(repo, "main", tmp_path / "farm")
    (farm / "a").chmod(0o644)
    ok(repo, "commit", "-b", "after", farm)
    assert _cat(repo, "after", "a") == b"A" * SIZE
    left = [p.name for p in saved.parent.iterdir() if ".tmp-" in p.name]
    assert left == []
    _fsck_clean(repo)


# ----- copies of the repository ------------------------------------------------------------


@pytest.mark.parametrize("where", ["same-filesystem", "dev-shm"])
def test_a_copied_repository_does_not_trust_the_listing_it_was_copied_with(
    tmp_path: Path, where: str
) -> None:
    """cp -a of a repository whose listing is saved (to another directory of the same
    filesystem, or to tmpfs: other inodes, other device): the copy's farm re-commit is
    right, and so is the original's after the copy changed."""
    repo = _repo_with(tmp_path, {"a": b"A" * SIZE, "b": b"B" * SIZE})
    farm = _farm(repo, "main", tmp_path / "farm")
    ok(repo, "commit", "-b", "saved", farm)
    if where == "dev-shm":
        if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("no /dev/shm on another filesystem")
        base = Path(f"/dev/shm/x8-{os.getpid()}-{random.getrandbits(32):x}")
    else:
        base = tmp_path / "copies"
    base.mkdir()
    try:
        copy = base / "repo"
        subprocess.run(["cp", "-a", str(repo), str(copy)], check=True)
        assert copy.joinpath(*SAVED).exists()
        copied_farm = _farm(copy, "main", base / "farm")
        ok(copy, "commit", "-b", "copied", copied_farm)
        assert _cat(copy, "copied", "a") == b"A" * SIZE
        assert _cat(copy, "copied", "b") == b"B" * SIZE
        # the copy listed its own objects/ again (and saved that), the original did not
        assert copy.joinpath(*SAVED).read_bytes() != repo.joinpath(*SAVED).read_bytes()
        _fsck_clean(copy)
        ok(repo, "commit", "-b", "original", farm)
        assert _cat(repo, "original", "a") == b"A" * SIZE
        _fsck_clean(repo)
    finally:
        shutil.rmtree(base)


# ----- two commits at once -----------------------------------------------------------------

_COMMITTER = r"""
import os, sys
sys.path.insert(0, sys.argv[3])
import store.inode_cache as inode_cache
inode_cache._SETTLED_NS = -(10**12)
from sapwood.cli.main import main
for n in range(int(sys.argv[4])):
    code = main(["--repo", sys.argv[1], "commit", "-b", f"{sys.argv[5]}{n}", sys.argv[2]])
    assert code == 0, code
"""


def test_two_farm_commits_at_once_each_record_their_own_bytes(tmp_path: Path) -> None:
    """Two processes re-commit two farms (same sizes, other bytes) in turns while a third
    adds objects: every commit reads back as its farm."""
    repo = _repo_with(tmp_path, {"a": b"A" * SIZE, "b": b"B" * SIZE})
    ok(
        repo,
        "commit",
        "-b",
        "other",
        _write(tmp_path / "other", {"a": b"B" * SIZE, "b": b"A" * SIZE}),
    )
    farms = [_farm(repo, "main", tmp_path / "f1"), _farm(repo, "other", tmp_path / "f2")]
    adder = tmp_path / "adder"
    adder.mkdir()
    for n in range(4):
        (adder / f"x{n}").write_bytes(os.urandom(SIZE))
    procs = [_committer(repo, farm, f"farm{n}-", tmp_path) for n, farm in enumerate(farms)]
    procs.append(_committer(repo, adder, "adder-", tmp_path))
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    for n, want in enumerate([b"A", b"B"]):
        for round_ in range(4):
            assert _cat(repo, f"farm{n}-{round_}", "a") == want * SIZE
    _fsck_clean(repo)


def _write(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def _committer(repo: Path, farm: Path, branch: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _COMMITTER, str(repo), str(farm), str(ROOT), "4", branch],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


# ----- fork ---------------------------------------------------------------------------------

_FORKED = r"""
import gc, os, sys, warnings
from pathlib import Path
sys.path.insert(0, sys.argv[2])
warnings.simplefilter("ignore", ResourceWarning)
from store import RepoMode, Repository
from store.errors import SapwoodError, UsageError
from tests.helpers import commit_dir
base = Path(sys.argv[1]); path = base / "repo"
def src(tag):
    d = base / f"src-{tag}"; d.mkdir()
    for i in range(3): (d / f"f{i}").write_bytes(f"{tag}-{i}".encode() * 50)
    return d
repo = Repository.open(path)
for k in range(30):
    commit_dir(repo, src(f"b{k}"), branch=f"branch-{k:03d}")
r1, w1 = os.pipe(); r2, w2 = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        mine = Repository.open(path) if sys.argv[3] == "reopen" else repo
        with mine.snapshot() as snap:
            first = {n: snap.ref(n) for n in snap.refs()}
            os.write(w2, b"r"); os.read(r1, 1)
            try:
                again = {n: snap.ref(n) for n in snap.refs()}
            except SapwoodError as exc:
                print("damaged:", exc); os._exit(1)
    except UsageError as exc:  # a clear refusal, before anything is read, is a defence too
        os.write(w2, b"r"); os.read(r1, 1)
        print("refused:", exc); os._exit(0)
    print("same" if again == first else "changed"); os._exit(0 if again == first else 1)
os.read(r2, 1)
repo.close()
writer = Repository.open(path)
for k in range(30):
    commit_dir(writer, src(f"w{k}"), branch=f"branch-{k:03d}")
writer.close()
os.write(w1, b"g")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.parametrize(
    "child",
    [
        "reopen",  # attack21 2
        pytest.param(
            "inherited",
        ),
    ],
)
def test_a_forked_childs_snapshot_survives_its_parent_closing(tmp_path: Path, child: str) -> None:
    """A library user opens a repository, forks; the child opens the same repository
    (reopen) or uses the object it inherited (inherited) and reads in a snapshot while
    the parent closes its own and commits on: the child's snapshot reads what it read
    before, or the child is refused clearly (UsageError) before it reads anything."""
    Repository.init(tmp_path / "repo", RepoMode.BARE_USER).close()
    done = subprocess.run(
        [sys.executable, "-c", _FORKED, str(tmp_path), str(ROOT), child],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    repo = Repository.open(tmp_path / "repo")
    try:
        assert fsck(repo, all_objects=True).clean
    finally:
        repo.close()


_POOL = r"""
import multiprocessing, os, sys, warnings
from pathlib import Path
sys.path.insert(0, sys.argv[2])
warnings.simplefilter("ignore", ResourceWarning)
from store import RepoMode, Repository
from store.fsck import fsck
from tests.helpers import commit_dir
base = Path(sys.argv[1]); path = base / "repo"
def src(tag):
    d = base / f"src-{tag}"; d.mkdir()
    for i in range(20): (d / f"f{i}").write_bytes(f"{tag}-{i}".encode() * 50)
    return d
def work(tag):
    repo = Repository.open(path)
    try:
        for k in range(3):
            commit_dir(repo, src(f"{tag}-{k}"), branch=f"{tag}-{k}")
        return sorted(repo.refs())
    finally:
        repo.close()
if __name__ == "__main__":
    tags = ["c1", "c2", "c3", "c4"]
    with multiprocessing.get_context("fork").Pool(2) as pool:  # nothing open at the fork
        pool.map(work, tags)
    repo = Repository.open(path)
    refs = set(repo.refs())
    assert refs >= {f"{t}-{k}" for t in tags for k in range(3)}, refs
    assert fsck(repo, all_objects=True).clean
    repo.close()
    print("ok")
"""


def test_fork_workers_that_open_the_repository_themselves_commit_soundly(tmp_path: Path) -> None:
    """multiprocessing with fork, the parent holding no repository open at the fork:
    four workers in two processes commit three times each; all land, fsck clean."""
    Repository.init(tmp_path / "repo", RepoMode.BARE_USER).close()
    done = subprocess.run(
        [sys.executable, "-c", _POOL, str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


# ----- prune killed, prune beside a commit ------------------------------------------------


def _files_tree(root: Path, count: int, tag: str) -> Path:
    root.mkdir()
    for n in range(count):
        (root / f"f{n}").write_bytes(f"{tag}-{n}\n".encode())
    return root


def _object_files(repo: Path) -> int:
    return sum(1 for _ in (repo / "objects").rglob("*.file"))


@pytest.mark.long  # ~8 s quiet, 20 s on a loaded machine
def test_prune_killed_at_random_points_deletes_nothing_live(tmp_path: Path) -> None:
    """Garbage of 1,500 files each round, prune --refs-only SIGKILLed after a random
    delay: fsck --all clean after each kill, every live file reads back, and the next
    prune ends the job (only the live objects left)."""
    seed = random.randrange(1 << 30)
    chance = random.Random(seed)
    repo = tmp_path / "repo"
    ok(repo, "init", "--mode", "bare-user")
    ok(repo, "commit", "-b", "live", _files_tree(tmp_path / "live", 40, "live"))
    live_objects = _object_files(repo)
    killed = 0
    for round_ in range(3):
        ok(repo, "commit", "-b", "g", _files_tree(tmp_path / f"g{round_}", 1500, f"g{round_}"))
        ok(repo, "refs", "--delete", "g")
        proc = subprocess.Popen(
            sapwood_argv("prune", "--refs-only", repo=repo),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(chance.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait(timeout=30) == -signal.SIGKILL
        _fsck_clean(repo)
        for n in range(0, 40, 7):
            assert _cat(repo, "live", f"f{n}") == f"live-{n}\n".encode(), seed
    assert killed, "no prune was still running when killed"
    # the garbage of the last round committed again over what the killed prune left
    # (index rows gone, files maybe not): all of it whole, and kept by the next prune
    ok(repo, "commit", "-b", "back", tmp_path / "g2")
    ok(repo, "prune", "--refs-only")
    _fsck_clean(repo)
    for n in range(0, 1500, 101):
        assert _cat(repo, "back", f"f{n}") == f"g2-{n}\n".encode(), seed
    ok(repo, "refs", "--delete", "back")
    ok(repo, "prune", "--refs-only")
    _fsck_clean(repo)
    assert _object_files(repo) == live_objects, seed


_COMMIT_LOOP = r"""
import sys
sys.path.insert(0, sys.argv[3])
from sapwood.cli.main import main
for n in range(int(sys.argv[4])):
    assert main(["--repo", sys.argv[1], "commit", "-b", f"kept{n}", sys.argv[2]]) == 0
"""


@pytest.mark.long  # ~4 s quiet
def test_a_commit_beside_prune_keeps_every_object_it_names(tmp_path: Path) -> None:
    """The garbage that prune removes holds exactly the files a commit running at the
    same time records (the commit finds them in the index, writes nothing): after both,
    every kept commit reads back whole and fsck is clean."""
    repo = tmp_path / "repo"
    ok(repo, "init", "--mode", "bare-user")
    tree = _files_tree(tmp_path / "same", 800, "same")
    for round_ in range(3):
        ok(repo, "commit", "-b", "g", tree)
        ok(repo, "refs", "--delete", "g")
        committer = subprocess.Popen(
            [sys.executable, "-c", _COMMIT_LOOP, str(repo), str(tree), str(ROOT), "2"],
            stderr=subprocess.PIPE,
            text=True,
        )
        pruned = subprocess.run(
            sapwood_argv("prune", "--refs-only", repo=repo), capture_output=True, timeout=60
        )
        _, err = committer.communicate(timeout=60)
        assert committer.returncode == 0 and pruned.returncode == 0, err
        for n in range(2):
            ok(repo, "checkout", "-U", f"kept{n}", tmp_path / f"out{round_}-{n}")
            for k in range(0, 800, 97):
                out = tmp_path / f"out{round_}-{n}" / f"f{k}"
                assert out.read_bytes() == f"same-{k}\n".encode()
        _fsck_clean(repo)
        for n in range(2):
            ok(repo, "refs", "--delete", f"kept{n}")


_FORK_WHILE_A_THREAD_OPENS = r"""
import os, signal, sys, threading, warnings
from pathlib import Path
sys.path.insert(0, sys.argv[2])
warnings.simplefilter("ignore", ResourceWarning)
from store import Repository
base = Path(sys.argv[1])
stop = threading.Event()
def churn():
    while not stop.is_set():
        repo = Repository.open(base / "a"); repo.refs(); repo.close()
thread = threading.Thread(target=churn); thread.start()
hung = bad = 0
try:
    for _ in range(40):
        pid = os.fork()
        if pid == 0:
            signal.alarm(2)
            try:
                repo = Repository.open(base / "b"); repo.refs(); repo.close()
            except BaseException as exc:
                os.write(2, f"child: {exc!r}\n".encode()); os._exit(3)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        hung += code == -signal.SIGALRM
        bad += code not in (0, -signal.SIGALRM)
        if hung or bad:
            break
finally:
    stop.set(); thread.join()
print(f"hung {hung} bad {bad}")
"""


def test_a_child_forked_while_another_thread_opens_a_repository_does_not_hang(
    tmp_path: Path,
) -> None:
    """A library user's thread opens and closes one repository in a loop; the main thread
    forks children that open another: a child forked while the thread held
    SharedEnv._lock (a plain Lock, copied locked) waits on it for ever. 35 children of
    60 hung when shown by hand."""
    for name in ("a", "b"):
        Repository.init(tmp_path / name, RepoMode.BARE_USER).close()
    done = subprocess.run(
        [sys.executable, "-c", _FORK_WHILE_A_THREAD_OPENS, str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hung 0 bad 0", done.stdout + done.stderr


# ----- the real clock ---------------------------------------------------------------------


def test_the_real_settling_rule_saves_late_and_a_change_right_after_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No shortcut: right after objects were added nothing is saved; 2.2 s later a farm
    commit saves the listing; a prune and new same-sized objects made at once after it
    (within the same clock tick as the save, as far as this machine goes) are seen."""
    monkeypatch.setattr(inode_cache, "_SETTLED_NS", 2 * 10**9)
    repo = _repo_with(tmp_path, {"a": b"A" * SIZE})
    farm = _farm(repo, "main", tmp_path / "farm")
    ok(repo, "commit", "-b", "early", farm)
    assert not repo.joinpath(*SAVED).exists()
    time.sleep(2.2)
    ok(repo, "commit", "-b", "late", farm)
    assert repo.joinpath(*SAVED).exists()
    shutil.rmtree(farm)
    for ref in ok(repo, "refs").split():
        ok(repo, "refs", "--delete", ref)
    ok(repo, "prune", "--refs-only")
    source = _write(tmp_path / "b", {"a": b"B" * SIZE})
    ok(repo, "commit", "-b", "b", source)
    farm = _farm(repo, "b", tmp_path / "farm-b")
    ok(repo, "commit", "-b", "b-again", farm)
    assert _cat(repo, "b-again", "a") == b"B" * SIZE
    _fsck_clean(repo)


# ----- objects/ on another filesystem ---------------------------------------------------


@pytest.fixture
def two_tmpfs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two fresh 20 MiB tmpfs (root only; their inode numbers counted from small ones),
    unmounted for sure."""
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    mounted = []
    try:
        for name in ("fs-a", "fs-b"):
            where = tmp_path / name
            where.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "x8", str(where)], check=True)
            mounted.append(where)
        yield mounted[0], mounted[1]
    finally:
        for where in mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)


def test_objects_on_another_filesystem_never_match_a_farm_file_by_inode_number(
    two_tmpfs: tuple[Path, Path],
) -> None:
    """objects/ and tmp/ moved to a bigger disk and symlinked (commits work: staging
    and objects share that disk). ObjectInodes.device() and directory_keys() lstat the
    symlink: the device they take is the repository's, not the objects'. A farm file on
    the repository's filesystem (a hardlinked checkout of another repository: more than
    one link, mtime 0, an object's bits and size) whose inode NUMBER is an object's on
    the other filesystem is recorded as that object: the wrong bytes, fsck clean."""
    here, there = two_tmpfs
    repo = here / "repo"
    ok(repo, "init", "--mode", "bare-user")
    (there / "junk").mkdir()
    for n in range(1000):  # the object's inode number above any used on `here` yet
        (there / "junk" / str(n)).touch()
    for name in ("objects", "tmp"):
        shutil.move(repo / name, there / name)
        os.symlink(there / name, repo / name)
    ok(repo, "commit", "-b", "main", _write(here / "src", {"secret": b"X" * SIZE}))
    [obj] = (there / "objects").rglob("*.file")
    target = obj.stat().st_ino
    (here / "junk").mkdir()
    farm = here / "farm"
    farm.mkdir()
    n = 0
    while True:  # inode numbers of a fresh tmpfs come in order: stop one short
        filler = here / "junk" / str(n)
        filler.touch()
        n += 1
        if filler.stat().st_ino >= target - 1:
            break
    mine = farm / "f"
    mine.write_bytes(b"Y" * SIZE)
    if mine.stat().st_ino != target:
        pytest.skip("could not steer the inode number")
    mine.chmod(0o644)
    os.link(mine, farm / "g")
    os.utime(mine, ns=(0, 0))
    ok(repo, "commit", "-b", "farm", farm)
    _fsck_clean(repo)
    assert _cat(repo, "farm", "f") == b"Y" * SIZE


_SNAPSHOT_ACROSS_FORK = r"""
import os, sys, warnings
from pathlib import Path
sys.path.insert(0, sys.argv[2])
warnings.simplefilter("ignore", ResourceWarning)
from store import Repository
from store.errors import SapwoodError, UsageError
from tests.helpers import commit_dir
base = Path(sys.argv[1]); path = base / "repo"
def src(tag):
    d = base / f"src-{tag}"; d.mkdir()
    for i in range(3): (d / f"f{i}").write_bytes(f"{tag}-{i}".encode() * 50)
    return d
repo = Repository.open(path)
for k in range(30):
    commit_dir(repo, src(f"b{k}"), branch=f"branch-{k:03d}")
r1, w1 = os.pipe(); r2, w2 = os.pipe()
scope = repo.snapshot(); snap = scope.__enter__()
first = {n: snap.ref(n) for n in snap.refs()}
pid = os.fork()
if pid == 0:
    os.write(w2, b"r"); os.read(r1, 1)
    try:
        again = {n: snap.ref(n) for n in snap.refs()}
    except UsageError as exc:
        print("refused:", exc); os._exit(0)
    except SapwoodError as exc:
        print("damaged:", exc); os._exit(1)
    print("same" if again == first else "changed"); os._exit(0 if again == first else 1)
os.read(r2, 1)
scope.__exit__(None, None, None)
repo.close()
writer = Repository.open(path)
for k in range(30):
    commit_dir(writer, src(f"w{k}"), branch=f"branch-{k:03d}")
writer.close()
os.write(w1, b"g")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_snapshot_begun_before_a_fork_is_not_read_by_the_child(tmp_path: Path) -> None:
    """The parent forks inside ``with repo.snapshot()``; the child reads that snapshot
    after the parent ended it and writers went on: its reader slot was the parent's,
    cleared when the parent ended it. The child must be refused (UsageError) or read
    what it read before; today it reads reused pages."""
    Repository.init(tmp_path / "repo", RepoMode.BARE_USER).close()
    done = subprocess.run(
        [sys.executable, "-c", _SNAPSHOT_ACROSS_FORK, str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ----- the repository lock across fork ----------------------------------------------------

_POOL_DURING_A_COMMIT = r"""
import multiprocessing, subprocess, sys, threading, time, warnings
from pathlib import Path
sys.path.insert(0, sys.argv[2])
warnings.simplefilter("ignore", ResourceWarning)
from store import Repository
from tests.helpers import commit_dir, sapwood_argv
base = Path(sys.argv[1]); path = base / "repo"
src = base / "src"; src.mkdir()
for i in range(3000): (src / f"f{i}").write_bytes(b"x%d" % i)
def worker(seconds):
    time.sleep(seconds)
def commit():
    repo = Repository.open(path); commit_dir(repo, src); repo.close()
thread = threading.Thread(target=commit); thread.start()
while not any((path / "tmp").glob("staging-*")):  # the commit holds the lock now
    time.sleep(0.002)
pool = multiprocessing.get_context("fork").Pool(1)  # a worker pool made meanwhile
thread.join()  # the commit is over
pool.apply_async(worker, (60,))
try:
    subprocess.run(sapwood_argv("prune", "--refs-only", repo=path), timeout=10, check=True)
    print("pruned")
except subprocess.TimeoutExpired:
    print("prune waited 10 s for the lock of a commit that had ended")
finally:
    pool.terminate(); pool.join()
"""


@pytest.mark.long  # ~10 s while it fails
def test_a_worker_forked_during_a_commit_does_not_keep_the_repository_lock(
    tmp_path: Path,
) -> None:
    """A library user's thread commits; meanwhile the main thread makes a fork-based
    worker pool. The lock is an flock on the repository directory released only by
    closing its fd (store/locking.py): the workers' copies keep it, so after the commit
    ended, prune waited for as long as the workers lived (attack21 9): the lock is now
    unlocked before its fd is closed."""
    Repository.init(tmp_path / "repo", RepoMode.BARE_USER).close()
    done = subprocess.run(
        [sys.executable, "-c", _POOL_DURING_A_COMMIT, str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout.strip().splitlines()[-1:] == ["pruned"], done.stdout + done.stderr


@pytest.fixture
def coarse_fs(tmp_path: Path) -> Iterator[Path]:
    """A small ext4 of 128-byte inodes (root only): timestamps of whole seconds, no
    nanoseconds; unmounted (and its loop device let go) for sure."""
    if not IS_ROOT or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root and mkfs.ext4")
    image = tmp_path / "coarse.img"
    with open(image, "wb") as out:
        out.truncate(32 << 20)
    mkfs = ["mkfs.ext4", "-q", "-F", "-I", "128", "-E", "nodiscard", str(image)]
    subprocess.run(mkfs, check=True, capture_output=True)
    where = tmp_path / "coarse"
    where.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


@pytest.mark.long  # a 2.2 s wait and a loop mount (minutes on a machine swamped by I/O)
def test_a_change_within_the_second_of_a_save_shows_on_whole_second_timestamps(
    coarse_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On timestamps of whole seconds two changes within one second leave one ctime:
    the real 2 s rule must still make a change right after a save show. The listing
    saved; in the same second everything pruned and a new same-sized object made; its
    farm's re-commit records the new bytes."""
    monkeypatch.setattr(inode_cache, "_SETTLED_NS", 2 * 10**9)
    repo = _repo_with(coarse_fs, {"a": b"A" * SIZE})
    assert os.stat(repo / "objects").st_ctime_ns % 10**9 == 0  # whole seconds indeed
    farm = _farm(repo, "main", coarse_fs / "farm")
    time.sleep(2.2)
    ok(repo, "commit", "-b", "late", farm)
    assert repo.joinpath(*SAVED).exists()
    saved_at = time.time()
    shutil.rmtree(farm)
    for ref in ok(repo, "refs").split():
        ok(repo, "refs", "--delete", ref)
    ok(repo, "prune", "--refs-only")
    ok(repo, "commit", "-b", "b", _write(coarse_fs / "b", {"a": b"B" * SIZE}))
    farm = _farm(repo, "b", coarse_fs / "farm-b")
    ok(repo, "commit", "-b", "b-again", farm)
    assert _cat(repo, "b-again", "a") == b"B" * SIZE, time.time() - saved_at
    _fsck_clean(repo)
