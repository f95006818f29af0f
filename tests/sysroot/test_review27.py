"""review27: nofollow.rename_noreplace's ctypes call attacked (52f2d45, b54621d): names
with a NUL, non-ASCII and undecodable names, a name longer than NAME_MAX, each errno
renameat2 may give (the fallback only on ENOSYS, EINVAL, EPERM), both ways (renameat2,
and the look then rename where the C library has none). Findings 2, 3 and 5 failed on
f921726 (strict xfails then) and pass since 6ce9e3e."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from fs.sysroot import nofollow
from fs.sysroot import prepare_tree as prepare_tree_module
from store import TreeLayoutError
from tests.sysroot import test_review25 as r25
from tests.sysroot.conftest import small_tree


def _rename(directory: Path, source: str, target: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        nofollow.rename_noreplace(fd, source, target)
    finally:
        os.close(fd)


NULS = [("a", "b\0c"), ("a\0x", "b")]


@pytest.mark.parametrize(("source", "target"), NULS)
def test_a_name_with_a_nul_is_refused_and_nothing_renamed(
    tmp_path: Path, source: str, target: str
) -> None:
    """os.rename refuses a NUL (ValueError); ctypes passed the bytes as a C string, cut
    at the NUL: "a" was renamed to "b"."""
    assert nofollow._renameat2() is not None, "glibc >= 2.28 has renameat2"
    _refuses_a_nul(tmp_path, source, target)


@pytest.mark.parametrize(("source", "target"), NULS)
def test_the_fallback_refuses_a_name_with_a_nul(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, target: str
) -> None:
    monkeypatch.setattr(nofollow, "_renameat2", lambda: None)
    _refuses_a_nul(tmp_path, source, target)


def _refuses_a_nul(tmp_path: Path, source: str, target: str) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="null"):
        _rename(tmp_path, source, target)
    assert sorted(os.listdir(tmp_path)) == ["a"]


@pytest.mark.usefixtures("way")
@pytest.mark.parametrize("target", ["ünïcødé-日本", os.fsdecode(b"raw-\xff\xfe")])
def test_non_ascii_and_undecodable_names_are_renamed_as_named(tmp_path: Path, target: str) -> None:
    (tmp_path / "a").mkdir()
    _rename(tmp_path, "a", target)
    assert os.listdir(tmp_path) == [target]
    assert os.listdir(os.fsencode(tmp_path)) == [os.fsencode(target)]


@pytest.mark.usefixtures("way")
def test_a_name_longer_than_name_max_is_enametoolong_and_nothing_renamed(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(OSError) as raised:
        _rename(tmp_path, "a", "n" * 300)
    assert raised.value.errno == errno.ENAMETOOLONG
    assert os.listdir(tmp_path) == ["a"]


@pytest.mark.usefixtures("way")
def test_a_target_taken_is_file_exists_error_whatever_the_way(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").symlink_to("/nonexistent")
    with pytest.raises(FileExistsError):
        _rename(tmp_path, "a", "b")
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]
    assert (tmp_path / "b").is_symlink()


def _failing(code: int, calls: list[int]) -> Callable[[], Callable[..., int]]:
    def renameat2(*args: object) -> int:
        calls.append(code)
        ctypes.set_errno(code)
        return -1

    return lambda: renameat2


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EINVAL, errno.EPERM])
def test_the_look_then_rename_where_renameat2_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(nofollow, "_renameat2", _failing(code, calls))
    (tmp_path / "a").mkdir()
    _rename(tmp_path, "a", "b")
    assert calls == [code]
    assert os.listdir(tmp_path) == ["b"]


@pytest.mark.parametrize("code", [errno.EACCES, errno.EXDEV, errno.EIO, errno.ENOSPC])
def test_any_other_errno_is_raised_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(nofollow, "_renameat2", _failing(code, calls))
    (tmp_path / "a").mkdir()
    with pytest.raises(OSError) as raised:
        _rename(tmp_path, "a", "b")
    assert (raised.value.errno, calls) == (code, [code])
    assert os.listdir(tmp_path) == ["a"]


def test_renameat2s_error_names_both_names_as_the_fallbacks_does(tmp_path: Path) -> None:
    """A source gone (ENOENT): the fallback's os.rename names 'missing' -> 'b'; the
    renameat2 way named only the target ("No such file or directory: 'b'"), the one name
    that is meant to be free (failed_midway's line then names the place, not its
    temporary)."""
    assert nofollow._renameat2() is not None, "glibc >= 2.28 has renameat2"
    with pytest.raises(FileNotFoundError) as raised:
        _rename(tmp_path, "missing", "b")
    assert (raised.value.filename, raised.value.filename2) == ("missing", "b")


def test_the_fallbacks_error_names_both_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nofollow, "_renameat2", lambda: None)
    with pytest.raises(FileNotFoundError) as raised:
        _rename(tmp_path, "missing", "b")
    assert (raised.value.filename, raised.value.filename2) == ("missing", "b")


@pytest.mark.parametrize("relative", ["..", "../escaped", "a/../../escaped"])
def test_nothing_outside_the_tree_is_written_through_a_dot_dot(
    tmp_path: Path, relative: str
) -> None:
    """The module's promise ("must not make sapwood look or write outside it") holds for
    symlinks only: each component is opened with O_NOFOLLOW, and ".." is one. Today's
    callers pass constants; a relative name taken from a tree (a link's target, a
    configuration line) would write beside the tree."""
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    root = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError):
            nofollow.write_below(root, f"{relative}/file", "x")
    finally:
        os.close(root)
    assert sorted(os.listdir(tmp_path)) == ["tree"]
    assert sorted(os.listdir(tree)) == ["a"]


@pytest.mark.parametrize(("kind", "umask"), [("no var", 0o077), ("dpkg link, no place", 0o000)])
def test_killed_at_any_call_under_a_sandbox_denying_renameat2_then_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, umask: int
) -> None:
    """review25 9's fallback (renameat2 EPERM: a look then os.rename) killed before each
    call (the look and the rename included), as review25's kill test does on renameat2:
    the next run under the same umask ends as a run never killed."""
    calls: list[int] = []
    monkeypatch.setattr(nofollow, "_renameat2", _failing(errno.EPERM, calls))
    reference = r25._shape_kinds(tmp_path / "reference", kind)
    assert r25._killed_at(reference, 0, umask) == 0
    wanted = r25._modes(reference)
    assert not [name for name, _, _ in wanted if nofollow.NEW in name]
    here = r25._shape_kinds(tmp_path / "here", kind)  # in this process: the fake is called
    prepare_tree_module.prepare_tree(here)
    assert calls and set(calls) == {errno.EPERM}, calls
    shutil.rmtree(here)
    unfinished, point, code = [], 0, -signal.SIGKILL
    while code != 0:
        point += 1
        assert point < 400, "prepare-tree never ran through"
        tree = r25._shape_kinds(tmp_path / f"t{point}", kind)
        code = r25._killed_at(tree, point, umask)
        assert code in (0, -signal.SIGKILL), code
        if code != 0:
            assert r25._killed_at(tree, 0, umask) == 0, f"the run after point {point}"
            if r25._modes(tree) != wanted:
                unfinished.append((point, sorted(set(r25._modes(tree)) ^ set(wanted))[:2]))
        shutil.rmtree(tree)
    assert point > 100, f"killed at only {point - 1} points"
    assert not unfinished, unfinished


def test_a_temporary_name_it_may_not_list_is_refused_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review27 6 (fixed in ea30584 before a test was written): an empty-looking
    directory at a temporary name that this user may not list (another user's 0700;
    simulated: this session runs as root) was a raw PermissionError naming only its
    component. It is refused as another user's: a TreeLayoutError naming the tree,
    nothing changed."""
    tree = small_tree(tmp_path / "tree", {})
    (tree / "var" / ".opt.sapwood-new").mkdir()
    before = r25._modes(tree)
    real = nofollow.listdir_below

    def listdir_below(root: int, relative: str) -> list[str]:
        if relative.endswith(nofollow.NEW):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), relative)
        return real(root, relative)

    monkeypatch.setattr(prepare_tree_module, "listdir_below", listdir_below)
    with pytest.raises(TreeLayoutError) as raised:
        prepare_tree_module.prepare_tree(tree)
    assert str(tree / "var" / ".opt.sapwood-new") in str(raised.value)
    assert r25._modes(tree) == before
