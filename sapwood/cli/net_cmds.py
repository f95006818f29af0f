"""remote, pull, pull-local: commits from other repositories.

Pull's knobs come from the environment (sapwood.FetchSettings.from_environ):
SAPWOOD_HTTP_TIMEOUT, SAPWOOD_HTTP_RETRIES, SAPWOOD_HTTP_BACKOFF,
SAPWOOD_HTTP_CONNECTIONS, SAPWOOD_PULL_MAX_OBJECT, SAPWOOD_PULL_BATCH.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from sapwood import (
    FetchSettings,
    PullReport,
    Remote,
    add_remote,
    delete_remote,
    pull,
    pull_local,
    remotes,
)
from sapwood.cli.context import open_repo
from sapwood.cli.output import emit_json, exit_at_once, plural, quote_path
from sapwood.cli.progress import Progress, size_text


def register(commands: Any) -> None:
    remote = commands.add_parser("remote", help="add, list or delete remotes")
    actions = remote.add_subparsers(dest="remote_action", metavar="ACTION")
    actions.required = True
    add = actions.add_parser("add", help="add a remote: NAME URL")
    add.add_argument("name", metavar="NAME")
    add.add_argument("url", metavar="URL", help="http:// or https:// URL of an archive repository")
    verify = add.add_mutually_exclusive_group()
    verify.add_argument(
        "--sign-verify", action="store_true", help="refuse commits and summaries not signed"
    )
    verify.add_argument("--no-sign-verify", action="store_true", help="do not check signatures")
    add.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="KEY",
        help="a trusted ed25519 public key (base64, as keygen prints it); repeatable",
    )
    add.set_defaults(func=cmd_remote_add)
    listing = actions.add_parser("list", help="list remotes")
    listing.add_argument("--json", action="store_true", help="list as JSON")
    listing.set_defaults(func=cmd_remote_list)
    delete = actions.add_parser("delete", help="delete a remote (its pulled refs stay)")
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(func=cmd_remote_delete)

    p = commands.add_parser("pull", help="fetch refs of a remote as REMOTE:REF")
    p.add_argument("remote", metavar="REMOTE")
    p.add_argument("refs", nargs="*", metavar="REF", help="refs to pull (default: all)")
    p.add_argument("--depth", type=_depth, default=0, help="parents to pull too (default 0)")
    p.add_argument("--dry-run", action="store_true", help="say what would be fetched")
    p.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="move REMOTE:REF even to an older commit (a deliberate rollback)",
    )
    p.set_defaults(func=cmd_pull)

    local = commands.add_parser("pull-local", help="copy refs from a repository on this machine")
    local.add_argument("source", metavar="PATH")
    local.add_argument(
        "refs",
        nargs="*",
        metavar="REF",
        help="refs to copy (default: all but pulled REMOTE:REF ones)",
    )
    local.set_defaults(func=cmd_pull_local)
    for sub in (add, listing, delete):
        # global options after the action too (main.py adds them to the subcommands only)
        sub.add_argument("--repo", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _depth(text: str) -> int:
    try:
        depth = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if depth < 0:
        raise argparse.ArgumentTypeError(f"{depth}: give 0 or more parents")
    return depth


def cmd_remote_add(args: argparse.Namespace) -> int:
    remote = Remote(args.name, args.url, args.sign_verify, tuple(args.trusted_key))
    with open_repo(args) as repo:
        add_remote(repo, remote)
    return 0


def cmd_remote_list(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        found = remotes(repo)
    if args.json:
        emit_json(
            [
                {
                    "name": r.name,
                    "url": r.url,
                    "sign_verify": r.sign_verify,
                    "trusted_keys": list(r.trusted_keys),
                }
                for r in found
            ]
        )
    else:
        for r in found:
            print(f"{r.name} {quote_path(r.url)}")
    return 0


def cmd_remote_delete(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        delete_remote(repo, args.name)
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    settings = FetchSettings.from_environ(os.environ)
    with open_repo(args) as repo, Progress("pull") as shown:
        report = pull(
            repo,
            args.remote,
            args.refs,
            depth=args.depth,
            dry_run=args.dry_run,
            settings=settings,
            progress=shown.pull,
            allow_downgrade=args.allow_downgrade,
        )
        shown.finish(_summary(report), report.bytes)
    _print_report(report)
    exit_at_once()  # the repository is closed, the pull's threads joined
    return 0


def cmd_pull_local(args: argparse.Namespace) -> int:
    with open_repo(args) as repo, Progress("pull-local") as shown:
        report = pull_local(repo, args.source, args.refs, progress=shown.pull)
        shown.finish(_summary(report), report.bytes)
    _print_report(report)
    return 0


def _print_report(report: PullReport) -> None:
    """One line per ref that moved (or would), then what was fetched."""
    for name, (old, new) in sorted(report.changed.items()):
        before = old.hex()[:12] if old is not None else "(new)"
        print(f"{quote_path(name)}: {before} -> {new.hex()}")
    metadata = plural(report.metadata_fetched + report.commits_fetched, "metadata object")
    if report.dry_run:
        print(
            f"would fetch {plural(report.content_missing, 'content object')} "
            f"(after {metadata}, {size_text(report.bytes)})"
        )
        return
    delta = f", {plural(report.delta_objects, 'object')} in deltas" if report.deltas else ""
    linked = f" ({report.linked} hardlinked)" if report.linked else ""
    print(
        f"fetched {metadata} and {plural(report.content_fetched, 'content object')}"
        f"{linked}{delta}: {size_text(report.bytes)}"
    )


def _summary(report: PullReport) -> str:
    """The summary line's words: content objects fetched of those missing, and bytes."""
    if report.dry_run:
        return f"{plural(report.content_missing, 'content object')} missing"
    missing = report.content_missing
    share = 100 * report.content_fetched // missing if missing else 100
    delta = f", {plural(report.delta_objects, 'object')} in deltas" if report.deltas else ""
    return (
        f"{report.content_fetched}/{missing} content objects ({share}%){delta}, "
        f"{size_text(report.bytes)}"
    )
