"""admin: deployments of commits into a sysroot, as ``ostree admin`` (docs/deployments.md).

The sysroot's repository is SYSROOT/sapwood/repo: put commits into it with
``sapwood --repo SYSROOT/sapwood/repo commit ...`` (or pull-local), then deploy.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from sapwood import Deployment, Sysroot, install_initramfs_hook, prepare_tree
from sapwood.cli.output import emit_json, plural, printable
from sapwood.cli.progress import Progress

log = logging.getLogger(__name__)


def register(commands: Any) -> None:
    admin = commands.add_parser(
        "admin",
        help="deploy commits into a sysroot and manage its boot entries",
        description=(
            "Deployments as ostree admin: a commit checked out beside the running system, "
            "/etc merged, a boot entry written, the switch made by one atomic rename. The "
            "sysroot's repository is SYSROOT/sapwood/repo (sapwood --repo "
            "SYSROOT/sapwood/repo commit ... puts a commit there)."
        ),
    )
    _sysroot_option(admin, top=True)
    sub = admin.add_subparsers(dest="admin_command", metavar="COMMAND", parser_class=type(admin))
    sub.required = True

    p = sub.add_parser("init-fs", help="create an empty sysroot at PATH")
    p.add_argument("path", type=Path, metavar="PATH")
    p.set_defaults(func=cmd_init_fs)

    p = sub.add_parser("os-init", help="create an OS (stateroot) in the sysroot")
    p.add_argument("os_name", metavar="NAME")
    p.set_defaults(func=cmd_os_init)

    p = sub.add_parser("deploy", help="deploy REV as the new default")
    p.add_argument("rev", metavar="REV", help="a ref or commit of SYSROOT/sapwood/repo")
    p.add_argument("--os", dest="os_name", metavar="NAME", help="the OS (default: the booted)")
    p.add_argument("--karg", action="append", default=[], metavar="K=V", help="replace K")
    p.add_argument("--karg-append", action="append", default=[], metavar="K=V", help="add K=V")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("status", help="list the deployments, the default first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("undeploy", help="remove a deployment (never the booted one)")
    p.add_argument("position", type=int, metavar="INDEX")
    p.set_defaults(func=cmd_undeploy)

    p = sub.add_parser("rollback", help="make the previous deployment the default")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("pin", help="keep a deployment through later deploys")
    p.add_argument("-u", "--unpin", action="store_true", help="remove the pin")
    p.add_argument("position", type=int, metavar="INDEX")
    p.set_defaults(func=cmd_pin)

    p = sub.add_parser("cleanup", help="remove unused deployments' files; prune the repository")
    p.set_defaults(func=cmd_cleanup)

    p = sub.add_parser("config-diff", help="what was changed in /etc against its defaults")
    p.set_defaults(func=cmd_config_diff)

    p = sub.add_parser("set-default", help="make deployment INDEX the default")
    p.add_argument("position", type=int, metavar="INDEX")
    p.set_defaults(func=cmd_set_default)

    p = sub.add_parser(
        "install-initramfs-hook",
        help="put sapwood's initramfs-tools hook and boot script into TREE",
        description=(
            "Run on an OS tree before it is committed: update-initramfs run in the tree "
            "then builds an initramfs that boots the deployment named by sapwood= on the "
            "kernel command line (and an ordinary root without it)."
        ),
    )
    p.add_argument("tree", type=Path, metavar="TREE", help="the tree (with initramfs-tools)")
    p.set_defaults(func=cmd_install_initramfs_hook)

    p = sub.add_parser(
        "prepare-tree",
        help="lay TREE out for deployment: /home, /root, ... and dpkg's database moved",
        description=(
            "Run on an OS tree before it is committed, as OSTree's trees are laid out: "
            "/home, /root, /opt, /srv, /mnt and /usr/local become links into /var (the "
            "OS's shared /var keeps what users write there through every update), and "
            "/var/lib/dpkg a link to /usr/lib/sysimage/dpkg (each deployment's dpkg "
            "describes its own release). Again on a prepared tree, it changes nothing."
        ),
    )
    p.add_argument("tree", type=Path, metavar="TREE", help="the tree to lay out")
    p.set_defaults(func=cmd_prepare_tree)

    for subparser in sub.choices.values():
        _sysroot_option(subparser, top=False)


def _sysroot_option(parser: argparse.ArgumentParser, top: bool) -> None:
    parser.add_argument(
        "--sysroot",
        type=Path,
        default=Path("/") if top else argparse.SUPPRESS,
        help="the sysroot (default: /)",
    )


def _sysroot(args: argparse.Namespace) -> Sysroot:
    return Sysroot(args.sysroot)


def cmd_init_fs(args: argparse.Namespace) -> int:
    sysroot = Sysroot.init_fs(args.path)
    print(f"initialised sysroot {printable(str(sysroot.path))}")
    return 0


def cmd_os_init(args: argparse.Namespace) -> int:
    _sysroot(args).os_init(args.os_name)
    print(f"OS {printable(args.os_name)} is ready")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    with Progress("deploy") as progress:
        result = sysroot.deploy(
            args.rev,
            args.os_name,
            tuple(args.karg),
            tuple(args.karg_append),
            progress=progress.task,
        )
    new = result.deployment
    print(f"deployed {new.os_name} {new.name} as deployment 0 (the default)")
    return 0


def _flags(deployment: Deployment, index: int, booted: Deployment | None) -> list[str]:
    flags = []
    if booted is not None and deployment.key() == booted.key():
        flags.append("booted")
    if index == 0:
        flags.append("default")
    elif index == 1:
        flags.append("rollback")
    if deployment.pinned:
        flags.append("pinned")
    if deployment.boot is None:
        flags.append("no kernel")
    return flags


def cmd_status(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    deployments = sysroot.deployments()
    booted = sysroot.booted()
    changed = sysroot.etc_changed_since_pending()
    if changed is not None:
        log.warning(
            "/etc changed after deployment 0 was made (%s): its /etc merge did not see "
            "it, and the next boot loses it; deploy again to carry it over",
            printable("/etc" if changed == "." else f"/etc/{changed}"),
        )
    if args.json:
        emit_json([_json(d, i, booted) for i, d in enumerate(deployments)])
        return 0
    if not deployments:
        print("no deployments")
    for index, deployment in enumerate(deployments):
        mark = "*" if booted is not None and deployment.key() == booted.key() else " "
        flags = ", ".join(_flags(deployment, index, booted))
        print(f"{mark} {index} {deployment.os_name} {deployment.name} ({flags})")
        print(f"    origin: {printable(deployment.refspec) or '(none)'}")
        kernel = deployment.boot.kernel_version if deployment.boot else "(none)"
        print(f"    kernel: {printable(kernel)}")
        print(f"    options: {printable(' '.join(deployment.kargs))}")
    for kept in sysroot.kept_on_disk():
        print(f"  - {kept.os_name} {kept.name} (not listed: kept on disk for users' data)")
    return 0


def _json(deployment: Deployment, index: int, booted: Deployment | None) -> dict[str, Any]:
    return {
        "index": index,
        "os": deployment.os_name,
        "commit": deployment.commit,
        "serial": deployment.serial,
        "path": deployment.boot_path,
        "refspec": deployment.refspec,
        "pinned": deployment.pinned,
        "booted": booted is not None and deployment.key() == booted.key(),
        "default": index == 0,
        "kargs": deployment.kargs,
        "kernel": deployment.boot.kernel_version if deployment.boot else None,
    }


def cmd_undeploy(args: argparse.Namespace) -> int:
    gone = _sysroot(args).undeploy(args.position)
    print(f"removed deployment {args.position} ({gone.os_name} {gone.name})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    new_default = _sysroot(args).rollback()
    print(f"the default is now {new_default.os_name} {new_default.name} (was deployment 1)")
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    _sysroot(args).pin(args.position, pinned=not args.unpin)
    print(f"deployment {args.position} is {'no longer ' if args.unpin else ''}pinned")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    with Progress("cleanup") as progress:
        report = _sysroot(args).cleanup(progress=progress.task)
    print(f"pruned {plural(report.objects, 'object')}, {report.bytes_freed} bytes freed")
    return 0


def cmd_config_diff(args: argparse.Namespace) -> int:
    for change in _sysroot(args).config_diff():
        kind = "M" if change.kind == "m" else change.kind
        print(f"{kind}    {printable(os.fsdecode(change.path))}")
    return 0


def cmd_set_default(args: argparse.Namespace) -> int:
    sysroot = _sysroot(args)
    sysroot.set_default(args.position)
    print(f"deployment {args.position} is now the default (deployment 0)")
    return 0


def cmd_prepare_tree(args: argparse.Namespace) -> int:
    done = prepare_tree(args.tree)
    for line in done:
        print(printable(line))
    if not done:
        print(f"{printable(str(args.tree))}: laid out for deployment already; nothing changed")
    return 0


def cmd_install_initramfs_hook(args: argparse.Namespace) -> int:
    for path in install_initramfs_hook(args.tree):
        print(f"installed {printable(str(path))}")
    return 0
