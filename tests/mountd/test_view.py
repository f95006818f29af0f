"""The FUSE-free view, tested without a kernel."""

from __future__ import annotations

import os
import stat
import subprocess
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from mountd import records as records_module
from mountd.view import ROOT_INODE, CommitView, ViewOptions
from store import (
    CorruptObjectError,
    NoSuchAttributeError,
    NotADirectoryInTreeError,
    ObjectId,
    ObjectMissingError,
    ObjectReadError,
    PathNotFoundError,
    RepoMode,
    Repository,
    lookup,
)
from tests.helpers import (
    IS_ROOT,
    big_directory_commit,
    build_rich_tree,
    commit_dir,
    many_directories_commit,
    read_disk_tree,
    small_tmpfs,
)
from tests.mountd.legacy import large_archive_file, rewrite_as_swz1


def _view(repo: Repository, tmp_path: Path) -> tuple[CommitView, Path, ObjectId]:
    source = tmp_path / "src"
    build_rich_tree(source, setuid=repo.mode is not RepoMode.BARE_USER_ONLY)
    commit_id = commit_dir(repo, source)
    return CommitView(repo, commit_id), source, commit_id


def _walk(
    view: CommitView, ino: int = ROOT_INODE, prefix: str = ""
) -> dict[str, tuple[int, bytes]]:
    """path -> (mode, content or target), through lookup/entries/read like the kernel."""
    found: dict[str, tuple[int, bytes]] = {}
    for name, attrs, _ in list(view.entries(ino, 0)):
        path = f"{prefix}/{name.decode()}"
        looked = view.lookup(ino, name)
        assert looked == attrs
        if stat.S_ISDIR(attrs.mode):
            found[path] = (attrs.mode, b"")
            found.update(_walk(view, attrs.ino, path))
        elif stat.S_ISLNK(attrs.mode):
            found[path] = (attrs.mode, view.readlink(attrs.ino))
        else:
            found[path] = (attrs.mode, view.read(attrs.ino, 0, attrs.size + 10))
    return found


def test_view_shows_the_commit(repo: Repository, tmp_path: Path) -> None:
    view, source, _ = _view(repo, tmp_path)
    expected = {
        path: (
            (stat.S_IFDIR if e.kind == "d" else stat.S_IFLNK if e.kind == "l" else stat.S_IFREG)
            | e.mode,
            e.data,
        )
        for path, e in read_disk_tree(source).items()
        if path != "/"
    }
    assert _walk(view) == expected


def test_attributes_xattrs_and_inodes(user_repo: Repository, tmp_path: Path) -> None:
    view, source, _ = _view(user_repo, tmp_path)
    etc = view.lookup(ROOT_INODE, b"etc")
    passwd = view.lookup(etc.ino, b"passwd")
    st = os.lstat(source / "etc" / "passwd")
    assert (passwd.mode, passwd.uid, passwd.gid, passwd.size) == (
        st.st_mode,
        st.st_uid,
        st.st_gid,
        st.st_size,
    )
    assert passwd.time_ns == view.time_ns
    assert view.getxattr(passwd.ino, b"user.comment") == b"hello"
    with pytest.raises(NoSuchAttributeError):
        view.getxattr(passwd.ino, b"user.absent")
    a, b = view.lookup(ROOT_INODE, b"dup-a"), view.lookup(ROOT_INODE, b"dup-b")
    assert a.ino != b.ino and view.read(a.ino, 0, 100) == view.read(b.ino, 0, 100)
    inodes = [attrs.ino for _, attrs, _ in view.entries(ROOT_INODE, 0)]
    assert len(inodes) == len(set(inodes)) and ROOT_INODE not in inodes
    with pytest.raises(PathNotFoundError):
        view.lookup(ROOT_INODE, b"absent")
    link = view.lookup(ROOT_INODE, b"lib")
    assert link.size == len(b"usr/lib") and view.readlink(link.ino) == b"usr/lib"


def test_inode_numbers_lead_back_to_their_entries(user_repo: Repository, tmp_path: Path) -> None:
    view, _, _ = _view(user_repo, tmp_path)
    usr = view.lookup(ROOT_INODE, b"usr")
    bin_ = view.lookup(usr.ino, b"bin")
    dash = view.lookup(bin_.ino, b"dash")
    content = view.read(dash.ino, 0, 1 << 20)
    instances = len(view.instances)
    fresh = CommitView(user_repo, user_repo.refs()["main"])  # nothing decoded yet
    fresh.instances = view.instances  # the only state an inode number needs
    assert fresh.getattr(dash.ino) == dash and fresh.getattr(bin_.ino) == bin_
    assert fresh.read(dash.ino, 0, 1 << 20) == content
    assert view.lookup(ROOT_INODE, b"usr").ino == usr.ino  # stable for the mount's life
    assert len(view.instances) == instances  # looking again allocates nothing
    with pytest.raises(PathNotFoundError):
        view.getattr(dash.ino + (1 << 40))  # never handed out
    with pytest.raises(NotADirectoryInTreeError):
        list(view.entries(dash.ino, 0))


def test_view_keeps_nothing_per_file(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A walk of 20,000 files allocates no inode state for them: only directories count,
    and the caches stay within their bounds."""
    monkeypatch.setattr(records_module, "TREE_CACHE_ENTRIES", 1000)
    monkeypatch.setattr(records_module, "HEADER_CACHE_ENTRIES", 1000)
    view = CommitView(user_repo, many_directories_commit(user_repo, 100, 200))
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _, directory, _ in list(view.entries(ROOT_INODE, 0)):
            for _, attrs, _ in view.entries(directory.ino, 0):
                view.getattr(attrs.ino)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(view.instances) == 101
    assert after - before < 2 * 1024 * 1024  # 100 bytes a file would be 2 MB


def test_owner_option_shows_every_entry_as_the_user(user_repo: Repository, tmp_path: Path) -> None:
    _, _, commit_id = _view(user_repo, tmp_path)
    view = CommitView(user_repo, commit_id, ViewOptions(owner=(4242, 4343)))
    entries = list(view.entries(ROOT_INODE, 0))
    assert {(a.uid, a.gid) for _, a, _ in entries} == {(4242, 4343)}


def test_corrupt_and_missing_objects_are_refused(user_repo: Repository, tmp_path: Path) -> None:
    view, _, commit_id = _view(user_repo, tmp_path)
    dash = lookup(user_repo, commit_id, "/usr/bin/dash").file
    assert dash is not None
    path = user_repo.content.path(dash)
    path.chmod(0o644)
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    usr = view.lookup(ROOT_INODE, b"usr")
    bin_ = view.lookup(usr.ino, b"bin")
    dash_ino = view.lookup(bin_.ino, b"dash").ino
    with pytest.raises(CorruptObjectError):
        view.read(dash_ino, 0, 10)
    path.unlink()
    with pytest.raises(ObjectMissingError):
        view.open(dash_ino)


def test_listing_resumes_anywhere_in_a_huge_directory(user_repo: Repository) -> None:
    view = CommitView(user_repo, big_directory_commit(user_repo, 100_000))
    names: list[bytes] = []
    offset = 0
    while True:
        batch = []
        for name, _, next_offset in view.entries(ROOT_INODE, offset):
            batch.append(name)
            offset = next_offset
            if len(batch) == 37:  # the kernel takes a few dozen at a time
                break
        if not batch:
            break
        names += batch
    assert len(names) == 100_000 and len(set(names)) == 100_000
    middle = next(iter(view.entries(ROOT_INODE, 54_321)))
    assert middle[0] == b"f054321"


def test_reads_of_large_and_grown_objects(user_repo: Repository, tmp_path: Path) -> None:
    """Objects above the one-read size are hashed in chunks; a grown object is refused."""
    source = tmp_path / "src"
    source.mkdir()
    big = os.urandom(3 * 1024 * 1024 + 17)
    (source / "big").write_bytes(big)
    (source / "small").write_bytes(b"small\n")
    commit_id = commit_dir(user_repo, source)
    view = CommitView(user_repo, commit_id)
    big_ino = view.lookup(ROOT_INODE, b"big").ino
    chunks = [view.read(big_ino, offset, 128 * 1024) for offset in range(0, len(big), 128 * 1024)]
    assert b"".join(chunks) == big
    small = lookup(user_repo, commit_id, "/small").file
    assert small is not None
    path = user_repo.content.path(small)
    path.chmod(0o644)
    with path.open("ab") as grown:
        grown.write(b"!")
    with pytest.raises(CorruptObjectError):
        CommitView(user_repo, commit_id).read(view.lookup(ROOT_INODE, b"small").ino, 0, 100)


def test_what_the_sources_keep_is_bounded_by_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Archive objects: small ones and the frames of large ones in memory within a byte
    budget, a bounded number of large ones open (issue 9, review8 2); SWZ1 ones (from
    before zstd) in unlinked files of a private directory, a bounded number of them."""
    from mountd import sources

    monkeypatch.setattr(sources, "_KEPT_BYTES", (1 << 20) + 4096)
    monkeypatch.setattr(sources, "_SPOOLS", 2)
    monkeypatch.setattr(sources, "_FRAMED", 2)
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    source = tmp_path / "src"
    source.mkdir()
    contents = {f"small{n:02d}": os.urandom(100_000) for n in range(30)}
    contents |= {f"large{n}": os.urandom(3 << 20) for n in range(3)}
    contents |= {f"old{n}": os.urandom(3 << 20) for n in range(3)}
    for name, data in contents.items():
        (source / name).write_bytes(data)
    commit_id = commit_dir(repo, source)
    for n in range(3):
        old_id = lookup(repo, commit_id, f"/old{n}").file
        assert old_id is not None
        rewrite_as_swz1(repo, old_id, contents[f"old{n}"])
    view = CommitView(repo, commit_id)
    for name, data in contents.items():
        attrs = view.lookup(ROOT_INODE, name.encode())
        assert view.read(attrs.ino, 0, len(data) + 1) == data
        kept = view.sources
        assert kept._small.weight <= (1 << 20) + 4096
        assert len(kept._spools) <= 2 and len(kept._framed) <= 2
    spool_dir = view.sources.spooler.directory
    assert spool_dir is not None
    assert stat.S_IMODE(os.stat(spool_dir).st_mode) == 0o700
    assert os.listdir(spool_dir) == []  # the spooled files have no name
    for name in ("large0", "old0"):  # evicted by now: opened (or spooled) again
        ino = view.lookup(ROOT_INODE, name.encode()).ino
        assert view.read(ino, 1 << 20, 10) == contents[name][1 << 20 : (1 << 20) + 10]
    view.close()
    assert not os.path.exists(spool_dir)
    repo.close()


@pytest.mark.skipif(not IS_ROOT, reason="mounts a small tmpfs as TMPDIR: root")
def test_a_full_tmpdir_fails_the_large_archive_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    source = tmp_path / "src"
    source.mkdir()
    (source / "large").write_bytes(os.urandom(3 << 20))
    (source / "framed").write_bytes(os.urandom(3 << 20))
    (source / "small").write_bytes(b"small\n")
    commit_id = commit_dir(repo, source)
    large_id = lookup(repo, commit_id, "/large").file
    assert large_id is not None
    rewrite_as_swz1(repo, large_id, (source / "large").read_bytes())  # spooled
    with small_tmpfs(tmp_path / "tmp", "1m") as tmpdir:
        monkeypatch.setenv("TMPDIR", str(tmpdir))
        view = CommitView(repo, commit_id)
        large = view.lookup(ROOT_INODE, b"large")
        with pytest.raises(ObjectReadError, match=large_id.hex()):
            view.read(large.ino, 0, 10)
        assert view.read(view.lookup(ROOT_INODE, b"small").ino, 0, 10) == b"small\n"
        framed = view.lookup(ROOT_INODE, b"framed").ino  # SWZ2: needs no TMPDIR at all
        assert view.read(framed, 0, 4 << 20) == (source / "framed").read_bytes()
        view.close()
    repo.close()


def test_an_object_larger_than_tmpdir_has_room_for_is_refused_before_it_is_spooled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archive object that cannot fit in TMPDIR's free space is refused before any
    of it is decompressed (review8 3): a hostile repository's 64 MiB of zeros (a few
    KiB compressed) used to fill the 16 MiB TMPDIR until ENOSPC on every read, and a
    file of terabytes of zeros the disk. What fits is still served."""
    if not IS_ROOT:
        pytest.skip("mounts a tmpfs")
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    source = tmp_path / "src"
    source.mkdir()
    (source / "huge").write_bytes(bytes(64 << 20))
    (source / "fits").write_bytes(os.urandom(4 << 20))
    commit_id = commit_dir(repo, source)
    for name in ("huge", "fits"):  # SWZ1, spooled (SWZ2 objects need no TMPDIR)
        found = lookup(repo, commit_id, f"/{name}").file
        assert found is not None
        rewrite_as_swz1(repo, found, (source / name).read_bytes())
    opened: list[ObjectId] = []
    open_file = repo.open_recorded_file

    def counted(file_id: ObjectId, header: bytes, size: int) -> BinaryIO:
        opened.append(file_id)
        return open_file(file_id, header, size)

    monkeypatch.setattr(repo, "open_recorded_file", counted)
    with small_tmpfs(tmp_path / "tmp", "16m") as tmpdir:
        monkeypatch.setenv("TMPDIR", str(tmpdir))
        view = CommitView(repo, commit_id)
        try:
            huge = view.lookup(ROOT_INODE, b"huge").ino
            with pytest.raises(ObjectReadError, match="free"):
                view.read(huge, 0, 100)
            assert opened == []  # nothing decompressed, nothing written
            fits = view.lookup(ROOT_INODE, b"fits").ino
            assert view.read(fits, 0, 5 << 20) == (source / "fits").read_bytes()
            assert len(opened) == 1
        finally:
            view.close()


@pytest.mark.parametrize(("files", "mib"), [(12, 2), (2, 24)])
def test_readers_of_large_archive_files_at_once_inflate_each_frame_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: int, mib: int
) -> None:
    """Large archive files read at once, 128 KiB at a time in turns (parallel checksums:
    what the kernel sends), are verified once each and each frame inflated once
    (review8 2). Whole objects spooled, a reader whose spool was evicted decompressed
    the whole object again for its next read: with 8 spools, 192 spools for 12 files
    of 2 MiB; with 64, still 384 for two files of 24 MiB past a 40 MiB spool budget
    (two of 3 GiB past the 4 GiB one: in effect a hang)."""
    from mountd import sources
    from store import FramedContent

    monkeypatch.setattr(sources, "_SPOOL_BYTES", 40 << 20)
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    source = tmp_path / "src"
    source.mkdir()
    size = mib << 20
    for n in range(files):
        (source / f"large{n:02d}").write_bytes(os.urandom(64) + bytes(size - 64))
    commit_id = commit_dir(repo, source)
    view = CommitView(repo, commit_id)
    calls: list[str] = []
    for name in ("verify", "locate", "chunk"):
        method = getattr(FramedContent, name)

        def counted(
            self: FramedContent,
            *args: object,
            _m: Callable[..., object] = method,
            _n: str = name,
        ) -> object:
            calls.append(_n)
            return _m(self, *args)

        monkeypatch.setattr(FramedContent, name, counted)
    try:
        inodes = [view.lookup(ROOT_INODE, f"large{n:02d}".encode()).ino for n in range(files)]
        wanted = [(source / f"large{n:02d}").read_bytes() for n in range(files)]
        for offset in range(0, size, 128 << 10):
            for n, ino in enumerate(inodes):
                piece = view.read(ino, offset, 128 << 10)
                assert piece == wanted[n][offset : offset + (128 << 10)]
        assert calls.count("verify") == files and calls.count("locate") == 0
        assert calls.count("chunk") == files * mib
    finally:
        view.close()


def test_old_archive_objects_spool_to_var_tmp_unless_tmpdir_says_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spools are files of decompressed content: in /tmp, often a tmpfs, they were RAM
    counted in no budget (review8 5). Without TMPDIR they go to /var/tmp (a disk)."""
    repo, commit_id, _, content = large_archive_file(tmp_path, "old", swz1=True)
    for tmpdir in ("", str(tmp_path)):
        if tmpdir:
            monkeypatch.setenv("TMPDIR", tmpdir)
        else:
            monkeypatch.delenv("TMPDIR", raising=False)
        view = CommitView(repo, commit_id)
        try:
            ino = view.lookup(ROOT_INODE, b"old").ino
            assert view.read(ino, 5, 10) == content[5:15]
            spool_dir = view.sources.spooler.directory
            assert spool_dir is not None
            where = Path(spool_dir).parent
            assert where == Path(tmpdir or "/var/tmp")
        finally:
            view.close()
    repo.close()


def test_a_frame_read_to_its_end_is_let_go(tmp_path: Path) -> None:
    """A reader going through a large archive file holds the frame it is in, not every
    frame it went through (the kernel keeps those pages): the budget stays for other
    readers and the index. Each frame is still inflated once."""
    from store import FramedContent

    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    source = tmp_path / "src"
    source.mkdir()
    content = os.urandom(4 << 20)
    (source / "large").write_bytes(content)
    view = CommitView(repo, commit_dir(repo, source))
    inflated: list[int] = []
    chunk = FramedContent.chunk

    def counted(self: FramedContent, index: int) -> bytes:
        inflated.append(index)
        return chunk(self, index)

    try:
        FramedContent.chunk = counted  # type: ignore[method-assign]
        ino = view.lookup(ROOT_INODE, b"large").ino
        step = 96 << 10  # not a divisor of a MiB: some reads span two frames
        for offset in range(0, len(content), step):
            assert view.read(ino, offset, step) == content[offset : offset + step]
            assert view.sources.held_bytes() <= (1 << 20) + 4096
        assert inflated == [0, 1, 2, 3]
        assert view.sources.held_bytes() == 0
    finally:
        FramedContent.chunk = chunk  # type: ignore[method-assign]
        view.close()


def test_the_frames_located_are_bounded_in_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where each frame starts takes 8 bytes a MiB: a hostile repository's objects of
    terabytes of zeros (44 MB compressed each) would take 8 MiB each, 256 of them
    2 GiB; so the open objects are bounded by those bytes too."""
    from mountd import sources
    from store import FramedContent

    monkeypatch.setattr(sources, "_FRAMED_BYTES", 40)  # one 3 MiB object's: 3 x 8 bytes
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    source = tmp_path / "src"
    source.mkdir()
    contents = {f"large{n}": os.urandom(3 << 20) for n in range(3)}
    for name, data in contents.items():
        (source / name).write_bytes(data)
    view = CommitView(repo, commit_dir(repo, source))
    calls: list[str] = []
    for name in ("verify", "locate"):
        method = getattr(FramedContent, name)

        def counted(self: FramedContent, *args: bytes, _m: Any = method, _n: str = name) -> None:
            calls.append(_n)
            _m(self, *args)

        monkeypatch.setattr(FramedContent, name, counted)
    try:
        for name, data in [*contents.items(), ("large0", contents["large0"])]:
            ino = view.lookup(ROOT_INODE, name.encode()).ino
            assert view.read(ino, (2 << 20) + 5, 10) == data[(2 << 20) + 5 : (2 << 20) + 15]
            assert len(view.sources._framed) == 1 and view.sources._framed.weight == 24
        # evicted, then read again: its unchanged file is not hashed again, only located
        assert calls == ["verify", "verify", "verify", "locate"]
    finally:
        view.close()


def test_a_tmpdir_that_cannot_be_used_fails_only_the_files_that_need_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only SWZ1 objects are spooled: a TMPDIR that does not exist fails them alone
    (with the object named), not every large archive file."""
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    source = tmp_path / "src"
    source.mkdir()
    contents = {name: os.urandom(3 << 20) for name in ("framed", "old")}
    for name, data in contents.items():
        (source / name).write_bytes(data)
    commit_id = commit_dir(repo, source)
    old_id = lookup(repo, commit_id, "/old").file
    assert old_id is not None
    rewrite_as_swz1(repo, old_id, contents["old"])
    monkeypatch.setenv("TMPDIR", str(tmp_path / "absent"))
    view = CommitView(repo, commit_id)
    try:
        framed = view.lookup(ROOT_INODE, b"framed").ino
        assert view.read(framed, 0, 4 << 20) == contents["framed"]
        old = view.lookup(ROOT_INODE, b"old").ino
        with pytest.raises(ObjectReadError, match=old_id.hex()):
            view.read(old, 0, 10)
    finally:
        view.close()


def test_a_spool_abandoned_by_an_unmount_leaves_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """attack12 3: a SIGTERM or an unmount abandons a verification's thread and closes
    the view, which removes its spool directory; a thread that came to spooling after
    that made a new one, which the daemon's os._exit never removed: a directory left in
    /var/tmp (not cleaned at boot) per such unmount. It spools nothing once closed."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    repo, commit_id, _, _ = large_archive_file(tmp_path, "old", swz1=True)
    view = CommitView(repo, commit_id)
    slow = view.preparation(view.lookup(ROOT_INODE, b"old").ino)
    assert slow is not None
    view.close()  # the unmount, while the thread is on its way
    with pytest.raises(ObjectReadError):
        slow.work(lambda: None)
    assert os.listdir(tmpdir) == []
    repo.close()


def test_the_spool_directories_of_killed_daemons_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """attack12 5: a daemon killed (SIGKILL, a crash) leaves its spool directory in
    /var/tmp, which is not cleaned at boot. The next daemon of the same user to spool
    removes those whose daemon (the pid in the name) is gone, not a live one's."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmpdir / f"sapwood-mount-{gone.pid}-abcd1234"
    live = tmpdir / f"sapwood-mount-{os.getppid()}-abcd1234"
    other = tmpdir / "sapwood-mount-12345678"  # not this form: not ours to judge
    for made in (dead, live, other):
        made.mkdir()
    repo, commit_id, _, content = large_archive_file(tmp_path, "old", swz1=True)
    view = CommitView(repo, commit_id)
    ino = view.lookup(ROOT_INODE, b"old").ino
    assert view.read(ino, 0, 10) == content[:10]
    assert not dead.exists() and live.exists() and other.exists()
    spool_dir = view.sources.spooler.directory
    assert spool_dir is not None
    assert Path(spool_dir).name.startswith(f"sapwood-mount-{os.getpid()}-")
    view.close()
    repo.close()
