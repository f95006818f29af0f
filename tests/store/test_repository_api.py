"""The Repository API that callers outside the store use instead of its index and
content store: refs with compare-and-swap, read snapshots, per-mode object access,
refresh, and the one answer to "is this content object X"."""

from __future__ import annotations

import inspect
import io
import os
import stat
import threading
from pathlib import Path

import pytest

from store import (
    ANY,
    IndexDamagedError,
    ObjectId,
    ObjectType,
    RefConflictError,
    RefExistsError,
    RefNotFoundError,
    RefTargetError,
    RepoMode,
    Repository,
    StatCacheRecord,
    check_content,
    file_matches,
    fsck,
    open_regular,
    require_content,
    root_node,
    walk,
)
from store.errors import CorruptObjectError, InvalidRefNameError
from store.statcache import record_file_id
from tests.helpers import commit_files

CONTENT = b"the content of a file object\n" * 100


@pytest.fixture
def two(user_repo: Repository, tmp_path: Path) -> tuple[ObjectId, ObjectId]:
    """Two commits; ``main`` points at the first, ``other`` at the second."""
    first = commit_files(user_repo, tmp_path / "one", {"a": "one"}, "main")
    second = commit_files(user_repo, tmp_path / "two", {"a": "two"}, "other")
    return first, second


# ----- refs ---------------------------------------------------------------------------
def test_ref_reads_one_ref(user_repo: Repository, two: tuple[ObjectId, ObjectId]) -> None:
    first, second = two
    assert user_repo.ref("main") == first and user_repo.ref("other") == second
    assert user_repo.ref("absent") is None
    assert user_repo.ref("") is None  # not a name LMDB could hold: no ref
    assert user_repo.ref("x" * 600) is None


def test_set_ref_swaps_when_the_ref_holds_what_was_expected(
    user_repo: Repository, two: tuple[ObjectId, ObjectId]
) -> None:
    first, second = two
    user_repo.set_ref("main", second, expected=first)
    assert user_repo.ref("main") == second
    user_repo.set_ref("new", first, expected=None)  # None: must not exist yet
    assert user_repo.ref("new") == first
    user_repo.set_ref("new", None, expected=first)  # None as target deletes
    assert user_repo.ref("new") is None


@pytest.mark.parametrize(
    "name, expected",
    [
        ("main", "second"),  # holds first, expected second
        ("main", None),  # exists, expected absent
        ("absent", "first"),  # absent, expected first
    ],
)
def test_a_conflict_raises_and_moves_nothing(
    user_repo: Repository,
    two: tuple[ObjectId, ObjectId],
    name: str,
    expected: str | None,
) -> None:
    first, second = two
    ids = {"first": first, "second": second, None: None}
    before = user_repo.refs()
    with pytest.raises(RefConflictError):
        user_repo.set_ref(name, second, expected=ids[expected])
    assert user_repo.refs() == before


def test_set_ref_without_expected_moves_whatever_the_ref_holds(
    user_repo: Repository, two: tuple[ObjectId, ObjectId]
) -> None:
    first, second = two
    user_repo.set_ref("main", second)
    assert user_repo.ref("main") == second
    user_repo.set_ref("main", first, expected=ANY)
    assert user_repo.ref("main") == first


def test_set_ref_checks_the_name_and_the_target(
    user_repo: Repository, two: tuple[ObjectId, ObjectId]
) -> None:
    first, _ = two
    before = user_repo.refs()
    with pytest.raises(InvalidRefNameError):
        user_repo.set_ref("bad name", first)
    tree = user_repo.read_commit(first).tree
    with pytest.raises(RefTargetError):
        user_repo.set_ref("tree", tree)  # refs name commits only
    assert user_repo.refs() == before


def test_create_ref(user_repo: Repository, two: tuple[ObjectId, ObjectId]) -> None:
    first, second = two
    user_repo.create_ref("os/stable", second)
    assert user_repo.ref("os/stable") == second
    with pytest.raises(RefExistsError, match="ref main exists") as raised:
        user_repo.create_ref("main", second)
    assert raised.value.name == "main"
    assert user_repo.ref("main") == first


def test_create_ref_loses_a_race_as_ref_exists(
    user_repo: Repository, two: tuple[ObjectId, ObjectId], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer creates the ref between the look-up and the commit point."""
    first, second = two
    monkeypatch.setattr(user_repo, "ref", lambda name: None)  # the look-up saw none
    with pytest.raises(RefExistsError):
        user_repo.create_ref("main", second)
    monkeypatch.undo()
    assert user_repo.ref("main") == first


def test_delete_ref(user_repo: Repository, two: tuple[ObjectId, ObjectId]) -> None:
    _, second = two
    user_repo.delete_ref("main")
    assert user_repo.refs() == {"other": second}
    with pytest.raises(RefNotFoundError, match="no ref main"):
        user_repo.delete_ref("main")
    with pytest.raises(RefNotFoundError, match="no ref ''"):
        user_repo.delete_ref("")
    assert user_repo.refs() == {"other": second}


def test_delete_ref_refuses_a_ref_moved_since_it_was_looked_up(
    user_repo: Repository, two: tuple[ObjectId, ObjectId], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = two
    monkeypatch.setattr(user_repo, "ref", lambda name: second)  # looked up: second
    with pytest.raises(RefConflictError):
        user_repo.delete_ref("main")  # holds first
    monkeypatch.undo()
    assert user_repo.ref("main") == first


# ----- snapshots ----------------------------------------------------------------------
def test_a_snapshot_does_not_see_what_is_committed_after_it(
    user_repo: Repository, two: tuple[ObjectId, ObjectId], tmp_path: Path
) -> None:
    first, second = two
    made: list[ObjectId] = []

    def another_writer() -> None:
        made.append(commit_files(user_repo, tmp_path / "three", {"a": "three"}, "main"))
        user_repo.delete_ref("other")

    with user_repo.snapshot() as snap:
        commits_before = dict(snap.commits())
        writer = threading.Thread(target=another_writer)
        writer.start()
        writer.join()
        third = made[0]
        assert user_repo.ref("main") == third  # outside the snapshot: the new state
        assert snap.ref("main") == first and snap.ref("other") == second
        assert snap.refs() == {"main": first, "other": second}
        assert not snap.has_object(third) and snap.has_object(first)
        assert dict(snap.commits()) == commits_before
        assert snap.commits_with_prefix(third.hex()[:8]) == []
    with user_repo.snapshot() as snap:
        assert snap.refs() == {"main": third}
        assert snap.has_object(third) and third in dict(snap.commits())
        assert snap.commits_with_prefix(third.hex()[:8]) == [third]


def test_the_snapshot_reads_the_stat_cache(user_repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_bytes(CONTENT)
    past = os.stat(source / "f").st_mtime - 100
    os.utime(source / "f", (past, past))
    # the cache takes files whose ctime is a second older than the commit's start
    threading.Event().wait(1.1)
    commit_id = commit_files(user_repo, source, {})
    node = next(n for n in walk(user_repo, root_node(user_repo, commit_id)) if n.file)
    with user_repo.snapshot() as snap:
        record = snap.stat_cache(os.stat(source / "f"))
        assert snap.stat_cache(os.stat(source)) is None  # directories are never cached
    assert record is not None and record.file_id == node.file
    assert record.size == len(CONTENT)


def test_a_record_of_an_object_deleted_since_counts_as_none(
    user_repo: Repository, tmp_path: Path
) -> None:
    """fsck with delete removes a corrupt object but not the stat cache's records of it:
    the next commit must read the file again, not name the deleted object."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_bytes(CONTENT)
    past = os.stat(source / "f").st_mtime - 100
    os.utime(source / "f", (past, past))
    threading.Event().wait(1.1)  # as above: old enough to be cached
    commit_id = commit_files(user_repo, source, {})
    node = next(n for n in walk(user_repo, root_node(user_repo, commit_id)) if n.file)
    assert node.file is not None
    with user_repo.snapshot() as snap:
        assert snap.stat_cache(os.stat(source / "f")) is not None
    path = user_repo.object_path(node.file)
    os.chmod(path, 0o600)
    with open(path, "r+b") as damaged:
        damaged.write(b"X")
    assert fsck(user_repo, delete=True).problems
    with user_repo.snapshot() as snap:
        assert snap.stat_cache(os.stat(source / "f")) is None
    again = commit_files(user_repo, source, {})
    assert user_repo.read_file(node.file) == CONTENT  # stored again, from the file
    assert fsck(user_repo).clean and again != commit_id


def test_the_stat_cache_record_has_one_layout() -> None:
    st = os.stat(__file__)
    record = StatCacheRecord.of(7, st, b"h" * 32, b"f" * 32)
    raw = record.encode()
    assert StatCacheRecord.decode(raw) == record
    assert record_file_id(raw) == b"f" * 32
    assert StatCacheRecord.decode(raw[8:]) is None  # another layout: ignored
    assert record.matches(7, st, b"h" * 32)
    assert not record.matches(8, st, b"h" * 32) and not record.matches(7, st, b"g" * 32)


# ----- object access, per mode --------------------------------------------------------
def _file_object(repo: Repository, tmp_path: Path) -> tuple[ObjectId, ObjectId]:
    """(commit id, file object id) of a commit holding one file of CONTENT."""
    commit_id = commit_files(repo, tmp_path / "src", {"f": CONTENT})
    node = next(n for n in walk(repo, root_node(repo, commit_id)) if n.file)
    assert node.file is not None
    return commit_id, node.file


def _damage(path: str) -> None:
    """Change one byte of an object file in place (keeping its size and mode)."""
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    os.chmod(path, 0o600)
    with open(path, "r+b") as damaged:
        damaged.seek(-2, os.SEEK_END)
        last = damaged.read(1)
        damaged.seek(-2, os.SEEK_END)
        damaged.write(bytes([last[0] ^ 0xFF]))
    os.chmod(path, mode)


def test_object_access_in_every_mode(repo: Repository, tmp_path: Path) -> None:
    commit_id, file_id = _file_object(repo, tmp_path)
    compressed = repo.mode is RepoMode.ARCHIVE
    assert repo.stores_compressed is compressed
    path = repo.object_path(file_id)
    assert path.startswith(str(repo.path / "objects"))
    assert stat.S_ISREG(os.lstat(path).st_mode)
    assert path.endswith(".filez" if compressed else ".file")
    header, size = repo.read_file_header(file_id)
    assert size == len(CONTENT)
    if compressed:  # neither a plain file nor an fd: read through open_file
        assert Path(path).read_bytes() != CONTENT
        with pytest.raises(TypeError):
            repo.open_file_fd(file_id, size)
    else:  # the file holds the content as is: it can be opened and hardlinked
        assert Path(path).read_bytes() == CONTENT
        fd = repo.open_file_fd(file_id)
        try:
            assert os.pread(fd, size + 1, 0) == CONTENT
        finally:
            os.close(fd)
        os.link(path, tmp_path / "linked")
        assert (tmp_path / "linked").read_bytes() == CONTENT
        (tmp_path / "linked").unlink()
    assert repo.read_file(file_id) == CONTENT
    # metadata objects are files of their own in archive mode only
    commit_path = repo.object_path(commit_id, ObjectType.COMMIT)
    assert commit_path.endswith(".commit")
    assert os.path.exists(commit_path) is compressed
    assert repo.verify_file(file_id) is None
    assert repo.verify_file(file_id, header, size) is None
    _damage(path)
    assert repo.verify_file(file_id) is not None
    assert repo.verify_file(file_id, header, size) is not None


def test_open_file_always_verifies(repo: Repository, tmp_path: Path) -> None:
    """No caller of the repository reads a damaged object's bytes to the end without
    an error: open_file has no switch to turn the check off."""
    _, file_id = _file_object(repo, tmp_path)
    assert "verify" not in inspect.signature(repo.open_file).parameters
    _damage(repo.object_path(file_id))
    with pytest.raises(CorruptObjectError), repo.open_file(file_id) as stream:
        stream.read()


def test_verify_file_says_a_missing_object_is_missing(
    user_repo: Repository, tmp_path: Path
) -> None:
    _, file_id = _file_object(user_repo, tmp_path)
    os.unlink(user_repo.object_path(file_id))
    assert user_repo.verify_file(file_id) == "object file is missing"


def test_refresh_needs_the_only_open_repository(user_repo: Repository, tmp_path: Path) -> None:
    first = commit_files(user_repo, tmp_path / "src", {"a": "b"})
    second = Repository.open(user_repo.path)
    try:
        with pytest.raises(RuntimeError):
            user_repo.refresh()
    finally:
        second.close()
    user_repo.refresh()
    assert user_repo.ref("main") == first and user_repo.read_commit(first).tree


def test_refresh_of_a_repository_made_here_never_makes_an_index(tmp_path: Path) -> None:
    """A repository made by init() in this process, its index gone since: refresh is an
    error, not a new empty index (an empty repository, whose every object prune deletes)."""
    with Repository.init(tmp_path / "repo", RepoMode.BARE_USER) as repo:
        commit_files(repo, tmp_path / "src", {"a": "b"})
        os.rename(repo.path / "index", repo.path / "index.gone")
        with pytest.raises(IndexDamagedError):
            repo.refresh()
        assert not (repo.path / "index").exists()


# ----- is this content object X --------------------------------------------------------
@pytest.fixture
def stored(user_repo: Repository, tmp_path: Path) -> tuple[ObjectId, bytes]:
    """A file object of CONTENT and its canonical header."""
    _, file_id = _file_object(user_repo, tmp_path)
    header, _ = user_repo.read_file_header(file_id)
    return file_id, header.encode()


def test_check_content_of_bytes_streams_and_fds(
    stored: tuple[ObjectId, bytes], tmp_path: Path
) -> None:
    file_id, header = stored
    size = len(CONTENT)
    assert check_content(CONTENT, file_id, header, size) is None
    assert check_content(io.BytesIO(CONTENT), file_id, header, size) is None
    copy = tmp_path / "copy"
    copy.write_bytes(CONTENT)
    fd = os.open(copy, os.O_RDONLY)
    try:
        os.lseek(fd, 10, os.SEEK_SET)  # an fd is read from offset 0 whatever its position
        assert check_content(fd, file_id, header, size) is None
        assert os.lseek(fd, 0, os.SEEK_CUR) == 10
    finally:
        os.close(fd)
    wrong = CONTENT[:-1] + b"?"
    assert "does not hash" in str(check_content(wrong, file_id, header, size))
    assert "bytes, the index says" in str(check_content(CONTENT + b"x", file_id, header, size))
    assert check_content(CONTENT[:-1], file_id, header, size) is not None
    assert check_content(CONTENT, file_id, header + b"x", size) is not None  # other header
    with pytest.raises(CorruptObjectError, match=file_id.hex()):
        require_content(wrong, file_id, header, size)
    require_content(CONTENT, file_id, header, size)


def test_check_content_reads_one_byte_past_the_size_at_most(
    stored: tuple[ObjectId, bytes],
) -> None:
    file_id, header = stored
    stream = io.BytesIO(CONTENT + b"x" * (4 << 20))
    assert check_content(stream, file_id, header, len(CONTENT)) is not None
    assert stream.tell() == len(CONTENT) + 1


def test_file_matches_opens_only_regular_files_without_blocking(
    stored: tuple[ObjectId, bytes], tmp_path: Path
) -> None:
    file_id, header = stored
    size = len(CONTENT)
    directory = tmp_path / "dir"
    directory.mkdir()
    (directory / "same").write_bytes(CONTENT)
    (directory / "other").write_bytes(CONTENT[::-1])
    (directory / "link").symlink_to("same")
    os.mkfifo(directory / "fifo")  # would hang a blocking open
    (directory / "sub").mkdir()
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert file_matches(b"same", dir_fd, file_id, header, size)
        for name in (b"other", b"link", b"fifo", b"sub", b"absent"):
            assert not file_matches(name, dir_fd, file_id, header, size), name
        for name in (b"link", b"fifo", b"sub", b"absent"):
            assert open_regular(name, dir_fd) is None, name
    finally:
        os.close(dir_fd)
    assert file_matches(str(directory / "same"), None, file_id, header, size)
