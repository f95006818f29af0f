"""init, refs, rev-parse."""

from __future__ import annotations

import argparse
from typing import Any

from sapwood import RefExistsError, RefNotFoundError, RepoMode, Repository, UsageError, rev_parse
from sapwood.cli.context import open_repo, repo_path
from sapwood.cli.output import emit_json, quote_path


def register(commands: Any) -> None:
    init = commands.add_parser("init", help="create a repository")
    init.add_argument(
        "--mode",
        default="bare-user",
        choices=[m.value for m in RepoMode],
        help="repository mode (default: bare-user, which works without root)",
    )
    init.set_defaults(func=cmd_init)

    refs = commands.add_parser("refs", help="list, create or delete refs")
    refs.add_argument("--create", nargs=2, metavar=("NAME", "REV"), help="create ref NAME at REV")
    refs.add_argument("--delete", metavar="NAME", help="delete ref NAME")
    refs.add_argument("--json", action="store_true", help="list as JSON")
    refs.set_defaults(func=cmd_refs)

    parse = commands.add_parser("rev-parse", help="print the full commit id of a REV")
    parse.add_argument("rev")
    parse.set_defaults(func=cmd_rev_parse)


def cmd_init(args: argparse.Namespace) -> int:
    Repository.init(repo_path(args), RepoMode(args.mode)).close()
    return 0


def cmd_refs(args: argparse.Namespace) -> int:
    if args.create is not None and args.delete is not None:
        raise UsageError("refs: --create and --delete do not go together")
    with open_repo(args) as repo:
        if args.create is not None:
            name, rev = args.create
            commit_id = rev_parse(repo, rev)
            try:
                repo.create_ref(name, commit_id)
            except RefExistsError as exc:
                if repo.ref(name) is None:  # another ref is in its way: the store says which
                    raise
                shown = f"ref {quote_path(name)} exists; delete it first"
                raise RefExistsError(shown, name=name) from exc
            return 0
        if args.delete is not None:  # '' too: it names no ref, and must not list them
            try:
                repo.delete_ref(args.delete)
            except RefNotFoundError as exc:
                raise RefNotFoundError(
                    f"no ref {quote_path(args.delete)}", rev=args.delete
                ) from exc
            return 0
        refs = repo.refs()
    if args.json:
        emit_json([{"name": name, "commit": cid.hex()} for name, cid in sorted(refs.items())])
    else:
        for name in sorted(refs):
            print(quote_path(name))  # names are checked when set; an index may hold others
    return 0


def cmd_rev_parse(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        print(rev_parse(repo, args.rev).hex())
    return 0
