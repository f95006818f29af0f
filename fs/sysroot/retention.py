"""Which deployments stay, which machine state is booted, and removing the rest.

As OSTree: a new deployment goes first; kept are the booted deployment, the merge
deployment, pinned ones and every other OS's; the rest is dropped from the list
(and from disk once the new list is in place). The booted deployment is the one the
kernel command line's ``sapwood=`` names (``/proc/cmdline``; the environment
variable SAPWOOD_CMDLINE replaces it for a sysroot other than the real root "/", for
tests and for tools run from outside: one left in an administrator's environment on a
booted machine would hide which deployment runs, and retention could remove it).
"""

from __future__ import annotations

import functools
import logging
import os
import re
from functools import partial
from pathlib import Path

from fs.sysroot.kargs import OWN_KEY
from fs.sysroot.kernels import leftovers
from fs.sysroot.layout import Layout
from fs.sysroot.removal import Keep, remove_own_tree
from fs.sysroot.state import Deployment, current_bootversion, parse_deployment_name
from fs.sysroot.users_data import CommitFile, removal_check, users_file
from store import ObjectId, Repository, SapwoodError, from_hex, lookup, show_path

log = logging.getLogger(__name__)
REF_PREFIX = "sapwood/deploy/"


def kernel_cmdline(root: Path | None = None) -> str:
    """The kernel command line that tells which deployment of the sysroot at ``root``
    is booted: SAPWOOD_CMDLINE if set, unless ``root`` is the real root (or None),
    where /proc/cmdline is what the running kernel booted."""
    override = os.environ.get("SAPWOOD_CMDLINE")
    if override is not None:
        if root is not None and not _is_real_root(root):
            return override
        _said_ignored()
    try:
        return Path("/proc/cmdline").read_text()
    except OSError:
        return ""


def _is_real_root(root: Path) -> bool:
    try:
        return os.path.samefile(root, "/")
    except OSError:
        return False


@functools.cache
def _said_ignored() -> None:
    log.warning(
        "SAPWOOD_CMDLINE is ignored for the sysroot /: the booted deployment is the one "
        "/proc/cmdline names (the variable is for sysroots other than /, as in tests)"
    )


def booted_path(cmdline: str | None = None) -> str | None:
    """The ``sapwood=`` argument of the running kernel, if any: the last one, the one
    the initramfs boots (a ``sapwood=`` added at the boot loader's prompt follows the
    entry's own; taking the first would protect a deployment that is not running and
    let cleanup remove the one that is)."""
    found = None
    for arg in (cmdline if cmdline is not None else kernel_cmdline()).split():
        if arg.startswith(f"{OWN_KEY}="):
            found = arg.split("=", 1)[1]
    if found is None:
        return None
    # as the initramfs resolves it: "//sapwood/./deploy/..." boots the same deployment
    return "/" + "/".join(part for part in found.split("/") if part not in ("", "."))


def find_booted(
    deployments: list[Deployment], path: str | None, layout: Layout | None = None
) -> Deployment | None:
    """The deployment ``path`` (a ``sapwood=`` value) boots. Named as the entries name
    it, or, with ``layout``, reached through a symlink of the sysroot (``sapwood=
    /current``, current -> a deployment's directory: the initramfs boots whatever
    directory the path reaches): then the directory's device and inode tell, so a
    deployment running that way is never taken for unbooted, dropped and removed."""
    if not path:
        return None
    named = next((d for d in deployments if d.boot_path == path), None)
    if named is not None or layout is None:
        return named
    try:
        reached = os.stat(layout.root / path.lstrip("/"))
    except (OSError, ValueError):
        return None
    for deployment in deployments:
        try:
            here = os.stat(layout.deployment(deployment.os_name, deployment.name))
        except OSError:
            continue
        if (here.st_dev, here.st_ino) == (reached.st_dev, reached.st_ino):
            log.info("booted %s through %s", deployment.boot_path, path)
            return deployment
    return None


def retain(
    new: Deployment,
    old: list[Deployment],
    booted: Deployment | None,
    merge: Deployment | None,
) -> list[Deployment]:
    """The list after deploying ``new``: it first, then what OSTree keeps."""
    kept = [d for d in old if d is booted or d is merge or d.pinned or d.os_name != new.os_name]
    return [new, *kept]


def remove_unlisted(
    layout: Layout,
    repo: Repository,
    listed: list[Deployment],
    failed: list[Exception] | None = None,
    warnings: list[str] | None = None,
) -> int:
    """Remove deployment directories and origins not in ``listed`` (dropped or partial),
    kernels no deployment uses and the loader directory not in use. Returns how many
    deployments went. Raises at the first path that cannot be removed; with
    ``failed``, each such error is added there instead and the rest is removed.

    A deployment holding users' data (fs/sysroot/users_data.py: a file in its /home,
    /root, ... that its commit does not have) is left on disk, with a warning naming it
    and the file (added to ``warnings``; logged when there is no such list: its caller
    says it): data is never removed with the deployment it was written into (attack23
    21)."""
    keep = {d.key() for d in listed}
    doomed: list[Path] = []
    removed = 0
    for os_name in layout.os_names():
        directory = layout.deployments_dir(os_name)
        for entry in sorted(directory.iterdir()):
            name = entry.name.removesuffix(".origin")
            if (os_name, name) not in keep:
                doomed.append(entry)
    doomed += leftovers(layout, {d.boot.dir for d in listed if d.boot})
    current = current_bootversion(layout)
    if current is not None:
        doomed.append(layout.loader_dir(1 - current))
    for path in doomed:
        is_deployment = path.parent.name == "deploy" and path.is_dir() and not path.is_symlink()
        check = None
        if is_deployment:
            kept, check = _kept_for_users_data(repo, path)
            if kept is not None:
                _say_kept(kept, warnings)
                continue
            log.info("removing deployment %s/%s", path.parent.parent.name, path.name)
        try:
            written = remove_own_tree(path, check)
        except SapwoodError as exc:
            if failed is None:
                raise
            failed.append(exc)
            continue
        if written is not None:  # since the look: it stops there, the rest stays too
            _say_kept(_kept_message(path, written), warnings)
            continue
        removed += is_deployment
    return removed


# fs/checkout.py's name for a checkout being built (renamed ID.SERIAL once whole)
_CHECKOUT_UNDER_WAY = re.compile(r"\.(.+)\.sapwood-checkout-[0-9a-f]{8}")


def _checkout_under_way(name: str) -> bool:
    match = _CHECKOUT_UNDER_WAY.fullmatch(name)
    return match is not None and parse_deployment_name(match.group(1)) is not None


def unlisted_on_disk(layout: Layout, listed: list[Deployment]) -> list[Deployment]:
    """The deployment directories on disk that ``listed`` does not name."""
    keep = {d.key() for d in listed}
    found: list[Deployment] = []
    for os_name in layout.os_names():
        try:
            names = sorted(os.listdir(layout.deployments_dir(os_name)))
        except OSError:
            continue
        for name in names:
            parsed = parse_deployment_name(name)
            if parsed and (os_name, name) not in keep:
                commit, serial = parsed
                found.append(Deployment(os_name=os_name, commit=commit, serial=serial, kargs=[]))
    return found


def _kept_for_users_data(repo: Repository, path: Path) -> tuple[str | None, Keep | None]:
    """Why the unlisted deployment at ``path`` stays on disk, if it holds users' data;
    else the check its removal asks again of each file (None: nothing to ask)."""
    if _checkout_under_way(path.name):
        return None, None  # a killed deploy's: it never booted, nobody wrote into it
    parsed = parse_deployment_name(path.name)
    # asked by the look, then again by the removal: each directory's objects stat'ed once,
    # and the copies the look read are not read again (users_data.CommitFile.copies)
    commit_files = functools.cache(
        partial(_commit_files, repo, from_hex(parsed[0]) if parsed else None)
    )
    found = users_file(path, commit_files)
    if found is None:
        return None, removal_check(commit_files)
    return _kept_message(path, show_path(os.fsencode(path / found))), None


def _kept_message(path: Path, what: str) -> str:
    return (
        f"deployment {path.parent.parent.name}/{path.name} is no longer listed but stays "
        f"on disk: {what} is not of its commit (users' data); move what is to be kept "
        "(into the OS's shared /var: sapwood admin prepare-tree lays a tree out so), "
        "remove the rest, then run sapwood admin cleanup"
    )


def _say_kept(message: str, warnings: list[str] | None) -> None:
    if warnings is None:
        log.warning("%s", message)
    else:
        warnings.append(message)


def _commit_files(
    repo: Repository, commit: ObjectId | None, directory: str
) -> dict[str, CommitFile]:
    """The regular files of ``commit``'s ``directory``, by name, as users_data tells them
    from users' data (their objects' inodes, sizes, and openers of their files: bare and
    bare-user objects hold the content as is; an archive repository is never deployed);
    empty where there is no such directory or commit (every file there counts as users')."""
    if commit is None:
        return {}
    try:
        node = lookup(repo, commit, "/" + directory)
        if node.dir is None:
            return {}
        tree = repo.read_dirtree(node.dir.tree)
        headers = repo.read_file_headers([file_id for _, file_id in tree.files])
    except (SapwoodError, OSError):
        return {}
    found: dict[str, CommitFile] = {}
    for (name, file_id), (header, size) in zip(tree.files, headers, strict=True):
        if header.is_symlink:
            continue  # a symlink in the commit: a regular file of that name is not its
        try:
            st = os.stat(repo.object_path(file_id), follow_symlinks=False)
        except OSError:
            continue
        opener = partial(repo.open_file_fd, file_id, size)
        found[os.fsdecode(name)] = CommitFile(st.st_dev, st.st_ino, size, opener)
    return found


def tidy_after_switch(layout: Layout, repo: Repository, listed: list[Deployment]) -> list[str]:
    """The clean-up after a switch (``listed`` is in place): remove what is no longer
    listed and sync the refs. The switch is done, so what fails here is a warning
    (logged, returned), never an error: a command that switched must say it did (a
    retried rollback would swap back, a retried undeploy remove the next one). The
    leftover is removed by the next deploy or ``admin cleanup``."""
    failed: list[Exception] = []
    kept: list[str] = []
    try:
        remove_unlisted(layout, repo, listed, failed, kept)
    except (SapwoodError, OSError) as exc:  # listing the directories failed
        failed.append(exc)
    try:
        sync_refs(layout, repo, listed)
    except (SapwoodError, OSError) as exc:
        failed.append(exc)
    warnings = [
        f"switched, but the clean-up after it failed: {exc} (the next deploy or "
        "sapwood admin cleanup retries it)"
        for exc in failed
    ]
    for message in kept + warnings:
        log.warning("%s", message)
    return kept + warnings


def sync_refs(
    layout: Layout, repo: Repository, listed: list[Deployment], warn: bool = True
) -> None:
    """One ref per deployment (sapwood/deploy/OS/ID.SERIAL), so that no prune of the
    repository, the sysroot's cleanup or a user's ``prune --refs-only``, deletes a
    deployed commit. An unlisted deployment still on disk (kept for its users' data,
    or not removable yet) keeps its ref too: users_data tells a user's file from the
    commit's by the commit's objects (their bytes; their inodes in older deployments).

    A listed deployment whose commit is no longer in the repository (its ref deleted by
    hand and the repository pruned, a repository restored from an older backup) gets
    no ref and, with ``warn``, a warning naming its index in ``listed``: it is skipped,
    never removed here, so that deploy, rollback and cleanup keep working; the
    administrator undeploys it."""
    wanted: dict[str, str] = {}
    for d in unlisted_on_disk(layout, listed):
        if repo.has_object(from_hex(d.commit)):
            wanted[f"{REF_PREFIX}{d.os_name}/{d.name}"] = d.commit
    for index, d in enumerate(listed):
        name = f"{REF_PREFIX}{d.os_name}/{d.name}"
        if repo.has_object(from_hex(d.commit)):
            wanted[name] = d.commit
            continue
        if warn:
            log.warning(
                "deployment %d (%s/%s) is of commit %s, which is not in the repository "
                "(its ref deleted and the repository pruned, or an older repository "
                "restored): it is kept as it is, unprotected; undeploy it",
                index,
                d.os_name,
                d.name,
                d.commit,
            )
    for name in repo.refs():
        if name.startswith(REF_PREFIX) and name not in wanted:
            repo.delete_ref(name)
    current = repo.refs()
    for name, commit in wanted.items():
        if name not in current:
            repo.set_ref(name, from_hex(commit))
