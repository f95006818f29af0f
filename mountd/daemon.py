"""The mount daemon: pyfuse3 on trio, signals, and going to the background.

``sapwood mount`` without -f starts ``sapwood mount -f`` as a new session and
returns once the mount point is mounted (or prints the daemon's error and fails).
In the foreground, SIGINT and SIGTERM end the loop and unmount cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import pyfuse3
import trio

from mountd.fuse_ops import SapwoodOperations
from mountd.repo_view import RepositoryView
from mountd.view import CommitView, TreeView, ViewOptions
from store import ObjectId, Repository, SapwoodError, UsageError

log = logging.getLogger(__name__)
SAPWOOD_OPTIONS = {"user_owned"}  # ours; every other -o option goes to libfuse
_READY_TIMEOUT = 30.0


class MountError(SapwoodError):
    """The mount could not be made."""


def fuse_options(options: list[str]) -> tuple[set[str], bool]:
    """libfuse options (always read-only) and whether to show files as the user's."""
    chosen = {opt for text in options for opt in text.split(",") if opt}
    user_owned = "user_owned" in chosen
    fuse = (chosen - SAPWOOD_OPTIONS) | {"ro", "fsname=sapwood", "subtype=sapwood"}
    if "no_default_permissions" in fuse:
        fuse -= {"no_default_permissions"}
    else:
        fuse |= {"default_permissions"}
    return fuse, user_owned


def serve(
    repo: Repository, commit_id: ObjectId | None, mountpoint: Path, options: list[str]
) -> None:
    """Mount one commit (or, without one, the repository) and serve until unmounted."""
    fuse, user_owned = fuse_options(options)
    owner = (os.getuid(), os.getgid()) if user_owned else None
    view_options = ViewOptions(owner=owner)
    view: TreeView = (
        RepositoryView(repo, view_options)
        if commit_id is None
        else CommitView(repo, commit_id, view_options)
    )
    operations = SapwoodOperations(view, str(repo.path))
    try:
        pyfuse3.init(operations, str(mountpoint), fuse)
    except RuntimeError as exc:
        raise MountError(f"cannot mount on {mountpoint}: {exc}") from None
    log.info("mounted %s on %s", commit_id.hex() if commit_id else "the repository", mountpoint)
    try:
        trio.run(_main)
    except BaseException:
        pyfuse3.close(unmount=True)
        view.close()
        raise
    pyfuse3.close(unmount=True)
    view.close()


async def _main() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signals, nursery.cancel_scope)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _stop_on_signals(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %d: unmounting", signum)
            pyfuse3.terminate()
            return


def start_in_background(argv: list[str], mountpoint: Path) -> None:
    """Run ``sapwood ... mount -f`` detached; return once it has mounted."""
    with tempfile.TemporaryFile() as log_file:
        _start_and_wait(argv, mountpoint, log_file)


def _start_and_wait(argv: list[str], mountpoint: Path, log_file: IO[bytes]) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "mountd.cli.main", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        start_new_session=True,
    )
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if os.path.ismount(mountpoint):
            return
        if child.poll() is not None:
            log_file.seek(0)
            lines = log_file.read().decode(errors="replace").strip().splitlines()
            message = lines[-1].removeprefix("sapwood: error: ") if lines else "the daemon exited"
            raise MountError(message)
        time.sleep(0.02)
    child.kill()
    raise MountError(f"{mountpoint}: not mounted after {_READY_TIMEOUT:.0f} s")


def unmount(mountpoint: Path) -> None:
    if not os.path.ismount(mountpoint):
        raise UsageError(f"{mountpoint}: not a mount point")
    result = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, text=True)
    if result.returncode != 0:
        raise MountError(result.stderr.strip() or f"cannot unmount {mountpoint}")
