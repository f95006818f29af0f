"""The tests' one set of helpers.

- running sapwood: ``cli`` in this process (fast), ``run`` as a separate process,
  ``run_as_user`` as that process under a real unprivileged user (built on ``run``);
- building sources and commits: ``write_tree``, ``commit_dir``, ``commit_files``,
  ``build_rich_tree``, ``cli_commits`` (by the command line); reading them back:
  ``read_disk_tree``, ``read_commit_tree``, ``newest_patch`` (log -p);
- mounts: the ``mount`` fixture of conftest.py (``Mounts``: a foreground daemon or a
  background mount), which unmounts for sure and checks that nothing is left mounted;
- the index written behind the store's back: ``raw_index`` and its short forms.
"""

from __future__ import annotations

import atexit
import errno
import functools
import gc
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

from fs.commit import CommitRequest, Layer, LayerKind, make_commit
from fs.mounts import mounted_at
from sapwood.cli.main import main
from store import (
    Commit,
    DirEntry,
    DirMeta,
    DirTree,
    FileHeader,
    ObjectId,
    ObjectType,
    RepoMode,
    Repository,
    read_xattrs,
)
from store.index_env import Access, SharedEnv

IS_ROOT = os.geteuid() == 0
NOBODY = 65534  # the unprivileged user of run_as_user and as_user
ROOT = Path(__file__).resolve().parent.parent
SAPWOOD = [sys.executable, "-m", "sapwood.cli.main"]
# security.capability of ping: cap_net_raw=ep (VFS_CAP_REVISION_2).
PING_CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")

Argument = str | os.PathLike[str]


# ----- running sapwood -------------------------------------------------------------------
@dataclass
class Result:
    code: int
    out: str
    err: str
    raw: bytes


CONSOLE_SCRIPT = Path(sys.executable).parent / "sapwood"  # the command users run (not -m)


def console_pull_with_hook(
    tmp_path: Path, sitecustomize: str, env: Mapping[str, str], **popen: Any
) -> subprocess.CompletedProcess[str]:
    """`sapwood pull o main` of a repository that does not exist, through the console
    script, with ``sitecustomize`` loaded before anything (a hook that signals the
    process at a point of its start-up) and ``env`` beside it."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(sitecustomize)
    environ = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(hook), **env}
    argv = [str(CONSOLE_SCRIPT), "--repo", str(tmp_path / "none"), "pull", "o", "main"]
    return subprocess.run(
        argv, capture_output=True, text=True, env=environ, cwd=ROOT, timeout=60, **popen
    )


def cli(*args: Argument) -> Result:
    """Run sapwood in this process (fast); use run() for real processes."""
    raw, err = io.BytesIO(), io.StringIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    out.flush()
    data = raw.getvalue()
    return Result(code, data.decode("utf-8", "surrogateescape"), err.getvalue(), data)


def sapwood_argv(
    *args: Argument, repo: Argument | None = None, python: str = sys.executable
) -> list[str]:
    """The command line of ``sapwood [--repo REPO] ARGS``, for run() or a Popen."""
    repo_args = [] if repo is None else ["--repo", str(repo)]
    return [python, "-m", "sapwood.cli.main", *repo_args, *map(str, args)]


@overload
def run(
    *args: Argument,
    repo: Argument | None = ...,
    text: Literal[False] = ...,
    timeout: float = ...,
    env: Mapping[str, str] | None = ...,
    prefix: list[str] | None = ...,
    cwd: Argument | None = ...,
    python: str = ...,
    check: bool = ...,
) -> subprocess.CompletedProcess[bytes]: ...


@overload
def run(
    *args: Argument,
    repo: Argument | None = ...,
    text: Literal[True],
    timeout: float = ...,
    env: Mapping[str, str] | None = ...,
    prefix: list[str] | None = ...,
    cwd: Argument | None = ...,
    python: str = ...,
    check: bool = ...,
) -> subprocess.CompletedProcess[str]: ...


def run(
    *args: Argument,
    repo: Argument | None = None,
    text: bool = False,
    timeout: float = 600,
    env: Mapping[str, str] | None = None,
    prefix: list[str] | None = None,
    cwd: Argument | None = None,
    python: str = sys.executable,
    check: bool = False,
) -> subprocess.CompletedProcess[Any]:
    """Run sapwood as a separate process, as a user would; ``prefix`` goes before it
    (setpriv, say). Output is bytes unless ``text``; ``check``: it must succeed."""
    proc = subprocess.run(
        [*(prefix or []), *sapwood_argv(*args, repo=repo, python=python)],
        capture_output=True,
        text=text,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def spawn(*args: Argument, repo: Argument | None = None, **popen: Any) -> subprocess.Popen[Any]:
    """Start sapwood as a separate process and do not wait for it."""
    return subprocess.Popen(sapwood_argv(*args, repo=repo), **popen)


# ----- the unprivileged user ---------------------------------------------------------------
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
_USER_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}


@functools.cache
def user_python() -> str:
    """A python that uid 65534 can run, with sapwood importable.

    The project's .venv may live where that user cannot enter (root's home, say), so a
    world-readable copy is made in /var/tmp: a venv of Debian's python3 with the
    installed dependencies and the four packages copied in. One per test process
    (removed when it ends): concurrent test runs do not pull it from under each other.
    The dependencies are hard links where the file system allows (site-packages is
    ~340 MB: a copy took 10-30 s of the run, mostly reading pages evicted since); they
    are only read, and the chmod below changes nothing on a venv made with umask 022.
    """
    venv = Path(tempfile.mkdtemp(prefix="sapwood-user-venv-", dir="/var/tmp"))
    atexit.register(shutil.rmtree, venv, ignore_errors=True)
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    source = Path(sys.prefix) / "lib" / version / "site-packages"
    target = venv / "lib" / version / "site-packages"
    shutil.copytree(
        source,
        target,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(
            "__editable__*", "sapwood*", "pip*", "_pytest", "hypothesis*", "mypy*"
        ),
        copy_function=_link_or_copy,
    )
    for package in ("sapwood", "store", "fs", "mountd"):
        shutil.copytree(
            ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(["chmod", "-R", "a+rX", str(venv)], check=True)
    return str(venv / "bin" / "python")


def _link_or_copy(source: str, target: str) -> None:
    """A hard link of ``source`` at ``target``, or a copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def user_dir() -> Path:
    """A fresh directory owned by the unprivileged user, in a place it can reach."""
    path = Path(tempfile.mkdtemp(prefix="sapwood-user-", dir="/tmp"))
    os.chown(path, NOBODY, NOBODY)
    return path


def give_to_user(path: Path) -> None:
    """``path`` and everything below it now belongs to the unprivileged user."""
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(path)], check=True)


def run_as_user(*args: Argument, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``sapwood ARGS`` as uid/gid 65534 with no supplementary groups."""
    return run(
        *args,
        text=True,
        prefix=AS_NOBODY,
        python=user_python(),
        env=_USER_ENV,
        cwd=cwd or "/tmp",
    )


def as_user(*argv: Argument, cwd: Path | None = None, timeout: float = 60) -> str:
    """Run a plain command as the unprivileged user; it must succeed. Its stdout."""
    result = subprocess.run(
        [*AS_NOBODY, *map(str, argv)], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# ----- sources and commits -----------------------------------------------------------------
def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Create ``root`` (if need be) holding ``{path: content}``; a str content '->T'
    makes a symlink to T. Returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str) and content.startswith("->"):
            path.symlink_to(content[2:])
        else:
            path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def commit_dir(repo: Repository, source: Path, branch: str = "main", **request: Any) -> ObjectId:
    """Commit the directory ``source`` to ``branch``; ``request`` are CommitRequest's
    other fields (subject=, timestamp=, metadata=, ...)."""
    layers = [Layer(LayerKind.DIR, str(source))]
    return make_commit(repo, CommitRequest(branch, layers, **request)).commit_id


def commit_files(
    repo: Repository,
    root: Path,
    files: Mapping[str, str | bytes],
    branch: str = "main",
    **request: Any,
) -> ObjectId:
    """write_tree(root, files), then commit it to ``branch``."""
    return commit_dir(repo, write_tree(root, files), branch, **request)


def commit_trees(
    repo: Repository, base: Path, /, **trees: Mapping[str, str | bytes]
) -> dict[str, ObjectId]:
    """Each ``name={path: content}`` written to ``base/name`` and committed to branch
    ``name``; the commit ids by name."""
    return {name: commit_files(repo, base / name, files, name) for name, files in trees.items()}


def cli_commits(repo: Path, *trees: Path, branch: str = "main") -> Path:
    """``sapwood init`` at ``repo``, then each tree committed to ``branch`` with the
    command line, in turn, at timestamps 1, 2, ...; ``repo``."""
    assert cli("--repo", repo, "init").code == 0
    for timestamp, tree in enumerate(trees, 1):
        done = cli("--repo", repo, "commit", "-b", branch, "--timestamp", str(timestamp), tree)
        assert done.code == 0, done.err
    return repo


def newest_patch(repo: Path, rev: str = "main") -> bytes:
    """What ``log -p REV`` shows of REV itself: its header and its patch."""
    shown = cli("--repo", repo, "log", "-p", rev)
    assert shown.code == 0, shown.err
    return shown.raw.split(b"\ncommit ")[0] + b"\n"


def build_rich_tree(root: Path, setuid: bool = True) -> None:
    """A source tree with every kind of entry a commit must keep exactly."""
    root.mkdir()
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc" / "shadow").chmod(0o640)
    (root / "empty-dir").mkdir()
    (root / "empty-file").write_bytes(b"")
    (root / "usr" / "bin").mkdir(parents=True)
    ping = root / "usr" / "bin" / "ping"
    ping.write_bytes(b"\x7fELF ping binary" * 100)
    ping.chmod(0o755)
    (root / "usr" / "bin" / "big").write_bytes(os.urandom(5 << 20))  # above SMALL_FILE
    (root / "usr" / "bin" / "sh").symlink_to("dash")
    (root / "usr" / "bin" / "dash").write_bytes(b"dash" * 1000)
    (root / "usr" / "bin" / "dash").chmod(0o755)
    (root / "lib").symlink_to("usr/lib")
    (root / "dangling").symlink_to("/nonexistent/target")
    (root / "dup-a").write_text("same content\n")
    (root / "dup-b").write_text("same content\n")
    (root / "private").mkdir(mode=0o700)
    (root / "private").chmod(0o700)
    (root / "unicode-é").write_text("non-ascii name\n")
    os.setxattr(root / "etc" / "passwd", "user.comment", b"hello")
    os.setxattr(root / "empty-dir", "user.dir-note", b"\x00\x01binary")
    if IS_ROOT:
        os.setxattr(ping, "security.capability", PING_CAPABILITY)
        os.chown(root / "etc" / "shadow", 0, 42)
        os.chown(root / "private", 1234, 5678)
        os.lchown(root / "dangling", 1234, 5678)
        if setuid:
            su = root / "usr" / "bin" / "su"
            su.write_bytes(b"su binary")
            os.chown(su, 0, 0)
            su.chmod(0o4755)


def big_directory_commit(repo: Repository, count: int) -> ObjectId:
    """A commit whose root holds ``count`` files (one shared object), built directly."""
    with repo.transaction() as txn:
        file_id = txn.write_file(FileHeader(0, 0, stat.S_IFREG | 0o644), b"same\n")
        meta = txn.write_dirmeta(DirMeta(0, 0, stat.S_IFDIR | 0o755))
        tree = DirTree.build({f"f{n:06d}".encode(): file_id for n in range(count)}, {})
        tree_id = txn.write_dirtree(tree)
        commit_id = txn.write_commit(Commit(tree_id, meta, None, 0))
        txn.set_ref("big", commit_id)
    return commit_id


def many_directories_commit(
    repo: Repository, dirs: int, files: int, distinct: int | None = None
) -> ObjectId:
    """``dirs`` directories of ``files`` files each (ref ``many``), built directly.

    File ``n`` of directory ``d`` holds ``f"{k}\\n"`` with k = (d * files + n) % distinct;
    by default every file is distinct.
    """
    distinct = distinct or dirs * files
    with repo.transaction() as txn:
        meta = txn.write_dirmeta(DirMeta(0, 0, stat.S_IFDIR | 0o755))
        header = FileHeader(0, 0, stat.S_IFREG | 0o644)
        contents = [txn.write_file(header, f"{k}\n".encode()) for k in range(distinct)]
        subdirs = {}
        for d in range(dirs):
            names = {
                f"f{n:05d}".encode(): contents[(d * files + n) % distinct] for n in range(files)
            }
            tree = txn.write_dirtree(DirTree.build(names, {}))
            subdirs[f"d{d:04d}".encode()] = DirEntry(tree, meta)
        tree_id = txn.write_dirtree(DirTree.build({}, subdirs))
        commit_id = txn.write_commit(Commit(tree_id, meta, None, 0))
        txn.set_ref("many", commit_id)
    return commit_id


def empty_commit(
    repo: Repository, branch: str, timestamp: int, subject: str, parent: ObjectId | None
) -> ObjectId:
    """A commit of an empty root on ``branch``, built directly."""
    with repo.transaction() as txn:
        meta = txn.write_dirmeta(DirMeta(0, 0, stat.S_IFDIR | 0o755))
        tree = txn.write_dirtree(DirTree())
        commit_id = txn.write_commit(Commit(tree, meta, parent, timestamp, subject))
        txn.set_ref(branch, commit_id)
    return commit_id


# ----- reading trees back -------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    kind: str  # "d", "-", "l"
    mode: int  # permission bits
    uid: int
    gid: int
    data: bytes  # file content or symlink target; b"" for directories
    xattrs: tuple[tuple[bytes, bytes], ...]


Tree = dict[str, Entry]


def read_disk_tree(root: Path) -> Tree:
    """Everything a commit should record of a directory tree, keyed by '/path'."""
    paths = [root, *sorted(root.rglob("*"))]
    tree: Tree = {}
    for path in paths:
        st = os.lstat(path)
        key = "/" + path.relative_to(root).as_posix() if path != root else "/"
        if stat.S_ISDIR(st.st_mode):
            data, kind = b"", "d"
        elif stat.S_ISLNK(st.st_mode):
            data, kind = os.fsencode(os.readlink(path)), "l"
        else:
            data, kind = path.read_bytes(), "-"
        xattrs = tuple(p for p in read_xattrs(path) if p[0] != b"user.sapwoodmeta")
        tree[key] = Entry(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, data, xattrs)
    return tree


def as_mode_records(tree: Tree, mode: RepoMode) -> Tree:
    """What a repository of ``mode`` records of a source tree (bare-user-only keeps no owners)."""
    if mode is not RepoMode.BARE_USER_ONLY:
        return tree
    return {path: Entry(e.kind, e.mode, 0, 0, e.data, ()) for path, e in tree.items()}


def read_commit_tree(repo_path: Path, rev: str) -> Tree:
    """Read a commit back through the CLI: ls -R --json, then cat of every file."""
    listing = cli("--repo", repo_path, "ls", "-R", "--json", rev)
    assert listing.code == 0, listing.err
    tree: Tree = {}
    for item in json.loads(listing.out):
        kind, mode = item["mode"][0], int(item["mode"][1:], 8)
        if kind == "-":
            data = cat_bytes(repo_path, rev, item["path"])
        else:
            data = item.get("target", "").encode("utf-8", "surrogateescape")
        xattrs = tuple(sorted((k.encode(), bytes.fromhex(v)) for k, v in item["xattrs"].items()))
        tree[item["path"]] = Entry(kind, mode, item["uid"], item["gid"], data, xattrs)
    return tree


def cat_bytes(repo_path: Path, rev: str, path: str) -> bytes:
    result = cli("--repo", repo_path, "cat", rev, path)
    assert result.code == 0, result.err
    return result.raw


# ----- filesystems and mounts ---------------------------------------------------------------
@contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (root only), unmounted afterwards."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def fill_inodes(disk: Path, left: int) -> Path:
    """All inodes of the filesystem at ``disk`` but ``left`` taken by empty files, made in
    the directory returned (its removal gives them back)."""
    fillers = disk / "inodes"
    fillers.mkdir()
    made = 0
    try:
        while True:
            (fillers / str(made)).touch()
            made += 1
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    for index in range(made - left, made):
        (fillers / str(index)).unlink()
    return fillers


def mount_fstype(path: Path) -> str | None:
    """The type of what is mounted at ``path`` (the topmost mount), from the mount table;
    ``path`` itself is not looked at (that would ask the daemon, and make the kernel
    keep the answer)."""
    entry = mounted_at(path)
    return None if entry is None else entry.fstype


def wait_for(predicate: Callable[[], object], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def force_unmount(mnt: Path) -> None:
    """Whatever is mounted at ``mnt`` goes (the tests' own clean-up, not sapwood's)."""
    while mount_fstype(mnt) is not None:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
        if mount_fstype(mnt) is not None:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
            if mount_fstype(mnt) is not None:
                raise AssertionError(f"cannot unmount {mnt}")


@dataclass
class Daemon:
    """A ``sapwood mount -f`` daemon: its process and what it logged."""

    process: subprocess.Popen[bytes]
    log_path: Path
    mountpoint: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def peak_rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")


@contextmanager
def mount_daemon(repo_path: Path, mnt: Path, *args: Argument) -> Iterator[Daemon]:
    """``sapwood mount -f ARGS MNT`` until the test is done (a foreground daemon, so the
    test sees its pid and log). Afterwards the daemon is ended (killed if it hangs),
    ``mnt`` is unmounted for sure, and nothing may be left mounted there."""
    mnt.mkdir(exist_ok=True)
    log_path = mnt.parent / f"{mnt.name}.log"
    with open(log_path, "wb") as log_file:
        process = spawn(
            "mount", "-f", *args, mnt, repo=repo_path, stdout=subprocess.DEVNULL, stderr=log_file
        )
    daemon = Daemon(process, log_path, mnt)
    try:
        mounted = wait_for(lambda: mount_fstype(mnt) == "fuse.sapwood" or not daemon.alive())
        assert mounted and daemon.alive(), daemon.log()
        yield daemon
    finally:
        _stop(process)
        force_unmount(mnt)
        assert mount_fstype(mnt) is None, f"{mnt} is still mounted"


@contextmanager
def background_mount(repo_path: Path, mnt: Path, *args: Argument) -> Iterator[Path]:
    """``sapwood mount ARGS MNT`` (the daemon goes to the background), which must succeed;
    afterwards ``sapwood umount MNT``, then ``mnt`` is unmounted for sure, and nothing
    may be left mounted there."""
    mnt.mkdir(exist_ok=True)
    result = run("mount", *args, mnt, repo=repo_path, text=True, timeout=120)
    try:
        assert result.returncode == 0, result.stderr
        yield mnt
    finally:
        run("umount", mnt, repo=repo_path, timeout=120)
        force_unmount(mnt)
        assert mount_fstype(mnt) is None, f"{mnt} is still mounted"


class Mounts:
    """The ``mount`` fixture: mounts made by one test, each undone when the test ends."""

    def __init__(self, stack: ExitStack, base: Path) -> None:
        self._stack = stack
        self._base = base

    def foreground(self, repo_path: Path, *args: Argument, mnt: Path | None = None) -> Daemon:
        """A ``sapwood mount -f`` daemon the test can see (pid, log); see mount_daemon."""
        mnt = mnt or self._base / "mnt"
        return self._stack.enter_context(mount_daemon(repo_path, mnt, *args))

    def background(self, repo_path: Path, *args: Argument, mnt: Path | None = None) -> Path:
        """A mount as a user makes it, ``sapwood mount ARGS MNT``; see background_mount."""
        mnt = mnt or self._base / "mnt"
        return self._stack.enter_context(background_mount(repo_path, mnt, *args))


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read_through(path: Path, seconds: float = 10) -> tuple[bool, bytes, float]:
    """(succeeded, bytes read, seconds taken) of ``cat PATH``, given up after ``seconds``."""
    return run_briefly(["cat", str(path)], seconds)


def run_briefly(argv: list[str], seconds: float = 10) -> tuple[bool, bytes, float]:
    """(succeeded, output, seconds taken) of a command, given up after ``seconds``.

    A process waiting on a hung FUSE daemon cannot even be killed, so it is not waited
    for: it ends when the test's clean-up kills the daemon.
    """
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        reader = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL)
        while reader.poll() is None and time.monotonic() - started < seconds:
            time.sleep(0.01)
        taken = time.monotonic() - started
        if reader.returncode is None:
            reader.kill()
        out.seek(0)
        return reader.returncode == 0, out.read(), taken


# ----- the index behind the store's back ----------------------------------------------------
@contextmanager
def raw_index(repo_path: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A write transaction on the repository's LMDB index, below every check of store:
    the state a damaged index or an older sapwood could leave. Works whether or not a
    Repository of ``repo_path`` is open in this process."""
    shared = SharedEnv.acquire(repo_path / "index", Access.READ_WRITE)
    try:
        with shared.env.begin(write=True) as txn:
            yield txn, shared.dbs
    finally:
        shared.release()


def put_record(repo_path: Path, object_id: bytes, kind: ObjectType, payload: bytes) -> None:
    """Write (or overwrite) an object's index record as raw bytes."""
    put_raw_record(repo_path, object_id, kind.value + payload)


def put_raw_record(repo_path: Path, object_id: bytes, value: bytes) -> None:
    """Write (or overwrite) an object's index record, type tag included."""
    with raw_index(repo_path) as (txn, dbs):
        txn.put(object_id, value, db=dbs["objects"])


def delete_record(repo_path: Path, object_id: bytes) -> None:
    with raw_index(repo_path) as (txn, dbs):
        assert txn.delete(object_id, db=dbs["objects"])


def put_ref(repo_path: Path, name: str, target: bytes) -> None:
    """A ref to anything (a dirtree, a file, a missing object), as an old sapwood allowed."""
    with raw_index(repo_path) as (txn, dbs):
        txn.put(name.encode(), target, db=dbs["refs"])


def record_calls(monkeypatch: Any, owner: object, name: str) -> list[Any]:
    """Replace ``owner.name`` (through ``monkeypatch``) with a wrapper that appends its
    first argument to the returned list, then calls the original: how many times a
    cached read happened, and of what."""
    original = getattr(owner, name)
    seen: list[Any] = []

    def recorded(first: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(first)
        return original(first, *args, **kwargs)

    monkeypatch.setattr(owner, name, recorded)
    return seen


def open_fds() -> list[str]:
    """This process's open file descriptors, sorted, once a collection has run: a
    repository an earlier test dropped unclosed is closed when it is collected (its
    index's finalizer), which may otherwise happen in the middle of a test comparing
    its descriptors before and after."""
    gc.collect()
    return sorted(os.listdir("/proc/self/fd"))


def nest_dirs(
    top: Path | int, depth: int, name: str = "a", bottom: tuple[str, int] | None = None
) -> None:
    """``depth`` directories ``name`` below ``top`` (a path, or a directory fd the caller
    keeps), made by fds so that no path grows long; ``bottom``: a file (name, mode)
    holding "deep\\n" in the last one."""
    fd = os.dup(top) if isinstance(top, int) else os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        if bottom is not None:
            file_name, mode = bottom
            out = os.open(file_name, os.O_WRONLY | os.O_CREAT, mode, dir_fd=fd)
            try:
                os.write(out, b"deep\n")
            finally:
                os.close(out)
    finally:
        os.close(fd)
