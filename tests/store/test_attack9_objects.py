"""Attack 9: odd names planted in objects/XX/ are never taken for objects by the
link-checkout listing (store/inodes.py), whether a directory's names are converted
together or one by one."""

from __future__ import annotations

import os
from pathlib import Path

from store.inodes import _list_objects

_HEX = "0123456789abcdef"


def _id(seed: int) -> str:
    return "".join(_HEX[(seed * 7 + i * 13) % 16] for i in range(64))


def _plant(objects: Path, name: str) -> int:
    """A file objects/<name> (name: 'XX/rest'); its inode."""
    path = objects / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"planted")
    return os.lstat(path).st_ino


def test_only_lower_case_hex_names_of_the_right_length_are_objects(tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    good = _id(1)
    kept = _plant(objects, f"{good[:2]}/{good[2:]}.file")
    upper = _id(2)
    odd = [
        f"{upper[:2]}/{upper[2:].upper()}.file",  # alone in its directory: one fromhex
        f"{good[:2]}/{_id(3)[2:].upper()}.file",  # beside a good one
        f"{good[:2]}/{_id(4)[2:33]} {_id(4)[34:]}.file",  # a space (fromhex skips it)
        f"{good[:2]}/{_id(5)[2:-1]}.file",  # a digit short
        f"{good[:2]}/{_id(6)[2:]}.file.tmp",
        f"{good[:2]}/{_id(7)[2:]}.filez",
        f"{good[:2]}/{_id(8)[2:-1]}g.file",
        f"{good[:2]}/\t{_id(9)[3:]}.file",  # a tab for a digit
    ]
    planted = {_plant(objects, name) for name in odd}
    listing = _list_objects(str(objects))
    assert listing.get(kept) == bytes.fromhex(good)
    assert len(listing) == 1
    assert all(listing.get(inode) is None for inode in planted)


def test_an_upper_case_name_alone_in_its_directory_is_no_object(tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    name = _id(2)
    inode = _plant(objects, f"{name[:2]}/{name[2:].upper()}.file")
    assert len(_list_objects(str(objects))) == 0
    assert _list_objects(str(objects)).get(inode) is None
