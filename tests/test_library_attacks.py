"""Attacks on import sapwood as a library caller meets them: a forged stat cache, a
mount unmounted behind the caller's back, a failed mount under the caller's logging."""

from __future__ import annotations

import fcntl
import gc
import itertools
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import sapwood
from tests.helpers import commit_files, force_unmount, put_record, put_ref, write_tree


def _file_ids(
    repo: sapwood.Repository, commit_id: sapwood.ObjectId
) -> dict[bytes, sapwood.ObjectId]:
    root = sapwood.root_node(repo, commit_id)
    return {n.path: n.file for n in sapwood.walk(repo, root) if n.file is not None}


def _forge(repo: sapwood.Repository, source: Path, file_id: bytes) -> None:
    """Make the stat cache's record of ``source`` vouch for ``file_id`` instead."""
    st = os.stat(source)
    with repo.snapshot() as snap:
        record = snap.stat_cache(st)
    assert record is not None, "the first commit did not cache the file"
    with repo.transaction() as txn:
        txn.put_stat_cache(st, record.with_file_id(file_id))


@pytest.mark.parametrize("forged", ["commit", "dirtree"])
def test_a_forged_stat_cache_record_never_puts_another_object_in_a_commit(
    user_repo: sapwood.Repository, tmp_path: Path, forged: str
) -> None:
    source = tmp_path / "src"
    commit_files(user_repo, source, {"f": b"plain file\n"})
    os.utime(source / "f", ns=(10**18, 10**18 + 123))  # sub-second: the cache may vouch
    threading.Event().wait(1.1)  # cached only once its ctime is a second old
    first = sapwood.commit(user_repo, "main", source).commit_id
    honest = _file_ids(user_repo, first)
    other = first if forged == "commit" else user_repo.read_commit(first).tree
    _forge(user_repo, source / "f", other)

    again = sapwood.commit(user_repo, "main", source, subject="again").commit_id

    assert _file_ids(user_repo, again)[b"/f"] == honest[b"/f"]
    assert user_repo.read_file(honest[b"/f"]) == b"plain file\n"


@pytest.fixture
def committed(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(repository path, empty mount point); nothing is left mounted afterwards."""
    repo_path, mnt = tmp_path / "repo", tmp_path / "mnt"
    with sapwood.Repository.init(repo_path, sapwood.RepoMode.BARE_USER) as repo:
        commit_files(repo, tmp_path / "src", {"f": "content"})
    mnt.mkdir()
    try:
        yield repo_path, mnt
    finally:
        force_unmount(mnt)


def test_a_mount_unmounted_by_someone_else_ends_quietly_and_leaves_no_zombie(
    committed: tuple[Path, Path],
) -> None:
    repo_path, mnt = committed
    with sapwood.mount(repo_path, mnt, "main") as mounted:
        assert (mnt / "f").read_text() == "content"
        sapwood.unmount(mnt)  # sapwood umount, from another program
    assert not os.path.ismount(mnt)
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(mounted.pid, os.WNOHANG)


@pytest.fixture(params=["unconfigured", "a-format-of-its-own", "disabled"])
def callers_logging(request: pytest.FixtureRequest) -> Iterator[None]:
    """However the calling program set up logging (or turned it off)."""
    root = logging.getLogger()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if request.param == "a-format-of-its-own":
        root.addHandler(handler)
    elif request.param == "disabled":
        logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        root.removeHandler(handler)
        logging.disable(logging.NOTSET)


def test_a_failed_mount_says_why_whatever_the_callers_logging(
    committed: tuple[Path, Path], callers_logging: None
) -> None:
    repo_path, mnt = committed
    with pytest.raises(sapwood.MountError) as failed:
        sapwood.mount(repo_path, mnt, "main", options=["no_such_fuse_option"])
    # the line `sapwood mount` prints after "sapwood: error: ", nothing of the log's format
    assert str(failed.value) == f"cannot mount on {mnt}: fuse_session_new() failed"
    assert not os.path.ismount(mnt)


@pytest.mark.parametrize(
    "name", ["../../../escaped", "o:../../../../escaped", "a/../../../../escaped"]
)
def test_a_forged_ref_name_never_makes_the_archive_mirror_write_outside_refs(
    tmp_path: Path, name: str
) -> None:
    repo_path = tmp_path / "repo"
    with sapwood.Repository.init(repo_path, sapwood.RepoMode.ARCHIVE) as repo:
        commit_id = commit_files(repo, tmp_path / "src", {"f": "content"})
    put_ref(repo_path, name, commit_id)  # a damaged index, or one given to us
    with sapwood.Repository.open(repo_path) as repo:
        repo.set_ref("other", commit_id)
    assert not (tmp_path / "escaped").exists()
    assert (repo_path / "refs" / "heads" / "other").read_text() == commit_id.hex() + "\n"


def test_a_mount_keeps_none_of_the_callers_files(committed: tuple[Path, Path]) -> None:
    """A lock the caller releases while mounted is released: the forked daemon held
    every descriptor of its caller (a flock stayed taken until the unmount)."""
    repo_path, mnt = committed
    lock_path = mnt.parent / "caller.lock"
    held = open(lock_path, "w")  # noqa: SIM115 - closed by hand, mid-mount
    fcntl.flock(held, fcntl.LOCK_EX)
    log = mnt.parent / "daemon.log"
    with sapwood.mount(repo_path, mnt, "main", options=[f"logfile={log}"]):
        held.close()
        with open(lock_path) as other:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if kept
        assert (mnt / "f").read_text() == "content"
    assert not os.path.ismount(mnt)


@pytest.mark.parametrize("failing", [False, True], ids=["mounted", "failed"])
def test_mount_leaves_no_file_of_the_daemons_log_open_in_the_caller(
    committed: tuple[Path, Path], failing: bool
) -> None:
    repo_path, mnt = committed
    options = [f"logfile={mnt.parent / 'daemon.log'}"] + (["no_such_option"] if failing else [])
    gc.collect()  # what earlier tests of this process left is not this mount's (a CI run
    # recorded one such ResourceWarning here, collected inside the window below)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with sapwood.mount(repo_path, mnt, "main", options=options):
                pass
        except sapwood.MountError:
            assert failing
        gc.collect()
    assert not [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not os.path.ismount(mnt)


def test_a_mount_interrupted_while_waiting_leaves_no_daemon_and_no_mount(
    committed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mountd.daemon
    from fs.mounts import MountEntry, mounted_at

    repo_path, mnt = committed
    caller, real = os.getpid(), mounted_at  # mountd.daemon's, from fs.mounts

    def interrupted(path: Path) -> MountEntry | None:
        if os.getpid() == caller:
            raise KeyboardInterrupt  # Ctrl-C while sapwood.mount waits for its daemon
        return real(path)

    monkeypatch.setattr(mountd.daemon, "mounted_at", interrupted)
    before = _children()
    with pytest.raises(KeyboardInterrupt):
        sapwood.mount(repo_path, mnt, "main")
    monkeypatch.undo()
    threading.Event().wait(1)  # time enough for a daemon left running to mount
    assert not os.path.ismount(mnt)
    assert _children() <= before  # the daemon was stopped and reaped (no zombie either)


def _children() -> set[int]:
    """This process's children, zombies included (other tests' too: compare sets)."""
    me = os.getpid()
    return {int(pid) for pid in Path(f"/proc/{me}/task/{me}/children").read_text().split()}


def test_a_repository_whose_config_is_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    repo_path = tmp_path / "repo"
    sapwood.Repository.init(repo_path, sapwood.RepoMode.BARE_USER).close()
    (repo_path / "config").unlink()
    os.mkfifo(repo_path / "config")
    unblock = threading.Timer(10, lambda: os.close(os.open(repo_path / "config", os.O_WRONLY)))
    unblock.start()  # should the open wait for a writer, this one ends the wait
    try:
        with pytest.raises(sapwood.RepoNotFoundError):
            sapwood.Repository.open(repo_path)
        assert unblock.is_alive(), "Repository.open waited for a writer of the FIFO"
    finally:
        unblock.cancel()


@pytest.mark.parametrize(
    "planted", ["symlink-as-temporary", "fifo-as-temporary", "symlink-as-heads"]
)
def test_the_archive_mirror_never_writes_through_what_others_put_in_refs(
    tmp_path: Path, planted: str
) -> None:
    repo_path, outside = tmp_path / "repo", tmp_path / "outside"
    outside.mkdir()
    (outside / "other").write_text("precious\n")
    with sapwood.Repository.init(repo_path, sapwood.RepoMode.ARCHIVE) as repo:
        commit_id = commit_files(repo, tmp_path / "src", {"f": "content"})
    heads = repo_path / "refs" / "heads"
    unblock = None
    if planted == "symlink-as-temporary":
        (heads / ".other.tmp").symlink_to(outside / "other")
    elif planted == "fifo-as-temporary":
        os.mkfifo(heads / ".other.tmp")
        reader = heads / ".other.tmp"  # should the write wait for a reader, this one comes
        unblock = threading.Timer(
            10, lambda: os.close(os.open(reader, os.O_RDONLY | os.O_NONBLOCK))
        )
        unblock.start()
    else:
        (heads / "main").unlink()
        heads.rmdir()
        heads.symlink_to(outside)
    try:
        with sapwood.Repository.open(repo_path) as repo:
            repo.set_ref("other", commit_id)
            assert repo.ref("other") == commit_id  # the commit point is the index
    finally:
        if unblock is not None:
            assert unblock.is_alive(), "set_ref waited on a FIFO in refs/"
            unblock.cancel()
    assert sorted(os.listdir(outside)) == ["other"]
    assert (outside / "other").read_text() == "precious\n"


@pytest.fixture
def looped(user_repo: sapwood.Repository, tmp_path: Path) -> sapwood.ObjectId:
    """A commit whose root dirtree names itself as its subdirectory "loop" (an index
    written behind the store's back: its record no longer hashes to its id)."""
    commit_id = commit_files(user_repo, tmp_path / "src", {"f": "content"})
    commit = user_repo.read_commit(commit_id)
    files = user_repo.read_dirtree(commit.tree).files
    itself = sapwood.DirTree(files, ((b"loop", sapwood.DirEntry(commit.tree, commit.meta)),))
    put_record(user_repo.path, commit.tree, sapwood.ObjectType.DIRTREE, itself.encode())
    return commit_id


def test_walking_a_tree_that_contains_itself_ends(
    user_repo: sapwood.Repository, looped: sapwood.ObjectId
) -> None:
    nodes = sapwood.walk(user_repo, sapwood.root_node(user_repo, looped))
    with pytest.raises(sapwood.CorruptObjectError):
        for _ in itertools.islice(nodes, 100_000):
            pass


def test_checking_out_a_tree_that_contains_itself_fails_cleanly(
    user_repo: sapwood.Repository, looped: sapwood.ObjectId, tmp_path: Path
) -> None:
    dest = tmp_path / "out" / "dest"
    dest.parent.mkdir()
    with pytest.raises(sapwood.CorruptObjectError):
        sapwood.checkout(user_repo, looped, dest, sapwood.CheckoutOptions(user_mode=True))
    assert os.listdir(dest.parent) == []  # no partial checkout left behind


@pytest.mark.parametrize("union", ["Add", "add ", "keep", ""])
def test_an_unknown_union_mode_is_refused_not_taken_for_union(
    user_repo: sapwood.Repository, tmp_path: Path, union: str
) -> None:
    commit_id = commit_files(user_repo, tmp_path / "src", {"f": "committed"})
    dest = write_tree(tmp_path / "dest", {"f": "the caller's own"})
    options = sapwood.CheckoutOptions(user_mode=True, union=union)  # type: ignore[arg-type]
    with pytest.raises(sapwood.UsageError):
        sapwood.checkout(user_repo, commit_id, dest, options)
    assert (dest / "f").read_text() == "the caller's own"


@pytest.mark.parametrize("size", [0, 600], ids=["empty", "longer-than-a-key"])
def test_an_id_of_the_wrong_size_is_a_missing_object_not_a_damaged_index(
    user_repo: sapwood.Repository, size: int
) -> None:
    wrong = sapwood.ObjectId(b"\x01" * size)
    for read in (user_repo.read_commit, user_repo.read_file_header, user_repo.verify_file):
        with pytest.raises(sapwood.ObjectMissingError):
            read(wrong)
    assert not user_repo.has_object(wrong) and not user_repo.is_partial(wrong)
    with user_repo.snapshot() as snap:
        assert not snap.has_object(wrong)  # inside the block too: no LMDB error


@pytest.mark.parametrize("prefix", ["main", "ab/cd", "abc\0", "0x12", "éé"])
def test_a_snapshot_finds_no_commit_by_a_prefix_that_is_not_hex(
    user_repo: sapwood.Repository, tmp_path: Path, prefix: str
) -> None:
    commit_files(user_repo, tmp_path / "src", {"f": "content"})
    with user_repo.snapshot() as snap:
        assert snap.commits_with_prefix(prefix) == []


def test_a_path_holding_nul_is_a_sapwood_error_everywhere(
    user_repo: sapwood.Repository, tmp_path: Path
) -> None:
    commit_id = commit_files(user_repo, tmp_path / "src", {"f": "content"})
    root = sapwood.root_node(user_repo, commit_id)
    nul = tmp_path / "a\0b"
    calls: dict[str, Callable[[], object]] = {
        "Repository.open": lambda: sapwood.Repository.open(nul),
        "Repository.init": lambda: sapwood.Repository.init(nul, sapwood.RepoMode.BARE_USER),
        "commit": lambda: sapwood.commit(user_repo, "main", nul),
        "Layer.tar": lambda: sapwood.commit(user_repo, "main", [sapwood.Layer.tar(nul)]),
        "checkout": lambda: sapwood.checkout(
            user_repo, commit_id, nul, sapwood.CheckoutOptions(user_mode=True)
        ),
        "diff_directory": lambda: list(sapwood.diff_directory(user_repo, root, nul)),
        "mount": lambda: sapwood.mount(nul, tmp_path, "main"),
    }
    for name, call in calls.items():
        with pytest.raises(sapwood.SapwoodError):
            call()
        assert user_repo.ref("main") == commit_id, name


def test_a_mount_made_with_a_relative_path_is_unmounted_after_a_chdir(
    committed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo_path, mnt = committed
    monkeypatch.chdir(mnt.parent)
    with sapwood.mount(repo_path, Path(mnt.name), "main") as mounted:
        monkeypatch.chdir("/")
    assert not os.path.ismount(mnt)
    with pytest.raises(ChildProcessError):
        os.waitpid(mounted.pid, os.WNOHANG)


def test_a_snapshot_read_after_its_block_is_a_usage_error(
    user_repo: sapwood.Repository, tmp_path: Path
) -> None:
    commit_files(user_repo, tmp_path / "src", {"f": "content"})
    with user_repo.snapshot() as snap:
        commits = snap.commits()  # made inside, iterated outside
    for late_read in (
        lambda: snap.ref("main"),
        snap.refs,
        lambda: snap.has_object(sapwood.ObjectId(b"\x01" * 32)),
        lambda: list(commits),
        lambda: snap.commits_with_prefix("ab"),
    ):
        with pytest.raises(sapwood.UsageError):
            late_read()


def test_a_closed_repository_says_so_rather_than_that_its_index_is_damaged(
    tmp_path: Path,
) -> None:
    repo = sapwood.Repository.init(tmp_path / "repo", sapwood.RepoMode.BARE_USER)
    commit_id = commit_files(repo, tmp_path / "src", {"f": "content"})
    repo.close()
    for late in (
        lambda: repo.ref("main"),
        lambda: repo.read_commit(commit_id),
        lambda: repo.set_ref("other", commit_id),
        lambda: sapwood.commit(repo, "main", tmp_path / "src"),
    ):
        with pytest.raises(sapwood.SapwoodError) as raised:
            late()
        assert not isinstance(raised.value, sapwood.IndexDamagedError), raised.value
        assert isinstance(raised.value, sapwood.UsageError), raised.value


def test_every_path_argument_of_the_facade_takes_a_str(
    committed: tuple[Path, Path], tmp_path: Path
) -> None:
    """Repository.open and commit took str paths; checkout, diff_directory and the
    mount failed with AttributeError on one."""
    repo_path, mnt = committed
    dest = tmp_path / "out"
    with sapwood.Repository.open(str(repo_path)) as repo:
        commit_id = sapwood.rev_parse(repo, "main")
        sapwood.checkout(repo, commit_id, str(dest))
        assert (dest / "f").read_text() == "content"
        (dest / "f").write_text("changed")
        root = sapwood.root_node(repo, commit_id)
        assert [c.path for c in sapwood.diff_directory(repo, root, str(dest))] == [b"/f"]
    with sapwood.mount(str(repo_path), str(mnt), "main") as mounted:
        assert (mnt / "f").read_text() == "content"
        assert mounted.mountpoint == mnt
    assert not os.path.ismount(mnt)
    with sapwood.mount(str(repo_path), str(mnt), "main"):
        sapwood.unmount(str(mnt))
    assert not os.path.ismount(mnt)
