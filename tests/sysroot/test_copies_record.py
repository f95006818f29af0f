"""The record of a deployment's copies (review22 7(b), fs/sysroot/copies_record.py): a
dropped deployment's untouched copies are known as the commit's without a byte read;
anything the record cannot vouch for (an edit, a chmod, a new file on a recorded name, a
record missing, damaged, too long, of another directory, or a symlink) falls back to the
byte comparison, so users' data is kept as before."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import sapwood
from fs.sysroot import copies_record, users_data
from tests.helpers import IS_ROOT
from tests.sysroot.conftest import commit, small_tree

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")

FILES = {"usr/etc/motd": "1\n", "opt/app/small.txt": "small\n", "root/.profile": "# p\n"}
BIG = bytes(range(256)) * (8 << 10)  # 2 MiB: the /opt of a tree not laid out for deploying


def _deploy_v1(sysroot: sapwood.Sysroot, tmp_path: Path) -> Path:
    tree = small_tree(tmp_path / "v1", FILES)
    (tree / "opt/app/big").write_bytes(BIG)
    commit(sysroot, tree)
    return sysroot.deployment_path(sysroot.deploy("debian/main").deployment)


def _drop(sysroot: sapwood.Sysroot, tmp_path: Path, first: Path) -> None:
    """Two more releases deployed (nothing booted: the previous default stays listed as
    the merge deployment): the first is dropped by the second."""
    for version in ("2", "3"):
        commit(sysroot, small_tree(tmp_path / f"v{version}", {**FILES, "usr/etc/v": version}))
        sysroot.deploy("debian/main")
    assert first.name not in {d.name for d in sysroot.deployments()}


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the copies compared byte for byte with their objects."""
    found: list[str] = []
    real = users_data._same_bytes

    def counted(parent: int, name: str, *args: object) -> bool:
        found.append(name)
        return real(parent, name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(users_data, "_same_bytes", counted)
    return found


def _record(deployment: Path) -> Path:
    return deployment.parent / f"{deployment.name}.copies"


def _rewrite_in_place(path: Path) -> None:
    """A user's edit that keeps the inode, the size and (put back) the mtime 0."""
    with path.open("r+b") as edited:
        edited.write(b"USER")
    os.utime(path, ns=(0, 0))


def test_the_record_names_each_copy_with_its_identity(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    first = _deploy_v1(sysroot, tmp_path)
    record = _record(first)
    assert oct(record.stat().st_mode & 0o777) == "0o600"
    files = json.loads(record.read_text())["files"]
    assert sorted(files) == ["opt/app/big", "opt/app/small.txt", "root/.profile"]
    st = (first / "opt/app/big").stat()
    assert files["opt/app/big"] == [st.st_dev, st.st_ino, st.st_ctime_ns, len(BIG)]
    # nothing hidden beside it: written aside and renamed
    assert not [n for n in os.listdir(first.parent) if n.startswith(".")]


def test_an_untouched_copy_is_not_read_at_the_drop(
    sysroot: sapwood.Sysroot, tmp_path: Path, reads: list[str]
) -> None:
    first = _deploy_v1(sysroot, tmp_path)
    _drop(sysroot, tmp_path, first)
    assert reads == []
    assert not first.exists() and not _record(first).exists()
    assert sysroot.kept_on_disk() == []
    # the listed deployments keep theirs
    for listed in sysroot.deployments():
        assert _record(sysroot.deployment_path(listed)).is_file()


def test_an_untouched_copy_is_the_commits_even_when_its_object_cannot_be_opened(
    sysroot: sapwood.Sysroot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other proof that nothing is read: an object that cannot be opened counts as
    users' data when it must be read (kept), yet the drop goes through."""
    first = _deploy_v1(sysroot, tmp_path)

    def cannot(*args: object) -> int:
        raise OSError(5, "no object for this test")

    with sysroot.open_repository() as repo:
        monkeypatch.setattr(type(repo), "open_file_fd", cannot)
    _drop(sysroot, tmp_path, first)
    assert not first.exists()
    assert sysroot.kept_on_disk() == []


@pytest.mark.parametrize(
    "edit", ["appended", "rewritten in place, mtime put back to 0", "replaced, mtime 0"]
)
def test_an_edited_copy_is_kept_as_users_data(
    sysroot: sapwood.Sysroot,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    reads: list[str],
    edit: str,
) -> None:
    first = _deploy_v1(sysroot, tmp_path)
    big = first / "opt/app/big"
    if edit == "appended":
        with big.open("ab") as edited:
            edited.write(b"more")
    elif edit == "replaced, mtime 0":  # a new file on the name: maybe the same inode
        big.unlink()
        big.write_bytes(b"USER" + BIG[4:])
        os.utime(big, ns=(0, 0))
    else:
        _rewrite_in_place(big)
    written = big.read_bytes()
    _drop(sysroot, tmp_path, first)
    assert big.read_bytes() == written
    assert [d.name for d in sysroot.kept_on_disk()] == [first.name]
    assert any("opt/app/big is not of its commit" in r.getMessage() for r in caplog.records)
    # the cheap tests first (a size: no read), else a read: the record vouched for nothing
    assert reads == ([] if edit == "appended" else ["big"])
    # kept with its deployment, for the next look
    assert _record(first).is_file()


def test_a_chmod_alone_makes_the_copy_read_again(
    sysroot: sapwood.Sysroot, tmp_path: Path, reads: list[str]
) -> None:
    """A chmod changes ctime: the record no longer vouches, the bytes are compared; the
    same bytes with another mode count as the commit's (review22 5, by design:
    docs/deployments.md), so the deployment goes."""
    first = _deploy_v1(sysroot, tmp_path)
    os.chmod(first / "opt/app/big", 0o600)
    _drop(sysroot, tmp_path, first)
    assert reads == ["big"]
    assert not first.exists()


def _damage(record: Path, first: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if how == "missing":
        record.unlink()
    elif how == "garbage":
        record.write_bytes(b"\x00\xff not json")
    elif how == "cut short":
        record.write_bytes(record.read_bytes()[:100])
    elif how == "too long":
        monkeypatch.setattr(copies_record, "LIMIT", 64)
    elif how == "a symlink to a good copy of it":
        good = first.parent.parent / "elsewhere.copies"
        record.rename(good)
        record.symlink_to(good)
    elif how == "of another directory":
        data = json.loads(record.read_text())
        data["deployment"][1] += 1
        record.write_text(json.dumps(data))
    elif how == "a float ctime":
        data = json.loads(record.read_text())
        data["files"]["opt/app/big"][2] = float(data["files"]["opt/app/big"][2])
        record.write_text(json.dumps(data))
    else:
        raise AssertionError(how)


DAMAGES = [
    "missing",
    "garbage",
    "cut short",
    "too long",
    "a symlink to a good copy of it",
    "of another directory",
    "a float ctime",
]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_bad_record_falls_back_and_keeps_users_data(
    sysroot: sapwood.Sysroot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reads: list[str],
    how: str,
) -> None:
    first = _deploy_v1(sysroot, tmp_path)
    big = first / "opt/app/big"
    _rewrite_in_place(big)
    _damage(_record(first), first, how, monkeypatch)
    _drop(sysroot, tmp_path, first)
    assert big.read_bytes()[:4] == b"USER"
    assert [d.name for d in sysroot.kept_on_disk()] == [first.name]
    assert "big" in reads


@pytest.mark.parametrize("how", ["garbage", "of another directory"])
def test_a_bad_record_of_untouched_copies_falls_back_to_reading_them(
    sysroot: sapwood.Sysroot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reads: list[str],
    how: str,
) -> None:
    first = _deploy_v1(sysroot, tmp_path)
    _damage(_record(first), first, how, monkeypatch)
    _drop(sysroot, tmp_path, first)
    assert sorted(reads) == [".profile", "big", "small.txt"]
    assert not first.exists() and not _record(first).exists()


def test_a_record_claiming_a_new_files_inode_with_the_old_ctime_is_not_believed(
    sysroot: sapwood.Sysroot, tmp_path: Path, reads: list[str]
) -> None:
    """Inode reuse: the copy deleted, a file of its size and mtime 0 made on its name
    (on its inode, if the filesystem gives it again): a record naming that inode still
    carries the copy's ctime, and the new file's is later."""
    first = _deploy_v1(sysroot, tmp_path)
    big = first / "opt/app/big"
    record = _record(first)
    data = json.loads(record.read_text())
    big.unlink()
    big.write_bytes(b"USER" + BIG[4:])
    os.utime(big, ns=(0, 0))
    st = big.stat()
    old_ctime = data["files"]["opt/app/big"][2]
    assert st.st_ctime_ns != old_ctime
    data["files"]["opt/app/big"] = [st.st_dev, st.st_ino, old_ctime, st.st_size]
    record.write_text(json.dumps(data))
    _drop(sysroot, tmp_path, first)
    assert big.read_bytes()[:4] == b"USER"
    assert [d.name for d in sysroot.kept_on_disk()] == [first.name]
    assert reads == ["big"]


def test_a_recorded_copy_now_a_directory_of_users_files_is_kept(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    first = _deploy_v1(sysroot, tmp_path)
    small = first / "opt/app/small.txt"
    small.unlink()
    small.mkdir()
    (small / "notes").write_text("mine\n")
    _drop(sysroot, tmp_path, first)
    assert (small / "notes").read_text() == "mine\n"
    assert [d.name for d in sysroot.kept_on_disk()] == [first.name]


def test_a_kept_deployments_record_goes_with_it_at_the_cleanup(
    sysroot: sapwood.Sysroot, tmp_path: Path, reads: list[str]
) -> None:
    first = _deploy_v1(sysroot, tmp_path)
    (first / "opt/app/mine").write_text("users' data\n")
    _drop(sysroot, tmp_path, first)
    assert _record(first).is_file()
    (first / "opt/app/mine").unlink()
    sysroot.cleanup()
    assert not first.exists() and not _record(first).exists()
    assert reads == []  # neither look read an untouched copy


def test_a_record_left_without_its_deployment_is_removed(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    first = _deploy_v1(sysroot, tmp_path)
    orphan = first.parent / f"{'0' * 64}.7.copies"
    orphan.write_bytes(_record(first).read_bytes())
    sysroot.cleanup()
    assert not orphan.exists()
    assert _record(first).is_file()
