"""Where a sysroot keeps things (docs/deployments.md draws it).

SYSROOT/boot/loader -> loader.N           the one atomic switch
SYSROOT/boot/loader.N/entries/*.conf      BLS entries
SYSROOT/boot/loader.N/deployments.json    the ordered deployment list
SYSROOT/boot/sapwood/OS-BOOTCSUM/         kernels and initramfs images
SYSROOT/sapwood/repo                      the repository (bare as root, else bare-user)
SYSROOT/sapwood/lock                      flock of every change
SYSROOT/sapwood/deploy/OS/var             /var shared by one OS
SYSROOT/sapwood/deploy/OS/deploy/ID.SERIAL[.origin]
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

from store import RepoMode, Repository, SysrootNotFoundError, UsageError

_OS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")


class Layout:
    """The paths of one sysroot."""

    def __init__(self, root: Path) -> None:
        # absolute once: a relative root would follow a later chdir elsewhere (attack23 14)
        self.root = Path(os.path.abspath(root))
        self.boot = self.root / "boot"
        self.loader = self.boot / "loader"
        self.boot_files = self.boot / "sapwood"
        self.sapwood = self.root / "sapwood"
        self.repo = self.sapwood / "repo"
        self.lock_file = self.sapwood / "lock"
        self.deploy = self.sapwood / "deploy"

    def os_dir(self, os_name: str) -> Path:
        return self.deploy / os_name

    def deployments_dir(self, os_name: str) -> Path:
        return self.deploy / os_name / "deploy"

    def var(self, os_name: str) -> Path:
        return self.deploy / os_name / "var"

    def deployment(self, os_name: str, name: str) -> Path:
        """``name`` is ID.SERIAL."""
        return self.deployments_dir(os_name) / name

    def origin(self, os_name: str, name: str) -> Path:
        return self.deployments_dir(os_name) / f"{name}.origin"

    def loader_dir(self, version: int) -> Path:
        return self.boot / f"loader.{version}"

    def os_names(self) -> list[str]:
        if not self.deploy.is_dir():
            return []
        return sorted(p.name for p in self.deploy.iterdir() if (p / "deploy").is_dir())

    def require(self) -> None:
        """Raise SysrootNotFoundError unless init-fs made this sysroot."""
        if not (self.repo / "config").is_file() or not self.deploy.is_dir():
            raise SysrootNotFoundError(
                f"{self.root}: not a sapwood sysroot (no sapwood/repo); initialise it with "
                "admin init-fs",
                path=self.root,
            )

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the sysroot lock: one change at a time (on an initialised sysroot)."""
        self.require()
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def check_os_name(name: str) -> str:
    if not _OS_NAME.fullmatch(name) or ".." in name:
        raise UsageError(
            f"invalid OS name {name!r}: use letters, digits, '_', '.', '+', '-' (64 at most)"
        )
    return name


def init_fs(root: Path) -> Layout:
    """Create an empty sysroot at ``root`` (idempotent): boot/, sapwood/repo, sapwood/deploy.

    The repository is bare when run as root (deployments hardlink files with their
    recorded owners, as OSTree's system repository), bare-user otherwise.
    """
    layout = Layout(root)
    root.mkdir(parents=True, exist_ok=True)
    for path in (layout.boot, layout.sapwood, layout.deploy):
        path.mkdir(mode=0o755, exist_ok=True)
    if not (layout.repo / "config").is_file():
        mode = RepoMode.BARE if os.geteuid() == 0 else RepoMode.BARE_USER
        Repository.init(layout.repo, mode).close()
    return layout


def os_init(layout: Layout, name: str) -> None:
    """Create the directories of the OS (stateroot) ``name`` (idempotent)."""
    layout.require()
    check_os_name(name)
    layout.deployments_dir(name).mkdir(parents=True, exist_ok=True)
    layout.var(name).mkdir(mode=0o755, exist_ok=True)
