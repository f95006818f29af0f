"""Copies of /etc and /var: reflink, else copy_file_range, else read and write; the
metadata follows."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from fs.sysroot import copying
from tests.helpers import IS_ROOT


def _refuse(*args: object) -> int:
    raise OSError(errno.EOPNOTSUPP, "not here")


@pytest.mark.parametrize("refused", [(), ("ioctl",), ("ioctl", "copy_file_range")])
def test_each_way_of_copying_gives_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: tuple[str, ...]
) -> None:
    if "ioctl" in refused:
        monkeypatch.setattr("fs.sysroot.copying.fcntl.ioctl", _refuse)
    if "copy_file_range" in refused:
        monkeypatch.setattr("fs.sysroot.copying.os.copy_file_range", _refuse)
    data = os.urandom(3 << 20) + b"tail"
    (tmp_path / "src").write_bytes(data)
    copying.copy_entry(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst").read_bytes() == data


def test_a_tree_keeps_modes_owners_xattrs_and_symlinks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d/f").write_text("f\n")
    os.chmod(src / "d/f", 0o640)
    os.chmod(src / "d", 0o750)
    os.setxattr(src / "d/f", "user.k", b"v")
    (src / "link").symlink_to("/nowhere")
    os.mkfifo(src / "fifo")
    if IS_ROOT:
        os.chown(src / "d/f", 123, 456)
    copying.copy_entry(src, tmp_path / "dst")
    dst = tmp_path / "dst"
    assert stat.S_IMODE(os.stat(dst / "d").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(dst / "d/f").st_mode) == 0o640
    assert os.getxattr(dst / "d/f", "user.k") == b"v"
    assert os.readlink(dst / "link") == "/nowhere"
    assert not os.path.lexists(dst / "fifo")  # skipped, as the merge skips them
    if IS_ROOT:
        assert (os.stat(dst / "d/f").st_uid, os.stat(dst / "d/f").st_gid) == (123, 456)
    assert os.stat(dst / "d/f").st_mtime_ns == os.stat(src / "d/f").st_mtime_ns
