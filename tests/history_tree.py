"""A shared history for tests of history commands: 24 commits of a real tree.

The tree is part of /usr/share (common-licenses and the first 30 package directories
of /usr/share/doc) plus a few files made here (/etc/ssh/sshd_config, /usr/bin/tool, a
deep /usr/lib/deep/a/b/c/d/e/leaf.txt, ...). Commit 0 imports it; each later commit
makes one kind of change: content (text and binary), added and deleted files, renames
of files and directories, a deleted directory, file <-> directory and file <->
symlink, a symlink's target, file and directory modes, an xattr, an owner (as root
only), nothing at all, a revert. Commit i is dated ``BASE_TIMESTAMP + i * DAY``.

Each commit carries a manifest of the tree as the filesystem showed it after its step
(type, owner, mode, content digest or symlink target, user xattrs), made with
os.lstat and reads, never with sapwood, so a test computes what should have changed
(:meth:`HistoryTree.changed`) independently of the code under test.

Usage, from any test directory (tests/conftest.py registers this module as a plugin,
so the fixture needs no import; it builds once per session, in about 3 s)::

    from tests.history_tree import HistoryTree

    def test_something(history_tree: HistoryTree) -> None:
        history_tree.repo_path, history_tree.ref, history_tree.commits[3].commit_id

The repository is shared by every test of the session: read it, never write to it
(copy it with shutil.copytree first).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

import sapwood

BASE_TIMESTAMP = 1767225600  # 2026-01-01 00:00:00 UTC
DAY = 86400
REF = "os/main"
SSHD = "/etc/ssh/sshd_config"
TOOL = "/usr/bin/tool"
DEEP_LEAF = "/usr/lib/deep/a/b/c/d/e/leaf.txt"
DOC = "/usr/share/doc"
LICENSES = "/usr/share/common-licenses"
_DOC_DIRS = 30

Entry = tuple[object, ...]  # what the manifest records of one path

CHANGE_KINDS = (  # every kind of change the steps make ("none" aside), for parametrize
    "content",
    "binary",
    "add",
    "delete",
    "rename",
    "mode",
    "xattr",
    "owner",
    "file-to-dir",
    "dir-to-file",
    "file-to-symlink",
    "symlink-to-file",
    "symlink-target",
    "dir-rename",
    "dir-delete",
    "dir-mode",
    "deep-content",
    "re-add",
    "multi",
    "revert",
    "rename-inside",
    "deep-add",
)


@dataclass(frozen=True)
class HistoryCommit:
    """One commit of the history, with what its step did to the tree."""

    index: int  # 0 is the root commit
    commit_id: str  # 64 hex digits
    timestamp: int
    subject: str
    kinds: tuple[str, ...]  # "content", "binary", "add", "delete", "rename", ...
    paths: tuple[str, ...]  # the paths the step touched (both ends of a rename)
    manifest: Mapping[str, Entry]  # path -> (type, uid, gid, mode, digest or target, xattrs)


@dataclass(frozen=True)
class HistoryTree:
    """The built history: repository, ref, commits oldest first."""

    repo_path: Path
    ref: str
    commits: tuple[HistoryCommit, ...]

    def ids_newest_first(self) -> list[str]:
        return [c.commit_id for c in reversed(self.commits)]

    def by_kind(self, kind: str) -> HistoryCommit:
        """The first commit whose step made a change of ``kind``."""
        return next(c for c in self.commits if kind in c.kinds)

    def step_or_skip(self, kind: str) -> HistoryCommit:
        """:meth:`by_kind`, or skip the test where this machine could not make that
        kind of change (an owner change needs root, an xattr a filesystem with them)."""
        if not any(kind in c.kinds for c in self.commits):
            pytest.skip(f"this machine cannot make a change of kind {kind}")
        return self.by_kind(kind)

    def changed(self, *paths: str) -> list[str]:
        """Ids (newest first) of the commits where anything at or below one of
        ``paths`` differs from the parent's tree (the root commit: exists at all)."""
        found = []
        previous: Mapping[str, Entry] = {}
        for commit in self.commits:
            if any(_below(previous, p) != _below(commit.manifest, p) for p in paths):
                found.append(commit.commit_id)
            previous = commit.manifest
        return found[::-1]


def _below(manifest: Mapping[str, Entry], path: str) -> dict[str, Entry]:
    path = "/" + path.strip("/")
    prefix = path.rstrip("/") + "/"
    return {k: v for k, v in manifest.items() if k == path or k.startswith(prefix)}


# ----- the fixture ----------------------------------------------------------------
_BUILT: dict[Path, HistoryTree] = {}


@pytest.fixture(scope="session")
def history_tree(tmp_path_factory: pytest.TempPathFactory) -> HistoryTree:
    """The 24-commit history, built once per session (about 3 s)."""
    base = tmp_path_factory.getbasetemp()
    if base not in _BUILT:
        _BUILT[base] = build_history(tmp_path_factory.mktemp("history"))
    return _BUILT[base]


def build_history(where: Path) -> HistoryTree:
    """Make the tree in ``where``/tree and commit each step into ``where``/repo."""
    tree, repo_path = where / "tree", where / "repo"
    commits = []
    with sapwood.Repository.init(repo_path, sapwood.RepoMode.BARE_USER) as repo:
        for index, (subject, kinds, paths) in enumerate(_steps(tree)):
            timestamp = BASE_TIMESTAMP + index * DAY
            result = sapwood.commit(
                repo, REF, tree, subject=f"{index:02d} {subject}", timestamp=timestamp
            )
            commits.append(
                HistoryCommit(
                    index,
                    result.commit_id.hex(),
                    timestamp,
                    f"{index:02d} {subject}",
                    kinds,
                    paths,
                    manifest(tree),
                )
            )
    return HistoryTree(repo_path, REF, tuple(commits))


# ----- the manifest: the tree as the filesystem shows it ---------------------------
def manifest(root: Path) -> dict[str, Entry]:
    """Every path of ``root`` ("/" itself too) with what a commit records of it."""
    found: dict[str, Entry] = {"/": _entry(root)}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            found["/" + str(path.relative_to(root))] = _entry(path)
    return found


def _entry(path: Path) -> Entry:
    st = path.lstat()
    owner = (st.st_uid, st.st_gid)
    if stat.S_ISLNK(st.st_mode):
        return ("symlink", *owner, os.readlink(path))
    xattrs = tuple(sorted((n, os.getxattr(path, n)) for n in os.listxattr(path)))
    if stat.S_ISDIR(st.st_mode):
        return ("dir", *owner, st.st_mode, xattrs)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ("file", *owner, st.st_mode, digest, xattrs)


# ----- the steps --------------------------------------------------------------------
Step = tuple[str, tuple[str, ...], tuple[str, ...]]  # subject, kinds, paths


def _write(root: Path, path: str, data: str | bytes, mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    target.write_bytes(data)
    target.chmod(mode)


def _sshd_config(permit_root: str) -> str:
    lines = [f"# line {n} of a long enough config" for n in range(30)]
    lines[10] = f"PermitRootLogin {permit_root}"
    return "\n".join(lines) + "\n"


def _tool(version: int) -> bytes:
    return b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4 + version.to_bytes(4, "little")


def _import(root: Path) -> tuple[str, str, str, str]:
    """Commit 0's tree; returns (a license file, three /usr/share/doc directories)."""
    shutil.copytree("/usr/share/common-licenses", root / LICENSES.lstrip("/"), symlinks=True)
    docs: list[str] = []
    for entry in sorted(os.scandir("/usr/share/doc"), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False) and len(docs) < _DOC_DIRS:
            shutil.copytree(entry.path, root / DOC.lstrip("/") / entry.name, symlinks=True)
            docs.append(entry.name)
    with_copyright = [d for d in docs if (root / DOC.lstrip("/") / d / "copyright").is_file()]
    license_file = next(
        e.name
        for e in sorted(os.scandir(root / LICENSES.lstrip("/")), key=lambda e: e.name)
        if e.is_file(follow_symlinks=False)
    )
    _write(root, SSHD, _sshd_config("yes"))
    _write(root, "/etc/motd", "Welcome.\n")
    _write(root, "/etc/issue", "Debian GNU/Linux 12 \\n \\l\n")
    _write(root, "/etc/localtime", b"TZif2\x00\x00\x00" + bytes(40))
    _write(root, TOOL, _tool(1), 0o755)
    _write(root, "/var/cache/thing/state", "cached\n")
    _write(root, DEEP_LEAF, "leaf 1\n")
    (root / "etc/alternatives").mkdir(parents=True)
    os.symlink("/usr/bin/vim", root / "etc/alternatives/editor")
    os.symlink("/bin/more", root / "etc/alternatives/pager")
    for directory, dirs, _ in os.walk(root):  # owners and modes independent of the host's
        for name in dirs:
            os.chmod(Path(directory, name), 0o755)
    first, second, third = with_copyright[:3]
    return f"{LICENSES}/{license_file}", first, second, third


def _steps(root: Path) -> Iterator[Step]:
    """Change the tree for each commit in turn; yield what the step did."""
    root.mkdir()
    os.chmod(root, 0o755)
    license_file, doc_a, doc_b, doc_c = _import(root)
    yield "import part of /usr/share and a few files", ("add",), ("/",)
    _write(root, SSHD, _sshd_config("no"))
    yield "sshd: no root logins", ("content",), (SSHD,)
    _write(root, "/etc/ssh/ssh_config.d/local.conf", "Host *\n  ForwardAgent no\n")
    yield "ssh: a local client config", ("add",), ("/etc/ssh/ssh_config.d/local.conf",)
    os.chmod(root / TOOL.lstrip("/"), 0o700)
    yield "tool: only for root", ("mode",), (TOOL,)
    _write(root, TOOL, _tool(2), 0o700)
    yield "tool: version 2", ("binary",), (TOOL,)
    os.rename(root / license_file.lstrip("/"), root / (license_file + ".txt").lstrip("/"))
    yield "licenses: a rename", ("rename",), (license_file, license_file + ".txt")
    (root / "etc/motd").unlink()
    yield "no motd", ("delete",), ("/etc/motd",)
    yield from _type_changes(root)
    a, b = f"{DOC}/{doc_a}", f"{DOC}/{doc_b}"
    os.rename(root / a.lstrip("/"), root / (a + "-renamed").lstrip("/"))
    yield "doc: a directory renamed", ("dir-rename",), (a, a + "-renamed")
    shutil.rmtree(root / b.lstrip("/"))
    yield "doc: a directory deleted", ("dir-delete",), (b,)
    shutil.rmtree(root / "var/cache/thing")
    _write(root, "/var/cache/thing", "now a file\n")
    yield "cache: a directory becomes a file", ("dir-to-file",), ("/var/cache/thing",)
    os.chmod(root / "etc/ssh", 0o750)
    yield "ssh: directory closed to others", ("dir-mode",), ("/etc/ssh",)
    yield _xattr_step(root)
    yield _owner_step(root)
    yield "nothing changed", ("none",), ()
    yield from _late_steps(root, f"{DOC}/{doc_c}")


def _type_changes(root: Path) -> Iterator[Step]:
    issue = root / "etc/issue"
    issue.unlink()
    _write(root, "/etc/issue/net", "Debian over the network\n")
    yield "issue: a file becomes a directory", ("file-to-dir",), ("/etc/issue",)
    (root / "etc/localtime").unlink()
    os.symlink("/usr/share/zoneinfo/UTC", root / "etc/localtime")
    yield "localtime: a file becomes a symlink", ("file-to-symlink",), ("/etc/localtime",)
    (root / "etc/alternatives/editor").unlink()
    _write(root, "/etc/alternatives/editor", '#!/bin/sh\nexec vi "$@"\n', 0o755)
    yield "editor: a symlink becomes a file", ("symlink-to-file",), ("/etc/alternatives/editor",)
    (root / "etc/alternatives/pager").unlink()
    os.symlink("/usr/bin/less", root / "etc/alternatives/pager")
    yield "pager: another target", ("symlink-target",), ("/etc/alternatives/pager",)


def _xattr_step(root: Path) -> Step:
    try:
        os.setxattr(root / SSHD.lstrip("/"), "user.comment", b"reviewed")
    except OSError:  # a filesystem without user xattrs: the commit changes nothing
        return "sshd: no xattr here", ("none",), ()
    return "sshd: an xattr", ("xattr",), (SSHD,)


def _owner_step(root: Path) -> Step:
    if os.geteuid() != 0:
        return "sshd: no owner change (not root)", ("none",), ()
    os.chown(root / SSHD.lstrip("/"), 1000, 1000)
    return "sshd: another owner", ("owner",), (SSHD,)


def _late_steps(root: Path, doc_c: str) -> Iterator[Step]:
    copyright_file = root / doc_c.lstrip("/") / "copyright"
    copyright_file.write_bytes(copyright_file.read_bytes() + b"\nAmended.\n")
    _write(root, DEEP_LEAF, "leaf 2\n")
    yield "deep files edited", ("deep-content",), (f"{doc_c}/copyright", DEEP_LEAF)
    _write(root, "/etc/motd", "Welcome back.\n")
    yield "motd is back", ("re-add",), ("/etc/motd",)
    _write(root, SSHD, _sshd_config("prohibit-password"))
    _write(root, TOOL, _tool(3), 0o700)
    yield "sshd and tool together", ("multi",), (SSHD, TOOL)
    _write(root, SSHD, _sshd_config("yes"))
    yield "sshd: content as in the first commit", ("revert",), (SSHD,)
    old, new = "/etc/ssh/ssh_config.d/local.conf", "/etc/ssh/ssh_config.d/00-local.conf"
    os.rename(root / old.lstrip("/"), root / new.lstrip("/"))
    yield "ssh: rename inside a directory", ("rename-inside",), (old, new)
    _write(root, f"{doc_c}/NEWS.new", "News.\n")
    yield "doc: a new deep file", ("deep-add",), (f"{doc_c}/NEWS.new",)
