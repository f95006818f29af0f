"""--tree=tar=: importing archives, and refusing unsafe ones."""

from __future__ import annotations

import io
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from fs.commit import CommitRequest, Layer, make_commit
from store import InvalidNameError, Repository, SourceError, UnsupportedFileTypeError
from tests.helpers import build_rich_tree, read_commit_tree, read_disk_tree


def _tar(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def test_tar_commit_equals_dir_commit(user_repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "src"
    build_rich_tree(source)
    archive = tmp_path / "tree.tar.gz"
    subprocess.run(  # GNU tar, as a user would make one: xattrs and numeric owners kept
        [
            "tar",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-C",
            source,
            "-czf",
            archive,
            ".",
        ],
        check=True,
    )
    from_dir = make_commit(user_repo, CommitRequest("a", [Layer("dir", str(source))]))
    from_tar = make_commit(user_repo, CommitRequest("b", [Layer("tar", str(archive))]))
    tree = read_commit_tree(user_repo.path, from_tar.commit_id.hex())
    assert tree == read_disk_tree(source)
    assert (
        user_repo.read_commit(from_dir.commit_id).tree
        == user_repo.read_commit(from_tar.commit_id).tree
    )


def test_hardlinks_inside_the_archive_share_an_object(
    user_repo: Repository, tmp_path: Path
) -> None:
    archive = _tar(
        tmp_path / "t.tar",
        (_member("a"), b"shared"),
        (_member("b", tarfile.LNKTYPE, "a"), b""),
    )
    commit_id = make_commit(
        user_repo, CommitRequest("main", [Layer("tar", str(archive))])
    ).commit_id
    tree = read_commit_tree(user_repo.path, commit_id.hex())
    assert tree["/b"].data == b"shared"


def test_missing_parents_get_default_directories(user_repo: Repository, tmp_path: Path) -> None:
    archive = _tar(tmp_path / "t.tar", (_member("deep/er/file"), b"x"))
    commit_id = make_commit(
        user_repo, CommitRequest("main", [Layer("tar", str(archive))])
    ).commit_id
    tree = read_commit_tree(user_repo.path, commit_id.hex())
    assert tree["/deep/er"].mode == 0o755 and tree["/deep/er/file"].data == b"x"


@pytest.mark.parametrize(
    ("members", "error", "names"),
    [
        ([(_member("/etc/passwd"), b"x")], SourceError, "/etc/passwd"),
        ([(_member("../escape"), b"x")], SourceError, "../escape"),
        ([(_member("a/../../escape"), b"x")], SourceError, "a/../../escape"),
        ([(_member("evil", tarfile.LNKTYPE, "../../etc/shadow"), b"")], SourceError, "evil"),
        ([(_member("evil", tarfile.LNKTYPE, "/etc/shadow"), b"")], SourceError, "evil"),
        ([(_member("evil", tarfile.LNKTYPE, "later"), b"")], SourceError, "later"),
        (
            [(_member("link", tarfile.SYMTYPE, "/etc"), b""), (_member("link/passwd"), b"x")],
            SourceError,
            "link/passwd",
        ),
        ([(_member("dev/null", tarfile.CHRTYPE), b"")], UnsupportedFileTypeError, "dev/null"),
        ([(_member("fifo", tarfile.FIFOTYPE), b"")], UnsupportedFileTypeError, "fifo"),
        ([(_member("x" * 300), b"x")], InvalidNameError, "x" * 300),
    ],
    ids=[
        "absolute",
        "dotdot",
        "inner-dotdot",
        "hardlink-up",
        "hardlink-abs",
        "hardlink-unknown",
        "through-symlink",
        "device",
        "fifo",
        "long-name",
    ],
)
def test_unsafe_archives_are_refused(
    user_repo: Repository,
    tmp_path: Path,
    members: list[tuple[tarfile.TarInfo, bytes]],
    error: type[Exception],
    names: str,
) -> None:
    archive = _tar(tmp_path / "bad.tar", *members)
    with pytest.raises(error, match=names.replace(".", r"\.")[:40]):
        make_commit(user_repo, CommitRequest("main", [Layer("tar", str(archive))]))
    assert user_repo.refs() == {}
    with user_repo.index.reader() as reader:
        assert list(reader.iter_objects()) == []


def test_xattrs_from_pax_headers(user_repo: Repository, tmp_path: Path) -> None:
    info = _member("f")
    info.pax_headers = {"SCHILY.xattr.user.note": "hi"}
    archive = _tar(tmp_path / "t.tar", (info, b"x"))
    commit_id = make_commit(
        user_repo, CommitRequest("main", [Layer("tar", str(archive))])
    ).commit_id
    tree = read_commit_tree(user_repo.path, commit_id.hex())
    assert tree["/f"].xattrs == ((b"user.note", b"hi"),)
    assert stat.S_IMODE(tree["/f"].mode) == 0o644


def test_not_a_tar(user_repo: Repository, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(SourceError, match="tar"):
        make_commit(user_repo, CommitRequest("main", [Layer("tar", str(junk))]))
