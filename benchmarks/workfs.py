"""The filesystem a benchmark writes to: a fresh journaled ext4 on a loop device.

This VM's root ext4 has no journal. Without one, ext4 skips, when it picks an inode for
a new file, every inode freed in the last 60-300 s (``recently_deleted`` in
fs/ext4/ialloc.c), and every benchmark deletes the repositories of the run before: the
next run's creates crawl (the 100,000-file checkout took 11 s instead of 2.45; 44% of a
first pull's CPU samples were in ext4's inode allocation), and a figure depended on
what ran before it. A user's machine (journaled ext4, xfs, btrfs) pays none of that.

So, as root, each benchmark writes everything (repositories, checkouts, served
archives, copies of trees) to an ext4 made for it by ``mkfs.ext4`` with its defaults
(a journal, data=ordered), on a sparse image file attached with ``losetup
--direct-io=on`` (the image's pages are not cached a second time by the host's
filesystem: dropping caches still makes a cold figure cold) and mounted under the work
directory. At the end it is unmounted, detached and the image deleted: one large file
to delete, no inodes for the next run to skip. Without root, mkfs.ext4 or losetup,
or with ``--work-fs host`` (or SAPWOOD_BENCH_WORK_FS=host), the benchmark writes to a
directory of the host filesystem, and says so in its results.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

CHOICES = ("loop", "host")
ENV = "SAPWOOD_BENCH_WORK_FS"  # the default of --work-fs
GIB = 1 << 30
MIB = 1 << 20
INODE_RATIO = 16384  # mkfs.ext4's bytes per inode for a filesystem over 512 MiB
SLACK_BYTES = GIB  # the journal (up to 1 GiB), inode tables, indexes, directories
MARGIN = 1.25  # over the estimate of what the benchmark writes
MIN_IMAGE = 256 * MIB
HOST_RESERVE = 2 * GIB  # left free on the host: others work on this machine too
SAMPLE_SECONDS = 1.0


@dataclass(frozen=True)
class Footprint:
    """What a tree (or a benchmark's writes) takes on disk: bytes of blocks and inodes."""

    bytes: int
    inodes: int

    def __mul__(self, copies: float) -> Footprint:
        return Footprint(int(self.bytes * copies), int(self.inodes * copies))

    def __add__(self, other: Footprint) -> Footprint:
        return Footprint(self.bytes + other.bytes, self.inodes + other.inodes)


def footprint(tree: Path) -> Footprint:
    """The blocks and the inodes of ``tree`` (a hardlinked file counted once): what one
    more copy of it (a repository of it, a checkout) writes, about."""
    seen: set[int] = set()
    blocks = 0
    todo = [str(tree)]
    while todo:
        with os.scandir(todo.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
                blocks += st.st_blocks
                if entry.is_dir(follow_symlinks=False):
                    todo.append(entry.path)
    return Footprint(blocks * 512, len(seen) + 1)


@dataclass(frozen=True)
class Image:
    """The size of the image file and, when mkfs's default ratio gives too few, the
    inode count to ask for (mkfs.ext4 -N)."""

    size: int
    inodes: int | None


def image_for(need: Footprint) -> Image:
    """An image with room for ``need`` and a margin; a sparse file, so only what the
    benchmark writes takes space on the host."""
    size = max(MIN_IMAGE, int(need.bytes * MARGIN) + SLACK_BYTES)
    size = -(-size // MIB) * MIB
    inodes = int(need.inodes * MARGIN) + 10_000
    return Image(size, inodes if size // INODE_RATIO < inodes else None)


@dataclass
class WorkFs:
    """Where a benchmark writes (``path``) and what that is, for its results (``kind``)."""

    path: Path
    kind: str
    peak_bytes: int = 0
    peak_inodes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def sample(self) -> None:
        """Record the filesystem's use now (its highest use goes to the log at the end)."""
        st = os.statvfs(self.path)
        self.peak_bytes = max(self.peak_bytes, (st.f_blocks - st.f_bfree) * st.f_frsize)
        self.peak_inodes = max(self.peak_inodes, st.f_files - st.f_ffree)


def default_choice() -> str:
    choice = os.environ.get(ENV, "loop")
    if choice not in CHOICES:
        raise SystemExit(f"{ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
    return choice


def why_host(choice: str) -> str | None:
    """Why the benchmark must write to the host filesystem, or None: it need not."""
    if choice == "host":
        return "asked for (--work-fs host)"
    if os.geteuid() != 0:
        return "not root (a loop device needs root)"
    missing = [tool for tool in ("mkfs.ext4", "losetup", "mount", "umount") if not _which(tool)]
    if missing:
        return f"{', '.join(missing)} not found"
    return None


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def host_kind(parent: Path, reason: str) -> str:
    found = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", str(parent)],
        capture_output=True,
        text=True,
        check=False,
    )
    what = " ".join(found.stdout.split()) or "unknown"
    return f"host filesystem of {parent} ({what}): {reason}"


@contextmanager
def work_filesystem(parent: Path, need: Footprint, choice: str | None = None) -> Iterator[WorkFs]:
    """A directory for a benchmark to write to: on a fresh journaled ext4 made under
    ``parent`` for ``need`` (see the module's docstring), removed at the end however
    the block ends (an error, Ctrl-C, SIGTERM); on the host filesystem when it cannot be
    made or ``choice`` is "host"."""
    reason = why_host(choice or default_choice())
    if reason is not None:
        with tempfile.TemporaryDirectory(dir=parent, prefix="sapwood-bench-host-") as tmp:
            fs = WorkFs(Path(tmp), host_kind(parent, reason))
            _say(f"writing to the host filesystem: {reason}")
            yield fs
        return
    image = image_for(need)
    _name_leftovers(parent)
    check_free(parent, image, need)
    with ExitStack() as stack:
        stack.enter_context(_terminate_as_interrupt())
        fs = stack.enter_context(_loop_ext4(parent, image))
        stack.enter_context(_sampled(fs))
        stack.callback(_shield_cleanup)  # runs first: a second Ctrl-C cannot cut it short
        yield fs


def _name_leftovers(parent: Path) -> None:
    """Say which filesystems of earlier runs are still mounted under ``parent`` (a run
    killed by SIGKILL cannot clean up: attack17 1), with how to remove them. Named,
    not removed: another benchmark may be running there now."""
    for mnt in mounts_under(parent.resolve()):
        if mnt.name == "mnt" and mnt.parent.name.startswith("sapwood-fs-"):
            _say(
                f"left by an earlier run, still mounted: {mnt} (remove it with "
                f"umount {mnt}; losetup -d $(losetup -nO NAME -j {mnt.parent}/image); "
                f"rm -r {mnt.parent})"
            )


def check_free(parent: Path, image: Image, need: Footprint) -> None:
    """Fail with a clear message unless the image fits in ``parent``'s free space (its
    whole size: a sparse file could grow to it), keeping HOST_RESERVE free."""
    st = os.statvfs(parent)
    free = st.f_bavail * st.f_frsize
    if image.size + HOST_RESERVE > free:
        raise SystemExit(
            f"the benchmark's filesystem needs a {image.size / GIB:.1f} GiB image in "
            f"{parent} (for about {need.bytes / GIB:.1f} GiB and {need.inodes:,} inodes "
            f"written), which has {free / GIB:.1f} GiB free and must keep "
            f"{HOST_RESERVE / GIB:.0f} GiB free after it: free some space, give another "
            "--work, or pass --work-fs host"
        )


@contextmanager
def _loop_ext4(parent: Path, image: Image) -> Iterator[WorkFs]:
    with ExitStack() as stack:
        # resolved: /proc/self/mounts names mount points by their real paths (a
        # --work given as a symlink or a relative path left the ext4 mounted: attack17 2)
        place = Path(tempfile.mkdtemp(dir=parent, prefix="sapwood-fs-")).resolve()
        stack.callback(shutil.rmtree, place, ignore_errors=True)
        path = place / "image"
        with open(path, "wb") as file:
            file.truncate(image.size)
        # each undo registered before its step: a Ctrl-C while losetup or mount runs
        # left the device attached (and mounted) on a deleted image (attack17 5)
        stack.callback(_detach_all_of, path)
        device = _run("losetup", "--direct-io=on", "--find", "--show", str(path)).strip()
        inodes = ["-N", str(image.inodes)] if image.inodes else []
        _run("mkfs.ext4", "-q", "-F", *inodes, device)
        mnt = place / "mnt"
        mnt.mkdir()
        stack.callback(_unmount_all, mnt)
        _run("mount", "-t", "ext4", device, str(mnt))
        stack.callback(_report_image, path)
        counted = f", {image.inodes:,} inodes" if image.inodes else ""
        kind = (
            f"ext4 with a journal (mkfs.ext4 defaults{counted}) on a {image.size / GIB:.1f} "
            f"GiB sparse image, loop device {_direct_io(device)}"
        )
        _say(f"writing to {kind}: {device} on {mnt}")
        yield WorkFs(mnt, kind)


@contextmanager
def _sampled(fs: WorkFs) -> Iterator[None]:
    """Sample the filesystem's use every second, for the log at the end (what the
    benchmark wrote at most: how large its image must be at other sizes)."""

    def sample() -> None:
        while not fs._stop.wait(SAMPLE_SECONDS):
            fs.sample()

    fs.sample()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        fs._stop.set()
        sampler.join()
        _say(
            f"{fs.path} held at most {fs.peak_bytes / GIB:.2f} GiB in "
            f"{fs.peak_inodes:,} inodes (sampled every {SAMPLE_SECONDS:.0f} s)"
        )


def _direct_io(device: str) -> str:
    """Whether the loop device got direct I/O: losetup falls back to cached I/O, and
    says nothing, where the host filesystem refuses O_DIRECT (tmpfs); the image's pages
    are then cached twice, and a cold figure is only as cold as the host's cache."""
    flag = Path("/sys/block", Path(device).name, "loop", "dio")
    try:
        on = flag.read_text().strip() == "1"
    except OSError:
        return "(direct I/O unknown)"
    return "with direct I/O" if on else "WITHOUT direct I/O (the host filesystem refused it)"


def _report_image(path: Path) -> None:
    _say(f"the image took {os.stat(path).st_blocks * 512 / GIB:.2f} GiB of the host's disk")


def _unmount_all(mnt: Path) -> None:
    """Unmount ``mnt`` and anything a failed run left mounted below it (a FUSE mount),
    deepest first; lazily if something still holds it (the loop device then detaches
    itself when the last user lets go)."""
    for target in sorted(mounts_under(mnt), key=lambda p: -len(p.parts)):
        if subprocess.run(["umount", str(target)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "--lazy", str(target)], capture_output=True, check=False)


def mounts_under(path: Path) -> list[Path]:
    """``path`` and every mount point below it that is mounted now."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = Path(_OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), line.split()[1]))
        if target == path or path in target.parents:
            found.append(target)
    return found


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")  # how /proc/self/mounts writes a space, a tab


def _detach_all_of(image: Path) -> None:
    """Detach every loop device backed by ``image``; one still in use is detached by
    the kernel when its last user closes it (losetup -d sets autoclear)."""
    found = subprocess.run(
        ["losetup", "--noheadings", "--output", "NAME", "--associated", str(image)],
        capture_output=True,
        text=True,
        check=False,
    )
    for device in found.stdout.split():
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a timeout, a kill) ends the block as Ctrl-C does, so the filesystem is
    cleaned up; only in the main thread, where Python delivers signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt), signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        for signum, handler in zip((signal.SIGTERM, signal.SIGINT), previous, strict=True):
            if handler is not None:
                signal.signal(signum, handler)


def _shield_cleanup() -> None:
    """Ignore Ctrl-C and SIGTERM for the rest of the clean-up (until
    _terminate_as_interrupt puts the handlers back): an impatient second Ctrl-C would
    otherwise leave the filesystem mounted and its loop device attached."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _say(message: str) -> None:
    print(f"[work-fs] {message}", file=sys.stderr, flush=True)
