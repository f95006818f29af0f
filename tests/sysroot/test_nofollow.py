"""fs/sysroot/nofollow.rename_noreplace: renameat2's RENAME_NOREPLACE, and the look
then rename it falls back to where the C library has no renameat2."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fs.sysroot import nofollow


def _in(directory: Path) -> int:
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY)


@pytest.mark.usefixtures("way")
def test_renames_to_a_free_name(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    fd = _in(tmp_path)
    try:
        nofollow.rename_noreplace(fd, "a", "b")
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["b"]


@pytest.mark.usefixtures("way")
@pytest.mark.parametrize("there", ["empty directory", "file", "dangling symlink"])
def test_never_replaces_what_is_at_the_target(tmp_path: Path, there: str) -> None:
    """A plain rename replaces an empty directory or a file: review25 3."""
    (tmp_path / "a").mkdir()
    target = tmp_path / "b"
    if there == "empty directory":
        target.mkdir(mode=0o700)
    elif there == "file":
        target.write_text("mine\n")
    else:
        target.symlink_to(tmp_path / "nowhere")
    before = os.lstat(target).st_ino
    fd = _in(tmp_path)
    try:
        with pytest.raises(OSError) as raised:
            nofollow.rename_noreplace(fd, "a", "b")
    finally:
        os.close(fd)
    assert raised.value.errno == errno.EEXIST
    assert os.lstat(target).st_ino == before and (tmp_path / "a").is_dir()
