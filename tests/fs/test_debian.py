"""A real Debian tree (debootstrap minbase) commits in every mode, reproducibly."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fs.commit import CommitRequest, Layer, LayerKind, make_commit
from fs.options import ContentOptions
from store import ObjectId, RepoMode, Repository, lookup, read_xattrs, walk
from tests.helpers import IS_ROOT

pytestmark = [
    pytest.mark.debian,
    pytest.mark.skipif(not IS_ROOT, reason="debootstrap needs root"),
]


@pytest.fixture(scope="module")
def debian() -> Path:
    from tests.debian import debian_tree

    return debian_tree()


def _compare(repo: Repository, commit_id: ObjectId, source: Path, mode: RepoMode) -> int:
    """Check every entry of the commit against the source tree; return the count."""
    count = 0
    root = lookup(repo, commit_id, "/")
    for node in walk(repo, root):
        path = source / os.fsdecode(node.path.lstrip(b"/"))
        st = os.lstat(path)
        if node.dir is not None:
            meta = repo.read_dirmeta(node.dir.meta)
            uid, gid, mode_bits, xattrs = meta.uid, meta.gid, meta.mode, meta.xattrs
        else:
            assert node.file is not None
            header, size = repo.read_file_header(node.file)
            uid, gid, mode_bits, xattrs = header.uid, header.gid, header.mode, header.xattrs
            if header.is_symlink:
                assert header.symlink_target == os.readlink(os.fsencode(path))
            else:
                assert size == st.st_size
                assert repo.read_file(node.file) == path.read_bytes()
        assert stat.S_IFMT(mode_bits) == stat.S_IFMT(st.st_mode), path
        if mode is RepoMode.BARE_USER_ONLY:
            assert (uid, gid, xattrs) == (0, 0, ())
            assert stat.S_IMODE(mode_bits) == stat.S_IMODE(st.st_mode) & 0o755 or stat.S_ISLNK(
                st.st_mode
            )
        else:
            assert (uid, gid, stat.S_IMODE(mode_bits)) == (
                st.st_uid,
                st.st_gid,
                stat.S_IMODE(st.st_mode),
            ), path
            assert xattrs == read_xattrs(path), path
        count += 1
    return count


def test_debian_tree_commits_in_every_mode_and_recommits_identically(
    debian: Path, tmp_path: Path, mode: RepoMode
) -> None:
    repo = Repository.init(tmp_path / "repo", mode)
    options = ContentOptions(canonical_permissions=mode is RepoMode.BARE_USER_ONLY)
    request = CommitRequest("debian/bookworm", [Layer(LayerKind.DIR, str(debian))], options=options)
    first = make_commit(repo, request)
    second = make_commit(repo, request)
    one, two = repo.read_commit(first.commit_id), repo.read_commit(second.commit_id)
    assert (one.tree, one.meta) == (two.tree, two.meta)
    assert second.stats.files_read <= first.stats.files_read // 100  # the stat cache did its job
    entries = _compare(repo, first.commit_id, debian, mode)
    assert entries > 5000
    setuid = [
        n
        for n in walk(repo, lookup(repo, first.commit_id, "/usr/bin"))
        if n.file and repo.read_file_header(n.file)[0].mode & stat.S_ISUID
    ]
    assert bool(setuid) == (mode is not RepoMode.BARE_USER_ONLY)
    repo.close()
