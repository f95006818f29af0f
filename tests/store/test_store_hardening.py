"""Silent loss a hostile review found in the store, one test per instance.

prune deleting the files of a live commit behind one corrupt record; a commit that
succeeds referring to objects a concurrent prune deleted; a lock file that could be
unlinked and replaced; refs to trees; refs `a` and `a/b`; world-reachable objects.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path
from subprocess import DEVNULL, PIPE

import pytest

from fs.commit import CommitRequest, Layer, LayerKind, make_commit
from store import (
    Commit,
    DirTree,
    ModePolicyError,
    ObjectId,
    ObjectMissingError,
    RefExistsError,
    RefTargetError,
    RepoMode,
    Repository,
    UnsafeToPruneError,
    UsageError,
    fsck,
    lookup,
    prune,
)
from store.index import WriteBatch
from tests.helpers import IS_ROOT, cli, commit_dir, put_raw_record, run, spawn


def _commit(repo: Repository, source: Path, branch: str = "main", files: int = 5) -> ObjectId:
    source.mkdir(exist_ok=True)
    (source / "sub").mkdir(exist_ok=True)
    for n in range(files):
        (source / "sub" / f"f{n}").write_text(f"{branch} {n}\n")
    return commit_dir(repo, source, branch)


def _object_files(repo: Repository) -> set[Path]:
    return {p for p in (repo.path / "objects").rglob("*") if p.is_file()}


@pytest.mark.parametrize("damage", ["unknown-type", "garbage", "other-tree", "missing"])
def test_prune_deletes_nothing_when_a_live_tree_cannot_be_read(
    repo: Repository, tmp_path: Path, damage: str
) -> None:
    live = _commit(repo, tmp_path / "src")
    _commit(repo, tmp_path / "other", branch="other")
    assert cli("--repo", repo.path, "refs", "--delete", "other").code == 0
    sub = lookup(repo, live, "/sub").dir
    assert sub is not None
    if damage == "unknown-type":
        put_raw_record(repo.path, sub.tree, b"?" + os.urandom(64))
    elif damage == "garbage":
        put_raw_record(repo.path, sub.tree, b"t" + os.urandom(64))
    elif damage == "other-tree":  # decodes fine, but is not the object its id names
        put_raw_record(repo.path, sub.tree, b"t" + DirTree().encode())
    else:
        repo.index.apply(WriteBatch(remove_objects={sub.tree}))
    before = _object_files(repo)
    with pytest.raises(UnsafeToPruneError, match="deleted nothing"):
        prune(repo, refs_only=True)
    assert _object_files(repo) == before
    result = cli("--repo", repo.path, "prune", "--refs-only")
    assert result.code != 0 and len(result.err.strip().splitlines()) == 1, result.err
    assert _object_files(repo) == before


def test_prune_still_cleans_around_commits_fsck_marked_partial(
    user_repo: Repository, tmp_path: Path
) -> None:
    """What fsck --delete removed (its commits marked partial) does not block prune."""
    live = _commit(user_repo, tmp_path / "src")
    sub = lookup(user_repo, live, "/sub").dir
    assert sub is not None
    put_raw_record(user_repo.path, sub.tree, b"t" + DirTree().encode())
    report = fsck(user_repo, delete=True)
    assert report.deleted == [sub.tree] and report.partial == [live]
    prune(user_repo, refs_only=True)  # does not raise
    assert user_repo.has_object(live)


def test_a_commit_refuses_to_name_objects_deleted_while_it_ran(
    user_repo: Repository, tmp_path: Path
) -> None:
    first = _commit(user_repo, tmp_path / "src")
    reused = lookup(user_repo, first, "/sub/f1").file
    assert reused is not None
    missing = pytest.raises(ObjectMissingError, match="removed while the commit ran")
    with missing, user_repo.transaction() as txn:
        tree = txn.write_dirtree(DirTree.build({b"f1": reused}, {}))
        # What a prune that ignored the lock would do now: the file object goes.
        user_repo.index.apply(WriteBatch(remove_objects={reused}))
        meta = txn.write_dirmeta(user_repo.read_dirmeta(user_repo.read_commit(first).meta))
        commit = Commit(tree=tree, meta=meta, parent=first, timestamp=1)
        txn.set_ref("main", txn.write_commit(commit), expected=first)
    assert user_repo.refs() == {"main": first}


def test_the_lock_cannot_be_unlinked_from_under_a_writer(
    user_repo: Repository, tmp_path: Path
) -> None:
    """A prune waits for a running commit even if every file named lock is removed."""
    _commit(user_repo, tmp_path / "src")
    txn = user_repo.transaction()
    try:
        for stale in user_repo.path.glob("lock*"):
            stale.unlink()
        pruner = spawn("prune", repo=user_repo.path, stdout=DEVNULL, stderr=PIPE)
        time.sleep(1.5)
        assert pruner.poll() is None, "prune ran while a commit held the lock"
    finally:
        txn.abort()
    assert pruner.wait(timeout=60) == 0
    assert fsck(user_repo).clean


def test_refs_name_commits_only(user_repo: Repository, tmp_path: Path) -> None:
    commit_id = _commit(user_repo, tmp_path / "src")
    tree = user_repo.read_commit(commit_id).tree
    file_id = lookup(user_repo, commit_id, "/sub/f0").file
    assert file_id is not None
    for target in (tree, file_id, ObjectId(b"\x42" * 32)):
        refused = pytest.raises(RefTargetError, match="refs name commits")
        with refused, user_repo.transaction() as txn:
            txn.set_ref("bad", target)
        result = cli("--repo", user_repo.path, "refs", "--create", "bad", target.hex())
        assert result.code != 0 and "Traceback" not in result.err
    assert user_repo.refs() == {"main": commit_id}


@pytest.mark.parametrize(
    ("first", "second"),
    [("a", "a/b"), ("a/b", "a"), ("a/b/c", "a"), ("o:x", "o:x/y"), ("o:x/y", "o:x")],
)
def test_refs_cannot_be_directories_of_each_other(
    repo: Repository, tmp_path: Path, first: str, second: str
) -> None:
    """In every mode: archive mode lays refs out as files, and so do pulls."""
    commit_id = _commit(repo, tmp_path / "src")
    assert cli("--repo", repo.path, "refs", "--create", first, commit_id.hex()).code == 0
    result = cli("--repo", repo.path, "refs", "--create", second, commit_id.hex())
    assert result.code != 0 and "cannot exist beside" in result.err, result.err
    with pytest.raises(RefExistsError):
        commit_dir(repo, tmp_path / "src", second)
    assert set(repo.refs()) == {"main", first}
    ok = cli("--repo", repo.path, "commit", "-b", "main", tmp_path / "src")
    assert ok.code == 0, ok.err  # later commits are not affected


def test_archive_commit_reports_success_if_only_the_http_mirror_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)

    def fail() -> None:
        raise PermissionError(13, "Permission denied", "refs/heads/main")

    monkeypatch.setattr(repo, "write_ref_mirror", fail)
    with caplog.at_level(logging.ERROR):
        commit_id = _commit(repo, tmp_path / "src")
    assert repo.refs() == {"main": commit_id}
    assert "the commit is done" in caplog.text
    repo.close()


@pytest.mark.parametrize("mode", list(RepoMode))
def test_object_and_staging_directories_are_private_where_objects_carry_modes(
    tmp_path: Path, mode: RepoMode
) -> None:
    if mode is RepoMode.BARE and not IS_ROOT:
        pytest.skip("bare mode needs root")
    repo = Repository.init(tmp_path / "repo", mode)
    private = {"tmp", "objects"} if mode is RepoMode.BARE else {"tmp"}
    for name in ("tmp", "objects"):
        bits = stat.S_IMODE(os.stat(repo.path / name).st_mode)
        assert (bits & 0o077 == 0) == (name in private), (name, oct(bits))
    for name in private:  # a repository made before the rule is mended by its next writer
        os.chmod(repo.path / name, 0o755)
    _commit(repo, tmp_path / "src")
    for name in private:
        assert stat.S_IMODE(os.stat(repo.path / name).st_mode) & 0o077 == 0
    repo.close()


def test_fsck_reports_fifos_and_symlinks_in_place_of_objects_without_hanging(
    repo: Repository, tmp_path: Path
) -> None:
    commit_id = _commit(repo, tmp_path / "src")
    file_id = lookup(repo, commit_id, "/sub/f0").file
    assert file_id is not None
    victims = [repo.content.path(file_id)]
    if repo.mode is RepoMode.ARCHIVE:  # metadata is served as files too
        victims.append(next((repo.path / "objects").glob("*/*.dirtree")))
    secret = tmp_path / "secret"
    secret.write_text("not an object\n")
    for victim in victims:
        victim.unlink()
        os.mkfifo(victim)
    checked = run("fsck", "--all", repo=repo.path, text=True, timeout=60)
    assert checked.returncode == 1 and checked.stdout.count("error: object") == len(victims)
    for victim in victims:
        victim.unlink()
        victim.symlink_to(secret)
    report = fsck(repo, all_objects=True)
    assert len(report.problems) == len(victims)


def test_a_looping_history_in_a_tampered_index_ends(user_repo: Repository, tmp_path: Path) -> None:
    """Commit ids cover their parents, so only a tampered index can loop: log, rev-parse,
    fsck and prune must say so or stop, never spin."""
    first = _commit(user_repo, tmp_path / "src")
    second = _commit(user_repo, tmp_path / "src", files=6)
    looped = user_repo.read_commit(first)
    forged = Commit(tree=looped.tree, meta=looped.meta, parent=second, timestamp=looped.timestamp)
    put_raw_record(user_repo.path, first, b"c" + forged.encode())
    for args in (["log", "main"], ["rev-parse", "main~5"]):
        result = run(*args, repo=user_repo.path, text=True, timeout=30)
        assert result.returncode != 0 and "loops" in result.stderr, result.stderr
    assert not fsck(user_repo).clean
    with pytest.raises(UnsafeToPruneError):
        prune(user_repo, refs_only=True)


def test_a_full_id_names_a_commit_only(user_repo: Repository, tmp_path: Path) -> None:
    commit_id = _commit(user_repo, tmp_path / "src")
    tree = user_repo.read_commit(commit_id).tree
    result = cli("--repo", user_repo.path, "show", tree.hex())
    assert result.code != 0 and "not a commit" in result.err, result.err


def test_commit_fields_are_refused_before_the_tree_is_read(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fs.scan import DirScanner

    def never(*_: object) -> None:
        raise AssertionError("the tree was scanned")

    monkeypatch.setattr(DirScanner, "scan", never)
    for request in (
        CommitRequest("main", [Layer(LayerKind.DIR, str(tmp_path))], subject="\udcff"),
        CommitRequest("main", [Layer(LayerKind.DIR, str(tmp_path))], timestamp=2**63),
        CommitRequest("main", [Layer(LayerKind.DIR, str(tmp_path))], metadata={"k": "\ud800"}),
    ):
        with pytest.raises(UsageError):
            make_commit(user_repo, request)


def test_metadata_too_large_for_an_xattr_is_not_a_full_disk(
    user_repo: Repository, tmp_path: Path
) -> None:
    """ext4 keeps an inode's xattrs in one block: bare-user cannot hold a 4095-byte
    symlink target there, and must say so rather than claim the disk is full."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "link").symlink_to("t" * 4095)
    request = CommitRequest("main", [Layer(LayerKind.DIR, str(source))])
    try:
        make_commit(user_repo, request)
    except ModePolicyError as exc:
        assert "does not fit in an xattr" in str(exc)
        assert user_repo.refs() == {}
    else:  # a filesystem with large xattrs (xfs, btrfs, tmpfs) holds it
        listed = cli("--repo", user_repo.path, "ls", "main", "/link")
        assert listed.code == 0 and listed.out.endswith(" /link -> " + "t" * 4095 + "\n")


def test_a_config_rewrite_never_writes_through_a_planted_temporary_name(tmp_path: Path) -> None:
    """Remotes rewrite REPO/config through a temporary file: one of a random name, so a
    symlink planted at the old fixed name (config.tmp) points at a file left alone."""
    from store.pull import Remote, add_remote, list_remotes

    repo = tmp_path / "repo"
    Repository.init(repo, RepoMode.BARE_USER).close()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    (repo / "config.tmp").symlink_to(victim)
    add_remote(repo, Remote("origin", "http://127.0.0.1:1/"))
    assert [remote.name for remote in list_remotes(repo)] == ["origin"]
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert (repo / "config.tmp").is_symlink()  # not ours to remove
    assert not [name for name in os.listdir(repo) if name.startswith(".config.tmp-")]
