"""store.durability's temporary files, made without importing tempfile (session 12): an
unnamed O_TMPFILE file where the filesystem has them, tempfile's own where it has not,
and replace_file's randomly named file made with O_EXCL."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from store import durability


def test_a_temporary_file_has_no_name_and_holds_what_is_written(tmp_path: Path) -> None:
    with durability.temporary_file(tmp_path, buffering=1 << 16) as spool:
        spool.write(b"x" * 100_000)
        spool.seek(0)
        assert os.listdir(tmp_path) == []
        assert spool.read() == b"x" * 100_000
    assert os.listdir(tmp_path) == []


def test_without_o_tmpfile_a_temporary_file_is_tempfiles_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open
    refused: list[str] = []

    def no_tmpfile(path: str | Path, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            refused.append(str(path))
            raise OSError(errno.EOPNOTSUPP, "Operation not supported", str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", no_tmpfile)
    with durability.temporary_file(tmp_path) as spool:
        spool.write(b"spooled")
        spool.seek(0)
        assert spool.read() == b"spooled"
    assert refused and set(refused) == {str(tmp_path)}  # ours, then tempfile's own try
    assert os.listdir(tmp_path) == []


def test_a_missing_directory_is_an_error_not_a_file_elsewhere(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        durability.temporary_file(tmp_path / "gone")


def test_replace_file_never_writes_through_a_name_taken_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first random name is taken (by a symlink planted there): another is drawn,
    the symlink's target is never written."""
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    draws = iter([b"\x01" * 8, b"\x02" * 8])
    monkeypatch.setattr(os, "urandom", lambda n: next(draws))
    (tmp_path / f".summary.tmp-{'01' * 8}").symlink_to(target)
    durability.replace_file(tmp_path, "summary", b"new")
    assert (tmp_path / "summary").read_bytes() == b"new"
    assert target.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".summary.tmp-" + "01" * 8,
        "summary",
        "target",
    ]
    assert (tmp_path / "summary").stat().st_mode & 0o777 == 0o644
