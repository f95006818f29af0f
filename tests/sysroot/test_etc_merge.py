"""The /etc merge on plain directories: the rules' edges, without a repository."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from fs.sysroot import etc_merge
from fs.sysroot.copying import copy_entry
from store import EtcMergeConflictError
from tests.sysroot.conftest import small_tree


def _type_in(new: Path) -> etc_merge.NewType:
    def new_type(rel: str) -> etc_merge.NodeType | None:
        try:
            st = os.lstat(new / rel)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISDIR(st.st_mode):
            return "dir"
        return "symlink" if stat.S_ISLNK(st.st_mode) else "file"

    return new_type


def _merge(
    tmp_path: Path, orig: dict[str, str], edit: dict[str, str | None], new: dict[str, str]
) -> Path:
    """Merge: ``orig`` defaults, edited locally by ``edit`` (None: delete), onto ``new``."""
    o = small_tree(tmp_path / "orig", orig, kernel=False)
    local = tmp_path / "local"
    copy_entry(o, local)
    for rel, content in edit.items():
        path = local / rel
        if content is None:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            if content.startswith("->"):
                path.symlink_to(content[2:])
            else:
                path.write_text(content)
    n = small_tree(tmp_path / "new", new, kernel=False)
    changes = etc_merge.plan(o, local, _type_in(n))
    etc_merge.apply(changes, local, n)
    return n


def test_a_deletion_never_goes_through_a_new_default_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "passwd").write_text("must survive\n")
    new = _merge(
        tmp_path,
        {"x/passwd": "p\n"},
        {"x/passwd": None},
        {"x": f"->{victim}"},
    )
    assert (victim / "passwd").read_text() == "must survive\n"
    assert os.readlink(new / "x") == str(victim)


def test_a_local_file_never_written_through_a_new_default_symlink(tmp_path: Path) -> None:
    with pytest.raises(EtcMergeConflictError) as raised:
        _merge(tmp_path, {"x/a": "a\n"}, {"x/a": "mine\n"}, {"x": "->/tmp"})
    assert raised.value.path == "x/a"


def test_a_changed_symlink_wins_and_an_unchanged_one_follows(tmp_path: Path) -> None:
    new = _merge(
        tmp_path,
        {"mine": "->a", "theirs": "->a"},
        {"mine": "->b"},
        {"mine": "->c", "theirs": "->c"},
    )
    assert os.readlink(new / "mine") == "b" and os.readlink(new / "theirs") == "c"


def test_a_file_replaced_by_a_symlink_locally_wins(tmp_path: Path) -> None:
    new = _merge(tmp_path, {"f": "f\n"}, {"f": "->/dev/null"}, {"f": "new f\n"})
    assert os.readlink(new / "f") == "/dev/null"


def test_an_added_file_in_a_directory_the_new_defaults_dropped(tmp_path: Path) -> None:
    new = _merge(tmp_path, {"d/a": "a\n"}, {"d/b": "b\n"}, {"other": "o\n"})
    assert (new / "d/b").read_text() == "b\n" and not (new / "d/a").exists()
