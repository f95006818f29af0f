"""A sysroot: deployments of commits, their /etc, boot entries and retention.

Every change holds the sysroot lock (sapwood/lock) and ends with one atomic switch of
``boot/loader`` (bootentries.py), so that a crash leaves the previous state or the
new one. The state is read back from the sysroot on each call: nothing is cached.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fs.sysroot import etc_merge
from fs.sysroot.bootentries import read_entries, write_loader
from fs.sysroot.deploy import DeployRequest, deploy
from fs.sysroot.layout import Layout, check_os_name, init_fs, os_init
from fs.sysroot.pending import etc_changed_after
from fs.sysroot.retention import (
    booted_path,
    find_booted,
    kernel_cmdline,
    remove_unlisted,
    sync_refs,
    tidy_after_switch,
    unlisted_on_disk,
)
from fs.sysroot.state import Deployment, read_deployments, write_origin
from store import (
    BootedDeploymentError,
    DeploymentIndexError,
    PruneReport,
    Repository,
    TaskCallback,
    UnknownOSError,
    UsageError,
    prune,
    rev_parse,
)


@dataclass
class DeployResult:
    """A deploy's outcome: the new deployment, the list after it, warnings (no kernel)."""

    deployment: Deployment
    deployments: list[Deployment]
    warnings: list[str] = field(default_factory=list)


class Sysroot:
    """The sysroot at ``path`` (``/`` on an installed machine).

    ``cmdline`` stands for the kernel command line when deciding which deployment is
    booted (default: /proc/cmdline; SAPWOOD_CMDLINE instead for a sysroot other than
    the real root "/", as tests use it: one left in an administrator's environment
    never hides which deployment runs).
    """

    def __init__(self, path: str | os.PathLike[str] = "/", cmdline: str | None = None) -> None:
        self.layout = Layout(Path(path))
        self.cmdline = cmdline

    def _cmdline(self) -> str:
        return self.cmdline if self.cmdline is not None else kernel_cmdline(self.layout.root)

    @classmethod
    def init_fs(cls, path: str | os.PathLike[str], cmdline: str | None = None) -> Sysroot:
        """Create (or complete) an empty sysroot at ``path`` and return it."""
        init_fs(Path(path))
        return cls(path, cmdline)

    @property
    def path(self) -> Path:
        """The sysroot's root directory."""
        return self.layout.root

    @property
    def repo_path(self) -> Path:
        """The sysroot's repository: commit or pull into it, then deploy."""
        return self.layout.repo

    def open_repository(self) -> Repository:
        """Open the sysroot's repository (the caller closes it)."""
        self.layout.require()
        return Repository.open(self.layout.repo)

    def os_init(self, name: str) -> None:
        """Create the OS (OSTree's stateroot) ``name``: its deploy/ and shared var/."""
        with self.layout.locked():
            os_init(self.layout, name)

    def os_names(self) -> list[str]:
        """The OSes initialised in this sysroot."""
        return self.layout.os_names()

    def deployments(self) -> list[Deployment]:
        """The deployments in boot order; index 0 is the default."""
        self.layout.require()
        return read_deployments(self.layout)

    def kept_on_disk(self) -> list[Deployment]:
        """Deployments no longer listed whose directory stays on disk: kept for the
        users' data in them (docs/deployments.md "/var"), or not removable yet."""
        self.layout.require()
        return unlisted_on_disk(self.layout, read_deployments(self.layout))

    def booted(self) -> Deployment | None:
        """The running deployment (the kernel command line's ``sapwood=``), if any."""
        return find_booted(self.deployments(), booted_path(self._cmdline()), self.layout)

    def etc_changed_since_pending(self) -> str | None:
        """A path of the booted /etc changed after the pending deployment (index 0,
        not booted, of the booted OS) was made: a change its /etc merge did not see
        and the next boot loses. None if there is none, or nothing is pending."""
        deployments = self.deployments()
        booted = self._booted_of(deployments)
        if not deployments or booted is None:
            return None
        pending = deployments[0]
        if pending.key() == booted.key() or pending.os_name != booted.os_name:
            return None
        return etc_changed_after(
            self.deployment_path(booted) / "etc", self.deployment_path(pending)
        )

    def deployment_path(self, deployment: Deployment) -> Path:
        """Where ``deployment``'s root directory is."""
        return self.layout.deployment(deployment.os_name, deployment.name)

    def boot_entries(self) -> dict[str, str]:
        """The current BLS entries (file name -> text)."""
        return read_entries(self.layout)

    def deploy(
        self,
        rev: str,
        os_name: str | None = None,
        kargs: tuple[str, ...] = (),
        append_kargs: tuple[str, ...] = (),
        progress: TaskCallback | None = None,
    ) -> DeployResult:
        """Deploy the commit ``rev`` names in the sysroot's repository, as the new
        default. ``kargs`` (K=V) replace every value of K, ``append_kargs`` add one.
        ``progress`` receives the checkout's TaskProgress values (see checkout)."""
        # the repository's lock, shared: a prune waits (deploy.py's docstring)
        with self.layout.locked(), self.open_repository() as repo, repo.lock(exclusive=False):
            deployments = read_deployments(self.layout)
            booted = find_booted(deployments, booted_path(self._cmdline()), self.layout)
            name = self._os_for_deploy(os_name, booted)
            request = DeployRequest(name, rev, rev_parse(repo, rev), kargs, append_kargs)
            request.progress = progress
            new, listed = deploy(self.layout, repo, request, deployments, booted)
            return DeployResult(new, listed, request.warnings)

    def _os_for_deploy(self, os_name: str | None, booted: Deployment | None) -> str:
        names = self.layout.os_names()
        if os_name is not None:
            check_os_name(os_name)
            if os_name not in names:
                raise UnknownOSError(
                    f"no OS {os_name!r} in {self.path} (create it with admin os-init "
                    f"{os_name}); nothing was deployed",
                    os_name=os_name,
                )
            return os_name
        if booted is not None:
            return booted.os_name
        if len(names) == 1:
            return names[0]
        raise UsageError(
            "which OS? "
            + (f"the sysroot has {', '.join(names)}" if names else "the sysroot has none yet")
            + "; nothing was deployed"
        )

    def undeploy(self, index: int) -> Deployment:
        """Remove deployment ``index`` (never the booted one)."""
        with self.layout.locked():
            deployments = self.deployments()
            target = self._at(deployments, index)
            if target is self._booted_of(deployments):
                raise BootedDeploymentError(
                    f"deployment {index} is the booted one; it cannot be removed", index=index
                )
            listed = [d for d in deployments if d is not target]
            self._switch(listed)
            return target

    def set_default(self, index: int) -> None:
        """Make deployment ``index`` the default (first) one."""
        with self.layout.locked():
            deployments = self.deployments()
            target = self._at(deployments, index)
            if index != 0:
                self._switch([target, *[d for d in deployments if d is not target]])

    def rollback(self) -> Deployment:
        """Make the previous deployment (index 1) the default; returns it."""
        with self.layout.locked():
            deployments = self.deployments()
            if len(deployments) < 2:
                raise DeploymentIndexError(
                    f"nothing to roll back to: {len(deployments)} deployment(s)",
                    index=1,
                    count=len(deployments),
                )
            self._switch([deployments[1], deployments[0], *deployments[2:]])
            return deployments[1]

    def pin(self, index: int, pinned: bool = True) -> None:
        """Pin (or unpin) deployment ``index``: a pinned one survives later deploys."""
        with self.layout.locked():
            target = self._at(self.deployments(), index)
            target.pinned = pinned
            write_origin(self.layout, target)

    def cleanup(self, progress: TaskCallback | None = None) -> PruneReport:
        """Remove what no listed deployment uses (partial deployments, kernels, the old
        loader), then prune the repository: deployments' commits and refs' heads stay.
        ``progress`` is told of the prune's phases (prune says which)."""
        with self.layout.locked(), self.open_repository() as repo:
            deployments = read_deployments(self.layout)
            remove_unlisted(self.layout, repo, deployments)
            sync_refs(self.layout, repo, deployments)
            return prune(repo, refs_only=True, depth=0, progress=progress)

    def config_diff(self) -> list[etc_merge.EtcChange]:
        """What the administrator changed in /etc of the merge deployment (the booted
        one, else the default) against its defaults."""
        deployments = self.deployments()
        merge = self._booted_of(deployments) or (deployments[0] if deployments else None)
        if merge is None:
            raise DeploymentIndexError("no deployment yet", index=0, count=0)
        root = self.deployment_path(merge)
        return list(etc_merge.local_changes(root / "usr/etc", root / "etc"))

    def _booted_of(self, deployments: list[Deployment]) -> Deployment | None:
        return find_booted(deployments, booted_path(self._cmdline()), self.layout)

    def _at(self, deployments: list[Deployment], index: int) -> Deployment:
        if not 0 <= index < len(deployments):
            raise DeploymentIndexError(
                f"no deployment {index}: there are {len(deployments)} (0 to "
                f"{len(deployments) - 1}); nothing was changed"
                if deployments
                else f"no deployment {index}: there are none; nothing was changed",
                index=index,
                count=len(deployments),
            )
        return deployments[index]

    def _switch(self, listed: list[Deployment]) -> None:
        write_loader(self.layout, listed)
        with self.open_repository() as repo:
            tidy_after_switch(self.layout, repo, listed)  # warnings: switched
