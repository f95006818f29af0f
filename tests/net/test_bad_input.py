"""The issue's bad input from the network, each refused by `sapwood pull`.

A small archive repository is served by the tampering server, which misbehaves in one
way per test. Each refusal must be: one line on stderr, a non-zero exit, no ref moved,
nothing corrupt stored (fsck --all clean), well within the timeout; and the next pull,
once the server behaves, must succeed and bring the source tree.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from store import Commit, DirTree, ObjectId, ObjectType, Repository
from store.content import object_relpath
from store.encoding import Writer
from store.ids import digest
from tests.helpers import cli, write_tree
from tests.net.repos import (
    add_remote,
    archive_of,
    fsck_clean,
    keygen,
    local_repo,
    publish,
    pull,
    refs,
    sapwood_ok,
)
from tests.net.servers import Behaviour, TamperingServer

LONG = bool(os.environ.get("SAPWOOD_LONG"))
LONG_ONLY = pytest.mark.skipif(not LONG, reason="a variant of a default case: SAPWOOD_LONG=1")
REFUSED_WITHIN = 30.0  # seconds: timeouts are 2 s, 3 retries, backoff from 0.05 s
BIG = 1 << 20  # the biggest file's size: truncated and stalled halfway, well past a buffer


@dataclass
class Served:
    """An archive repository served by the tampering server, and a local repository
    with remote ``origin`` pointing at it (plus a ref of its own that must not move)."""

    archive: Path
    commit: str
    server: TamperingServer
    local: Path

    def biggest(self, suffix: str = "filez") -> str:
        """A pattern matching just the URL path of the biggest object file of ``suffix``."""
        files = (self.archive / "objects").glob(f"*/*.{suffix}")
        biggest = max(files, key=lambda p: p.stat().st_size)
        return "^" + re.escape("/" + biggest.relative_to(self.archive).as_posix()) + "$"


def source_tree(root: Path) -> Path:
    files: dict[str, str | bytes] = {f"etc/conf{n}": f"setting {n}\n" for n in range(20)}
    files |= {f"usr/share/doc/p{n}/README": f"package {n}\n" * (n + 1) for n in range(20)}
    files["usr/bin/big"] = os.urandom(BIG)
    files["usr/bin/link"] = "->big"
    return write_tree(root, files)


@pytest.fixture
def served(tmp_path: Path, tamper: Callable[[Path], TamperingServer]) -> Served:
    archive = tmp_path / "archive"
    commit = archive_of(archive, source_tree(tmp_path / "src"))
    local = local_repo(tmp_path / "local")
    server = tamper(archive)
    add_remote(local, server.url)
    sapwood_ok(local, "commit", "-b", "mine", write_tree(tmp_path / "mine", {"a": "a\n"}))
    return Served(archive, commit, server, local)


def assert_refused(
    served: Served, result: subprocess.CompletedProcess[str], before: dict[str, str], took: float
) -> str:
    """The pull failed as a pull must; the one line it printed."""
    lines = result.stderr.splitlines()
    assert result.returncode != 0, result.stderr
    assert len(lines) == 1 and lines[0].startswith("sapwood: "), result.stderr
    assert "Traceback" not in result.stderr
    assert took < REFUSED_WITHIN, f"refused after {took:.1f} s"
    assert refs(served.local) == before
    fsck_clean(served.local)
    return lines[0]


def assert_next_pull_succeeds(served: Served) -> None:
    """Once the server behaves, a pull (in this process: faster) brings the commit, whole:
    its id is the served one and fsck finds every object of it, right."""
    served.server.behaved()
    result = cli("--repo", served.local, "pull", "origin", "main")
    assert result.code == 0, result.err
    assert refs(served.local)["origin:main"] == served.commit
    fsck_clean(served.local)


def refused_then_recovered(
    served: Served, *pull_args: str, env: dict[str, str] | None = None
) -> str:
    before = refs(served.local)
    started = time.monotonic()
    result = pull(served.local, *(pull_args or ("origin", "main")), env=env)
    line = assert_refused(served, result, before, time.monotonic() - started)
    assert_next_pull_succeeds(served)
    return line


# ----- the tampering server's behaviours, one test each ---------------------------------------
@pytest.mark.parametrize(
    "behaviour",
    ["wrong-bytes", "truncate", "stall", "404", "500", "huge", "redirect-loop"],
)
def test_a_misbehaving_object_is_refused(served: Served, behaviour: Behaviour) -> None:
    target = served.biggest()
    served.server.misbehave(target, behaviour)
    started = time.monotonic()
    refused_then_recovered(served, env={"SAPWOOD_HTTP_TIMEOUT": "0.5"})
    assert served.server.requested(target), "the misbehaving object was never asked for"
    if behaviour == "stall":  # given up after the timeout, not when the server hangs up
        assert time.monotonic() - started < (1 + 3) * 0.5 + 8


@LONG_ONLY
def test_a_misbehaving_dirtree_is_refused(served: Served) -> None:
    served.server.misbehave(r"\.dirtree$", "wrong-bytes")
    refused_then_recovered(served)


def test_500s_a_few_times_then_ok_are_retried(served: Served) -> None:
    target = served.biggest()
    served.server.misbehave(target, "500", times=2)
    result = cli("--repo", served.local, "pull", "origin", "main")
    assert result.code == 0, result.err
    assert refs(served.local)["origin:main"] == served.commit
    assert [what for _, what in served.server.requested(target)] == ["500", "500", 200]
    fsck_clean(served.local)


def test_500s_on_every_try_are_given_up(served: Served) -> None:
    target = served.biggest()
    served.server.misbehave(target, "500")
    refused_then_recovered(served)
    tries = len(served.server.requested(target)) - 1  # the recovering pull's one
    # the pipelined lane's answer (store/pull/pipelined.py: any failure goes to the
    # per-object path), then the per-object path's first try and three more
    assert tries == 1 + 1 + 3, "SAPWOOD_HTTP_RETRIES=3: the first try and three more"


def test_a_garbage_summary_is_refused(served: Served) -> None:
    served.server.misbehave(r"^/summary$", "garbage")
    line = refused_then_recovered(served)
    assert "summary" in line


@LONG_ONLY
def test_a_missing_summary_is_refused(served: Served) -> None:
    served.server.misbehave(r"^/summary$", "404")
    refused_then_recovered(served)


def test_a_redirect_loop_is_refused(served: Served) -> None:
    served.server.misbehave(r"^/summary$", "redirect-loop")
    refused_then_recovered(served)
    assert len(served.server.requested("^/summary$")) < 50


@LONG_ONLY
def test_a_truncated_summary_is_refused(served: Served) -> None:
    served.server.misbehave(r"^/summary$", "truncate")
    refused_then_recovered(served)


# ----- deltas ---------------------------------------------------------------------------------
def offer_delta(served: Served) -> str:
    """A delta from nothing to the served commit, in the summary; its URL directory."""
    sapwood_ok(served.archive, "static-delta", "generate", "--to", served.commit)
    publish(served.archive)
    return f"/deltas/{served.commit}/"


def test_a_garbage_superblock_is_refused(served: Served) -> None:
    delta = offer_delta(served)
    served.server.misbehave(re.escape(delta) + "superblock$", "garbage")
    refused_then_recovered(served)
    assert served.server.requested(re.escape(delta) + "superblock$")


def test_a_garbage_delta_part_is_refused(served: Served) -> None:
    delta = offer_delta(served)
    served.server.misbehave(re.escape(delta) + r"\d+$", "garbage")
    refused_then_recovered(served)


@LONG_ONLY
def test_a_delta_part_with_wrong_bytes_is_refused(served: Served) -> None:
    delta = offer_delta(served)
    served.server.misbehave(re.escape(delta) + r"\d+$", "wrong-bytes")
    refused_then_recovered(served)


# ----- commits and summaries crafted on the server --------------------------------------------
def write_object(archive: Path, kind: ObjectType, data: bytes) -> ObjectId:
    """``data`` as the archive's metadata object file of ``kind``; its id."""
    object_id = digest(data)
    path = archive / "objects" / object_relpath(object_id, kind)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return object_id


def publish_refs(archive: Path, named: dict[str, ObjectId]) -> bytes:
    """Serve a summary whose refs are ``named`` (the deltas as they were); the summary
    it replaced."""
    from store.summary import Summary, decode_summary, encode_summary

    old = (archive / "summary").read_bytes()
    deltas = decode_summary(old).deltas
    refs_ = {name: (commit, 1_700_000_000) for name, commit in named.items()}
    (archive / "summary").write_bytes(encode_summary(Summary(refs=refs_, deltas=deltas)))
    return old


def crafted_commit(served: Served, tree: ObjectId) -> ObjectId:
    """A commit of ``tree`` (with the good commit's root dirmeta), written to the server."""
    with Repository.open(served.archive) as repo:
        meta = repo.read_commit(ObjectId(bytes.fromhex(served.commit))).meta
    data = Commit(tree, meta, None, 1_700_000_000, "crafted").encode()
    return write_object(served.archive, ObjectType.COMMIT, data)


def refused_crafted(served: Served, commit: ObjectId) -> str:
    old = publish_refs(served.archive, {"main": commit})
    before = refs(served.local)
    started = time.monotonic()
    result = pull(served.local, "origin", "main")
    line = assert_refused(served, result, before, time.monotonic() - started)
    (served.archive / "summary").write_bytes(old)
    assert_next_pull_succeeds(served)
    return line


def test_a_commit_of_a_malformed_tree_is_refused(served: Served) -> None:
    tree = write_object(served.archive, ObjectType.DIRTREE, b"T\x01 this is no dirtree")
    refused_crafted(served, crafted_commit(served, tree))


def test_a_commit_of_a_tree_with_a_dotdot_name_is_refused(served: Served) -> None:
    file_id = ObjectId(bytes(32))
    encoded = DirTree.build({b"xx": file_id}, {}).encode().replace(b"xx", b"..")
    tree = write_object(served.archive, ObjectType.DIRTREE, encoded)
    refused_crafted(served, crafted_commit(served, tree))


def test_a_commit_of_a_missing_tree_is_refused(served: Served) -> None:
    missing = digest(b"no such dirtree on the server")
    refused_crafted(served, crafted_commit(served, missing))


def test_a_tree_naming_a_missing_file_is_refused(served: Served) -> None:
    missing = ObjectId(digest(b"no such file object on the server"))
    tree = write_object(
        served.archive, ObjectType.DIRTREE, DirTree.build({b"gone": missing}, {}).encode()
    )
    refused_crafted(served, crafted_commit(served, tree))


def hostile_summary(named: dict[bytes, ObjectId]) -> bytes:
    """A summary as a hostile server writes it, by hand after docs/http-layout.md (the
    library's encoder refuses to write bad names): canonical order, no deltas."""
    writer = Writer()
    writer.raw(b"S")
    writer.u8(1)
    writer.u32(len(named))
    for name in sorted(named):
        writer.blob(name)
        writer.object_id(named[name])
        writer.i64(1_700_000_000)
    writer.u32(0)
    return writer.getvalue()


BAD_NAMES = [b"../escape"]
if LONG:
    BAD_NAMES += [b"origin:main", b"a\nb", b"", b"x" * 300, b"main/", b"\xff", b"refs/../../x"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_ref_with_a_bad_name_in_the_summary_is_refused(served: Served, name: bytes) -> None:
    """Every ref of the summary pulled at once; one of them has a name no ref may have
    (or the name of a pulled ref): the pull refuses them all."""
    summary = served.archive / "summary"
    good = summary.read_bytes()
    commit = ObjectId(bytes.fromhex(served.commit))
    summary.write_bytes(hostile_summary({b"main": commit, name: commit}))
    before = refs(served.local)
    started = time.monotonic()
    result = pull(served.local, "origin")
    assert_refused(served, result, before, time.monotonic() - started)
    summary.write_bytes(good)
    assert_next_pull_succeeds(served)


# ----- signatures -----------------------------------------------------------------------------
def verifying(served: Served, tmp_path: Path, key: str) -> Served:
    """The same server, pulled into a new local repository that trusts ``key`` only."""
    local = local_repo(tmp_path / f"verifying-{key[:8]}")
    add_remote(local, served.server.url, "origin", "--sign-verify", "--trusted-key", key)
    return Served(served.archive, served.commit, served.server, local)


def signed_by(served: Served, *keys_files: Path, summary: Path | None) -> None:
    """The served commit signed with each of ``keys_files``, the summary with ``summary``."""
    for keys_file in keys_files:
        sapwood_ok(served.archive, "sign", "--keys-file", keys_file, "main")
    publish(served.archive, summary)


def refused_signature(wary: Served) -> str:
    line = assert_refused(wary, pull(wary.local, "origin", "main"), {}, 0)
    assert "sign" in line or "key" in line, line
    return line


def test_a_commit_signed_by_an_unknown_key_is_refused(served: Served, tmp_path: Path) -> None:
    _, stranger = keygen(tmp_path, "stranger")
    trusted, release = keygen(tmp_path, "release")
    signed_by(served, stranger, summary=release)
    wary = verifying(served, tmp_path, trusted)
    refused_signature(wary)
    signed_by(served, release, summary=release)
    assert_next_pull_succeeds(wary)


def test_an_unsigned_commit_is_refused(served: Served, tmp_path: Path) -> None:
    trusted, release = keygen(tmp_path, "release")
    publish(served.archive, release)
    wary = verifying(served, tmp_path, trusted)
    refused_signature(wary)
    signed_by(served, release, summary=release)
    assert_next_pull_succeeds(wary)


def test_a_summary_signed_by_an_unknown_key_is_refused(served: Served, tmp_path: Path) -> None:
    _, stranger = keygen(tmp_path, "stranger")
    trusted, release = keygen(tmp_path, "release")
    signed_by(served, release, summary=stranger)
    wary = verifying(served, tmp_path, trusted)
    refused_signature(wary)
    publish(served.archive, release)
    assert_next_pull_succeeds(wary)


@LONG_ONLY
def test_an_unsigned_summary_is_refused(served: Served, tmp_path: Path) -> None:
    trusted, release = keygen(tmp_path, "release")
    signed_by(served, release, summary=None)
    wary = verifying(served, tmp_path, trusted)
    refused_signature(wary)
    publish(served.archive, release)
    assert_next_pull_succeeds(wary)
