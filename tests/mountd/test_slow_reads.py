"""A large file's first read (its object verified: seconds for gigabytes) holds up no
other request on the mount (review8 4): it runs in a worker thread."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from mountd.preparing import LONG, Preparer
from mountd.spools import Spooler
from mountd.view import ROOT_INODE, CommitView
from store import CorruptObjectError, FramedContent, RepoMode, Repository
from tests.helpers import Daemon, Mounts, commit_dir, force_unmount, mount_fstype
from tests.mountd.legacy import (
    WaitingView,
    count_verifications,
    large_archive_file,
    quick_frames,
    served_while_held,
    threads_of,
    zeros_claiming,
)

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
HUGE = 2 << 30  # verified in about 0.7 s (0.34 s a GiB measured at load 4.5)


def test_small_files_are_served_while_a_huge_archive_file_is_verified(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    with (source / "huge").open("wb") as huge:
        huge.truncate(HUGE)  # sparse: no disk, and read at once
    for n in range(20):
        (source / f"small{n:02d}").write_bytes(f"small {n}\n".encode())
    quick_frames(monkeypatch)
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    commit_dir(repo, source)
    repo.close()
    daemon = mount.foreground(repo.path, "main")
    assert (daemon.mountpoint / "small00").read_bytes() == b"small 0\n"  # the loop is up
    threads = threads_of(daemon.pid)
    got: list[bytes] = []

    def read_huge() -> None:
        with (daemon.mountpoint / "huge").open("rb") as stream:
            got.append(stream.read(4096))

    reader = threading.Thread(target=read_huge)
    reader.start()
    while threads_of(daemon.pid) == threads and reader.is_alive():
        time.sleep(0.001)  # until a worker thread verifies it, or (before) the read ends
    started = time.monotonic()
    for n in range(1, 20):  # never read before: each a lookup, a getattr and a read
        assert (daemon.mountpoint / f"small{n:02d}").read_bytes() == f"small {n}\n".encode()
    taken = time.monotonic() - started
    verifying = reader.is_alive()
    reader.join(timeout=60)
    print(f"19 small files read in {taken * 1000:.1f} ms while the huge one was verified")
    assert verifying, "the small files waited for the huge one's verification"
    assert got == [bytes(4096)]
    assert daemon.alive()


@pytest.mark.parametrize("legacy", [False, True])
def test_one_thread_verifies_an_object_however_many_read_it_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool
) -> None:
    """The kernel's read-ahead sends a dozen reads of a file at once: one verifies the
    object in a worker thread (framed, or spooled if SWZ1), the others wait for it and
    read what it kept. The thread never reads the index (the view's, on the loop)."""
    repo, commit_id, _, content = large_archive_file(tmp_path, swz1=legacy)
    view = CommitView(repo, commit_id)
    verified: list[int] = []
    index_readers: set[int] = set()
    reader = repo.index.reader
    owner: type = Spooler if legacy else FramedContent
    name = "spool" if legacy else "verify"
    method = getattr(owner, name)

    def counted(self: object, *args: object) -> object:
        verified.append(threading.get_ident())
        return method(self, *args)

    def watched() -> object:
        index_readers.add(threading.get_ident())
        return reader()

    monkeypatch.setattr(owner, name, counted)
    monkeypatch.setattr(repo.index, "reader", watched)
    preparer = Preparer(view)
    ino = view.lookup(ROOT_INODE, b"large").ino
    pieces: dict[int, bytes] = {}

    async def read(offset: int) -> None:
        pieces[offset] = await preparer.read(ino, offset, 128 << 10)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for offset in range(0, len(content), 128 << 10):
                nursery.start_soon(read, offset)

    try:
        trio.run(main)
    finally:
        view.close()
    assert b"".join(pieces[offset] for offset in sorted(pieces)) == content
    assert len(verified) == 1 and verified[0] != threading.get_ident()
    assert index_readers == {threading.get_ident()}


def test_a_large_object_is_verified_off_the_loop_in_every_mode(tmp_path: Path) -> None:
    """Hashing a large uncompressed object takes as long: it is a preparation too; a
    small one is made readable at once."""
    repo = Repository.init(tmp_path / "repo", RepoMode.BARE_USER_ONLY)
    source = tmp_path / "src"
    source.mkdir()
    content = os.urandom(3 << 20)
    (source / "large").write_bytes(content)
    (source / "small").write_bytes(b"small\n")
    view = CommitView(repo, commit_dir(repo, source))
    try:
        small = view.lookup(ROOT_INODE, b"small").ino
        assert view.preparation(small) is None and view.sources.is_open(small)
        large = view.lookup(ROOT_INODE, b"large").ino
        slow = view.preparation(large)
        assert slow is not None and not view.sources.is_open(large)
        slow.run()
        assert view.preparation(large) is None
        assert view.read(large, 1 << 20, 100) == content[1 << 20 : (1 << 20) + 100]
    finally:
        view.close()


def test_reads_waiting_for_a_damaged_object_fail_as_its_verification_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reads that waited for a verification that failed fail with its error: each
    tried it again before (a damaged object of gigabytes inflated once per read-ahead
    request)."""
    repo, commit_id, file_id, _ = large_archive_file(tmp_path)
    path = repo.content.path(file_id)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    view = CommitView(repo, commit_id)
    verified = count_verifications(monkeypatch)
    preparer = Preparer(view)
    ino = view.lookup(ROOT_INODE, b"large").ino
    failures: list[BaseException] = []

    async def read(offset: int) -> None:
        try:
            await preparer.read(ino, offset, 128 << 10)
        except CorruptObjectError as exc:
            failures.append(exc)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for offset in range(0, 8 << 17, 128 << 10):
                nursery.start_soon(read, offset)

    try:
        trio.run(main)
    finally:
        view.close()
    assert len(failures) == 8 and len(verified) == 1
    assert all(file_id.hex() in str(exc) for exc in failures)


def test_a_sigterm_during_a_long_verification_unmounts_at_once(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile object of 256 GiB of zeros (14 MB compressed) takes minutes to verify
    (and then fails: its id is not theirs). A SIGTERM meanwhile ends the daemon and
    unmounts at once, rather than once the verification has ended."""
    daemon = mount.foreground(_endless_repo(tmp_path, monkeypatch), "main")
    reader = _reading_endless(daemon)
    try:
        daemon.process.send_signal(signal.SIGTERM)
        _ends_at_once(daemon, "SIGTERM")
        assert mount_fstype(daemon.mountpoint) != "fuse.sapwood"
    finally:
        reader.kill()
        reader.wait()


def test_an_unmount_during_a_long_verification_ends_the_daemon_at_once(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """attack12 2: its reader killed, the mount unmounted (fusermount3 -u, as `sapwood
    umount` does), the daemon stayed until the verification of a hostile 256 GiB of
    zeros ended (4.5 s for 16 GiB), its loop waiting in the read's handler. It ends at
    once, as on a SIGTERM."""
    daemon = mount.foreground(_endless_repo(tmp_path, monkeypatch), "main")
    assert (daemon.mountpoint / "small").read_bytes() == b"small\n"
    reader = _reading_endless(daemon)
    reader.kill()
    reader.wait()
    unmounted = subprocess.run(["fusermount3", "-u", str(daemon.mountpoint)], capture_output=True)
    assert unmounted.returncode == 0, unmounted.stderr
    _ends_at_once(daemon, "the unmount")


def _reading_endless(daemon: Daemon) -> subprocess.Popen[bytes]:
    """A `cat` of /endless, once the daemon verifies it in a worker thread."""
    threads = threads_of(daemon.pid)
    reader = subprocess.Popen(
        ["cat", str(daemon.mountpoint / "endless")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_a_worker(daemon.pid, threads, daemon.log)
    except BaseException:
        reader.kill()
        reader.wait()
        raise
    return reader


def _ends_at_once(daemon: Daemon, after: str) -> None:
    """The daemon ends within seconds (the verification would take minutes)."""
    started = time.monotonic()
    try:
        daemon.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon waited for the verification to end")
    print(f"the daemon ended {time.monotonic() - started:.2f} s after {after}")


def _endless_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository whose /endless claims 256 GiB of zeros (14 MB of frames; minutes to
    verify, then refused), and a /small file."""
    return zeros_claiming(
        tmp_path, monkeypatch, 256 << 30, name="endless", files={"small": b"small\n"}
    )


def _wait_for_a_worker(pid: int, threads: int, log: Callable[[], str]) -> None:
    """Until the daemon has a thread more than ``threads`` (a verification under way)."""
    deadline = time.monotonic() + 30
    while threads_of(pid) == threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threads_of(pid) > threads, log()
    time.sleep(0.2)


_SIGNAL_AT_ONCE = """
import os, signal, sys
from pathlib import Path
from mountd.daemon import serve
from store import Repository
repo = Repository.open(Path(sys.argv[1]))
signum = int(sys.argv[3])
serve(repo, None, Path(sys.argv[2]), [], on_mounted=lambda: os.kill(os.getpid(), signum))
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_as_soon_as_mounted_unmounts(tmp_path: Path, signum: int) -> None:
    """attack12 4: the mount is up (``sapwood mount`` returns) once pyfuse3.init has
    mounted it, before the loop listens for signals: a SIGTERM or SIGHUP then killed the
    daemon with the default action, and left a dead mount. It unmounts."""
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    repo.close()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        done = subprocess.run(
            [sys.executable, "-c", _SIGNAL_AT_ONCE, str(repo.path), str(mnt), str(int(signum))],
            capture_output=True,
            text=True,
            timeout=30,
        )
        left = mount_fstype(mnt)
    finally:
        force_unmount(mnt)
    assert done.returncode == 0, done.stderr
    assert left is None


def test_two_huge_objects_at_once_leave_a_thread_for_the_other_large_files() -> None:
    """attack12: two hostile objects (256 GiB of zeros each) read at once held both
    verification threads for minutes, and every other large file's first read waited
    for one. Objects over LONG take one thread at most between them."""
    view = WaitingView({1: LONG + 1, 2: LONG + 1, 3: 2 << 20}, held={1, 2})
    served = served_while_held(view, [1, 2], 3, within=5)
    assert served[0] == 3 and sorted(served[1:]) == [1, 2]
