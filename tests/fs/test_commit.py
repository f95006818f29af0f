"""Committing real trees: one body run in every repository mode.

commit -> ls -R -> cat of every file must give back the source tree exactly:
content, modes, uid/gid, xattrs, symlink targets, empty files and directories.
"""

from __future__ import annotations

import os
import stat
import tarfile
import time
from pathlib import Path

import pytest

from fs.commit import NO_PARENT, CommitRequest, Layer, LayerKind, NoParent, make_commit
from fs.options import ContentOptions, StatOverride
from fs.statcache import RACY_MARGIN_NS
from store import ModePolicyError, RepoMode, Repository
from store.ids import ObjectId
from tests.helpers import (
    IS_ROOT,
    as_mode_records,
    build_rich_tree,
    cli,
    read_commit_tree,
    read_disk_tree,
)


def _commit(
    repo: Repository,
    *layers: Layer,
    parent: ObjectId | NoParent | None = None,
    options: ContentOptions | None = None,
) -> str:
    request = CommitRequest(
        "main", list(layers), parent=parent, options=options or ContentOptions()
    )
    return make_commit(repo, request).commit_id.hex()


def test_commit_reproduces_the_source_tree(repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "src"
    build_rich_tree(source, setuid=repo.mode is not RepoMode.BARE_USER_ONLY)
    commit_id = _commit(repo, Layer(LayerKind.DIR, str(source)))
    expected = as_mode_records(read_disk_tree(source), repo.mode)
    assert read_commit_tree(repo.path, commit_id) == expected
    if IS_ROOT and repo.mode is not RepoMode.BARE_USER_ONLY:
        ping = read_commit_tree(repo.path, commit_id)["/usr/bin/ping"]
        assert dict(ping.xattrs)[b"security.capability"]
        assert read_commit_tree(repo.path, commit_id)["/usr/bin/su"].mode == 0o4755


def test_recommit_gives_the_same_root_tree_and_reads_nothing(
    repo: Repository, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    build_rich_tree(source, setuid=repo.mode is not RepoMode.BARE_USER_ONLY)
    _age(source)
    first = make_commit(repo, CommitRequest("main", [Layer(LayerKind.DIR, str(source))]))
    second = make_commit(repo, CommitRequest("main", [Layer(LayerKind.DIR, str(source))]))
    one, two = repo.read_commit(first.commit_id), repo.read_commit(second.commit_id)
    assert (one.tree, one.meta) == (two.tree, two.meta)
    assert two.parent == first.commit_id
    assert first.stats.files_read > 0
    assert second.stats.files_read == 0
    assert second.stats.cache_hits == first.stats.files_read


def _age(root: Path, seconds: int = 60) -> None:
    """Make every file look old, as the stat cache only trusts files at rest."""
    past = time.time() - seconds
    for path in [root, *root.rglob("*")]:
        os.utime(path, (past, past), follow_symlinks=False)
    time.sleep(RACY_MARGIN_NS / 1e9 + 0.1)  # utime moved every ctime to now


def test_stat_cache_sees_a_change_that_keeps_size_and_mtime(
    user_repo: Repository, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    target = source / "file"
    target.write_bytes(b"aaaa")
    _age(source)
    first = _commit(user_repo, Layer(LayerKind.DIR, str(source)))
    st = target.stat()
    target.write_bytes(b"bbbb")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    second = _commit(user_repo, Layer(LayerKind.DIR, str(source)))
    assert cli("--repo", user_repo.path, "cat", first, "/file").raw == b"aaaa"
    assert cli("--repo", user_repo.path, "cat", second, "/file").raw == b"bbbb"


def test_recently_changed_files_are_not_cached(user_repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "fresh").write_bytes(b"just written")
    make_commit(user_repo, CommitRequest("main", [Layer(LayerKind.DIR, str(source))]))
    again = make_commit(user_repo, CommitRequest("main", [Layer(LayerKind.DIR, str(source))]))
    assert again.stats.files_read == 1


def test_layers_overlay_in_order(user_repo: Repository, tmp_path: Path) -> None:
    base, top = tmp_path / "base", tmp_path / "top"
    for root in (base, top):
        (root / "etc").mkdir(parents=True)
    (base / "etc" / "keep").write_text("from base")
    (base / "etc" / "replace").write_text("from base")
    (base / "was-dir").mkdir()
    (base / "was-dir" / "x").write_text("x")
    (top / "etc" / "replace").write_text("from top")
    (top / "was-dir").write_text("now a file")
    archive = tmp_path / "layer.tar"
    extra = tmp_path / "extra"
    (extra / "opt").mkdir(parents=True)
    (extra / "opt" / "tool").write_text("from tar")
    with tarfile.open(archive, "w") as tar:
        tar.add(extra, arcname=".")
    base_id = _commit(user_repo, Layer(LayerKind.DIR, str(base)))
    merged = _commit(
        user_repo,
        Layer(LayerKind.REF, base_id),
        Layer(LayerKind.DIR, str(top)),
        Layer(LayerKind.TAR, str(archive)),
    )
    tree = read_commit_tree(user_repo.path, merged)
    assert tree["/etc/keep"].data == b"from base"
    assert tree["/etc/replace"].data == b"from top"
    assert tree["/was-dir"].kind == "-" and "/was-dir/x" not in tree
    assert tree["/opt/tool"].data == b"from tar"


def test_a_ref_layer_alone_reuses_the_tree(user_repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "src"
    build_rich_tree(source)
    first = _commit(user_repo, Layer(LayerKind.DIR, str(source)))
    copy = _commit(user_repo, Layer(LayerKind.REF, first))
    assert (
        user_repo.read_commit(ObjectId(bytes.fromhex(copy))).tree
        == user_repo.read_commit(ObjectId(bytes.fromhex(first))).tree
    )


def test_content_options(user_repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "bin").mkdir(parents=True)
    (source / "bin" / "tool").write_text("tool")
    (source / "bin" / "tool").chmod(0o775)
    (source / "secret").write_text("skip me")
    (source / "cache").mkdir()
    (source / "cache" / "junk").write_text("skip me too")
    options = ContentOptions(
        owner_uid=7,
        owner_gid=8,
        statoverride={b"/bin/tool": StatOverride(False, 0o4000)},
        skip=frozenset({b"/secret", b"/cache"}),
    )
    commit_id = _commit(user_repo, Layer(LayerKind.DIR, str(source)), options=options)
    tree = read_commit_tree(user_repo.path, commit_id)
    assert set(tree) == {"/", "/bin", "/bin/tool"}
    assert (tree["/bin/tool"].uid, tree["/bin/tool"].gid, tree["/bin/tool"].mode) == (7, 8, 0o4775)
    canonical = _commit(
        user_repo,
        Layer(LayerKind.DIR, str(source)),
        options=ContentOptions(canonical_permissions=True),
    )
    tool = read_commit_tree(user_repo.path, canonical)["/bin/tool"]
    assert (tool.uid, tool.gid, tool.mode) == (0, 0, 0o755)


def test_skip_if_unchanged(user_repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "src"
    build_rich_tree(source)
    first = make_commit(user_repo, CommitRequest("main", [Layer(LayerKind.DIR, str(source))]))
    again = make_commit(
        user_repo,
        CommitRequest("main", [Layer(LayerKind.DIR, str(source))], skip_if_unchanged=True),
    )
    assert not again.created and again.commit_id == first.commit_id
    (source / "new").write_text("new")
    changed = make_commit(
        user_repo,
        CommitRequest("main", [Layer(LayerKind.DIR, str(source))], skip_if_unchanged=True),
    )
    assert changed.created and changed.commit_id != first.commit_id


def test_parent_none_starts_a_new_history(user_repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "src"
    build_rich_tree(source)
    _commit(user_repo, Layer(LayerKind.DIR, str(source)))
    orphan = _commit(user_repo, Layer(LayerKind.DIR, str(source)), parent=NO_PARENT)
    assert user_repo.read_commit(ObjectId(bytes.fromhex(orphan))).parent is None


@pytest.mark.parametrize("bits", [0o4755, 0o2755, 0o757])
def test_bare_user_only_refuses_setuid_and_world_writable(tmp_path: Path, bits: int) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.BARE_USER_ONLY)
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("x")
    (source / "f").chmod(bits)
    with pytest.raises(ModePolicyError, match="/f"):
        _commit(repo, Layer(LayerKind.DIR, str(source)))
    assert repo.refs() == {}
    # canonical permissions make the same tree acceptable
    _commit(
        repo, Layer(LayerKind.DIR, str(source)), options=ContentOptions(canonical_permissions=True)
    )
    assert stat.S_IMODE(read_commit_tree(repo.path, "main")["/f"].mode) == bits & 0o755
