"""Deploying a commit: a new root beside the running one, then one atomic switch.

Order (each step writes only inside the new deployment until the switch):
1. check the tree (/etc and /usr/etc both: refused) and plan the /etc merge (a type
   conflict: refused), before anything is written;
2. remove what an interrupted deploy left (directories no list names);
3. hardlink-check the commit out at deploy/ID.SERIAL (built aside, renamed in); its real
   /home, /root, /srv, /opt and /mnt become copies (writable when booted: an edit in
   place must not write into the repository's objects, review21 12);
4. a tree with /etc only has it moved to usr/etc (rpm-ostree's convention: the tree's
   /etc is the defaults); /etc becomes a copy of usr/etc with the local changes;
5. /var of the OS is seeded from the commit when empty; the kernel is installed;
6. origin file, syncfs, then the new loader.M and the rename of boot/loader;
7. dropped deployments are removed, deployment refs follow the list (the new one's ref
   is made before the switch, so no prune can take a listed commit).
The caller holds the repository's lock shared from resolving REV to the end, so that
a prune (which takes it exclusive, and no sysroot lock: a timer's) cannot take the
commit between its resolution and its ref.
A crash or error before step 6's rename leaves the previous list and entries as they
were; what it wrote is removed by the next deploy (or cleanup).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fs.checkout import CheckoutOptions, checkout
from fs.sysroot import etc_merge
from fs.sysroot.bootentries import write_loader
from fs.sysroot.copying import copy_entry
from fs.sysroot.kargs import edit_kargs
from fs.sysroot.kernels import find_kernel, install_kernel
from fs.sysroot.layout import Layout
from fs.sysroot.removal import remove_own_tree
from fs.sysroot.retention import (
    remove_unlisted,
    retain,
    sync_refs,
    tidy_after_switch,
    unlisted_on_disk,
)
from fs.sysroot.state import (
    Deployment,
    current_bootversion,
    parse_deployment_name,
    write_origin,
)
from fs.sysroot.users_data import COPIED_DIRS, commit_keeps_files_there
from store import (
    ObjectId,
    PathNotFoundError,
    RepoMode,
    Repository,
    SapwoodError,
    TaskCallback,
    TreeLayoutError,
    from_hex,
    lookup,
    space_errors,
    syncfs,
    to_hex,
)

log = logging.getLogger(__name__)
_OS_RELEASE_MAX = 64 << 10  # os-release is a few lines: a huge one is not read whole
_TITLE_MAX = 200


@dataclass
class DeployRequest:
    """What to deploy: ``refspec`` resolved to ``commit_id``, with argument edits."""

    os_name: str
    refspec: str
    commit_id: ObjectId
    replace_kargs: Sequence[str] = ()
    append_kargs: Sequence[str] = ()
    warnings: list[str] = field(default_factory=list)
    progress: TaskCallback | None = None  # told of the checkout, the longest step


def node_type(repo: Repository, commit_id: ObjectId, path: str) -> etc_merge.NodeType | None:
    """The type of ``path`` in a commit (None: absent, or below a non-directory)."""
    try:
        node = lookup(repo, commit_id, path)
    except PathNotFoundError:
        return None
    if node.dir is not None:
        return "dir"
    assert node.file is not None
    header, _ = repo.read_file_header(node.file)
    return "symlink" if stat.S_ISLNK(header.mode) else "file"


def etc_source(repo: Repository, commit_id: ObjectId) -> str | None:
    """Where the commit keeps its default /etc: "usr/etc", "etc" or None (neither).
    A /usr that is not a directory is refused: /etc would be moved through it, the
    merge would read through it, and the initramfs would bind-mount through it."""
    if node_type(repo, commit_id, "/usr") not in (None, "dir"):
        raise TreeLayoutError(
            "the commit's /usr is not a directory (a symlink out of the tree?); "
            "nothing was deployed",
            path="/usr",
        )
    usr_etc = node_type(repo, commit_id, "/usr/etc")
    etc = node_type(repo, commit_id, "/etc")
    if usr_etc is not None and etc is not None:
        raise TreeLayoutError(
            "the commit has both /etc and /usr/etc (the defaults belong in /usr/etc "
            "alone); nothing was deployed",
            path="/etc",
        )
    if usr_etc is not None or etc is not None:
        found = "usr/etc" if usr_etc is not None else "etc"
        if (usr_etc or etc) != "dir":
            raise TreeLayoutError(f"the commit's /{found} is not a directory", path=f"/{found}")
        return found
    return None


def deploy(
    layout: Layout,
    repo: Repository,
    request: DeployRequest,
    deployments: list[Deployment],
    booted: Deployment | None,
) -> tuple[Deployment, list[Deployment]]:
    """Deploy ``request`` and switch to it; returns it and the new list."""
    commit_id, os_name = request.commit_id, request.os_name
    source = etc_source(repo, commit_id)
    _warn_of_users_dirs(repo, commit_id, request)
    merge = _merge_from(os_name, deployments, booted)
    changes: list[etc_merge.EtcChange] = []
    if merge is not None and source is not None:
        changes = _etc_changes(layout, repo, commit_id, source, merge)
    kargs = edit_kargs(merge.kargs if merge else [], request.replace_kargs, request.append_kargs)
    remove_unlisted(layout, repo, deployments, warnings=[])  # the tidy after says them
    new = _next_deployment(layout, request, kargs, deployments)
    dest = layout.deployment(os_name, new.name)
    if os.path.lexists(dest):  # never a kept one's (review21 1): the serial says why not
        raise TreeLayoutError(f"{dest}: exists already; nothing was deployed", path=str(dest))
    listed = retain(new, deployments, booted, merge)
    version = current_bootversion(layout)
    try:
        with space_errors("nothing was deployed"):
            _build(layout, repo, new, dest, source, changes, merge, request)
            # a root before it is listed
            sync_refs(layout, repo, [*listed, *deployments], warn=False)
            write_loader(layout, listed)
    except BaseException:
        if current_bootversion(layout) == version:  # not switched: remove what was written
            try:  # the first error is the news; a leftover goes at the next deploy
                remove_own_tree(dest)
                layout.origin(os_name, new.name).unlink(missing_ok=True)
            except (SapwoodError, OSError) as exc:
                log.warning("%s", exc)
            with contextlib.suppress(SapwoodError, OSError):
                sync_refs(layout, repo, deployments, warn=False)
        raise
    request.warnings.extend(tidy_after_switch(layout, repo, listed))
    return new, listed


def _warn_of_users_dirs(repo: Repository, commit_id: ObjectId, request: DeployRequest) -> None:
    """One warning for a commit whose /root, /home, ... hold files (a tree not laid out
    by prepare-tree; docs/deployments.md "/var")."""
    dirs = commit_keeps_files_there(repo, commit_id)
    if dirs:
        message = (
            f"commit {to_hex(commit_id)[:12]} keeps files in {', '.join(dirs)}: deployed, "
            "those directories are the deployment's own, and what users write there stays "
            "in this deployment (the next one starts from its commit's, nothing shared); "
            "lay the tree out with sapwood admin prepare-tree before committing it"
        )
        log.warning("%s", message)
        request.warnings.append(message)


def _merge_from(
    os_name: str, deployments: list[Deployment], booted: Deployment | None
) -> Deployment | None:
    """The deployment whose /etc and kernel arguments carry over: the booted one if it
    is of this OS, else the first of this OS listed."""
    merge = booted if booted and booted.os_name == os_name else None
    return merge or next((d for d in deployments if d.os_name == os_name), None)


def _etc_changes(
    layout: Layout, repo: Repository, commit_id: ObjectId, source: str, merge: Deployment
) -> list[etc_merge.EtcChange]:
    """What the merge deployment changed in its /etc, planned against the commit's
    ``source`` (usr/etc or etc)."""
    merge_dir = layout.deployment(merge.os_name, merge.name)
    prefix = f"/{source}/"
    return etc_merge.plan(
        merge_dir / "usr/etc",
        merge_dir / "etc",
        lambda rel: node_type(repo, commit_id, prefix + rel),
    )


def _next_deployment(
    layout: Layout, request: DeployRequest, kargs: list[str], deployments: list[Deployment]
) -> Deployment:
    """The new deployment: its serial one more than any of the same commit's, listed or
    still on disk (one kept for its users' data: review21 1); past the nine digits a name
    may have (state.parse_deployment_name), the lowest serial none of them has (a list
    naming ID.1000000000 was refused by every later command: review23 5)."""
    commit = to_hex(request.commit_id)
    serials = {d.serial for d in deployments if d.commit == commit}
    serials |= {d.serial for d in unlisted_on_disk(layout, deployments) if d.commit == commit}
    serial = max(serials, default=-1) + 1
    if parse_deployment_name(f"{commit}.{serial}") is None:
        serial = min(set(range(len(serials) + 1)) - serials)
    return Deployment(
        os_name=request.os_name,
        commit=commit,
        serial=serial,
        kargs=kargs,
        refspec=request.refspec,
    )


def _build(
    layout: Layout,
    repo: Repository,
    new: Deployment,
    dest: Path,
    source: str | None,
    changes: list[etc_merge.EtcChange],
    merge: Deployment | None,
    request: DeployRequest,
) -> None:
    user_mode = repo.mode is not RepoMode.BARE
    options = CheckoutOptions(require_hardlinks=True, user_mode=user_mode)
    checkout(repo, from_hex(new.commit), dest, options, request.progress)
    _copy_users_dirs(dest)
    if source == "etc":
        (dest / "usr").mkdir(mode=0o755, exist_ok=True)
        os.rename(dest / "etc", dest / "usr/etc")
    if source is not None:
        copy_entry(dest / "usr/etc", dest / "etc")
        if merge is not None:
            merge_dir = layout.deployment(merge.os_name, merge.name)
            etc_merge.apply(changes, merge_dir / "etc", dest / "etc")
    else:
        (dest / "etc").mkdir(mode=0o755)
    _make_sysroot_reachable(dest)
    _seed_var(layout, new.os_name, dest)
    kernel = find_kernel(dest)
    if kernel is None:
        message = f"commit {new.commit[:12]} has no kernel: deployed without a boot entry"
        log.warning("%s", message)
        request.warnings.append(message)
    else:
        new.boot = install_kernel(layout, new.os_name, kernel)
    new.title = _pretty_name(dest) or new.os_name
    write_origin(layout, new)
    syncfs(dest)


_COPYING = ".sapwood-copying-"  # a users' directory being copied (inside the deployment)


def _copy_users_dirs(dest: Path) -> None:
    """The commit's real /home, /root, /srv, /opt and /mnt become copies (modes, owners,
    xattrs and mtime 0 kept; symlinks copied, never followed), as /etc is: when booted
    they are writable, and a hardlink edited in place would write into the repository's
    object, seen by every deployment sharing it (review21 12). A symlink (a prepared
    tree's link into var/) or a file stays as checked out; /usr/local is below /usr,
    read-only when booted, and stays hardlinks.

    Each is copied beside itself under a hidden name (never looked into as users' data),
    the hardlinked one removed (its links only: the objects stay), the copy renamed in.
    An error or a kill midway leaves them inside the deployment, which is not listed
    yet: deploy's own failure path, or the next deploy or cleanup, removes it whole,
    and until then its users' directories hold nothing but the commit's files."""
    for name in COPIED_DIRS:
        linked = dest / name
        try:
            if not stat.S_ISDIR(os.lstat(linked).st_mode):
                continue
        except FileNotFoundError:
            continue
        copy = dest / f"{_COPYING}{name}-{uuid.uuid4().hex[:8]}"
        copy_entry(linked, copy)
        remove_own_tree(linked)
        os.rename(copy, linked)


def _make_sysroot_reachable(dest: Path) -> None:
    """The directories the initramfs mounts over (``sysroot/``: the physical root,
    ``var/``: the OS's shared /var, without which it refuses to boot; ``boot/``: the
    sysroot's), and ``sapwood -> sysroot/sapwood`` (OSTree's ``ostree ->
    sysroot/ostree``): booted, ``/`` is this deployment, and ``sapwood admin`` with its
    default ``--sysroot /`` finds the repository, the deployments and the boot entries
    there. Names the commit has already are left alone."""
    for mount_point in ("sysroot", "var", "boot"):
        if not os.path.lexists(dest / mount_point):
            (dest / mount_point).mkdir(mode=0o755)
    if not os.path.lexists(dest / "sapwood"):
        os.symlink("sysroot/sapwood", dest / "sapwood")


_SEEDING = ".sapwood-seeding"  # the commit's /var being copied (a leftover: partial)
_SEEDED = ".sapwood-seeded"  # copied whole, its entries being moved into place
_NOT_CONTENT = {"lost+found", _SEEDING, _SEEDED}  # mkfs.ext4 leaves lost+found


def _seed_var(layout: Layout, os_name: str, dest: Path) -> None:
    """Copy the commit's /var into the OS's shared /var if that is empty (lost+found
    aside: /var may be a filesystem of its own).

    The copy is made aside, in ``.sapwood-seeding`` of the shared /var (the same
    filesystem), renamed ``.sapwood-seeded`` once whole, then its entries are moved
    into place: a deploy that fails or is killed midway leaves a partial copy that no
    later deploy takes for a seeded /var (it is removed, and the seed made again), or
    a whole one whose remaining entries the next deploy moves in."""
    shared = layout.var(os_name)
    shared.mkdir(mode=0o755, exist_ok=True)
    remove_own_tree(shared / _SEEDING)
    if os.path.lexists(shared / _SEEDED):
        _move_seed_in(shared)
        return
    source = dest / "var"
    if any(n not in _NOT_CONTENT for n in os.listdir(shared)):
        return
    if not source.is_dir() or source.is_symlink():
        return
    staging = shared / _SEEDING
    staging.mkdir(mode=0o700)
    try:
        for name in sorted(os.listdir(source)):
            copy_entry(source / name, staging / name)
        os.rename(staging, shared / _SEEDED)
    except BaseException:
        with contextlib.suppress(SapwoodError, OSError):  # the first error is the news
            remove_own_tree(staging)
        raise
    _move_seed_in(shared)


def _move_seed_in(shared: Path) -> None:
    """Move the entries of a whole seed into the shared /var (what is there already
    stays), then remove the seed's directory."""
    seeded = shared / _SEEDED
    for name in sorted(os.listdir(seeded)):
        if not os.path.lexists(shared / name):
            os.rename(seeded / name, shared / name)
    remove_own_tree(seeded)


def _pretty_name(tree: Path) -> str:
    """PRETTY_NAME of the tree's os-release, printable (it becomes the BLS title)."""
    for path in ("usr/lib/os-release", "etc/os-release"):
        text = _read_in_tree(tree, path, _OS_RELEASE_MAX)
        for line in text.splitlines():
            if line.startswith("PRETTY_NAME="):
                value = line.split("=", 1)[1].strip().strip("\"'")
                return "".join(c for c in value if c.isprintable())[:_TITLE_MAX]
    return ""


def _read_in_tree(tree: Path, relative: str, limit: int) -> str:
    """At most ``limit`` bytes of a regular file of the tree, never through a symlink
    (an absolute one names the running system's files; a FIFO would block), or ""."""
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in relative.split("/"):
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, limit).decode(errors="replace")
    except OSError:
        return ""
    finally:
        os.close(fd)
