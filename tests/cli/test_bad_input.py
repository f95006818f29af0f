"""Bad input: one clear line on stderr, a non-zero exit, no traceback, nothing changed.

Each case runs sapwood as a real process against a repository holding one commit,
and compares the repository (refs, index, object files, staging) before and after.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from store import ObjectId, RepoMode, Repository
from store.index import WriteBatch
from tests.helpers import IS_ROOT, cli, run


@dataclass
class Ctx:
    repo: Path
    src: Path
    tmp: Path


def _state(repo: Path) -> tuple[object, ...]:
    with Repository.open(repo) as opened, opened.index.reader() as reader:
        objects = sorted(oid for oid, _ in reader.iter_objects())
        refs = reader.refs()
    files = sorted(str(p.relative_to(repo)) for p in (repo / "objects").rglob("*") if p.is_file())
    staging = sorted(p.name for p in (repo / "tmp").iterdir())
    return refs, objects, files, staging


def _tar(ctx: Ctx, name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> str:
    path = ctx.tmp / "bad.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    return f"--tree=tar={path}"


def _with(ctx: Ctx, make: Callable[[Path], object]) -> str:
    make(ctx.src)
    return str(ctx.src)


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


def _unreadable(src: Path) -> None:
    (src / "secret").write_text("x")
    (src / "secret").chmod(0)


def _ambiguous(ctx: Ctx) -> str:
    """Plants two commit ids that start with the prefix returned."""
    forged = [bytes.fromhex("beef01") + b"\0" * 29, bytes.fromhex("beef02") + b"\0" * 29]
    with Repository.open(ctx.repo) as repo:
        repo.index.apply(WriteBatch(commits={ObjectId(oid): 0 for oid in forged}))
    return "beef"


def _evil_commit(ctx: Ctx) -> str:
    """A commit whose tree names '..', planted below the API as a hostile pull could."""
    import stat as stat_module

    from store import Commit, DirMeta
    from store.encoding import Writer
    from store.ids import ObjectType, digest
    from store.index import ObjectRecord

    w = Writer()
    w.raw(b"T\x01")
    w.u32(1)
    w.blob(b"..")
    w.object_id(b"\1" * 32)
    w.u32(0)
    tree_bytes = w.getvalue()
    tree_id = digest(tree_bytes)
    meta = DirMeta(0, 0, stat_module.S_IFDIR | 0o755)
    commit = Commit(tree_id, meta.object_id(), None, 0)
    records = {
        tree_id: ObjectRecord(ObjectType.DIRTREE, tree_bytes),
        meta.object_id(): ObjectRecord(ObjectType.DIRMETA, meta.encode()),
        commit.object_id(): ObjectRecord(ObjectType.COMMIT, commit.encode()),
    }
    with Repository.open(ctx.repo) as repo:
        repo.index.apply(WriteBatch(objects=records, commits={commit.object_id(): 0}))
    return commit.object_id().hex()


CASES: dict[str, tuple[Callable[[Ctx], list[str]], str]] = {
    "repo-missing": (lambda c: ["--repo", str(c.tmp / "nope"), "refs"], "not a sapwood repository"),
    "repo-not-a-repo": (lambda c: ["--repo", str(c.src), "refs"], "not a sapwood repository"),
    "repo-not-given": (lambda c: ["refs"], "no repository given"),
    "unknown-ref": (lambda c: ["log", "nosuchref"], "no such ref or commit"),
    "unknown-id": (lambda c: ["show", "f" * 64], "no commit"),
    "ambiguous-prefix": (lambda c: ["show", _ambiguous(c)], "matches several commits"),
    "fifo": (
        lambda c: ["commit", "-b", "main", _with(c, lambda s: os.mkfifo(s / "fifo"))],
        "/fifo",
    ),
    "socket": (
        lambda c: ["commit", "-b", "main", _with(c, lambda s: _socket(s / "sock"))],
        "/sock",
    ),
    "unreadable-file": (lambda c: ["commit", "-b", "main", _with(c, _unreadable)], "secret"),
    "tar-absolute": (lambda c: ["commit", "-b", "main", _tar(c, "/etc/passwd")], "absolute"),
    "tar-dotdot": (lambda c: ["commit", "-b", "main", _tar(c, "a/../../x")], "'..'"),
    "tar-hardlink-out": (
        lambda c: ["commit", "-b", "main", _tar(c, "h", tarfile.LNKTYPE, "../../etc/shadow")],
        "'..'",
    ),
    "tar-long-name": (lambda c: ["commit", "-b", "main", _tar(c, "n" * 300)], "longer than 255"),
    "ref-dotdot": (lambda c: ["commit", "-b", "a..b", str(c.src)], "invalid ref name"),
    "ref-space": (lambda c: ["refs", "--create", "has space", "main"], "invalid ref name"),
    "ref-control": (lambda c: ["commit", "-b", "x\x07y", str(c.src)], "invalid ref name"),
    "ref-exists": (lambda c: ["refs", "--create", "main", "main"], "exists"),
    "no-tree": (lambda c: ["commit", "-b", "main"], "nothing to commit"),
    "bad-tree-spec": (lambda c: ["commit", "-b", "main", "--tree=zip=x"], "expected dir=PATH"),
    "source-missing": (lambda c: ["commit", "-b", "main", str(c.tmp / "absent")], "absent"),
    "bad-statoverride": (
        lambda c: (
            (c.tmp / "so").write_text("644 /x\n"),
            ["commit", "-b", "main", "--statoverride", str(c.tmp / "so"), str(c.src)],
        )[1],
        "expected '+MODE PATH'",
    ),
    "bad-parent": (lambda c: ["commit", "-b", "main", "--parent", "nosuch", str(c.src)], "nosuch"),
    "ls-missing-path": (lambda c: ["ls", "main", "/no/such"], "no such file"),
    "cat-directory": (lambda c: ["cat", "main", "/"], "is a directory"),
    "unknown-command": (lambda c: ["frobnicate"], "invalid choice"),
    "init-existing": (lambda c: ["init"], "exists"),
    "prune-delete-head": (lambda c: ["prune", "--delete-commit", "main"], "head of main"),
    "prune-delete-unknown": (lambda c: ["prune", "--delete-commit", "a" * 64], "no commit"),
    "prune-bad-date": (lambda c: ["prune", "--keep-younger-than", "someday"], "not a time"),
    "prune-bad-depth": (lambda c: ["prune", "--depth", "two"], "invalid int"),
    "fsck-unknown-flag": (lambda c: ["fsck", "--frobnicate"], "unrecognized arguments"),
    "checkout-dest-exists": (lambda c: ["checkout", "-U", "main", str(c.src)], "exists"),
    "checkout-unknown-rev": (lambda c: ["checkout", "-U", "nope", str(c.tmp / "d")], "nope"),
    "checkout-missing-subpath": (
        lambda c: ["checkout", "-U", "--subpath", "/no/such", "main", str(c.tmp / "d")],
        "no such file",
    ),
    "checkout-hardlink-mismatch": (
        lambda c: ["checkout", "-H", "main", str(c.tmp / "d")],
        "add -U",
    ),
    "checkout-bad-names": (
        lambda c: ["checkout", "-U", _evil_commit(c), str(c.tmp / "d")],
        "invalid name",
    ),
    # Values the encoding cannot hold, and text that is not UTF-8 (issue 9).
    "owner-uid-huge": (lambda c: _commit(c, "--owner-uid", "99999999999"), "not a uid or gid"),
    "owner-uid-negative": (lambda c: _commit(c, "--owner-uid", "-1"), "not a uid or gid"),
    "owner-gid-huge": (lambda c: _commit(c, "--owner-gid", str(2**32)), "not a uid or gid"),
    "timestamp-beyond-i64": (lambda c: _commit(c, "--timestamp", "9" * 20), "out of range"),
    "timestamp-5000-digits": (lambda c: _commit(c, "--timestamp", "9" * 5000), "out of range"),
    "timestamp-unicode-digit": (lambda c: _commit(c, "--timestamp", "\u00b2"), "not a time"),
    "timestamp-dashes": (lambda c: _commit(c, "--timestamp=--5"), "not a time"),
    "timestamp-year-0": (lambda c: _commit(c, "--timestamp", "0000-01-01"), "not a time"),
    "subject-not-utf8": (lambda c: _commit(c, "-s", "\udcff"), "-s/--subject: not valid UTF-8"),
    "body-not-utf8": (lambda c: _commit(c, "-m", "a\udcffb"), "-m/--body: not valid UTF-8"),
    "metadata-not-utf8": (
        lambda c: _commit(c, "--add-metadata-string", "k=\udce9"),
        "--add-metadata-string: not valid UTF-8",
    ),
    # Revisions.
    "rev-empty": (lambda c: ["show", ""], "empty revision"),
    "rev-huge-generation": (
        lambda c: ["rev-parse", "main~99999999999999999999"],
        "generations back",
    ),
    "rev-5000-digit-generation": (lambda c: ["log", "main~" + "9" * 5000], "generations back"),
    "rev-not-utf8": (lambda c: ["show", "\udcff"], "no such ref or commit"),
    "rev-newline": (lambda c: ["log", "no\nsuch"], "no\\nsuch: no such ref"),
    "rev-overlong": (lambda c: ["show", "r" * 600], "no such ref or commit"),
    "ls-path-not-utf8": (lambda c: ["ls", "main", "/\udcff"], "/\\377: no such file"),
    "refs-delete-empty-name": (lambda c: ["refs", "--delete", ""], "no ref ''"),
    "cat-empty-path": (lambda c: ["cat", "main", ""], "'': is a directory"),
    "prune-depth-below-minus-one": (lambda c: ["prune", "--depth", "-2"], "give -1"),
}
if IS_ROOT:
    CASES["device-node"] = (
        lambda c: [
            "commit",
            "-b",
            "main",
            _with(c, lambda s: os.mknod(s / "null", 0o20666, os.makedev(1, 3))),
        ],
        "/null",
    )


def _commit(ctx: Ctx, *args: str) -> list[str]:
    return ["commit", "-b", "main", *args, str(ctx.src)]


@pytest.fixture
def ctx(tmp_path: Path) -> Ctx:
    repo, src = tmp_path / "repo", tmp_path / "src"
    Repository.init(repo, RepoMode.BARE_USER).close()
    src.mkdir()
    (src / "file").write_text("content")
    assert cli("--repo", repo, "commit", "-b", "main", src).code == 0
    return Ctx(repo, src, tmp_path)


def _run(ctx: Ctx, args: list[str], add_repo: bool = True) -> subprocess.CompletedProcess[bytes]:
    prefix: list[str] = []
    if IS_ROOT:  # root reads anything: drop the capabilities that let it
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    env = {k: v for k, v in os.environ.items() if k != "SAPWOOD_REPO"}
    if add_repo and args[0] != "--repo":
        args = ["--repo", str(ctx.repo), *args]
    return run(*args, prefix=prefix, env=env, timeout=120)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(ctx: Ctx, case: str) -> None:
    make_args, expected = CASES[case]
    args = make_args(ctx)
    before = _state(ctx.repo)
    proc = _run(ctx, args, add_repo=case != "repo-not-given")
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0
    assert proc.stdout == b""
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert expected in err, err
    assert _state(ctx.repo) == before


CONFIGS = {
    "random-bytes": bytes(range(256)) * 4,
    "nul-in-section": b"[co\0re]\nrepo_version = 1\nmode = bare-user\n",
    "nul-in-mode": b"[core]\nrepo_version = 1\nmode = bare-user\0\n",
    "latin-1": "[core]\nrepo_version = 1\nmode = bare-user\n# \u00e9t\u00e9\n".encode("latin-1"),
    "percent": b"[core]\nrepo_version = 1\nmode = bare-user%\n",
    "interpolation": b"[core]\nrepo_version = 1\nmode = bare-user\nfsync = %(nope)s\n",
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_a_damaged_config_is_one_clear_line(ctx: Ctx, case: str) -> None:
    config = ctx.repo / "config"
    before, original = _state(ctx.repo), config.read_bytes()
    config.write_bytes(CONFIGS[case])
    proc = _run(ctx, ["log", "main"])
    config.write_bytes(original)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0 and proc.stdout == b"", err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "internal error" not in err and "repository" in err, err
    assert _state(ctx.repo) == before


def test_bare_user_only_refusals_change_nothing(tmp_path: Path) -> None:
    repo, src = tmp_path / "repo", tmp_path / "src"
    Repository.init(repo, RepoMode.BARE_USER_ONLY).close()
    src.mkdir()
    for name, mode in (("setuid", 0o4755), ("world", 0o666)):
        (src / name).write_text(name)
        (src / name).chmod(mode)
        before = _state(repo)
        proc = _run(Ctx(repo, src, tmp_path), ["commit", "-b", "main", str(src)])
        err = proc.stderr.decode()
        assert proc.returncode != 0 and len(err.strip().splitlines()) == 1 and f"/{name}" in err
        assert _state(repo) == before
        (src / name).unlink()


def test_debug_shows_the_traceback(ctx: Ctx) -> None:
    proc = _run(ctx, ["--debug", "log", "nosuchref"])
    assert proc.returncode != 0 and b"Traceback" in proc.stderr
