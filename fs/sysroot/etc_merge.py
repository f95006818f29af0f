"""The 3-way merge of /etc, OSTree's rules (docs/deployments.md).

``orig`` is the merge deployment's defaults (its usr/etc), ``local`` its /etc as the
administrator left it, ``new`` a copy of the new deployment's defaults. What local
changed against orig is applied to new:

- unchanged locally: the new default (so unmodified files follow upgrades);
- modified locally (content, type, mode, owner, symlink target): the local entry
  wins whole, with its mode, owner and xattrs; no line-level merge;
- added locally: copied in (directories whole, merged into a new default directory);
- deleted locally: removed from new, even when the new default changed;
- a directory whose mode or owner changed locally keeps them, its files are merged
  one by one (OSTree copies the whole directory: sapwood keeps the new defaults of
  files the administrator did not touch);
- symlinks are copied as symlinks; fifos, devices and sockets are skipped (logged);
- xattr-only changes are not changes (as OSTree, whose diff ignores xattrs).

A local file or symlink where the new default has a directory, or the reverse, is an
EtcMergeConflictError found by :func:`plan` before anything is written.
"""

from __future__ import annotations

import filecmp
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fs.sysroot.copying import copy_entry, copy_metadata, remove_entry
from store import EtcMergeConflictError, SysrootError

log = logging.getLogger(__name__)

Kind = Literal["A", "M", "D", "m"]  # added, modified, deleted, directory metadata only
NodeType = Literal["dir", "file", "symlink"]
NewType = Callable[[str], NodeType | None]  # the new default's type at a relative path


@dataclass(frozen=True)
class EtcChange:
    """One local change to /etc: ``kind`` at ``path`` (relative to /etc)."""

    kind: Kind
    path: str


def _type(st: os.stat_result) -> NodeType | None:
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    return None


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def local_changes(orig: Path, local: Path, rel: str = "") -> Iterator[EtcChange]:
    """What ``local`` changed against ``orig`` (both directories), depth first.
    Raises SysrootError when ``local`` is missing or not a directory: listed through a
    symlink it would be another tree's files, and missing it would delete every default."""
    if not rel:
        st = _lstat(local)
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise SysrootError(
                f"{local}: the deployment's /etc is missing or not a directory (a symlink?); "
                "restore it to merge it; nothing was changed"
            )
    here_orig, here_local = orig / rel if rel else orig, local / rel if rel else local
    names = sorted(set(_listdir(here_orig)) | set(_listdir(here_local)))
    for name in names:
        path = f"{rel}/{name}" if rel else name
        a, b = _lstat(here_orig / name), _lstat(here_local / name)
        if b is not None and _type(b) is None:
            log.info("/etc/%s: not a file, symlink or directory; left out of the merge", path)
            continue
        if b is None:
            if a is not None and _type(a) is not None:
                yield EtcChange("D", path)
        elif a is None or _type(a) != _type(b):
            yield EtcChange("A" if a is None else "M", path)
        elif _type(b) == "dir":
            if _owner_mode(a) != _owner_mode(b):
                yield EtcChange("m", path)
            yield from local_changes(orig, local, path)
        elif _differs(here_orig / name, a, here_local / name, b):
            yield EtcChange("M", path)


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _owner_mode(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_uid, st.st_gid, st.st_mode)


def _differs(a_path: Path, a: os.stat_result, b_path: Path, b: os.stat_result) -> bool:
    if stat.S_ISLNK(b.st_mode):
        return (a.st_uid, a.st_gid) != (b.st_uid, b.st_gid) or os.readlink(a_path) != os.readlink(
            b_path
        )
    if _owner_mode(a) != _owner_mode(b) or a.st_size != b.st_size:
        return True
    return not filecmp.cmp(a_path, b_path, shallow=False)


def plan(orig: Path, local: Path, new_type: NewType) -> list[EtcChange]:
    """The local changes, checked against the new defaults' types: raises
    EtcMergeConflictError (writing nothing) where a type conflict would arise."""
    changes = list(local_changes(orig, local))
    for change in changes:
        if change.kind in ("A", "M"):
            _check_types(local, change.path, new_type)
    return changes


def _check_types(local: Path, rel: str, new_type: NewType) -> None:
    parts = rel.split("/")
    for depth in range(1, len(parts)):  # ancestors: a new default file blocks them
        ancestor = "/".join(parts[:depth])
        if new_type(ancestor) not in (None, "dir"):
            raise EtcMergeConflictError(
                f"/etc/{rel}: changed locally, but the new default /etc/{ancestor} is not a "
                "directory; nothing was deployed",
                path=rel,
            )
    st = os.lstat(local / rel)
    mine, theirs = _type(st), new_type(rel)
    if theirs is None or (mine == "dir") == (theirs == "dir"):
        if mine == "dir" and theirs == "dir":
            for name in sorted(os.listdir(local / rel)):
                _check_types(local, f"{rel}/{name}", new_type)
        return
    raise EtcMergeConflictError(
        f"/etc/{rel}: a local {_word(mine)} where the new default is a {_word(theirs)}; "
        "move it aside, then deploy again; nothing was deployed",
        path=rel,
    )


def _word(kind: NodeType | None) -> str:
    return {"dir": "directory", "file": "file", "symlink": "symlink"}.get(kind or "", "file")


def apply(changes: list[EtcChange], local: Path, new: Path) -> None:
    """Apply planned ``changes`` (from ``local``) to ``new``, a copy of the new defaults."""
    for change in changes:
        target = new / change.path
        if not _real_dirs_above(new, change.path):
            if change.kind in ("A", "M"):  # plan() refuses these: a bug if reached
                raise EtcMergeConflictError(path=change.path)
            continue  # nothing to delete or re-mode there: never go through a symlink
        if change.kind == "D":
            remove_entry(target)
        elif change.kind == "m":
            _ensure_parents(local, new, change.path)
            existing = _lstat(target)
            if existing is None:
                os.mkdir(target, 0o700)
            elif not stat.S_ISDIR(existing.st_mode):
                # the new default made it a file or symlink: a chmod would follow a
                # symlink out of /etc (to the running system); the new default wins
                log.info("/etc/%s: no longer a directory; its local mode is dropped", change.path)
                continue
            copy_metadata(local / change.path, os.lstat(local / change.path), target)
        else:
            _ensure_parents(local, new, change.path)
            _copy_over(local / change.path, target)


def _real_dirs_above(new: Path, rel: str) -> bool:
    """True when every existing ancestor of ``rel`` in ``new`` is a directory, not a
    symlink: a new default ``x -> /`` must never turn a local deletion of x/passwd
    into a deletion of /passwd."""
    parts = rel.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        st = _lstat(new / "/".join(parts[:depth]))
        if st is None:
            return True  # below it nothing exists: _ensure_parents creates real ones
        if not stat.S_ISDIR(st.st_mode):
            return False
    return True


def _ensure_parents(local: Path, new: Path, rel: str) -> None:
    """Recreate parents the new defaults lack, with the local directories' metadata."""
    parts = rel.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        sub = "/".join(parts[:depth])
        if not os.path.lexists(new / sub):
            os.mkdir(new / sub, 0o700)
            copy_metadata(local / sub, os.lstat(local / sub), new / sub)


def _copy_over(source: Path, target: Path) -> None:
    """``source`` replaces ``target``; two directories merge, the source's entries winning."""
    st = os.lstat(source)
    existing = _lstat(target)
    if stat.S_ISDIR(st.st_mode) and existing is not None and stat.S_ISDIR(existing.st_mode):
        for name in sorted(os.listdir(source)):
            _copy_over(source / name, target / name)
        copy_metadata(source, st, target)
        return
    remove_entry(target)
    copy_entry(source, target)
