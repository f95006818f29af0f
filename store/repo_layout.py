"""A repository's directories on disk: laid out by init, kept private to their owner,
and whether this process may write them (store/repo.py's docstring shows the layout)."""

from __future__ import annotations

import configparser
import os
import stat
from pathlib import Path

from store.config_file import REPO_VERSION, write_config
from store.modes import RepoMode


def lay_out(path: Path, mode: RepoMode) -> None:
    """Make the directories and the config of a new repository of ``mode`` at ``path``
    (absent, or an empty directory: Repository.init checks)."""
    path.mkdir(parents=True, exist_ok=True)
    for sub in ("objects", "tmp", "index"):
        (path / sub).mkdir()
    for byte in range(256):
        (path / "objects" / f"{byte:02x}").mkdir()
    make_private(path, mode)
    if mode is RepoMode.ARCHIVE:
        (path / "refs" / "heads").mkdir(parents=True)
    config = configparser.ConfigParser(interpolation=None)
    config["core"] = {"repo_version": str(REPO_VERSION), "mode": mode.value, "fsync": "true"}
    write_config(path, config, fsync=False)  # a new repository: as durable as its dirs


def make_private(path: Path, mode: RepoMode) -> None:
    """Object and staging directories are their owner's alone.

    In bare mode, object files keep the modes their content was committed with,
    world-writable and setuid ones too, and every hardlinked checkout shares their
    inodes: another local user who could reach objects/ could rewrite an object and so
    every checkout of it. Staging directories (tmp/) hold objects before they are
    published, in every mode: a user who opened one there could keep writing to it
    after. The other modes' objects/ stays readable: their object files never carry
    write, setuid or setgid bits, so others may read (and mount) what the committed
    modes let them read.
    """
    private = ["tmp", "objects"] if mode is RepoMode.BARE else ["tmp"]
    for name in private:
        directory = path / name
        st = os.stat(directory)
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.chmod(directory, stat.S_IMODE(st.st_mode) & 0o700)


def writable(path: Path) -> bool:
    """Whether this process can write the repository (its index and lock); reading
    works either way: read-only media, another user's repository."""
    index = path / "index"
    return os.access(index, os.W_OK) and all(
        os.access(index / name, os.W_OK)
        for name in ("data.mdb", "lock.mdb")
        if (index / name).exists()
    )
